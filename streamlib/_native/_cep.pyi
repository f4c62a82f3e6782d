from typing import Any

def feed_linear(logic: Any, tss: list[int], evs: list[Any], out: list[Any]) -> None:
    """Compiled twin of ``streamlib.cep._linear.feed_linear``."""
