"""``Table[K, V]``: the blueprint of a table (latest value per key) and its operations.

A table is made from a stream of updates (``keyed.to_table()``,
``Table.from_source``) or from an aggregation (``keyed.aggregate``). Inside, it
is a ``Source`` of :class:`Change` whose materialized value is the pair
``(upstream value, TableView)``; ``to_stream()`` and ``to_stream_mat()`` pick
from that pair. ``map_values`` and ``filter`` append a stateless transform of
changes (each change carries the old value, so a derived table needs no state of
its own) and derive the view. Joins live in ``join.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from .change import Change, HistoryChange
from .view import FilteredView, MappedView, TableView

if TYPE_CHECKING:
    from .._dsl.source import Source
    from .._state.store import StateStore

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")
U = TypeVar("U")
V2 = TypeVar("V2")
K2 = TypeVar("K2")
R = TypeVar("R")
M3 = TypeVar("M3")


def _history_ms(history: int | timedelta | None, what: str) -> int | None:
    from .._time.durations import event_ms

    return None if history is None else event_ms(history, f"{what}(history=)")


def table_of(
    source: Any,
    key_of: Callable[[Any], Any],
    value_of: Callable[[Any], Any] | None,
    *,
    history: int | timedelta | None,
    store: StateStore | None,
    value_type: Any,
    timestamp: Callable[[Any], int] | str | int | None,
    name: str | None,
    what: str,
    aggregate: tuple[Any, Callable[[Any, Any], Any]] | None = None,
) -> Table[Any, Any]:
    """A :class:`Table` over ``source`` (a Source) with one :class:`TableStage` appended."""
    from .._dsl.keep import Keep
    from .._dsl.keyed import default_store, timestamp_of
    from .._dsl.module import Module
    from .._dsl.source import Source
    from .stage import TableStage

    if not isinstance(source, Source):
        raise TypeError(
            f"{what} needs a Source (a table is read from a stream that starts here), got {type(source).__name__}; "
            "build the table from the Source and join the Flow's stream with it"
        )
    ts_of = timestamp_of(source, timestamp, what)
    history_ms = _history_ms(history, what)
    stage = TableStage(
        key_of, value_of, ts_of, default_store(source, store, what), history_ms, value_type, name, aggregate
    )
    out = source._via_module(Module.of(stage), Keep.both)
    module = out._module
    stage.check_blueprint(module.stages, module.edges, module.outlet[0])
    return Table(out, history_ms, ts_of is not None, stage.name, value_type)


class Table(Generic[K, V]):
    """The latest value per key of a stream of updates, as a blueprint.

    Made with ``source.key_by(k).to_table()``, ``Table.from_source(source,
    key=, value=)`` or ``source.key_by(k).aggregate(initial, add)``. An update
    whose value is None is a tombstone: it deletes the key. State lives in a
    state store (``store=``, or the store of an upstream ``checkpointed``),
    checkpointed with every other operator and changelogged in a Kafka app.

    ``to_stream()`` gives the table's changes as :class:`Change` ``(key, old,
    new, timestamp)``, one per change of a key's latest value, in update order;
    ``to_stream_mat(Keep.right)`` also gives a :class:`TableView` for local
    reads (``get``, ``as_of``) while it runs. ``history=`` keeps older versions
    for that long in event time, for ``as_of`` reads and stream-table joins as
    of an element's time.

    >>> prices = Source.from_iterable(updates).key_by("sku").to_table(value="price")
    >>> await prices.to_stream().run_with(Sink.collect())
    [Change(key='a', old=None, new=3, timestamp=None), ...]
    """

    __slots__ = ("_source", "history_ms", "timed", "name", "value_type")

    def __init__(
        self,
        source: Source[Change[K, V], tuple[Any, TableView[K, V]]],
        history_ms: int | None,
        timed: bool,
        name: str,
        value_type: Any = None,
    ) -> None:
        self._source = source
        #: How long older versions are kept (event-time ms), None when the table keeps only the latest.
        self.history_ms = history_ms
        #: True when its updates carry event time.
        self.timed = timed
        self.name = name
        #: The type restored values are decoded to (msgspec), None for builtins.
        self.value_type = value_type

    @property
    def versioned(self) -> bool:
        """True when the table keeps older versions (made with ``history=``)."""
        return self.history_ms is not None

    # -- making tables ---------------------------------------------------------------

    @overload
    @staticmethod
    def from_source(
        source: Source[T, Any],
        key: Callable[[T], K],
        value: Callable[[T], V | None],
        *,
        history: int | timedelta | None = None,
        store: StateStore | None = None,
        value_type: Any = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Table[K, V]: ...
    @overload
    @staticmethod
    def from_source(
        source: Source[T, Any],
        key: Callable[[T], K],
        value: None = None,
        *,
        history: int | timedelta | None = None,
        store: StateStore | None = None,
        value_type: Any = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Table[K, T]: ...
    @overload
    @staticmethod
    def from_source(
        source: Source[T, Any],
        key: Callable[[T], Any] | str | int,
        value: Callable[[T], Any] | str | int | None = None,
        *,
        history: int | timedelta | None = None,
        store: StateStore | None = None,
        value_type: Any = None,
        timestamp: Callable[[T], int] | str | int | None = None,
        name: str | None = None,
    ) -> Table[Any, Any]: ...
    @staticmethod
    def from_source(
        source: Source[Any, Any],
        key: Callable[[Any], Any] | str | int,
        value: Callable[[Any], Any] | str | int | None = None,
        *,
        history: int | timedelta | None = None,
        store: StateStore | None = None,
        value_type: Any = None,
        timestamp: Callable[[Any], int] | str | int | None = None,
        name: str | None = None,
    ) -> Table[Any, Any]:
        """A table of the latest ``value(element)`` (default: the element) per ``key(element)``.

        ``key``/``value`` may be fields, as in ``key_by``. A None value deletes
        the key. ``history`` (int ms or timedelta of event time) keeps older
        versions that long (needs event time: a ``with_timestamps`` upstream or
        ``timestamp=``). ``store``: where the table is checkpointed (default:
        the store of an upstream ``checkpointed``, else memory only).
        ``value_type`` decodes values restored from a store (msgspec types).

        >>> Table.from_source(Source.from_iterable([("a", 1), ("b", 2), ("a", None)]), key=0, value=1)
        """
        from .._dsl.fields import extractor

        return table_of(
            source, extractor(key, "Table.from_source(key=)"),
            None if value is None else extractor(value, "Table.from_source(value=)"),
            history=history, store=store, value_type=value_type, timestamp=timestamp, name=name,
            what="Table.from_source",
        )  # fmt: skip

    # -- reading -----------------------------------------------------------------------

    def to_stream(self) -> Source[Change[K, V], Any]:
        """The table's changes, as :class:`Change` ``(key, old, new, timestamp)``; keeps the upstream materialized value.

        One change per change of a key's latest value, in the order the updates
        arrived: ``old`` None for an insert, ``new`` None for a delete. Carries
        the upstream watermarks and barriers.

        >>> await table.to_stream().map(lambda c: (c.key, c.new)).run_with(Sink.collect())
        """
        return self._changes().map_materialized_value(lambda m: m[0])

    def _changes(self) -> Source[Change[K, V], tuple[Any, TableView[K, V]]]:
        if self.history_ms is None:
            return self._source
        return self._source.filter(lambda c: type(c) is not HistoryChange)

    def to_stream_mat(self, combine: Callable[[Any, TableView[K, V]], M3]) -> Source[Change[K, V], M3]:
        """``to_stream()``, with the materialized value ``combine(upstream value, view)``.

        ``Keep.right`` gives the :class:`TableView` for local reads of the
        running table; ``Keep.both`` the pair.

        >>> view, done = table.to_stream_mat(Keep.right).to_mat(Sink.ignore(), Keep.both).run()
        >>> await done; view.get("alice")
        """
        return self._changes().map_materialized_value(lambda m: combine(m[0], m[1]))

    # -- derived tables -------------------------------------------------------------------

    def _derived(
        self, source: Any, view_of: Callable[[TableView[Any, Any]], TableView[Any, Any]], name: str, value_type: Any
    ) -> Any:
        mapped = source.map_materialized_value(lambda m: (m[0], view_of(m[1])))
        return Table(mapped, self.history_ms, self.timed, name, value_type)

    def map_values(self, f: Callable[[V], U]) -> Table[K, U]:
        """The table of ``f(value)`` per key; ``f`` must be pure (it also recomputes old values).

        A change ``(k, old, new)`` becomes ``(k, f(old), f(new))`` (None stays
        None); reads through the view call ``f`` on the parent's value.

        >>> totals = orders_table.map_values(lambda o: o.quantity * o.price)
        """
        if not callable(f):
            raise TypeError(f"Table.map_values(f) needs a function of the value, got {f!r}")

        def change(c: Change[Any, Any]) -> Change[Any, Any]:
            old = None if c.old is None else f(c.old)
            return type(c)(c.key, old, None if c.new is None else f(c.new), c.timestamp)

        mapped = self._source.map(change)
        return self._derived(mapped, lambda v: MappedView(v, f), f"{self.name}.map_values", None)  # type: ignore[no-any-return]

    def filter(self, p: Callable[[V], object]) -> Table[K, V]:
        """The table of the rows whose value satisfies ``p``; a row that stops satisfying it is deleted.

        A change ``(k, old, new)`` becomes ``(k, old if p(old), new if p(new))``
        and is dropped when both sides are then None, so an update that makes
        ``p`` false emits a delete downstream.

        >>> big = accounts.filter(lambda a: a.balance > 1_000)
        """
        if not callable(p):
            raise TypeError(f"Table.filter(p) needs a predicate of the value, got {p!r}")

        def change(c: Change[Any, Any]) -> Change[Any, Any] | None:
            old = c.old if c.old is not None and p(c.old) else None
            new = c.new if c.new is not None and p(c.new) else None
            if type(c) is HistoryChange:
                return HistoryChange(c.key, None, new, c.timestamp)  # filtered out: a tombstone version
            if old is None and new is None:
                return None
            return Change(c.key, old, new, c.timestamp)

        kept = self._source.collect(change)
        return self._derived(kept, lambda v: FilteredView(v, p), f"{self.name}.filter", self.value_type)  # type: ignore[no-any-return]

    # -- table-table join ------------------------------------------------------------------

    @overload
    def join(
        self, other: Table[K, V2], combine: Callable[[V, V2], R], how: Literal["inner"] = "inner", *, name: str | None = None
    ) -> Table[K, R]: ...
    @overload
    def join(
        self, other: Table[K, V2], combine: Callable[[V, V2 | None], R], how: Literal["left"], *, name: str | None = None
    ) -> Table[K, R]: ...
    @overload
    def join(
        self,
        other: Table[K, V2],
        combine: Callable[[V | None, V2 | None], R],
        how: Literal["outer"],
        *,
        name: str | None = None,
    ) -> Table[K, R]: ...
    def join(
        self, other: Table[K, Any], combine: Callable[[Any, Any], Any], how: str = "inner", *, name: str | None = None
    ) -> Table[K, Any]:
        """The table joining both tables' rows of each key: ``combine(mine, theirs)``.

        ``how``: ``"inner"`` (a row when both have the key), ``"left"`` (when
        this one has it; ``theirs`` may be None) or ``"outer"`` (when either
        has it; either may be None). A change on either side emits the new
        joined row, and a delete when the joined row disappears. With event
        time on both sides the changes of both are applied in event-time order
        as far as the watermarks of both allow (see docs/joins.md).

        >>> enriched = orders.join(customers, lambda o, c: (o, c.name), how="left")
        """
        from .join import table_table_join

        return table_table_join(self, other, combine, how, name)

    @overload
    def join_on(
        self,
        other: Table[K2, V2],
        fk: Callable[[V], K2] | str | int,
        combine: Callable[[V, V2], R],
        how: Literal["inner"] = "inner",
        *,
        name: str | None = None,
    ) -> Table[K, R]: ...
    @overload
    def join_on(
        self,
        other: Table[K2, V2],
        fk: Callable[[V], K2] | str | int,
        combine: Callable[[V, V2 | None], R],
        how: Literal["left"],
        *,
        name: str | None = None,
    ) -> Table[K, R]: ...
    def join_on(
        self,
        other: Table[Any, Any],
        fk: Callable[[Any], Any] | str | int,
        combine: Callable[[Any, Any], Any],
        how: str = "inner",
        *,
        name: str | None = None,
    ) -> Table[K, Any]:
        """Foreign-key join: each row ``(k, v)`` with ``other``'s row of key ``fk(v)``, as ``combine(v, theirs)``.

        The result has this table's keys. ``how="inner"``: a row while the
        referenced row exists; ``"left"``: a row for every row here (``theirs``
        may be None). A change here re-joins that row (a changed ``fk``
        replaces the old result by the new one, or deletes it); a change of a
        row of ``other`` re-joins every row naming it. With event time on both
        sides, changes are applied in event-time order as in ``join``.

        >>> with_customer = orders.join_on(customers, fk="customer_id", combine=lambda o, c: (o.id, c.name))
        """
        from .join import foreign_key_join

        return foreign_key_join(self, other, fk, combine, how, name)

    def __repr__(self) -> str:
        return f"Table({self.name}{', versioned' if self.versioned else ''})"
