"""Producer sink and producer flow.

Both own one ``AIOKafkaProducer`` per run (started when the run starts, flushed
and closed when it ends). Each chunk is serialized and handed to the producer
at once as record batches, one or more per partition in the chunk's order
(``RecordSender.send_batches``; ``max_batch_size`` bounds a batch). Backpressure:
submitting a batch waits while the partition's previous batch is not yet taken
by the producer's sender, and the stage waits when ``max_in_flight`` records
have no delivery report yet, so a slow broker slows the stream instead of
growing a queue.

The sink completes its future once every record is acknowledged; a delivery
failure fails the stream with a :class:`ProduceError` naming the topic. The
flow emits, in input order, a :class:`ProducerResult` per record (or a
:class:`ProducerMessageResult` per :class:`ProducerMessage`) once delivered,
carrying the ``passthrough`` on to, typically, a committer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any

import msgspec

from .._runtime.channel import Channel
from .._runtime.context import RunContext
from .._runtime.signals import END, Failure
from ..stage import AsyncLogic, Stage, fail_future
from ._produce import RecordSender, SentBatch, Slot, delivery_error, record_offset
from ._records import CommittableOffset, CommittableRecord, ProducerRecord, ProducerResult
from ._settings import ProducerSettings


class ProducerMessage(msgspec.Struct, frozen=True):
    """Several records (possibly none) produced for one input, with one pass-through.

    The flow emits its :class:`ProducerMessageResult` only when all of them are
    delivered, so committing the pass-through then never skips an undelivered record.
    """

    records: Sequence[ProducerRecord[Any, Any]]
    passthrough: Any = None


class ProducerMessageResult(msgspec.Struct, frozen=True):
    """The delivered records of one :class:`ProducerMessage`."""

    results: list[ProducerResult[Any, Any]]
    passthrough: Any = None


class ProducerSinkStage(Stage):
    inputs = 1
    outputs = 0

    def __init__(self, settings: ProducerSettings, topic: str | None) -> None:
        self.settings = settings
        self.topic = topic
        self.name = f"kafka_producer_sink({topic})" if topic else "kafka_producer_sink"

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, asyncio.Future[None]]:
        fut: asyncio.Future[None] = ctx.new_future()
        return _ProducerSinkLogic(self, fut), fut


class _ProducerSinkLogic(AsyncLogic):
    def __init__(self, stage: ProducerSinkStage, fut: asyncio.Future[None]) -> None:
        self.stage = stage
        self.fut = fut

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,) = inlets
        settings = self.stage.settings
        sender = RecordSender(settings, self.stage.topic, self.stage.stage_name())
        max_in_flight = settings.max_in_flight
        producer = settings.create_producer()
        in_flight: deque[SentBatch] = deque()
        records = 0  # in the batches of in_flight
        try:
            await producer.start()
            while True:
                item = await inlet.get()
                if type(item) is list:
                    for batch in await sender.send_batches(producer, [sender.as_record(e) for e in item]):
                        in_flight.append(batch)
                        records += batch[2]
                    # Drop delivered batches from the head; fail on the first failed delivery.
                    while in_flight and (in_flight[0][1].done() or records > max_in_flight):
                        rec, fut, n, partition = in_flight.popleft()
                        records -= n
                        try:
                            await fut
                        except Exception as exc:
                            raise delivery_error(rec, exc, partition) from exc
                elif item is END:
                    await producer.flush()
                    while in_flight:
                        rec, fut, _n, partition = in_flight.popleft()
                        try:
                            await fut
                        except Exception as exc:
                            raise delivery_error(rec, exc, partition) from exc
                    if not self.fut.done():
                        self.fut.set_result(None)
                    return
                elif isinstance(item, Failure):
                    raise item.error
        finally:
            for _rec, fut, _n, _p in in_flight:
                if fut.done() and not fut.cancelled():
                    fut.exception()
            await producer.stop()

    def on_failure(self, error: BaseException) -> None:
        fail_future(self.fut, error)


class ProducerFlowStage(Stage):
    inputs = 1
    outputs = 1

    def __init__(self, settings: ProducerSettings, topic: str | None) -> None:
        self.settings = settings
        self.topic = topic
        self.name = f"kafka_producer_flow({topic})" if topic else "kafka_producer_flow"

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _ProducerFlowLogic(self, ctx), None


# (element, its deliveries): None (nothing produced), a (record, batch future, index) for
# one record, or a list of them for a ProducerMessage.
_Pending = tuple[Any, Any]


class _ProducerFlowLogic(AsyncLogic):
    def __init__(self, stage: ProducerFlowStage, ctx: RunContext) -> None:
        self.stage = stage
        self.max_chunk = ctx.max_chunk

    async def run(self, inlets: Sequence[Channel], outlets: Sequence[Channel]) -> None:
        (inlet,) = inlets
        (out,) = outlets
        settings = self.stage.settings
        sender = RecordSender(settings, self.stage.topic, self.stage.stage_name())
        max_in_flight = settings.max_in_flight
        producer = settings.create_producer()
        pending: deque[_Pending] = deque()
        try:
            await producer.start()
            while True:
                item = inlet.get_nowait()
                if item is None:
                    if pending:
                        if not _ready(pending[0]):
                            await _wait_either(inlet, _head_future(pending[0]))
                        if _ready(pending[0]):
                            await self._emit_ready(out, pending, wait=False)
                        continue
                    item = await inlet.get()
                if type(item) is list:
                    await self._send(producer, sender, item, pending)
                    while len(pending) > max_in_flight:
                        await _head_future(pending[0])
                        await self._emit_ready(out, pending, wait=False)
                    await self._emit_ready(out, pending, wait=False)
                elif item is END:
                    await producer.flush()
                    await self._emit_ready(out, pending, wait=True)
                    return
                elif isinstance(item, Failure):
                    # In band: the results of the records sent before the failure go out first.
                    await producer.flush()
                    await self._emit_ready(out, pending, wait=True)
                    raise item.error
                else:
                    # A signal: it follows the results of everything before it.
                    await self._emit_ready(out, pending, wait=True)
                    await out.put(item)
        finally:
            for entry in pending:
                for fut in _futures(entry):
                    if fut.done() and not fut.cancelled():
                        fut.exception()
            await producer.stop()

    async def _send(self, producer: Any, sender: RecordSender, chunk: list[Any], pending: deque[_Pending]) -> None:
        """Produce the chunk's records as batches; append one pending entry per element, in order."""
        records: list[ProducerRecord[Any, Any]] = []
        entries: list[tuple[Any, int]] = []  # (element, index of its first record or -1)
        for element in chunk:
            if type(element) is ProducerRecord:
                entries.append((element, len(records)))
                records.append(element)
            elif isinstance(element, ProducerMessage):
                entries.append((element, len(records)))
                records.extend(element.records)
            elif isinstance(element, (CommittableOffset, CommittableRecord)):
                entries.append((element, -1))  # nothing to produce: passes through in order
            else:
                entries.append((sender.as_record(element), len(records)))
                records.append(entries[-1][0])
        slots: list[Slot] = []
        if records:
            await sender.send_batches(producer, records, slots)
        append = pending.append
        for element, start in entries:
            if start < 0:
                append((element, None))
            elif isinstance(element, ProducerMessage):
                n = len(element.records)
                append((element, [(records[i], *slots[i]) for i in range(start, start + n)]))
            else:
                fut, index = slots[start]
                append((element, (element, fut, index)))

    async def _emit_ready(self, out: Channel, pending: deque[_Pending], wait: bool) -> None:
        results: list[Any] = []
        max_chunk = self.max_chunk
        while pending:
            element, deliveries = pending[0]
            if deliveries is None:
                results.append(element)
            elif type(deliveries) is tuple:
                rec, fut, index = deliveries
                if not fut.done():
                    if not wait:
                        break
                    await asyncio.wait([fut])
                results.append(_delivered(rec, fut, index))
            else:
                if not all(f.done() for _r, f, _i in deliveries):
                    if not wait:
                        break
                    await asyncio.wait([f for _r, f, _i in deliveries])
                results.append(ProducerMessageResult([_delivered(*d) for d in deliveries], element.passthrough))
            pending.popleft()
            if len(results) >= max_chunk:
                await out.put(results)
                results = []
        if results:
            await out.put(results)


