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
carrying the ``passthrough`` on to, typically, a committer. It tracks deliveries
per input chunk (the chunk's batches), so a chunk's results go out together once
all its records are delivered. Behind ``KafkaSink.committable`` the flow emits the
input elements themselves instead (``results=False``): the committer needs only
their pass-throughs, so no result object is built per record.
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
from ._produce import RecordSender, SentBatch, Slot, delivery_error
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

    def __init__(self, settings: ProducerSettings, topic: str | None, *, results: bool = True) -> None:
        self.settings = settings
        self.topic = topic
        #: False: emit the input elements themselves once their records are delivered (what a
        #: committer behind the flow needs: their pass-throughs), not a result per record.
        self.results = results
        self.name = f"kafka_producer_flow({topic})" if topic else "kafka_producer_flow"

    def materialize(self, ctx: RunContext) -> tuple[AsyncLogic, None]:
        return _ProducerFlowLogic(self, ctx), None


class _Pending:
    """One input chunk in flight: its elements, the batches of its records, and how to build its results."""

    __slots__ = ("chunk", "sent", "records", "entries", "produced", "slots")

    def __init__(self, chunk: list[Any], sent: list[SentBatch], records: int,
                 entries: list[tuple[Any, int]] | None = None, produced: list[ProducerRecord[Any, Any]] | None = None,
                 slots: list[Slot] | None = None) -> None:
        self.chunk = chunk
        self.sent = sent
        self.records = records
        #: Results mode: (element, index of its first record or -1), per element.
        self.entries = entries
        self.produced = produced
        self.slots = slots

    def head_future(self) -> Any:
        """A delivery future of this chunk not done yet, or None."""
        for batch in self.sent:
            if not batch[1].done():
                return batch[1]
        return None


class _ProducerFlowLogic(AsyncLogic):
    def __init__(self, stage: ProducerFlowStage, ctx: RunContext) -> None:
        self.stage = stage
        self.max_chunk = ctx.max_chunk
        self.in_flight = 0  # records of the chunks in ``pending``

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
                        head = pending[0].head_future()
                        if head is not None:
                            await _wait_either(inlet, head)
                        if pending[0].head_future() is None:
                            await self._emit_ready(out, pending, wait=False)
                        continue
                    item = await inlet.get()
                if type(item) is list:
                    await self._send(producer, sender, item, pending)
                    while self.in_flight > max_in_flight:
                        head = pending[0].head_future()
                        if head is not None:
                            await asyncio.wait([head])
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
                for batch in entry.sent:
                    fut = batch[1]
                    if fut.done() and not fut.cancelled():
                        fut.exception()
            await producer.stop()

    async def _send(self, producer: Any, sender: RecordSender, chunk: list[Any], pending: deque[_Pending]) -> None:
        """Produce the chunk's records as batches; append its pending entry."""
        records: list[ProducerRecord[Any, Any]] = []
        if not self.stage.results:
            for element in chunk:
                if type(element) is ProducerRecord:
                    records.append(element)
                elif isinstance(element, ProducerMessage):
                    records.extend(element.records)
                elif not isinstance(element, (CommittableOffset, CommittableRecord)):
                    records.append(sender.as_record(element))
            sent = await sender.send_batches(producer, records) if records else []
            pending.append(_Pending(chunk, sent, len(records)))
            self.in_flight += len(records)
            return
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
        sent = await sender.send_batches(producer, records, slots) if records else []
        pending.append(_Pending(chunk, sent, len(records), entries, records, slots))
        self.in_flight += len(records)

    async def _emit_ready(self, out: Channel, pending: deque[_Pending], wait: bool) -> None:
        """Emit, in input order, the outputs of the chunks whose records are all delivered."""
        results: list[Any] = []
        max_chunk = self.max_chunk
        while pending:
            entry = pending[0]
            head = entry.head_future()
            if head is not None:
                if not wait:
                    break
                await asyncio.wait([batch[1] for batch in entry.sent])
            for rec, fut, _n, partition in entry.sent:
                if fut.cancelled() or fut.exception() is not None:
                    exc = asyncio.CancelledError() if fut.cancelled() else fut.exception()
                    raise delivery_error(rec, exc, partition) from exc  # type: ignore[arg-type]
            items = entry.chunk if entry.entries is None else _results(entry)
            pending.popleft()
            self.in_flight -= entry.records
            if results and len(results) + len(items) > max_chunk:
                await out.put(results)
                results = []
            results.extend(items)
        if results:
            await out.put(results)


def _results(entry: _Pending) -> list[Any]:
    """The results of a delivered chunk: a ProducerResult per record, a ProducerMessageResult per message."""
    assert entry.entries is not None and entry.produced is not None and entry.slots is not None
    produced, slots = entry.produced, entry.slots
    metas: dict[Any, tuple[int, int]] = {}  # batch future -> (partition, offset of its first record or -1)
    for _rec, fut, _n, _partition in entry.sent:
        meta = fut.result()
        base = meta.offset if meta.offset is not None and meta.offset >= 0 else -1
        metas[fut] = (meta.partition, base)
    out: list[Any] = []
    append = out.append
    for element, start in entry.entries:
        if start < 0:
            append(element)
        elif isinstance(element, ProducerMessage):
            n = len(element.records)
            append(ProducerMessageResult([_result(produced[i], metas, *slots[i]) for i in range(start, start + n)],
                                         element.passthrough))
        else:
            fut, index = slots[start]
            partition, base = metas[fut]
            append(ProducerResult(element, partition, base + index if base >= 0 else -1))
    return out


def _result(rec: ProducerRecord[Any, Any], metas: dict[Any, tuple[int, int]], fut: Any, index: int
            ) -> ProducerResult[Any, Any]:
    partition, base = metas[fut]
    return ProducerResult(rec, partition, base + index if base >= 0 else -1)


async def _wait_either(inlet: Channel, fut: Any) -> None:
    """Wait until ``inlet`` has an item or ``fut`` is done."""
    reader = asyncio.ensure_future(inlet.wait_readable())
    try:
        await asyncio.wait([reader, fut], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not reader.done():
            reader.cancel()
            await asyncio.wait([reader])
