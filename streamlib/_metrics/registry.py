"""The metrics registry: named metrics in Kafka Streams' style, read when asked.

Nothing here runs per element. A registry holds

* *operator meters*: one counter cell per operator name, which a fused island
  bumps once per chunk by the chunk's length (``process-total``); a rate
  (``process-rate``) is derived from two readings of the total;
* *collectors*: functions that yield :class:`Sample` s when the registry is
  read (a Kafka app reads its counters, lags and stores then).

Reading (:meth:`MetricsRegistry.samples`, :meth:`MetricsRegistry.value`) is the
only place that does work: the hot path only adds to ints. The Prometheus
bridge (``prometheus.py``) turns the same samples into metric families.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["counter", "gauge"]

#: Seconds of history behind every rate and windowed average/maximum.
RATE_WINDOW = 30.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading: a documented metric name, its labels and its value."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    kind: Kind = "gauge"
    help: str = ""

    def label(self, name: str) -> str | None:
        for k, v in self.labels:
            if k == name:
                return v
        return None


Collector = Callable[[], Iterable[Sample]]


def sample(name: str, value: float, kind: Kind = "gauge", help: str = "", **labels: object) -> Sample:
    """A :class:`Sample` with its labels given as keywords (values become strings)."""
    return Sample(name, tuple((k, str(v)) for k, v in labels.items()), float(value), kind, help)


class Rate:
    """Events per second over the last :data:`RATE_WINDOW` seconds, from readings of a running total.

    Each :meth:`read` records ``(now, total)``; the rate is the growth since the
    oldest reading still inside the window (before there is one: since creation).
    """

    __slots__ = ("history", "clock")

    def __init__(self, clock: Callable[[], float] = time.monotonic, since: float | None = None) -> None:
        self.clock = clock
        self.history: deque[tuple[float, float]] = deque([(clock() if since is None else since, 0.0)])

    def read(self, total: float) -> float:
        now = self.clock()
        history = self.history
        while len(history) > 1 and now - history[1][0] >= RATE_WINDOW:
            history.popleft()
        then, before = history[0]
        history.append((now, total))
        if len(history) > 64:  # many readings within the window: keep the oldest, thin the rest
            del history[1]
        elapsed = now - then
        return (total - before) / elapsed if elapsed > 0 else 0.0


class WindowedStat:
    """Average, maximum and count of the values recorded in the last :data:`RATE_WINDOW` seconds.

    Recorded once per commit or checkpoint (never per element).
    """

    __slots__ = ("values", "clock", "total_count")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.values: deque[tuple[float, float]] = deque()
        self.total_count = 0

    def record(self, value: float) -> None:
        self.values.append((self.clock(), value))
        self.total_count += 1
        if len(self.values) > 4096:
            self.values.popleft()

    def _recent(self) -> list[float]:
        cutoff = self.clock() - RATE_WINDOW
        values = self.values
        while values and values[0][0] < cutoff:
            values.popleft()
        return [v for _t, v in values]

    def avg(self) -> float | None:
        """Average over the window; None when nothing was recorded in it."""
        recent = self._recent()
        return sum(recent) / len(recent) if recent else None

    def max(self) -> float | None:
        recent = self._recent()
        return max(recent) if recent else None

    def min(self) -> float | None:
        recent = self._recent()
        return min(recent) if recent else None


class OperatorMeters:
    """Per operator name, a one-element list counting the elements it took in (``process-total``).

    Islands look their cells up once when they are built and then add each
    chunk's length: ``cells[i][0] += len(chunk)``. Operators with the same name
    (two ``map`` stages, or one operator in every partition of a Kafka app)
    share one cell, so the totals are per name and memory stays bounded.
    """

    __slots__ = ("cells", "created", "late")

    def __init__(self) -> None:
        self.cells: dict[str, list[int]] = {}
        #: When each cell was created (``time.monotonic``), where its rate starts.
        self.created: dict[str, float] = {}
        #: Per window operator name, the late elements it routed to its late output.
        self.late: dict[str, list[int]] = {}

    def cell(self, name: str) -> list[int]:
        c = self.cells.get(name)
        if c is None:
            c = self.cells[name] = [0]
            self.created[name] = time.monotonic()
        return c

    def late_cell(self, name: str) -> list[int]:
        c = self.late.get(name)
        if c is None:
            c = self.late[name] = [0]
        return c

    def totals(self) -> dict[str, int]:
        return {name: c[0] for name, c in self.cells.items()}


@dataclass
class MetricsRegistry:
    """The metrics of one or more runs, by the names of the table in ``docs/operations.md``.

    Pass it to ``RunnableGraph.run(metrics=registry)`` to count a plain run's
    operators; a ``KafkaApp`` run has its own (``control.registry``). Read it with
    :meth:`samples`, :meth:`value` or :meth:`values`; serve it over HTTP with
    :class:`MetricsServer`; ``registry.prometheus()`` is a ``prometheus_client``
    collector for an existing Prometheus registry.

    >>> registry = MetricsRegistry()
    >>> await Source.from_iterable(range(10)).map(str).run_with(Sink.ignore(), metrics=registry)  # doctest: +SKIP
    >>> registry.value("process-total", operator="map")
    10.0
    """

    operators: OperatorMeters = field(default_factory=OperatorMeters)
    collectors: list[Collector] = field(default_factory=list)
    _rates: dict[str, Rate] = field(default_factory=dict, repr=False)

    def add_collector(self, collector: Collector) -> None:
        """Call ``collector()`` at every read; it yields :class:`Sample` s."""
        self.collectors.append(collector)

    def remove_collector(self, collector: Collector) -> None:
        if collector in self.collectors:
            self.collectors.remove(collector)

    def samples(self) -> list[Sample]:
        """Every metric's current value (this is where rates and store sizes are computed)."""
        out = list(self._operator_samples())
        for collector in list(self.collectors):
            out.extend(collector())
        return out

    def _operator_samples(self) -> Iterator[Sample]:
        for name, total in sorted(self.operators.totals().items()):
            rate = self._rates.get(name)
            if rate is None:
                rate = self._rates[name] = Rate(since=self.operators.created.get(name))
            yield sample("process-total", total, "counter", "Elements an operator took in", operator=name)
            yield sample("process-rate", rate.read(total), "gauge",
                         f"Elements per second an operator took in (last {RATE_WINDOW:.0f} s)", operator=name)
        for name, cell in sorted(self.operators.late.items()):
            yield sample("late-records-total", cell[0], "counter",
                         "Late elements a window operator sent to its late output", operator=name)

    def values(self, name: str) -> list[Sample]:
        """The samples of metric ``name`` (one per label set)."""
        return [s for s in self.samples() if s.name == name]

    def value(self, name: str, **labels: object) -> float | None:
        """The value of ``name`` whose labels include ``labels`` (summed over the others); None if absent."""
        want = {k: str(v) for k, v in labels.items()}
        found = [s.value for s in self.samples() if s.name == name and all(s.label(k) == v for k, v in want.items())]
        if not found:
            return None
        return sum(found)

    def names(self) -> list[str]:
        """The names of the metrics that have a value now."""
        return sorted({s.name for s in self.samples()})

    def prometheus(self) -> object:
        """A ``prometheus_client`` collector over this registry (needs ``streamlib[prometheus]``)."""
        from .prometheus import PrometheusCollector

        return PrometheusCollector(self)
