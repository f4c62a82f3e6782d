"""streamlib: embeddable stream processing on asyncio.

Blueprints (``Source``, ``Flow``, ``Sink``, ``RunnableGraph``) describe a
stream; running one starts asyncio tasks joined by bounded channels.

>>> import operator
>>> from streamlib import Source, Sink
>>> await Source.from_iterable(range(10)).map(lambda x: x * 3).run_with(Sink.fold(0, operator.add))
135
"""

from ._dsl.flow import Flow
from ._dsl.graph import GraphBuilder, GraphError, InPort, Node, OutPort
from ._dsl.keep import Keep
from ._dsl.keyed import Keyed, Windowed
from ._dsl.runnable import RunnableGraph
from ._dsl.sink import Sink
from ._dsl.source import Source
from ._io.files import FileSink, FileSource
from ._io.framing import BadRecord, BadRecordError, Framing
from ._join import JoinWindows
from ._native import NativeExtensionWarning, native_enabled
from ._ops.concurrent import BufferOverflowError
from ._ops.fan import Interleave, MergeSorted, Unzip, UnzipWith
from ._ops.flow_control import StreamTimeoutError
from ._ops.junctions import Balance, Broadcast, Concat, Merge, MergePreferred, Partition, Zip, ZipWith
from ._ops.killswitch import KillSwitch, KillSwitches, SharedKillSwitch
from ._ops.restart import RestartFlow, RestartSettings, RestartSink, RestartSource
from ._ops.sinks import EmptyStreamError, SinkQueue
from ._ops.sources import QueueClosedError, SourceQueue
from ._ops.substreams import TooManySubstreamsError
from ._ops.supervision import Supervision
from ._runner import RunSettings, run
from ._runtime.clock import Clock, LoopClock
from ._runtime.graph_run import RunningGraph
from ._runtime.signals import Watermark
from ._state import Checkpoint, Commit, MemoryStore, RocksDBStore, StateEncodingError, StateStore
from ._metrics import MetricsRegistry, MetricsServer, QueryableStore
from ._state import Table as StoreTable
from ._state.operators import KeyState
from ._table import Change, Table, TableView
from ._state.timers import Timer
from ._time import (
    CountWindows,
    HoppingWindows,
    LateDataError,
    LateRecord,
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
    WindowAssigner,
    WindowResult,
    is_late,
)
from .stage import AsyncLogic, PullSourceLogic, SinkLogic, Stage, StageLogic

__version__ = "0.1.0"

__all__ = [
    "AsyncLogic",
    "BadRecord",
    "BadRecordError",
    "Balance",
    "Broadcast",
    "BufferOverflowError",
    "Change",
    "Checkpoint",
    "Clock",
    "Commit",
    "Concat",
    "CountWindows",
    "EmptyStreamError",
    "FileSink",
    "FileSource",
    "Flow",
    "Framing",
    "GraphBuilder",
    "GraphError",
    "HoppingWindows",
    "InPort",
    "Interleave",
    "JoinWindows",
    "Keep",
    "KeyState",
    "Keyed",
    "KillSwitch",
    "KillSwitches",
    "LateDataError",
    "LateRecord",
    "LoopClock",
    "MemoryStore",
    "Merge",
    "MergePreferred",
    "MergeSorted",
    "MetricsRegistry",
    "MetricsServer",
    "NativeExtensionWarning",
    "Node",
    "OutPort",
    "Partition",
    "PullSourceLogic",
    "QueryableStore",
    "QueueClosedError",
    "RestartFlow",
    "RestartSettings",
    "RestartSink",
    "RestartSource",
    "RocksDBStore",
    "RunSettings",
    "RunnableGraph",
    "RunningGraph",
    "SessionWindows",
    "SharedKillSwitch",
    "Sink",
    "SinkLogic",
    "SinkQueue",
    "SlidingWindows",
    "Source",
    "SourceQueue",
    "Stage",
    "StageLogic",
    "StateEncodingError",
    "StateStore",
    "StoreTable",
    "StreamTimeoutError",
    "Supervision",
    "Table",
    "TableView",
    "Timer",
    "TooManySubstreamsError",
    "TumblingWindows",
    "Unzip",
    "UnzipWith",
    "Watermark",
    "WindowAssigner",
    "WindowResult",
    "Windowed",
    "Zip",
    "ZipWith",
    "is_late",
    "native_enabled",
    "run",
]
