"""Operator stages, by family."""
