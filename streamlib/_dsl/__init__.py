"""The blueprint DSL: Source, Flow, Sink, RunnableGraph, Keep and the graph builder."""
