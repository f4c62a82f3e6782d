"""Metrics (a registry in Kafka Streams' names, a Prometheus bridge), the operations HTTP port and state queries."""

from .http import MetricsServer
from .query import QueryableStore, table_stats
from .registry import MetricsRegistry, OperatorMeters, Sample, WindowedStat

__all__ = ["MetricsRegistry", "MetricsServer", "OperatorMeters", "QueryableStore", "Sample", "WindowedStat", "table_stats"]
