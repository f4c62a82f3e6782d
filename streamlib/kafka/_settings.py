"""Settings for Kafka clients: immutable wrappers around aiokafka's keyword arguments.

:class:`ConsumerSettings` and :class:`ProducerSettings` hold what every client
needs (bootstrap servers, client id, :class:`Security`), the serdes, and the
options streamlib itself reads. Any other aiokafka option goes in
``properties``; its name is checked against aiokafka's constructor when the
settings are made, so a typo fails at once instead of when a stream starts.
Settings are frozen: ``with_*`` methods return changed copies.
"""

from __future__ import annotations

import dataclasses
import inspect
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from ._serde import BYTES, Serde, check_serde

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

OffsetReset = Literal["earliest", "latest"]
IsolationLevel = Literal["read_committed", "read_uncommitted"]


#: Retry backoff of transactional producers unless the settings say otherwise.
TRANSACTIONAL_RETRY_BACKOFF_MS = 5


@dataclass(frozen=True)
class DeadLetter:
    """Deserialization-error policy: send the undecodable record to ``topic``.

    The record keeps its key, value, timestamp and headers; headers
    ``streamlib.error``, ``streamlib.error.type``, ``streamlib.error.field`` and
    ``streamlib.source.topic/partition/offset`` say what went wrong and where.
    ``producer`` defaults to the consumer's servers and security.
    """

    topic: str
    producer: ProducerSettings | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.topic, str) or not self.topic:
            raise ValueError(f"DeadLetter needs a topic name, got {self.topic!r}")


#: What to do with a record whose key or value cannot be deserialized.
ErrorPolicy = Literal["fail", "skip"] | DeadLetter


