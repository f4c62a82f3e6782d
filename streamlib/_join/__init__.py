"""Stream-stream joins: ``JoinWindows`` and the windowed (interval) join stage."""

from .stream_join import StreamJoinStage
from .windows import JoinWindows

__all__ = ["JoinWindows", "StreamJoinStage"]
