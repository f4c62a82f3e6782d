"""Checkpoints across the stages of one run.

Flow of one checkpoint:

1. A *barrier source* (``checkpointed(store, every=...)``; later a Kafka
   source) emits ``Barrier(id)`` in-band after a chunk and stages the position
   it has reached as checkpoint meta (``{"position:<name>": n}``; a Kafka source
   stages its offsets the same way).
2. Each stateful operator using the same store stages its dirty state when the
   barrier reaches it (``stage(id, name, table, writes)``) and forwards the
   barrier. Staged writes are held here, per checkpoint id, so an operator that
   is already past barrier ``id + 1`` cannot leak later state into checkpoint
   ``id``.
3. When every member of the run has staged ``id``, the staged writes go into
   their tables and ``store.checkpoint(id, meta)`` commits them with the meta in
   one atomic batch. Members then hear ``on_committed(id)``.

On start every member reads the store's last checkpoint: operators load their
tables, the barrier source resumes after its checkpointed position. Elements
emitted to sinks after the last checkpoint are emitted again after a crash
(at-least-once output); the state itself is exactly-once.

One :class:`RunCheckpoints` exists per (store, run); members join while the run
materializes and leave when their stage ends.

Two checks make silent loss impossible to build by accident; each runs when the
blueprint is built if its source is known then, else when it materializes
(``check_blueprint``, called by the materializer for every stage that has one):

* ``checkpointed`` resumes by skipping what its last checkpoint covers, so every
  source upstream of it must be *replayable*: a source stage with
  ``replayable = True`` yields the same elements in the same order on every run
  (``from_iterable`` over a collection, ``from_iterator``, ``unfold``,
  ``FileSource``). A live source (``queue``, ``tick``, a publisher, an async
  iterable) is an error, unless ``checkpointed(..., replayable=False)`` says to
  restore state and skip nothing, or ``replayable=True`` vouches for the source.
* A stateful stage with a store (:class:`StatefulStage`) writes it only at
  barriers, so it needs a barrier source upstream: a ``checkpointed`` stage or a
  stage with ``emits_barriers = True`` (a Kafka app's partition source).
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from .._runtime.context import RunContext
from .._runtime.signals import Barrier, Signal
from ..stage import Stage, StageLogic
from .store import Checkpoint, StateStore, Writes

#: Live coordinators: store -> {id(run context): coordinator}.
_RUNS: weakref.WeakKeyDictionary[Any, dict[int, RunCheckpoints]] = weakref.WeakKeyDictionary()


class _Staged:
    __slots__ = ("members", "writes", "meta")

    def __init__(self) -> None:
        self.members: set[str] = set()
        self.writes: list[tuple[str, Writes]] = []
        self.meta: dict[str, Any] = {}


class RunCheckpoints:
    """Collects one run's staged state per checkpoint id and commits complete checkpoints."""

    def __init__(self, store: StateStore, key: int) -> None:
        self.store = store
        self.key = key
        self.members: list[str] = []
        self.live: set[str] = set()
        self.finished: set[str] = set()
        self.staged: dict[int, _Staged] = {}
        self.listeners: dict[str, Callable[[int], None]] = {}
        self.ctx: RunContext | None = None
        self.start: Checkpoint | None = store.restore()

    def join(self, base: str, on_committed: Callable[[int], None] | None = None) -> str:
        """Register a member; returns its name, unique in this run (``base``, ``base-2``, ...)."""
        name = base
        k = 2
        while name in self.members:
            name = f"{base}-{k}"
            k += 1
        self.members.append(name)
        self.live.add(name)
        if on_committed is not None:
            self.listeners[name] = on_committed
        return name

    def stage(
        self,
        checkpoint_id: int,
        member: str,
        table: str | None = None,
        writes: Writes | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """``member`` has reached barrier ``checkpoint_id`` with these writes and meta."""
        if self.start is not None and checkpoint_id <= self.start.id:
            raise RuntimeError(
                f"{member}: barrier {checkpoint_id} is not after the restored checkpoint {self.start.id} "
                f"of {self.store!r}; one barrier source per store and run"
            )
        st = self.staged.get(checkpoint_id)
        if st is None:
            st = self.staged[checkpoint_id] = _Staged()
        if member in st.members:
            raise RuntimeError(f"{member} staged checkpoint {checkpoint_id} twice")
        st.members.add(member)
        if writes and table is not None:
            st.writes.append((table, writes))
        if meta:
            st.meta.update(meta)
        if self._complete(st):
            self._commit(checkpoint_id, st)

    def _complete(self, st: _Staged) -> bool:
        """Every member staged it, or finished and so will stage nothing more."""
        if len(st.members) == len(self.members):
            return True
        return all(m in st.members or m in self.finished for m in self.members)

    def _commit(self, checkpoint_id: int, st: _Staged) -> None:
        del self.staged[checkpoint_id]
        store = self.store
        for table, writes in st.writes:
            store.table(table).write(writes)
        last = store.last_checkpoint()
        meta = dict(last.meta) if last is not None else {}
        meta.update(st.meta)
        store.checkpoint(checkpoint_id, meta)
        for listener in list(self.listeners.values()):
            listener(checkpoint_id)

    def finish(self, member: str) -> None:
        """``member`` ended normally: it stages nothing more, so later checkpoints do not wait for it.

        A barrier source whose input ended (one of two inputs of a join) thus
        lets the other input's checkpoints commit. A member that fails or is
        cancelled only :meth:`leave` s: no checkpoint after that commits.
        """
        if member not in self.live:
            return
        self.finished.add(member)
        for cid in sorted(self.staged):
            st = self.staged[cid]
            if not self._complete(st):
                break
            self._commit(cid, st)
        self.leave(member)

    def leave(self, member: str) -> None:
        """``member``'s stage ended (finished, failed or cancelled)."""
        if member not in self.live:
            return
        self.live.discard(member)
        self.listeners.pop(member, None)
        if not self.live:
            runs = _RUNS.get(self.store)
            if runs is not None:
                runs.pop(self.key, None)
            release = getattr(self.store, "_release", None)
            if release is not None:
                release()


def attach(store: StateStore, ctx: RunContext) -> RunCheckpoints:
    """The checkpoint coordinator of ``store`` for the run of ``ctx`` (created on first use).

    Stores with ``_acquire``/``_release`` (both built-in ones) are told when the
    first member of a run joins and when the last one leaves; a RocksDBStore
    closes its database then.
    """
    if not isinstance(store, StateStore):
        raise TypeError(f"expected a state store (MemoryStore, RocksDBStore or a StateStore), got {store!r}")
    runs = _RUNS.get(store)
    if runs is None:
        runs = _RUNS[store] = {}
    key = id(ctx)
    run = runs.get(key)
    if run is None:
        acquire = getattr(store, "_acquire", None)
        if acquire is not None:
            acquire()
        try:
            run = RunCheckpoints(store, key)
        except BaseException:
            release = getattr(store, "_release", None)
            if release is not None:
                release()
            raise
        run.ctx = ctx  # keeps id(ctx) unique while the run lives
        runs[key] = run
    return run


# -- build-time checks ----------------------------------------------------------


def _upstream(stages: Sequence[Stage], edges: Sequence[Any], index: int) -> tuple[list[int], bool]:
    """The stages upstream of ``index`` (nearest first) and whether a path ends at an open input."""
    preds: dict[int, list[int]] = {}
    for e in edges:
        preds.setdefault(e.dst, []).append(e.src)
    seen = {index}
    queue = deque([index])
    found: list[int] = []
    open_input = False
    while queue:
        i = queue.popleft()
        into = preds.get(i, ())
        if len(into) < stages[i].inputs:
            open_input = True  # a Flow's inlet: its source is not known yet
        for j in into:
            if j not in seen:
                seen.add(j)
                found.append(j)
                queue.append(j)
    return found, open_input


def require_barriers(
    store: StateStore | None, stages: Sequence[Stage], edges: Sequence[Any], index: int, what: str | None = None
) -> None:
    """Fail when stage ``index`` (``what``: a stage to be added after it) has a store but nothing upstream emits barriers.

    A store is written only at checkpoints, so such a store would never be
    written. Undecided while a path upstream ends at an open input.
    """
    if store is None:
        return
    upstream, open_input = _upstream(stages, edges, index)
    if what is not None:
        upstream.append(index)
    if open_input or any(getattr(stages[j], "emits_barriers", False) for j in upstream):
        return
    raise ValueError(
        f"{what or stages[index].stage_name()}: store={store!r} would never be written: a store is written only "
        "at checkpoints, and nothing upstream emits them. Add .checkpointed(store, every=N) (or "
        "interval=seconds) after the source, or drop store= to keep the state in memory for this run"
    )


class StatefulStage(Stage):
    """A stage whose state goes to ``store`` at checkpoints; it needs a barrier source upstream."""

    store: StateStore | None = None

    def check_blueprint(self, stages: Sequence[Stage], edges: Sequence[Any], index: int) -> None:
        require_barriers(self.store, stages, edges, index)


# -- the barrier source ---------------------------------------------------------


class Checkpointed(Stage):
    """Injects checkpoint barriers every ``every`` elements or ``interval`` seconds; resumes after a restart.

    ``replayable``: None (the default) requires every source upstream to be
    replayable and resumes by skipping what the last checkpoint covers; False
    skips nothing on restart (a live source: state is restored, elements not
    yet checkpointed at a crash are not seen again); True vouches for a source
    that replays without saying so.
    """

    emits_barriers: ClassVar[bool] = True

    def __init__(
        self,
        store: StateStore,
        every: int | None,
        interval: float | None,
        name: str | None,
        replayable: bool | None = None,
    ) -> None:
        if every is None and interval is None:
            raise ValueError("checkpointed(store, ...) needs every= (elements) or interval= (seconds)")
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"checkpointed(every=) is a positive number of elements, got {every!r}")
        if interval is not None and interval <= 0:
            raise ValueError(f"checkpointed(interval=) is a positive number of seconds, got {interval!r}")
        if not isinstance(store, StateStore):
            raise TypeError(f"checkpointed(store) needs a state store (MemoryStore, RocksDBStore), got {store!r}")
        if replayable not in (None, True, False):
            raise TypeError(f"checkpointed(replayable=) is None, True or False, got {replayable!r}")
        self.store = store
        self.every = every
        self.interval = interval
        self.name = name or "checkpointed"
        self.replayable = replayable

    def check_blueprint(self, stages: Sequence[Stage], edges: Sequence[Any], index: int) -> None:
        """Fail when a source upstream does not replay its elements (see the class docstring)."""
        if self.replayable is not None:
            return
        upstream, _open = _upstream(stages, edges, index)
        for j in upstream:
            source = stages[j]
            if source.inputs == 0 and not getattr(source, "replayable", False):
                raise ValueError(
                    f"{self.name}: its upstream source '{source.stage_name()}' is not replayable. checkpointed "
                    "resumes after a restart by skipping the elements its last checkpoint covers, which would "
                    "drop new elements of this source instead. Put it after a source that yields the same "
                    "elements on every run (Source.from_iterable over a list or range, Source.from_iterator, "
                    "FileSource.lines); or pass checkpointed(..., replayable=False) to restore state and skip "
                    "nothing (elements not yet checkpointed at a crash are then not seen again); or "
                    "replayable=True if this source does yield the same elements on every run"
                )

    def materialize(self, ctx: RunContext) -> tuple[StageLogic, None]:
        run = attach(self.store, ctx)
        logic = CheckpointedLogic(run, run.join(self.name), self.every, self.interval, ctx, self.replayable is not False)
        return logic, None