@dataclass(frozen=True)
class Security:
    """How clients authenticate and encrypt: ``protocol`` is PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    sasl_mechanism: str = "PLAIN"
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = field(default=None, repr=False)
    sasl_oauth_token_provider: Any = None

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"security_protocol": self.protocol, "sasl_mechanism": self.sasl_mechanism}
        if self.ssl_context is not None:
            out["ssl_context"] = self.ssl_context
        if self.sasl_plain_username is not None:
            out["sasl_plain_username"] = self.sasl_plain_username
        if self.sasl_plain_password is not None:
            out["sasl_plain_password"] = self.sasl_plain_password
        if self.sasl_oauth_token_provider is not None:
            out["sasl_oauth_token_provider"] = self.sasl_oauth_token_provider
        return out


@cache
def _accepted(kind: str) -> frozenset[str]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    cls = AIOKafkaConsumer if kind == "consumer" else AIOKafkaProducer
    params = inspect.signature(cls.__init__).parameters
    return frozenset(n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n != "loop")


def _check_properties(kind: str, properties: Mapping[str, Any], managed: frozenset[str]) -> None:
    accepted = _accepted(kind)
    for name in properties:
        if name in managed:
            raise ValueError(f"{kind} property {name!r} is managed by streamlib; set it through the settings")
        if name not in accepted:
            raise ValueError(
                f"unknown aiokafka {kind} property {name!r} (known: {', '.join(sorted(accepted - managed))})"
            )


def _servers(value: str | list[str] | tuple[str, ...]) -> str | list[str]:
    if isinstance(value, str):
        if not value:
            raise ValueError("bootstrap_servers must not be empty")
        return value
    servers = list(value)
    if not servers or not all(isinstance(s, str) and s for s in servers):
        raise ValueError(f"bootstrap_servers must be 'host:port' strings, got {value!r}")
    return servers


_CONSUMER_MANAGED = frozenset(
    {"bootstrap_servers", "client_id", "group_id", "key_deserializer", "value_deserializer",
     "auto_offset_reset", "isolation_level", "enable_auto_commit", "security_protocol", "ssl_context",
     "sasl_mechanism", "sasl_plain_username", "sasl_plain_password", "sasl_oauth_token_provider"}
)
_PRODUCER_MANAGED = frozenset(
    {"bootstrap_servers", "client_id", "key_serializer", "value_serializer", "acks", "linger_ms",
     "transactional_id", "security_protocol", "ssl_context", "sasl_mechanism", "sasl_plain_username",
     "sasl_plain_password", "sasl_oauth_token_provider"}
)


@dataclass(frozen=True)
class ConsumerSettings:
    """How Kafka sources consume: servers, group, serdes, offsets, error policy.

    Auto-commit is always off: committable sources commit through a committer
    sink, exactly-once pipelines commit in their transactions, plain sources
    never commit. ``isolation_level`` defaults to ``read_committed`` (Kafka's own
    default is ``read_uncommitted``): records of aborted transactions are never read. ``poll_timeout`` (seconds) bounds one wait for records, which is
    how often a quiet source notices a stop or an idle partition.

    >>> settings = ConsumerSettings("localhost:9092", group_id="billing", value_serde=JsonSerde(Order))
    """

    bootstrap_servers: str | list[str]
    group_id: str | None = None
    client_id: str | None = None
    key_serde: Serde[Any] = BYTES
    value_serde: Serde[Any] = BYTES
    auto_offset_reset: OffsetReset = "earliest"
    isolation_level: IsolationLevel = "read_committed"
    on_deserialization_error: ErrorPolicy = "fail"
    poll_timeout: float = 0.1
    security: Security = field(default_factory=Security)
    properties: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bootstrap_servers", _servers(self.bootstrap_servers))
        check_serde(self.key_serde, "key_serde")
        check_serde(self.value_serde, "value_serde")
        if self.auto_offset_reset not in ("earliest", "latest"):
            raise ValueError(f"auto_offset_reset must be 'earliest' or 'latest', got {self.auto_offset_reset!r}")
        if self.isolation_level not in ("read_committed", "read_uncommitted"):
            raise ValueError(
                f"isolation_level must be 'read_committed' or 'read_uncommitted', got {self.isolation_level!r}"
            )
        policy = self.on_deserialization_error
        if not (policy in ("fail", "skip") or isinstance(policy, DeadLetter)):
            raise ValueError(f"on_deserialization_error must be 'fail', 'skip' or DeadLetter(topic), got {policy!r}")
        if not self.poll_timeout > 0:
            raise ValueError(f"poll_timeout must be positive, got {self.poll_timeout}")
        object.__setattr__(self, "properties", dict(self.properties))
        _check_properties("consumer", self.properties, _CONSUMER_MANAGED)

    def with_group_id(self, group_id: str | None) -> ConsumerSettings:
        return dataclasses.replace(self, group_id=group_id)

    def with_serdes(self, key: Serde[Any] | None = None, value: Serde[Any] | None = None) -> ConsumerSettings:
        return dataclasses.replace(self, key_serde=key or self.key_serde, value_serde=value or self.value_serde)

    def with_properties(self, **properties: Any) -> ConsumerSettings:
        """A copy with more aiokafka consumer options (e.g. ``session_timeout_ms=6000``)."""
        return dataclasses.replace(self, properties={**self.properties, **properties})

    def with_error_policy(self, policy: ErrorPolicy) -> ConsumerSettings:
        return dataclasses.replace(self, on_deserialization_error=policy)

    def consumer_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``AIOKafkaConsumer``."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "group_id": self.group_id,
            "auto_offset_reset": self.auto_offset_reset,
            "isolation_level": self.isolation_level,
            "enable_auto_commit": False,
            **self.security.kwargs(),
            **self.properties,
        }
        if self.client_id is not None:
            kwargs["client_id"] = self.client_id
        return kwargs

    def create_consumer(self, **overrides: Any) -> AIOKafkaConsumer:
        """A new (not started) ``AIOKafkaConsumer``; call from a running event loop."""
        from aiokafka import AIOKafkaConsumer

        return AIOKafkaConsumer(**{**self.consumer_kwargs(), **overrides})

    def producer_settings(self) -> ProducerSettings:
        """Producer settings with the same servers and security (for dead letters)."""
        return ProducerSettings(self.bootstrap_servers, security=self.security)


@dataclass(frozen=True)
class ProducerSettings:
    """How Kafka sinks produce: servers, serdes, acknowledgements, batching.

    ``linger_ms`` 0 sends at once (lowest latency); a few ms batches more under
    load. ``max_in_flight`` bounds the records a sink has handed to the producer
    without a delivery report yet; beyond it the sink waits (backpressure).

    >>> settings = ProducerSettings("localhost:9092", value_serde=JsonSerde())
    """

    bootstrap_servers: str | list[str]
    client_id: str | None = None
    key_serde: Serde[Any] = BYTES
    value_serde: Serde[Any] = BYTES
    acks: Literal[0, 1, "all"] = "all"
    linger_ms: int = 0
    max_in_flight: int = 20_000
    security: Security = field(default_factory=Security)
    properties: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bootstrap_servers", _servers(self.bootstrap_servers))
        check_serde(self.key_serde, "key_serde")
        check_serde(self.value_serde, "value_serde")
        if self.acks not in (0, 1, "all", -1):
            raise ValueError(f"acks must be 0, 1 or 'all', got {self.acks!r}")
        if not isinstance(self.linger_ms, int) or self.linger_ms < 0:
            raise ValueError(f"linger_ms must be a non-negative int, got {self.linger_ms!r}")
        if not isinstance(self.max_in_flight, int) or self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be a positive int, got {self.max_in_flight!r}")
        object.__setattr__(self, "properties", dict(self.properties))
        _check_properties("producer", self.properties, _PRODUCER_MANAGED)

    def with_serdes(self, key: Serde[Any] | None = None, value: Serde[Any] | None = None) -> ProducerSettings:
        return dataclasses.replace(self, key_serde=key or self.key_serde, value_serde=value or self.value_serde)

    def with_properties(self, **properties: Any) -> ProducerSettings:
        """A copy with more aiokafka producer options (e.g. ``compression_type="lz4"``)."""
        return dataclasses.replace(self, properties={**self.properties, **properties})

    def producer_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``AIOKafkaProducer``."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "acks": self.acks,
            "linger_ms": self.linger_ms,
            **self.security.kwargs(),
            **self.properties,
        }
        if self.client_id is not None:
            kwargs["client_id"] = self.client_id
        return kwargs

    def create_producer(self, transactional_id: str | None = None, **overrides: Any) -> AIOKafkaProducer:
        """A new (not started) ``AIOKafkaProducer``; transactional when ``transactional_id`` is set."""
        from aiokafka import AIOKafkaProducer

        kwargs = {**self.producer_kwargs(), **overrides}
        if transactional_id is not None:
            kwargs["transactional_id"] = transactional_id
            kwargs["acks"] = "all"
            # The transaction coordinator answers "concurrent transactions" while it finishes the
            # previous commit; aiokafka retries after retry_backoff_ms (100 by default), which
            # would add to every commit that follows another one quickly.
            kwargs.setdefault("retry_backoff_ms", TRANSACTIONAL_RETRY_BACKOFF_MS)
        return AIOKafkaProducer(**kwargs)
