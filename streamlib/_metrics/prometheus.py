"""The Prometheus bridge: a ``prometheus_client`` collector over a :class:`MetricsRegistry`.

Documented names (``process-total``) become Prometheus names with the prefix
``streamlib_`` and underscores (``streamlib_process_total``); counters get
``prometheus_client``'s ``_total`` suffix (a name already ending in
``-total`` keeps one). The exposition format is ``prometheus_client``'s own
(``generate_latest``), never written here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .registry import MetricsRegistry, Sample

PREFIX = "streamlib_"


def _import() -> Any:
    try:
        import prometheus_client
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            "serving metrics in the Prometheus format needs prometheus_client: "
            "pip install 'streamlib[prometheus]'"
        ) from error
    return prometheus_client


def prometheus_name(name: str) -> str:
    """``process-total`` -> ``streamlib_process_total``."""
    return PREFIX + name.replace("-", "_").replace(".", "_")


class PrometheusCollector:
    """Yields one metric family per documented metric, read from the registry at each scrape."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self.registry = registry

    def describe(self) -> list[Any]:
        return []  # unknown until read: the collector is never checked for clashes up front

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        families: dict[str, tuple[Sample, list[Sample]]] = {}
        for s in self.registry.samples():
            entry = families.get(s.name)
            if entry is None:
                families[s.name] = (s, [s])
            else:
                entry[1].append(s)
        for name, (first, items) in families.items():
            labels = [k for k, _v in first.labels]
            family_type = CounterMetricFamily if first.kind == "counter" else GaugeMetricFamily
            family = family_type(prometheus_name(name), first.help or name, labels=labels)
            for s in items:
                family.add_metric([s.label(k) or "" for k in labels], s.value)
            yield family


def generate(registry: MetricsRegistry) -> tuple[bytes, str]:
    """The registry in Prometheus' text format and its content type (``prometheus_client.generate_latest``)."""
    prometheus_client = _import()
    target = prometheus_client.CollectorRegistry(auto_describe=False)
    target.register(PrometheusCollector(registry))
    return prometheus_client.generate_latest(target), prometheus_client.CONTENT_TYPE_LATEST
