"""SubFlow: operators applied to every substream of ``group_by`` / ``split_when`` / ``split_after``.

A :class:`SubFlow` accumulates a Flow blueprint that each substream runs. Any
Flow operator works on it (``sub.map(f)``, ``sub.fold(...)``, ``sub.via(flow)``)
and returns a new SubFlow; ``merge_substreams()`` (or ``concat_substreams()``,
``merge_substreams_with_parallelism(n)``) closes it into an ordinary Source or
Flow of the parent's kind, keeping the parent's materialized value.

>>> counts = (Source.from_iterable(words)
...     .group_by(10_000, lambda w: w)
...     .fold(0, lambda n, _w: n + 1)
...     .merge_substreams())
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .._ops.substreams import Splitter, Substreams
from .flow import Flow
from .keep import Keep
from .module import Module

Out = TypeVar("Out")
P = TypeVar("P")
T = TypeVar("T")

#: Flow methods that are not operators and so do not exist on a SubFlow.
_NOT_OPERATORS = frozenset(
    {"to", "to_mat", "via_mat", "map_materialized_value", "describe", "identity", "from_sink_and_source"}
)


class SubFlow(Generic[Out, P]):
    """A stream of substreams: each operator applies to every substream.

    ``P`` is what merging gives back: a Source or a Flow, like the blueprint
    ``group_by`` was called on.
    """

    __slots__ = ("_parent", "_splitter", "_flow")

    def __init__(self, parent: Any, splitter: Splitter, flow: Flow[Any, Out, Any] | None = None) -> None:
        self._parent = parent
        self._splitter = splitter
        self._flow: Flow[Any, Out, Any] = flow if flow is not None else Flow()

    def via(self, flow: Flow[Out, T, Any]) -> SubFlow[T, P]:
        """Append ``flow`` to every substream."""
        return SubFlow(self._parent, self._splitter, self._flow.via(flow))

    def merge_substreams(self) -> P:
        """Merge the substreams' elements as they come, all substreams running at once.

        Emits when any substream emits; backpressures when downstream does (a
        blocked substream in turn blocks the split); completes when upstream and
        every substream completed; fails when upstream or a substream fails.
        """
        return self._close(2**62)

    def merge_substreams_with_parallelism(self, parallelism: int) -> P:
        """Like ``merge_substreams``, with at most ``parallelism`` substreams running at once.

        Opening another substream waits until one completes; with ``group_by``
        and more live keys than ``parallelism`` this waits for good (as in Akka).
        """
        return self._close(parallelism)

    def concat_substreams(self) -> P:
        """One substream at a time, each to its end, in the order they opened (for ``split_*``)."""
        return self._close(1)

    def _close(self, parallelism: int) -> P:
        stage = Substreams(self._splitter, self._flow._module, parallelism)
        return self._parent._via_module(Module.of(stage), Keep.left)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Callable[..., SubFlow[Any, P]]:
        if name.startswith("_") or name in _NOT_OPERATORS or not hasattr(Flow, name):
            raise AttributeError(f"SubFlow has no operator {name!r}")
        method = getattr(self._flow, name)

        def apply(*args: Any, **kwargs: Any) -> SubFlow[Any, P]:
            result = method(*args, **kwargs)
            if not isinstance(result, Flow):
                raise TypeError(f"{name} is not available inside substreams (it does not give a Flow)")
            return SubFlow(self._parent, self._splitter, result)

        apply.__name__ = name
        apply.__doc__ = method.__doc__
        return apply

    def __dir__(self) -> list[str]:
        ops = [n for n in dir(Flow) if not n.startswith("_") and n not in _NOT_OPERATORS]
        return sorted({*ops, "merge_substreams", "merge_substreams_with_parallelism", "concat_substreams"})

    def __repr__(self) -> str:
        inner = " -> ".join(s.stage_name() for s in self._flow._module.stages if s.stage_name() != "identity")
        return f"SubFlow({self._splitter.kind}: {inner or 'identity'})"