class CheckpointedLogic(StageLogic):
    def __init__(
        self,
        run: RunCheckpoints,
        member: str,
        every: int | None,
        interval: float | None,
        ctx: RunContext,
        replays: bool = True,
    ) -> None:
        self.run = run
        self.member = member
        self.meta_key = f"position:{member}"
        self.every = every
        self.interval = interval
        self.clock = ctx.clock
        self.replays = replays
        self.skip = 0
        self.position = 0
        self.since = 0
        self.next_id = 1
        self.due = 0.0

    def on_start(self) -> list[Any]:
        cp = self.run.start
        if cp is not None:
            self.next_id = cp.id + 1
            self.position = int(cp.meta.get(self.meta_key, 0))
            if self.replays:
                self.skip = self.position  # the upstream yields these again: drop them
        if self.interval is not None:
            self.due = self.clock.now() + self.interval
        return []

    def on_chunk(self, chunk: list[Any]) -> list[Any]:
        if self.skip:
            n = len(chunk)
            if n <= self.skip:
                self.skip -= n
                return []
            chunk = chunk[self.skip :]
            self.skip = 0
        n = len(chunk)
        if not n:
            return chunk
        self.position += n
        self.since += n
        if self.every is not None and self.since >= self.every:
            self._barrier()
        elif self.interval is not None and self.clock.now() >= self.due:
            self._barrier()
        return chunk

    def _barrier(self) -> None:
        cid = self.next_id
        self.next_id += 1
        self.since = 0
        if self.interval is not None:
            self.due = self.clock.now() + self.interval
        self.emit_signal(Barrier(cid))
        self.run.stage(cid, self.member, meta={self.meta_key: self.position})

    def on_signal(self, signal: Signal) -> list[Any] | None:
        return None

    def on_finish(self) -> list[Any]:
        if self.skip:
            raise RuntimeError(
                f"{self.stage_name}: the source ended after {self.position - self.skip} elements but the "
                f"checkpoint being resumed is at position {self.position}; the upstream of a "
                "checkpointed stage must replay the same elements on every run"
            )
        self._barrier()
        self.run.finish(self.member)
        return []

    def on_cancel(self) -> None:
        self.run.leave(self.member)

    def on_failure(self, error: BaseException) -> None:
        self.run.leave(self.member)
