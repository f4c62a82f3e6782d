"""Group assignment by task: partition n of every co-partitioned input goes to the same member.

aiokafka's default (round robin over all topic-partitions) would split a task
(partition n of each input) between members. :class:`TaskAssignor` assigns
whole tasks: the task numbers (partition numbers) are dealt round robin over
the members in member-id order, and a member gets partition n of every topic
it subscribes to for each task n it is dealt.

Standby replicas (Kafka Streams' standby tasks): each member advertises its
``num_standby_replicas`` in its subscription's ``user_data``; the leader keeps
the largest, k, and deals task n's standbys to the k members following its
active owner in the same order (never the owner itself; fewer when the group
is smaller). A member's assignment ``user_data`` lists its standby tasks, and
:meth:`TaskAssignor.on_assignment` hands them to the app (``_standby.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

log = logging.getLogger("streamlib.kafka")


class TaskAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Assigns partition n of every subscribed topic to one member (Kafka Streams' task model).

    An instance carries this member's ``num_standby_replicas`` and the callback
    receiving its standby task numbers at each assignment.
    """

    name = "streamlib-tasks"
    version = 0

    def __init__(self, num_standby_replicas: int = 0, on_standbys: Callable[[set[int]], None] | None = None) -> None:
        self.num_standby_replicas = num_standby_replicas
        self.on_standbys = on_standbys

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
        replicas = min(max((_decode(m.user_data).get("standbys", 0) for m in members.values()), default=0),
                       len(ids) - 1)
        dealt: dict[str, dict[str, list[int]]] = {m: {} for m in ids}
        standbys: dict[str, list[int]] = {m: [] for m in ids}
        for i, n in enumerate(sorted(tasks)):
            member = ids[i % len(ids)]
            for topic in members[member].subscription:
                if n in (cluster.partitions_for_topic(topic) or ()):
                    dealt[member].setdefault(topic, []).append(n)
            for r in range(1, replicas + 1):
                standbys[ids[(i + r) % len(ids)]].append(n)
        return {
            m: ConsumerProtocolMemberAssignment(
                cls.version, sorted(dealt[m].items()),
                msgspec.msgpack.encode({"standby": standbys[m]}) if standbys[m] else b"",
            )
            for m in members
        }

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        replicas = self.num_standby_replicas
        user_data = msgspec.msgpack.encode({"standbys": replicas}) if replicas else b""
        return ConsumerProtocolMemberMetadata(self.version, list(topics), user_data)

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        if self.on_standbys is not None:
            self.on_standbys(set(_decode(assignment.user_data).get("standby", ())))


def _decode(user_data: bytes | None) -> dict[str, Any]:
    """The msgpack map in a subscription's or assignment's ``user_data`` ({} when empty or foreign)."""
    if not user_data:
        return {}
    try:
        data = msgspec.msgpack.decode(user_data)
    except msgspec.DecodeError:
        return {}
    return data if isinstance(data, dict) else {}
