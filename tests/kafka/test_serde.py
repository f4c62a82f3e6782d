"""Serdes, settings and the deserialization-error policies."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Keep, Sink
from streamlib.kafka import (
    BytesSerde,
    ConsumerSettings,
    DeadLetter,
    DeserializationError,
    IntSerde,
    JsonSerde,
    KafkaRecord,
    KafkaSource,
    MsgPackSerde,
    ProducerSettings,
    StrSerde,
)
from streamlib.kafka._decode import RecordDecoder
from streamlib.kafka.testing import produce, read_topic
from streamlib.testing.kafka import KafkaBroker


class Order(msgspec.Struct):
    id: int
    amount: float
    tags: list[str] = []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_json_and_msgpack_round_trip_any_value(value: Any) -> None:
    for serde in (JsonSerde(), MsgPackSerde()):
        data = serde.serialize(value)
        if value is None:
            assert data is None
        assert serde.deserialize(data) == value


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**9), st.floats(allow_nan=False, allow_infinity=False), st.lists(st.text(max_size=8), max_size=3))
def test_typed_serdes_round_trip_structs(i: int, amount: float, tags: list[str]) -> None:
    order = Order(i, amount, tags)
    for serde in (JsonSerde(Order), MsgPackSerde(Order)):
        assert serde.deserialize(serde.serialize(order)) == order


@settings(max_examples=60, deadline=None)
@given(st.integers(-(2**63), 2**63 - 1), st.text())
def test_int_and_str_serdes_round_trip(n: int, text: str) -> None:
    assert IntSerde().deserialize(IntSerde().serialize(n)) == n
    assert IntSerde(4).deserialize(IntSerde(4).serialize(n % 2**31)) == n % 2**31
    assert StrSerde().deserialize(StrSerde().serialize(text)) == text
    assert BytesSerde().deserialize(b"x") == b"x"


def test_null_payload_is_none_for_every_serde() -> None:
    for serde in (BytesSerde(), StrSerde(), IntSerde(), JsonSerde(Order), MsgPackSerde(Order)):
        assert serde.serialize(None) is None
        assert serde.deserialize(None) is None


def test_typed_serde_rejects_wrong_shape() -> None:
    with pytest.raises(msgspec.ValidationError, match="amount"):
        JsonSerde(Order).deserialize(b'{"id": 1, "amount": "ten"}')
    with pytest.raises(ValueError, match="expects 8 bytes"):
        IntSerde().deserialize(b"abc")
    with pytest.raises(TypeError, match="BytesSerde serializes bytes"):
        BytesSerde().serialize("text")  # type: ignore[arg-type]


def test_settings_validate_their_arguments() -> None:
    with pytest.raises(ValueError, match="unknown aiokafka consumer property 'sesion_timeout_ms'"):
        ConsumerSettings("localhost:9092", properties={"sesion_timeout_ms": 6000})
    with pytest.raises(ValueError, match="managed by streamlib"):
        ConsumerSettings("localhost:9092").with_properties(enable_auto_commit=True)
    with pytest.raises(ValueError, match="auto_offset_reset"):
        ConsumerSettings("localhost:9092", auto_offset_reset="first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_deserialization_error"):
        ConsumerSettings("localhost:9092", on_deserialization_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value_serde must be a serde"):
        ConsumerSettings("localhost:9092", value_serde=str)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="acks"):
        ProducerSettings("localhost:9092", acks=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bootstrap_servers"):
        ProducerSettings("")
    with pytest.raises(ValueError, match="committable Kafka source needs ConsumerSettings"):
        KafkaSource.committable(ConsumerSettings("localhost:9092"), "t")
    s = ConsumerSettings("h:1", group_id="g").with_properties(session_timeout_ms=6000)
    kwargs = s.consumer_kwargs()
    assert kwargs["session_timeout_ms"] == 6000 and kwargs["enable_auto_commit"] is False
    assert kwargs["group_id"] == "g" and kwargs["isolation_level"] == "read_committed"
    assert "password" not in repr(ProducerSettings("h:1"))


class _Raw:
    """Stands in for aiokafka's ConsumerRecord."""

    def __init__(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.topic, self.partition, self.offset, self.timestamp = "orders", 2, offset, 1000 + offset
        self.key, self.value, self.headers = key, value, ()


def _raws() -> list[_Raw]:
    good = msgspec.json.encode(Order(1, 9.5))
    return [_Raw(10, b"k", good), _Raw(11, b"k", b"{not json"), _Raw(12, b"k", good)]


def test_decoder_fail_policy_names_the_record() -> None:
    decoder = RecordDecoder(ConsumerSettings("h:1", value_serde=JsonSerde(Order)))
    with pytest.raises(DeserializationError) as info:
        decoder.decode(_raws())
    err = info.value
    assert (err.topic, err.partition, err.offset, err.field) == ("orders", 2, 11, "value")
    assert "orders-2@11" in str(err) and "DecodeError" in str(err)


def test_decoder_skip_policy_logs_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    decoder = RecordDecoder(ConsumerSettings("h:1", value_serde=JsonSerde(Order), on_deserialization_error="skip"))
    with caplog.at_level(logging.WARNING, logger="streamlib.kafka"):
        records, dead = decoder.decode(_raws())
    assert [r.offset for r in records] == [10, 12] and dead == []
    assert records[0] == KafkaRecord("orders", 2, 10, 1010, b"k", Order(1, 9.5), ())
    assert decoder.skipped == 1
    assert "orders-2@11" in caplog.text


def test_decoder_dead_letter_policy_returns_the_bad_record_with_its_error() -> None:
    key_serde = IntSerde()
    decoder = RecordDecoder(
        ConsumerSettings("h:1", key_serde=key_serde, value_serde=JsonSerde(Order), on_deserialization_error=DeadLetter("dlq"))
    )
    raws = _raws()
    raws[0].key = IntSerde().serialize(5)
    raws[2].key = b"short"  # the key fails first
    raws[2].value = raws[0].value
    records, dead = decoder.decode(raws)
    assert [r.offset for r in records] == [10]
    assert [(d.raw.offset, d.error.field) for d in dead] == [(11, "key"), (12, "key")]
    out = dead[0].to_producer_record()
    headers = dict(out.headers)
    assert out.topic == "dlq" and out.value == b"{not json" and out.key == b"k"
    assert headers["streamlib.source.offset"] == b"11" and headers["streamlib.error.field"] == b"key"


async def test_typed_json_source_routes_bad_records_to_dead_letter_topic(kafka_broker: KafkaBroker) -> None:
    topic, dlq = f"orders-{uuid.uuid4().hex[:8]}", f"orders-dlq-{uuid.uuid4().hex[:8]}"
    await kafka_broker.acreate_topic(topic, 2)
    await kafka_broker.acreate_topic(dlq, 1)
    good = [msgspec.json.encode(Order(i, i * 1.5)) for i in range(200)]
    records: list[tuple[bytes | None, bytes | None, int]] = []
    for i, value in enumerate(good):
        records.append((str(i).encode(), value, i % 2))
        if i % 20 == 7:
            records.append((b"bad", b'{"id": "x"}', i % 2))
    await produce(kafka_broker.bootstrap_servers, topic, records)
    settings_ = ConsumerSettings(
        kafka_broker.bootstrap_servers, value_serde=JsonSerde(Order), on_deserialization_error=DeadLetter(dlq)
    )
    control, fut = KafkaSource.plain(settings_, topic).take(200).to_mat(Sink.collect(), Keep.both).run()
    got = await fut
    await control.wait_stopped()
    assert sorted(r.value.id for r in got) == list(range(200))
    assert all(isinstance(r.value, Order) for r in got)
    dead = await read_topic(kafka_broker.bootstrap_servers, dlq)
    assert len(dead) == 10 and control.metrics.dead_lettered == 10
    for rec in dead:
        headers = dict(rec.headers)
        assert rec.value == b'{"id": "x"}' and headers["streamlib.source.topic"] == topic.encode()
        assert b"Expected `int`, got `str`" in headers["streamlib.error"]
