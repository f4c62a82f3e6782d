"""The committer against a model, without a broker: random offsets, chunkings, batch sizes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlib import Keep, Sink
from streamlib.kafka import CommitHandle, CommittableOffset, Committer, CommitterSettings, ProducerRecord
from streamlib.kafka._changelog import ChangelogBuffer
from streamlib.kafka._records import ProducerResult
from streamlib.testing import source_from_chunks, split_at


class _FakeConsumer:
    """Records commits; ``assigned`` partitions only (like aiokafka's group consumer)."""

    def __init__(self, assigned: set[TopicPartition], delay: float = 0.0) -> None:
        self.assigned = assigned
        self.commits: list[dict[TopicPartition, int]] = []
        self.delay = delay

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await asyncio.sleep(self.delay)
        self.commits.append(dict(offsets))


offsets_strategy = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 500)), max_size=60)


@settings(max_examples=60, deadline=None)
@given(offsets_strategy, st.lists(st.integers(0, 60), max_size=6), st.integers(1, 20), st.booleans())
def test_committed_offsets_are_one_past_the_highest_seen_per_partition(
    pairs: list[tuple[int, int]], cuts: list[int], max_batch: int, wrapped: bool
) -> None:
    async def scenario() -> None:
        consumer = _FakeConsumer({TopicPartition("t", p) for p in range(3)}, delay=0.001)
        handle = CommitHandle(consumer, "g")  # type: ignore[arg-type]
        elements: list[Any] = [CommittableOffset("t", p, off, handle) for p, off in pairs]
        if wrapped:  # as a producer flow hands them on
            elements = [ProducerResult(ProducerRecord("out", b"", passthrough=e), 0, i) for i, e in enumerate(elements)]
        done = source_from_chunks(split_at(elements, cuts)).run_with(
            Committer.sink(CommitterSettings(max_batch=max_batch, max_interval=60.0))
        )
        await done
        model: dict[TopicPartition, int] = {}
        for p, off in pairs:
            tp = TopicPartition("t", p)
            model[tp] = max(model.get(tp, 0), off + 1)
        final: dict[TopicPartition, int] = {}
        for commit in consumer.commits:
            for tp, off in commit.items():
                assert off >= final.get(tp, 0), "a commit went backwards"
                final[tp] = off
        assert final == model
        assert handle.committed == model

    asyncio.run(scenario())


async def test_offsets_of_partitions_no_longer_assigned_are_not_committed() -> None:
    consumer = _FakeConsumer({TopicPartition("t", 0)})
    handle = CommitHandle(consumer, "g")  # type: ignore[arg-type]
    elements = [CommittableOffset("t", p, 5, handle) for p in (0, 1)]
    await source_from_chunks([elements]).run_with(Committer.sink())
    assert consumer.commits == [{TopicPartition("t", 0): 6}]


async def test_a_failing_commit_fails_the_stream_naming_the_group() -> None:
    from aiokafka.errors import KafkaConnectionError

    from streamlib.kafka import CommitError

    class Broken(_FakeConsumer):
        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            raise KafkaConnectionError("broker gone")

    handle = CommitHandle(Broken({TopicPartition("t", 0)}), "billing")  # type: ignore[arg-type]
    with pytest.raises(CommitError, match="group 'billing'"):
        await source_from_chunks([[CommittableOffset("t", 0, 1, handle)]]).to_mat(
            Committer.sink(), Keep.right
        ).run()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 8), st.sampled_from(["a", "b"]), st.binary(max_size=3)), max_size=20),
       st.integers(0, 9))
def test_changelog_buffer_hands_out_checkpoints_in_order_once(
    writes: list[tuple[int, str, bytes]], upto: int
) -> None:
    from streamlib._state.store import Commit

    buffer = ChangelogBuffer()
    by_id: dict[int, dict[str, list[tuple[bytes, bytes | None]]]] = {}
    for cid, table, key in writes:
        by_id.setdefault(cid, {}).setdefault(table, []).append((key, key))
    for cid in sorted(by_id):
        buffer(Commit(cid, {}, by_id[cid]))
    taken = buffer.take_upto(upto)
    assert [cid for cid, _ in taken] == sorted(c for c in by_id if c <= upto)
    assert all(w == by_id[cid] for cid, w in taken)
    assert buffer.take_upto(upto) == []
    assert sorted(buffer.pending) == sorted(c for c in by_id if c > upto)
