"""Integration sources and sinks: files, record framing, async publishers and subscribers."""