def _futures(entry: _Pending) -> list[Any]:
    deliveries = entry[1]
    if deliveries is None:
        return []
    if isinstance(deliveries, list):
        return [f for _r, f, _i in deliveries]
    return [deliveries[1]]


def _ready(entry: _Pending) -> bool:
    deliveries = entry[1]
    if deliveries is None:
        return True
    if isinstance(deliveries, list):
        return all(f.done() for _r, f, _i in deliveries)
    return bool(deliveries[1].done())


def _head_future(entry: _Pending) -> Any:
    for f in _futures(entry):
        if not f.done():
            return f
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


async def _wait_either(inlet: Channel, fut: Any) -> None:
    """Wait until ``inlet`` has an item or ``fut`` is done."""
    reader = asyncio.ensure_future(inlet.wait_readable())
    try:
        await asyncio.wait([reader, fut], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not reader.done():
            reader.cancel()
            await asyncio.wait([reader])


def _delivered(rec: ProducerRecord[Any, Any], fut: Any, index: int) -> ProducerResult[Any, Any]:
    """The result of a record whose batch's delivery ``fut`` is done (a ProduceError if it failed)."""
    if fut.cancelled() or fut.exception() is not None:
        exc = asyncio.CancelledError() if fut.cancelled() else fut.exception()
        raise delivery_error(rec, exc) from exc
    meta = fut.result()
    return ProducerResult(rec, meta.partition, record_offset(meta, index))
