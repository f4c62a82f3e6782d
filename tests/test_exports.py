"""The public surface: adding or removing a public name means updating this file."""

from __future__ import annotations

import importlib
import types

import pytest

import streamlib
import streamlib.cep
import streamlib.testing

STREAMLIB = [
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

TESTING = [
    "SinkProbe",
    "SourceProbe",
    "TestSink",
    "TestSource",
    "VirtualClock",
    "assert_no_running_graphs",
    "leaked_tasks",
    "no_leaked_tasks",
    "settle",
    "source_from_chunks",
    "split_at",
]

CEP = [
    "LateEventError",
    "Match",
    "Pattern",
    "SkipStrategy",
    "Timeout",
    "no_skip",
    "skip_past_last_event",
    "skip_to_first",
    "skip_to_next",
]

MODULES = [(streamlib, STREAMLIB), (streamlib.testing, TESTING), (streamlib.cep, CEP)]


@pytest.mark.parametrize(("module", "expected"), MODULES, ids=["streamlib", "streamlib.testing", "streamlib.cep"])
def test_all_is_exactly_the_expected_sorted_names(module: types.ModuleType, expected: list[str]) -> None:
    assert expected == sorted(set(expected)), "keep the expected list sorted and free of duplicates"
    assert module.__all__ == sorted(module.__all__), "keep __all__ sorted"
    missing = sorted(set(expected) - set(module.__all__))
    extra = sorted(set(module.__all__) - set(expected))
    assert (missing, extra) == ([], []), "update __all__ or this test"


@pytest.mark.parametrize(("module", "expected"), MODULES, ids=["streamlib", "streamlib.testing", "streamlib.cep"])
def test_every_exported_name_is_importable(module: types.ModuleType, expected: list[str]) -> None:
    fresh = importlib.import_module(module.__name__)
    for name in fresh.__all__:
        assert getattr(fresh, name, None) is not None, f"{module.__name__}.{name} is listed but missing"
    namespace: dict[str, object] = {}
    exec(f"from {module.__name__} import *", namespace)  # noqa: S102 - the star import is what is tested
    assert set(fresh.__all__) <= set(namespace)


@pytest.mark.parametrize(("module", "expected"), MODULES, ids=["streamlib", "streamlib.testing", "streamlib.cep"])
def test_no_public_class_or_function_is_left_out_of_all(module: types.ModuleType, expected: list[str]) -> None:
    """A public class or function defined in the package and reachable from the module is exported."""
    unexported = [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and isinstance(value, (type, types.FunctionType))
        and getattr(value, "__module__", "").startswith("streamlib")
        and name not in module.__all__
    ]
    assert unexported == []


def test_every_exported_class_and_function_has_a_docstring() -> None:
    undocumented = [
        f"{module.__name__}.{name}"
        for module, _ in MODULES
        for name in module.__all__
        if isinstance(getattr(module, name), (type, types.FunctionType)) and not getattr(module, name).__doc__
    ]
    assert undocumented == []


def test_the_version_is_a_string() -> None:
    assert isinstance(streamlib.__version__, str) and streamlib.__version__.count(".") == 2
