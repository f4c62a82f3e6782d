from typing import Any

from .._ops.chain import ChainLogic
from ..stage import StageLogic

class NativeChainLogic(ChainLogic):
    """Runs a list of element-wise ops over each chunk, element by element in C."""

    def __init__(self, ops: list[tuple[int, Any, Any, str]]) -> None: ...
    def merge_with(self, other: StageLogic) -> bool: ...
    def on_chunk(self, chunk: list[Any]) -> list[Any]: ...
