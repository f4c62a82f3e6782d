"""Advertising each instance's endpoint to the consumer group, as Kafka Streams' ``application.server``.

:class:`EndpointAssignor` wraps any aiokafka partition assignor (round robin by
default) without changing what it assigns:

* ``metadata()``: the member's subscription ``user_data`` carries its
  ``host:port`` next to whatever the wrapped assignor put there;
* ``assign()`` (on the group leader): the wrapped assignor assigns with its
  own ``user_data``; every member's assignment then also carries the map
  ``endpoint -> partitions`` of the whole group;
* ``on_assignment()`` (on every member): hands the wrapped assignor its own
  ``user_data`` back and publishes the map, so an instance knows which instance
  owns any partition (``/state`` answers with that instance's address).

The wrapped data is MessagePack behind a magic prefix; a member whose data lacks
it (an instance without an endpoint) is assigned as before and owns partitions
no endpoint is known for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.structs import TopicPartition

MAGIC = b"\x00streamlib-endpoint-v1\x00"

Owners = dict[TopicPartition, str]


def _wrap(data: dict[str, Any]) -> bytes:
    return MAGIC + msgspec.msgpack.encode(data)


def _unwrap(user_data: bytes | None) -> dict[str, Any] | None:
    if not user_data or not user_data.startswith(MAGIC):
        return None
    try:
        data = msgspec.msgpack.decode(user_data[len(MAGIC):])
    except msgspec.DecodeError:
        return None
    return data if isinstance(data, dict) else None


class EndpointAssignor:
    """Wraps ``inner`` (an aiokafka assignor class or object); same name, same assignment."""

    def __init__(self, inner: Any, endpoint: str, on_owners: Callable[[Owners], None]) -> None:
        self.inner = inner
        self.name = inner.name
        self.version = getattr(inner, "version", 0)
        self.endpoint = endpoint
        self.on_owners = on_owners

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        meta = self.inner.metadata(topics)
        user_data = _wrap({"endpoint": self.endpoint, "inner": bytes(meta.user_data or b"")})
        return ConsumerProtocolMemberMetadata(meta.version, meta.subscription, user_data)

    def assign(
        self, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        endpoints: dict[str, str] = {}
        inner_members: dict[str, ConsumerProtocolMemberMetadata] = {}
        for member_id, meta in members.items():
            data = _unwrap(meta.user_data)
            inner_data = meta.user_data
            if data is not None:
                inner_data = data.get("inner", b"")
                if isinstance(data.get("endpoint"), str):
                    endpoints[member_id] = data["endpoint"]
            inner_members[member_id] = ConsumerProtocolMemberMetadata(meta.version, meta.subscription, inner_data)
        assignments = self.inner.assign(cluster, inner_members)
        hosts: dict[str, list[list[Any]]] = {}
        for member_id, assignment in assignments.items():
            endpoint = endpoints.get(member_id)
            if endpoint is not None:
                hosts.setdefault(endpoint, []).extend([t, list(ps)] for t, ps in assignment.assignment)
        out = {}
        for member_id, assignment in assignments.items():
            user_data = _wrap({"hosts": hosts, "inner": bytes(assignment.user_data or b"")})
            out[member_id] = ConsumerProtocolMemberAssignment(assignment.version, assignment.assignment, user_data)
        return out

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        data = _unwrap(assignment.user_data)
        inner_data = assignment.user_data if data is None else data.get("inner", b"")
        self.inner.on_assignment(
            ConsumerProtocolMemberAssignment(assignment.version, assignment.assignment, inner_data)
        )
        owners: Owners = {}
        if data is not None:
            for endpoint, topics in data.get("hosts", {}).items():
                for topic, partitions in topics:
                    for p in partitions:
                        owners[TopicPartition(topic, p)] = endpoint
        self.on_owners(owners)

    def __repr__(self) -> str:
        return f"EndpointAssignor({self.name!r}, endpoint={self.endpoint!r})"
