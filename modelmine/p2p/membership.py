"""Membership: who is in the network and how alive each member looks (sans-IO).

Every node signs a heartbeat each interval; heartbeats are gossiped. A member is SUSPECT once
``suspect_after`` intervals pass without a newer heartbeat and OFFLINE after ``offline_after``.
A closed direct connection makes the member SUSPECT at once (and OFFLINE ``suspect_after``
intervals later) unless a newer heartbeat refutes it. Sequence numbers only grow (they start
from wall-clock milliseconds), so a restarted node's first heartbeat supersedes every older one
and brings it back ONLINE under the same id.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from modelmine import wire
from modelmine.signing import Signed

HEARTBEAT_DOMAIN: Final = "heartbeat"
MAX_CLOCK_SKEW: Final = 120.0
ADVERTISED = ("ONLINE", "BUSY", "MAINTENANCE")
METRIC_FIELDS: Final = (
    "cpu_count",
    "cpu_percent",
    "load_avg",
    "memory_total",
    "memory_used",
    "memory_percent",
    "uptime",
    "hostname",
    "platform",
    "arch",
)


class Status(enum.StrEnum):
    ONLINE = "ONLINE"
    BUSY = "BUSY"
    MAINTENANCE = "MAINTENANCE"
    SUSPECT = "SUSPECT"
    OFFLINE = "OFFLINE"


@dataclass(frozen=True)
class Heartbeat:
    node_id: bytes
    seq: int
    time: float
    name: str
    address: str
    version: str
    status: str
    capacity: dict[str, int]
    metrics: dict[str, Any]

    def to_payload(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "seq": self.seq,
            "time": self.time,
            "name": self.name,
            "address": self.address,
            "version": self.version,
            "status": self.status,
            "capacity": self.capacity,
            "metrics": self.metrics,
        }

    @classmethod
    def from_statement(cls, statement: Signed) -> Heartbeat:
        """Validate a (signature-checked) heartbeat; the signer must be the node it names."""
        what = "heartbeat"
        p = statement.payload()
        node_id = wire.bytes_field(p, "node_id", 32, what)
        if node_id != statement.signer:
            raise wire.WireError(
                f"heartbeat signed by {statement.signer.hex()[:8]} claims to be {node_id.hex()[:8]}"
            )
        status = wire.str_field(p, "status", 16, what)
        if status not in ADVERTISED:
            raise wire.WireError(f"heartbeat.status: must be one of {', '.join(ADVERTISED)}")
        capacity = wire.expect_map(wire.field(p, "capacity", dict, what), "heartbeat.capacity")
        slots = wire.int_field(capacity, "slots", 0, 1024, "heartbeat.capacity")
        busy = wire.int_field(capacity, "busy", 0, 1024, "heartbeat.capacity")
        metrics = wire.expect_map(wire.field(p, "metrics", dict, what), "heartbeat.metrics")
        _check_metrics(metrics)
        return cls(
            node_id=node_id,
            seq=wire.int_field(p, "seq", 0, 2**63 - 1, what),
            time=float(wire.field(p, "time", (int, float), what)),
            name=wire.str_field(p, "name", 64, what),
            address=wire.str_field(p, "address", 256, what),
            version=wire.str_field(p, "version", 32, what),
            status=status,
            capacity={"slots": slots, "busy": busy},
            metrics=metrics,
        )


def _check_metrics(metrics: dict[str, Any]) -> None:
    if len(metrics) > 32:
        raise wire.WireError("heartbeat.metrics: too many fields")
    for key, value in metrics.items():
        if isinstance(value, str):
            if len(value) > 128:
                raise wire.WireError(f"heartbeat.metrics.{key}: too long")
        elif isinstance(value, list):
            if len(value) > 8 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value
            ):
                raise wire.WireError(f"heartbeat.metrics.{key}: expected up to 8 numbers")
        elif not isinstance(value, int | float) or isinstance(value, bool):
            raise wire.WireError(f"heartbeat.metrics.{key}: expected a number or text")


@dataclass
class Member:
    heartbeat: Heartbeat
    last_seen: float  # our clock, when the newest heartbeat arrived
    suspect_since: float | None = None
    status: Status = Status.ONLINE

    @property
    def node_id(self) -> bytes:
        return self.heartbeat.node_id


@dataclass(frozen=True)
class MemberChange:
    node_id: bytes
    old: Status | None
    new: Status


@dataclass
class Membership:
    """The member table of one node. ``now`` is always passed in; there is no clock here."""

    self_id: bytes
    interval: float = 5.0
    suspect_after: int = 3
    offline_after: int = 6
    _members: dict[bytes, Member] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Member]:
        return iter(self._members.values())

    def __len__(self) -> int:
        return len(self._members)

    def get(self, node_id: bytes) -> Member | None:
        return self._members.get(node_id)

    def newest_seq(self, node_id: bytes) -> int:
        member = self._members.get(node_id)
        return member.heartbeat.seq if member else -1

    def observe(self, hb: Heartbeat, now: float) -> MemberChange | None:
        """Record a heartbeat. Returns the status change, if any; old seqs change nothing."""
        member = self._members.get(hb.node_id)
        if member is None:
            self._members[hb.node_id] = Member(hb, now, status=Status(hb.status))
            return MemberChange(hb.node_id, None, Status(hb.status))
        if hb.seq <= member.heartbeat.seq:
            return None
        member.heartbeat, member.last_seen, member.suspect_since = hb, now, None
        return self._set(member, Status(hb.status))

    def connection_lost(self, node_id: bytes, now: float) -> MemberChange | None:
        member = self._members.get(node_id)
        if member is None or member.status in (Status.SUSPECT, Status.OFFLINE):
            return None
        member.suspect_since = now
        return self._set(member, Status.SUSPECT)

    def tick(self, now: float) -> list[MemberChange]:
        changes = []
        suspect_age = self.suspect_after * self.interval
        offline_age = self.offline_after * self.interval
        for member in self._members.values():
            if member.node_id == self.self_id:
                continue
            age = now - member.last_seen
            status = Status(member.heartbeat.status)
            if age >= offline_age or (
                member.suspect_since is not None and now - member.suspect_since >= suspect_age
            ):
                status = Status.OFFLINE
            elif age >= suspect_age or member.suspect_since is not None:
                status = Status.SUSPECT
            change = self._set(member, status)
            if change:
                changes.append(change)
        return changes

    def _set(self, member: Member, status: Status) -> MemberChange | None:
        if member.status == status:
            return None
        old, member.status = member.status, status
        return MemberChange(member.node_id, old, status)

    def live(self) -> list[Member]:
        return [m for m in self._members.values() if m.status not in (Status.OFFLINE,)]
