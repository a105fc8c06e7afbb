"""Membership: who is in the network and how alive each member looks (sans-IO).

A member is described by signed statements that relays pass on unchanged:

- its own **heartbeat** (domain ``heartbeat``): status, capacity, metrics, address and ``seq``,
  which only grows (wall-clock milliseconds at signing, so a restart supersedes). A member's
  newest heartbeat seq is its *incarnation*.
- **notices** about it by other nodes (domain ``member``): "I suspect X at seq s" and "X is
  dead at seq s". A notice counts only for the exact incarnation it names.

Failure detection is SWIM with the Lifeguard refinements, as in HashiCorp memberlist:

- Each probe period a node pings one member, round-robin over a shuffled list. Without an ack
  within the probe timeout it asks ``indirect_checks`` other members to ping it (ping-req);
  they answer ack, or nack when they heard nothing.
- A member that answered nobody by the end of the period is suspected: a signed notice
  spreads, and each node runs a suspicion timer that shrinks as independent suspicions arrive,
  from ``suspicion_max_mult`` times the minimum down to ``suspicion_mult x log10(N) x probe
  period`` (Lifeguard's dynamic suspicion). When a timer runs out the member is declared dead
  (OFFLINE) with another notice.
- A suspected node refutes by signing a newer heartbeat. A ping to a suspect carries the
  suspicion, so a node that was only paused hears of it at once (Lifeguard's buddy system). A
  node that misses acks and nacks slows its own probing (local health awareness), so a slow
  node does not accuse healthy ones.

Changes (heartbeats and notices) are piggybacked on probe messages, each sent
``retransmit_mult x ceil(log10(N + 1))`` times, fewest-sent and newest first. Anti-entropy
(push-pull) compares a 64-bit digest of the whole table with one member when a link comes up,
every ``push_pull_interval`` (scaled with log N, as memberlist does), and with a recently dead
member every ``reconnect_interval``: that is how the two sides of a healed partition meet again.

Heartbeats carry the machine metrics. With up to ``metrics_budget`` members every node sends
one each ``interval``; beyond that the interval grows with N, so the whole network sends about
``metrics_budget`` heartbeats per interval. A change of status or capacity is sent at once.

As a backstop (for members that cannot be probed), a member whose heartbeats stop for
``suspect_after`` / ``offline_after`` heartbeat intervals is shown SUSPECT / OFFLINE here; that
local view is never spread.

Nothing here reads a clock or touches the network: ``now`` is passed in, frames to send are
collected in an outbox (``take_frames``), and notices are signed by a function the owner sets.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import heapq
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from modelmine import wire
from modelmine.signing import Signed

HEARTBEAT_DOMAIN: Final = "heartbeat"
NOTICE_DOMAIN: Final = "member"
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
MAX_PIGGYBACK: Final = 16  # statements on one probe message, at most (receivers refuse more)
MAX_SYNC_STATEMENTS: Final = 64  # per push-pull frame
MAX_SYNC_IDS: Final = 1024  # per "send me these" frame
MAX_NONCE: Final = 2**53

# SWIM states of one incarnation; at equal seq a later state wins.
ALIVE: Final = 0
SUSPECTED: Final = 1
DEAD: Final = 2
_STATE_NAMES: Final = ("alive", "suspect", "dead")


class Status(enum.StrEnum):
    ONLINE = "ONLINE"
    BUSY = "BUSY"
    MAINTENANCE = "MAINTENANCE"
    SUSPECT = "SUSPECT"
    OFFLINE = "OFFLINE"


_STATUS: Final = {s.value: s for s in Status}  # a dict lookup is much cheaper than Status(x)


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


@dataclass(frozen=True)
class Notice:
    """A node's signed claim about one incarnation of another: suspected, or dead."""

    node_id: bytes
    seq: int
    state: int  # SUSPECTED or DEAD
    accuser: bytes

    def to_payload(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "seq": self.seq, "state": _STATE_NAMES[self.state]}

    @classmethod
    def from_statement(cls, statement: Signed) -> Notice:
        what = "member notice"
        p = statement.payload()
        node_id = wire.bytes_field(p, "node_id", 32, what)
        if node_id == statement.signer:
            raise wire.WireError("member notice: a node cannot accuse itself")
        state = wire.str_field(p, "state", 8, what)
        if state not in ("suspect", "dead"):
            raise wire.WireError("member notice.state: must be suspect or dead")
        seq = wire.int_field(p, "seq", 0, 2**63 - 1, what)
        return cls(node_id, seq, SUSPECTED if state == "suspect" else DEAD, statement.signer)


@dataclass(frozen=True)
class SwimConfig:
    """Failure detection and dissemination settings (memberlist's LAN defaults, mostly)."""

    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_mult: int = 6
    retransmit_mult: int = 3  # memberlist: 4 on a LAN; 2 let refutations miss nodes
    piggyback_items: int = 12
    piggyback_bytes: int = 16 * 1024
    awareness_max: int = 8
    metrics_budget: int = 4  # heartbeats per interval the whole network sends, beyond that size
    push_pull_interval: float = 30.0
    reconnect_interval: float = 10.0
    reconnect_for: float = 3600.0  # how long a dead member is still tried
    forget_dead_after: float = 3600.0
    max_members: int = 16_384
    max_relays: int = 64  # ping-reqs served at once
    sync_answer_every: float = 5.0  # per peer: a full digest at most this often


@dataclass(slots=True)
class Member:
    heartbeat: Heartbeat
    last_seen: float  # our clock: the newest heartbeat, or the last ack from it
    raw: bytes = b""  # the signed heartbeat, relayed as it came
    status: Status = Status.ONLINE
    suspect_since: float | None = None
    state: int = ALIVE  # SWIM state of incarnation heartbeat.seq
    notice: bytes = b""  # the signed notice behind SUSPECTED or DEAD
    accusers: list[bytes] = field(default_factory=list)
    deadline: float = 0.0  # when a suspicion becomes a death, here
    died_at: float = 0.0
    node_id: bytes = field(init=False)
    seq: int = field(init=False)  # the incarnation: heartbeat.seq, kept at hand

    def __post_init__(self) -> None:
        self.node_id = self.heartbeat.node_id
        self.seq = self.heartbeat.seq


@dataclass(frozen=True)
class MemberChange:
    node_id: bytes
    old: Status | None
    new: Status


@dataclass(slots=True)
class _Probe:
    target: bytes
    nonce: int
    timeout_at: float  # no direct ack by then: ask others
    ends: float  # nobody's ack by then: suspect
    acked: bool = False
    indirect: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    requester: bytes
    nonce: int  # the requester's
    target: bytes
    deadline: float


class _Broadcasts:
    """Statements waiting to be piggybacked, one per member: the least sent go first, and
    of those the newest (memberlist's transmit-limited queue)."""

    def __init__(self) -> None:
        self._items: dict[bytes, list[Any]] = {}  # member -> [times sent, -order, raw]
        self._order = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: bytes, raw: bytes) -> None:
        self._order += 1
        self._items.pop(key, None)  # a newer statement about a member replaces the older
        self._items[key] = [0, -self._order, raw]

    def take(self, items: int, budget: int, limit: int, skip: bytes = b"") -> list[bytes]:
        queue = self._items
        if not queue:
            return []
        entries = list(queue.items())
        if len(entries) > items:
            entries = heapq.nsmallest(items, entries, key=lambda kv: (kv[1][0], kv[1][1]))
        out: list[bytes] = []
        for key, entry in entries:
            raw = entry[2]
            if raw == skip:
                continue
            budget -= len(raw)
            if budget < 0:
                break
            out.append(raw)
            entry[0] += 1
            if entry[0] >= limit:
                del queue[key]
        return out


@functools.lru_cache(maxsize=1 << 16)
def _entry_hash(node_id: bytes, state: int) -> int:
    # Over (node, state) and not the seq: a fresh heartbeat that changes nothing but metrics
    # does not make two tables "differ", so push-pull between agreeing nodes stays one frame.
    digest = hashlib.blake2b(node_id + bytes([state]), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


Sign = Callable[[str, dict[str, Any]], Signed]


class Membership:
    """The member table of one node and its SWIM failure detector.

    ``sign`` makes this node's notices (the overlay sets it); without it the node only
    listens. Status changes come back from the calls that cause them; frames to send
    collect in an outbox the owner drains with :meth:`take_frames`.
    """

    def __init__(
        self,
        self_id: bytes,
        interval: float = 5.0,
        suspect_after: int = 3,
        offline_after: int = 6,
        *,
        config: SwimConfig | None = None,
        rng: random.Random | None = None,
        sign: Sign | None = None,
    ) -> None:
        self.self_id = self_id
        self.interval = interval
        self.suspect_after = suspect_after
        self.offline_after = offline_after
        self.config = config or SwimConfig()
        self.rng = rng or random.Random()
        self.sign = sign
        self.awareness = 0
        self._members: dict[bytes, Member] = {}
        self._alive = 0  # members not DEAD, self included
        self._digest = 0
        self._broadcasts = _Broadcasts()
        self._out: list[tuple[bytes, bytes]] = []
        self._changes: list[MemberChange] = []
        self._suspicions: list[tuple[float, bytes, int]] = []  # (deadline, node, seq) heap
        self._ages: list[tuple[float, bytes]] = []  # (when to look again, node) heap
        self._dead: dict[bytes, float] = {}  # dead members -> when they died
        self._probe: _Probe | None = None
        self._probe_list: list[bytes] = []
        self._probe_index = 0
        self._urgent: list[bytes] = []
        self._doubted: dict[bytes, float] = {}  # members whose last probe failed -> when
        self._next_probe = 0.0
        self._relays: dict[int, _Relay] = {}
        self._nonce = 0
        self._next_push_pull: float | None = None
        self._next_reconnect = 0.0
        self._next_forget = 0.0
        self._synced: dict[bytes, float] = {}  # peer -> when we last sent it our digest
        self._refute_seq = -1  # the incarnation of ours others doubt, if any
        self._last_heartbeat: float | None = None
        self._advertised: tuple[str, dict[str, int]] | None = None
        self._limit = (0, 0)  # (size, retransmit limit at that size)
        self._every = ((0, 0.0), 0.0)  # ((size, interval), heartbeat interval)
        self.wake_hint = math.inf  # the earliest timer set outside tick (see take_wake_hint)
        self.piggybacked = 0  # statements sent on probe messages, in all

    # ---- the table ----

    def __iter__(self) -> Iterator[Member]:
        return iter(self._members.values())

    def __len__(self) -> int:
        return len(self._members)

    def get(self, node_id: bytes) -> Member | None:
        return self._members.get(node_id)

    def newest_seq(self, node_id: bytes) -> int:
        member = self._members.get(node_id)
        return member.heartbeat.seq if member else -1

    def live(self) -> list[Member]:
        return [m for m in self._members.values() if m.status is not Status.OFFLINE]

    @property
    def size(self) -> int:
        """The estimated number of nodes in the network (members not known dead)."""
        return max(1, self._alive)

    def heartbeat_every(self) -> float:
        """Seconds between this node's heartbeats at the current network size."""
        key = (self.size, self.interval)
        if self._every[0] != key:
            every = self.interval * max(1.0, key[0] / self.config.metrics_budget)
            self._every = (key, every)
        return self._every[1]

    def heartbeat_due(
        self, now: float, status: str = "", capacity: dict[str, int] | None = None
    ) -> bool:
        """Whether the owner should sign a new heartbeat now: none yet, one is doubted by
        others, the advertised status or capacity changed, or the interval passed."""
        if self._last_heartbeat is None or self._refute_seq >= 0:
            return True
        if status and (status, capacity or {}) != self._advertised:
            return True
        return now - self._last_heartbeat >= self.heartbeat_every()

    def mark_heartbeat(self, now: float, status: str, capacity: dict[str, int]) -> None:
        """Count a heartbeat of ours as sent now (a simulator that starts from a formed
        network records every first heartbeat without publishing it)."""
        self._last_heartbeat = now
        self._advertised = (status, dict(capacity))

    def retransmit_limit(self) -> int:
        """How many times each change is piggybacked: retransmit_mult x ceil(log10(N + 1))."""
        size = self.size
        if self._limit[0] != size:
            limit = self.config.retransmit_mult * max(1, math.ceil(math.log10(size + 1)))
            self._limit = (size, limit)
        return self._limit[1]

    # ---- statements ----

    def observe(
        self, hb: Heartbeat, now: float, raw: bytes = b"", *, spread: bool = True
    ) -> MemberChange | None:
        """Record a heartbeat; a newer seq refutes suspicion and death. Returns the status
        change, if any (it is not also queued for :meth:`take_changes`); old seqs change
        nothing. ``spread=False`` records without passing it on (a table known to be shared)."""
        node_id = hb.node_id
        member = self._members.get(node_id)
        if node_id == self.self_id:
            self._last_heartbeat = now
            self._advertised = (hb.status, dict(hb.capacity))
            if hb.seq > self._refute_seq:
                self._refute_seq = -1
        if member is None:
            if len(self._members) >= self.config.max_members and not self._forget_one():
                return None
            member = Member(hb, now, raw, status=_STATUS[hb.status])
            self._members[node_id] = member
            self._alive += 1
            self._digest = (self._digest + _entry_hash(node_id, ALIVE)) & (2**64 - 1)
            if node_id != self.self_id:
                self._probe_list.insert(self.rng.randrange(len(self._probe_list) + 1), node_id)
                self._watch_age(member, now)
            if raw and spread:
                self._broadcasts.put(node_id, raw)
            return MemberChange(node_id, None, member.status)
        if hb.seq <= member.heartbeat.seq:
            return None
        self._set_entry(member, ALIVE)
        member.heartbeat, member.seq, member.raw, member.last_seen = hb, hb.seq, raw, now
        member.notice, member.accusers, member.suspect_since = b"", [], None
        if raw and spread:
            self._broadcasts.put(node_id, raw)
        if node_id != self.self_id:
            self._watch_age(member, now)
        return self._set(member, _STATUS[hb.status])

    def adopt(self, beats: list[tuple[Heartbeat, bytes]], now: float) -> None:
        """Take a whole table of heartbeats at once, none of them passed on: a simulator's
        network that starts already formed. Members already known are left as they are."""
        mask = 2**64 - 1
        added: list[bytes] = []
        for hb, raw in beats:
            node_id = hb.node_id
            if node_id in self._members or len(self._members) >= self.config.max_members:
                continue
            self._members[node_id] = Member(hb, now, raw, status=_STATUS[hb.status])
            self._alive += 1
            self._digest = (self._digest + _entry_hash(node_id, ALIVE)) & mask
            if node_id != self.self_id:
                added.append(node_id)
        watch = now + self.suspect_after * self.heartbeat_every()
        self._ages.extend((watch, node_id) for node_id in added)
        heapq.heapify(self._ages)
        self._probe_list.extend(added)
        self.rng.shuffle(self._probe_list)

    def on_notice(self, notice: Notice, raw: bytes, now: float) -> list[MemberChange]:
        """Apply another node's suspicion or death notice (signature already checked)."""
        if notice.node_id == self.self_id:
            own = self._members.get(self.self_id)
            if own is not None and notice.seq == own.seq and self._refute_seq < notice.seq:
                self._refute_seq = notice.seq  # refuted by our next heartbeat
                self._aware(1)
                self._hint(now)
            return self._drain_changes()
        member = self._members.get(notice.node_id)
        if member is None or notice.seq != member.seq or notice.state < member.state:
            return []
        if notice.state == member.state:
            if notice.state == SUSPECTED and notice.accuser not in member.accusers:
                self._confirm(member, notice.accuser, raw, now)
            return []
        if notice.state == SUSPECTED:
            self._begin_suspicion(member, notice.accuser, raw, now)
        else:
            self._declare_dead(member, raw, now)
        return self._drain_changes()

    def _begin_suspicion(self, member: Member, accuser: bytes, raw: bytes, now: float) -> None:
        self._set_entry(member, SUSPECTED)
        member.notice, member.accusers, member.suspect_since = raw, [accuser], now
        member.deadline = now + self._suspicion_timeout(0)
        heapq.heappush(self._suspicions, (member.deadline, member.node_id, member.seq))
        self._hint(member.deadline)
        self._broadcasts.put(member.node_id, raw)
        self._record(self._set(member, Status.SUSPECT))

    def _confirm(self, member: Member, accuser: bytes, raw: bytes, now: float) -> None:
        if len(member.accusers) > self.config.suspicion_mult:
            return
        member.accusers.append(accuser)
        since = member.suspect_since if member.suspect_since is not None else now
        deadline = since + self._suspicion_timeout(len(member.accusers) - 1)
        if deadline < member.deadline:
            member.deadline = deadline
            heapq.heappush(self._suspicions, (deadline, member.node_id, member.seq))
            self._hint(deadline)
        self._broadcasts.put(member.node_id, raw)  # confirmations spread too (memberlist)

    def _declare_dead(self, member: Member, raw: bytes, now: float) -> None:
        self._set_entry(member, DEAD)
        member.notice, member.died_at = raw, now
        self._dead[member.node_id] = now
        self._hint(self._next_reconnect)
        self._broadcasts.put(member.node_id, raw)
        self._record(self._set(member, Status.OFFLINE))

    def _set_entry(self, member: Member, state: int) -> None:
        """Move a member to a SWIM state, keeping the digest and the live count right."""
        mask = 2**64 - 1
        self._digest = (self._digest - _entry_hash(member.node_id, member.state)) & mask
        self._digest = (self._digest + _entry_hash(member.node_id, state)) & mask
        if member.state == DEAD and state != DEAD:
            self._alive += 1
            self._dead.pop(member.node_id, None)
            if member.node_id != self.self_id:
                self._probe_list.insert(
                    self.rng.randrange(len(self._probe_list) + 1), member.node_id
                )
        elif member.state != DEAD and state == DEAD:
            self._alive -= 1
        member.state = state

    def _suspicion_timeout(self, confirmations: int) -> float:
        """Lifeguard: from the maximum down to the minimum as independent suspicions arrive."""
        cfg = self.config
        n = self.size
        low = cfg.suspicion_mult * max(1.0, math.log10(n)) * cfg.probe_interval
        high = cfg.suspicion_max_mult * low
        expected = cfg.suspicion_mult - 2 if n - 2 >= cfg.suspicion_mult - 2 else 0
        if expected < 1:
            return low
        fraction = math.log(confirmations + 1) / math.log(expected + 1)
        return max(low, high - (high - low) * fraction)

    def connection_lost(self, node_id: bytes, now: float) -> MemberChange | None:
        """A direct link closed: probe that member next instead of waiting for its turn."""
        member = self._members.get(node_id)
        if member is not None and member.state != DEAD and node_id not in self._urgent:
            self._urgent.append(node_id)
            self._next_probe = min(self._next_probe, now)
            self._hint(now)
        return None

    # ---- time ----

    def tick(self, now: float) -> list[MemberChange]:
        """Run every timer that is due: suspicions, probes, push-pull, the age backstop."""
        if self._suspicions and self._suspicions[0][0] <= now:
            self._expire_suspicions(now)
        self._run_probe(now)
        if self._relays:
            self._expire_relays(now)
        self._expire_ages(now)
        if self._next_push_pull is None:
            self._next_push_pull = now + self.rng.uniform(0.5, 1.0) * self._push_pull_every()
        elif now >= self._next_push_pull:
            self._next_push_pull = now + self._push_pull_every()
            peer = self._random_members(1, exclude=())
            if peer:
                self.start_sync(peer[0])
        if self._dead and now >= self._next_reconnect:
            self._next_reconnect = now + self.config.reconnect_interval
            self._reconnect(now)
        if now >= self._next_forget:
            self._next_forget = now + 60.0
            self._forget_old(now)
        return self._drain_changes()

    def _hint(self, when: float) -> None:
        if when < self.wake_hint:
            self.wake_hint = when

    def take_wake_hint(self) -> float:
        """The earliest timer set since the last call by anything but :meth:`tick` (a driver
        that ticks exactly when asked checks this after each frame instead of recomputing
        :meth:`next_deadline`); infinity if none."""
        hint, self.wake_hint = self.wake_hint, math.inf
        return hint

    def next_deadline(self) -> float:
        """The earliest time :meth:`tick` has something to do."""
        soonest = self._next_probe if self._next_probe < self._next_forget else self._next_forget
        probe = self._probe
        if probe is not None and not probe.acked:
            due = probe.ends if probe.indirect else probe.timeout_at
            if due < soonest:
                soonest = due
        if self._suspicions and self._suspicions[0][0] < soonest:
            soonest = self._suspicions[0][0]
        if self._ages and self._ages[0][0] < soonest:
            soonest = self._ages[0][0]
        if self._relays:
            soonest = min(soonest, min(r.deadline for r in self._relays.values()))
        if self._next_push_pull is not None and self._next_push_pull < soonest:
            soonest = self._next_push_pull
        if self._dead and self._next_reconnect < soonest:
            soonest = self._next_reconnect
        return soonest

    def _expire_suspicions(self, now: float) -> None:
        heap = self._suspicions
        while heap and heap[0][0] <= now:
            _, node_id, seq = heapq.heappop(heap)
            member = self._members.get(node_id)
            if (
                member is None
                or member.state != SUSPECTED
                or member.seq != seq
                or member.deadline > now
                or self.sign is None
            ):
                continue
            notice = Notice(node_id, seq, DEAD, self.self_id)
            self._declare_dead(member, self.sign(NOTICE_DOMAIN, notice.to_payload()).raw, now)

    def _watch_age(self, member: Member, now: float) -> None:
        heapq.heappush(
            self._ages, (now + self.suspect_after * self.heartbeat_every(), member.node_id)
        )

    def _expire_ages(self, now: float) -> None:
        heap = self._ages
        if not heap or heap[0][0] > now:
            return
        every = self.heartbeat_every()
        suspect_age, offline_age = self.suspect_after * every, self.offline_after * every
        while heap and heap[0][0] <= now:
            _, node_id = heapq.heappop(heap)
            member = self._members.get(node_id)
            if member is None or member.state != ALIVE:
                continue
            # Compare the due times themselves (not ages): what is pushed back is always
            # strictly later than now, so rounding can never loop here.
            suspect_at, offline_at = member.last_seen + suspect_age, member.last_seen + offline_age
            if now >= offline_at:
                self._record(self._set(member, Status.OFFLINE))
            elif now >= suspect_at:
                self._record(self._set(member, Status.SUSPECT))
                heapq.heappush(heap, (offline_at, node_id))
            else:
                self._record(self._set(member, _STATUS[member.heartbeat.status]))
                heapq.heappush(heap, (suspect_at, node_id))

    def _forget_old(self, now: float) -> None:
        horizon = now - self.config.forget_dead_after
        for node_id, died in list(self._dead.items()):
            if died < horizon:
                self._forget(node_id)

    def _forget_one(self) -> bool:
        if not self._dead:
            return False
        self._forget(min(self._dead, key=lambda k: (self._dead[k], k)))
        return True

    def _forget(self, node_id: bytes) -> None:
        member = self._members.pop(node_id)
        self._dead.pop(node_id, None)
        self._digest = (self._digest - _entry_hash(node_id, member.state)) & (2**64 - 1)

    # ---- probing ----

    def _run_probe(self, now: float) -> None:
        probe = self._probe
        if probe is not None and not probe.acked:
            if not probe.indirect and now >= probe.timeout_at:
                probe.indirect = True
                helpers = self._random_members(self.config.indirect_checks, exclude=(probe.target,))
                probe.expected_nacks = len(helpers)
                for helper in helpers:
                    self._send(helper, {"t": "preq", "n": probe.nonce, "target": probe.target})
                # A second direct ping alongside: memberlist's fallback over TCP, here the same
                # channel once more, so one lost datagram does not count as silence.
                self._send(probe.target, {"t": "ping", "n": probe.nonce})
            if now >= probe.ends:
                self._probe = None
                missed = probe.expected_nacks - probe.nacks if probe.expected_nacks else 1
                self._aware(missed)
                self._failed(probe.target, now)
        if now < self._next_probe:
            return
        if self._probe is not None and not self._probe.acked:
            self._next_probe = self._probe.ends
            return
        target = self._next_target()
        scale = self.awareness + 1
        self._next_probe = now + self.config.probe_interval * scale
        if target is None:
            self._probe = None
            return
        self._nonce = self._nonce % MAX_NONCE + 1
        self._probe = _Probe(
            target,
            self._nonce,
            now + self.config.probe_timeout * scale,
            now + self.config.probe_interval * scale,
        )
        member = self._members[target]
        buddy = member.notice if member.state == SUSPECTED else b""
        self._send(target, {"t": "ping", "n": self._nonce}, first=buddy)

    def _next_target(self) -> bytes | None:
        while self._urgent:
            node_id = self._urgent.pop(0)
            member = self._members.get(node_id)
            if member is not None and member.state != DEAD:
                return node_id
        for _ in range(2):
            while self._probe_index < len(self._probe_list):
                node_id = self._probe_list[self._probe_index]
                self._probe_index += 1
                member = self._members.get(node_id)
                if member is not None and member.state != DEAD:
                    return node_id
            self._probe_list = [
                k for k, m in self._members.items() if m.state != DEAD and k != self.self_id
            ]
            self.rng.shuffle(self._probe_list)
            self._probe_index = 0
        return None

    def _failed(self, node_id: bytes, now: float) -> None:
        """A probe got no ack. The first time, probe that member again next period; a
        second failure in a row makes it suspected. Each probe already tries the member
        directly twice and through others, so two failed probes in a row almost never happen
        to a live member, even on a lossy network, while a dead one is suspected one period
        later than with a single probe."""
        doubted = self._doubted.pop(node_id, None)
        if doubted is not None and now - doubted <= 3 * self.config.probe_interval * (
            self.awareness + 1
        ):
            self._suspect(node_id, now)
            return
        if len(self._doubted) >= 64:
            self._doubted.clear()
        self._doubted[node_id] = now
        if node_id not in self._urgent:
            self._urgent.append(node_id)

    def _suspect(self, node_id: bytes, now: float) -> None:
        member = self._members.get(node_id)
        if member is None or member.state != ALIVE or self.sign is None:
            return
        raw = self.sign(
            NOTICE_DOMAIN, Notice(node_id, member.seq, SUSPECTED, self.self_id).to_payload()
        )
        self._begin_suspicion(member, self.self_id, raw.raw, now)

    def _aware(self, delta: int) -> None:
        self.awareness = min(self.config.awareness_max - 1, max(0, self.awareness + delta))

    def _random_members(self, k: int, exclude: tuple[bytes, ...]) -> list[bytes]:
        """Up to k distinct live members other than us and ``exclude``, sampled without a scan."""
        pool = self._probe_list
        out: list[bytes] = []
        if not pool:
            return out
        for _ in range(4 * k):
            node_id = pool[self.rng.randrange(len(pool))]
            member = self._members.get(node_id)
            if member is None or member.state == DEAD or node_id in exclude or node_id in out:
                continue
            out.append(node_id)
            if len(out) >= k:
                break
        return out

    def on_ping(self, peer: bytes, nonce: int, now: float) -> None:
        self._seen_alive(peer, now)
        self._send(peer, {"t": "ack", "n": nonce})

    def on_ack(self, peer: bytes, nonce: int, now: float) -> None:
        relay = self._relays.get(nonce)
        if relay is not None and relay.target == peer:
            del self._relays[nonce]
            self._seen_alive(peer, now)
            self._send(relay.requester, {"t": "ack", "n": relay.nonce}, piggyback=False)
            return
        probe = self._probe
        if probe is None or probe.nonce != nonce or probe.acked:
            return
        if peer == probe.target:
            self._aware(-1)
        self._seen_alive(probe.target, now)
        self._doubted.pop(probe.target, None)
        probe.acked = True

    def on_nack(self, peer: bytes, nonce: int, now: float) -> None:
        probe = self._probe
        if probe is not None and probe.nonce == nonce and probe.indirect:
            probe.nacks = min(probe.expected_nacks, probe.nacks + 1)

    def on_ping_req(self, peer: bytes, nonce: int, target: bytes, now: float) -> None:
        if target == self.self_id:
            self._send(peer, {"t": "ack", "n": nonce})
            return
        if target not in self._members or len(self._relays) >= self.config.max_relays:
            return  # unknown target, or too busy: the requester counts a missing nack
        self._nonce = self._nonce % MAX_NONCE + 1
        # Our nack must reach the requester before its period ends (it asked after its own
        # probe timeout), or it would count us as silent and slow itself down for nothing.
        deadline = now + 0.8 * self.config.probe_timeout
        self._relays[self._nonce] = _Relay(peer, nonce, target, deadline)
        self._hint(deadline)
        self._send(target, {"t": "ping", "n": self._nonce})

    def _expire_relays(self, now: float) -> None:
        if not self._relays:
            return
        for nonce, relay in list(self._relays.items()):
            if relay.deadline <= now:
                del self._relays[nonce]
                self._send(relay.requester, {"t": "nack", "n": relay.nonce}, piggyback=False)

    def _seen_alive(self, node_id: bytes, now: float) -> None:
        member = self._members.get(node_id)
        if member is not None and member.state == ALIVE and now > member.last_seen:
            member.last_seen = now
            if member.status in (Status.SUSPECT, Status.OFFLINE):  # only the age backstop
                self._record(self._set(member, _STATUS[member.heartbeat.status]))

    # ---- outbox ----

    def _send(
        self, peer: bytes, frame: dict[str, Any], *, first: bytes = b"", piggyback: bool = True
    ) -> None:
        if piggyback:
            cfg = self.config
            items = self._broadcasts.take(
                cfg.piggyback_items - bool(first),
                cfg.piggyback_bytes,
                self.retransmit_limit(),
                skip=first,
            )
            if first:
                items.insert(0, first)
            if items:
                frame["pb"] = items
                self.piggybacked += len(items)
        # Every field is an int, bytes or a list of them, so packing the map with its keys in
        # sorted order is the canonical encoding (as signing_input does for its list).
        packed: bytes = msgpack.packb(dict(sorted(frame.items())), use_bin_type=True)
        self._out.append((peer, packed))

    def take_frames(self) -> list[tuple[bytes, bytes]]:
        """Frames to send, as (node id, frame) pairs; each goes straight to that node."""
        out, self._out = self._out, []
        return out

    @property
    def has_output(self) -> bool:
        """Whether frames or status changes wait to be taken."""
        return bool(self._out or self._changes)

    def _record(self, change: MemberChange | None) -> MemberChange | None:
        if change is not None:
            self._changes.append(change)
        return change

    def _drain_changes(self) -> list[MemberChange]:
        out, self._changes = self._changes, []
        return out

    def take_changes(self) -> list[MemberChange]:
        """Status changes caused by probe frames since the last call."""
        return self._drain_changes()

    def _set(self, member: Member, status: Status) -> MemberChange | None:
        if member.status == status:
            return None
        old, member.status = member.status, status
        return MemberChange(member.node_id, old, status)

    # ---- anti-entropy (push-pull) ----

    def _push_pull_every(self) -> float:
        n = self.size
        scale = 1 if n <= 32 else math.ceil(math.log2(n) - math.log2(32)) + 1
        return self.config.push_pull_interval * scale

    def _reconnect(self, now: float) -> None:
        recent = [k for k, died in self._dead.items() if now - died < self.config.reconnect_for]
        if recent:
            self.start_sync(recent[self.rng.randrange(len(recent))])

    def start_sync(self, peer: bytes) -> None:
        """Offer ``peer`` our digest; it answers with its own table if they differ."""
        self._send(peer, {"t": "sync", "h": self._digest, "n": len(self._members)}, piggyback=False)

    def on_sync(self, peer: bytes, digest: int, now: float) -> None:
        if digest == self._digest:
            return
        last = self._synced.get(peer)
        if last is not None and now - last < self.config.sync_answer_every:
            return
        if len(self._synced) >= 1024:
            self._synced = {k: t for k, t in self._synced.items() if now - t < 60.0}
        self._synced[peer] = now
        entries = [[k, m.seq, m.state] for k, m in self._members.items()]
        self._send(peer, {"t": "syncd", "e": entries}, piggyback=False)

    def on_sync_digest(self, peer: bytes, entries: list[Any], now: float) -> None:
        """Push what we know better, ask for what the peer knows better. Raises WireError."""
        theirs: dict[bytes, tuple[int, int]] = {}
        want: list[bytes] = []
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 3:
                raise wire.WireError("syncd: entry is not [id, seq, state]")
            node_id, seq, state = entry
            if (
                not isinstance(node_id, bytes)
                or len(node_id) != 32
                or type(seq) is not int
                or type(state) is not int
                or not 0 <= seq < 2**63
                or state not in (ALIVE, SUSPECTED, DEAD)
            ):
                raise wire.WireError("syncd: malformed entry")
            theirs[node_id] = (seq, state)
            mine = self._members.get(node_id)
            if mine is None or (seq, state) > (mine.seq, mine.state):
                want.append(node_id)
        push: list[bytes] = []
        for node_id, member in self._members.items():
            other = theirs.get(node_id)
            if other is None or (member.seq, member.state) > other:
                push += self._statements(member, other)
        for i in range(0, len(push), MAX_SYNC_STATEMENTS):
            self._send(
                peer, {"t": "syncp", "pb": push[i : i + MAX_SYNC_STATEMENTS]}, piggyback=False
            )
        for i in range(0, len(want), MAX_SYNC_IDS):
            self._send(peer, {"t": "syncw", "ids": want[i : i + MAX_SYNC_IDS]}, piggyback=False)

    def on_sync_want(self, peer: bytes, ids: list[Any], now: float) -> None:
        push: list[bytes] = []
        for node_id in ids:
            if not isinstance(node_id, bytes):
                raise wire.WireError("syncw: id is not bytes")
            member = self._members.get(node_id)
            if member is not None:
                push += self._statements(member, None)
        for i in range(0, len(push), MAX_SYNC_STATEMENTS):
            self._send(
                peer, {"t": "syncp", "pb": push[i : i + MAX_SYNC_STATEMENTS]}, piggyback=False
            )

    def _statements(self, member: Member, theirs: tuple[int, int] | None) -> list[bytes]:
        out = []
        if member.raw and (theirs is None or theirs[0] < member.seq):
            out.append(member.raw)
        if member.notice:
            out.append(member.notice)
        return out

    @property
    def digest(self) -> int:
        """A 64-bit sum over (node, state) of every member: tables that agree on who is
        alive, suspected and dead have equal digests."""
        return self._digest
