"""Group assignment by task: partition n of every co-partitioned input goes to the same member.

aiokafka's default (round robin over all topic-partitions) would split a task
(partition n of each input) between members. :class:`TaskAssignor` assigns
whole tasks: the task numbers (partition numbers) are dealt round robin over
the members in member-id order, and a member gets partition n of every topic
it subscribes to for each task n it is dealt.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

log = logging.getLogger("streamlib.kafka")


class TaskAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Assigns partition n of every subscribed topic to one member (Kafka Streams' task model)."""

    name = "streamlib-tasks"
    version = 0

    @classmethod
    def assign(
        cls, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        topics: set[str] = set()
        for meta in members.values():
            topics.update(meta.subscription)
        tasks: set[int] = set()
        for topic in topics:
            partitions = cluster.partitions_for_topic(topic)
            if partitions is None:
                log.warning("no partition metadata for topic %s", topic)
                continue
            tasks.update(partitions)
        ids = sorted(members)
        dealt: dict[str, dict[str, list[int]]] = {m: {} for m in ids}
        for i, n in enumerate(sorted(tasks)):
            member = ids[i % len(ids)]
            for topic in members[member].subscription:
                if n in (cluster.partitions_for_topic(topic) or ()):
                    dealt[member].setdefault(topic, []).append(n)
        return {
            m: ConsumerProtocolMemberAssignment(cls.version, sorted(dealt[m].items()), b"") for m in members
        }

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass
