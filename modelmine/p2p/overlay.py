"""The peer overlay (sans-IO): links, peer discovery, gossip, membership and peer scoring.

The overlay never touches a socket or a clock. A driver (``host.py`` over real links, or an
in-memory network in tests) feeds it events -- a link came up or went down, a frame arrived,
time passed -- and carries out the actions it returns: send a frame, dial a peer, drop a peer,
deliver a statement to the application, remember a peer.

Gossip floods validated statements over the sparse overlay: each statement is forwarded once
to every linked peer but the one it came from. The message id is SHA-256 of the exact signed
bytes; a bounded seen-cache drops duplicates. A statement is validated (signature, then the
topic's own rules) before it is delivered or forwarded. Peers that send malformed frames,
bad signatures or forged statements lose score; at the threshold they are disconnected and
banned for a while.
"""

from __future__ import annotations

import enum
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from nacl.signing import SigningKey

from modelmine import wire
from modelmine.p2p.membership import HEARTBEAT_DOMAIN, Heartbeat, MemberChange, Membership
from modelmine.signing import SignatureError, Signed, parse, sign, verify

log = logging.getLogger(__name__)

PEER_DOMAIN: Final = "peer"
HEARTBEAT_TOPIC: Final = "heartbeat"
MAX_TOPIC_LEN: Final = 64
MAX_ADDRESS_LEN: Final = 256


class Verdict(enum.Enum):
    ACCEPT = "accept"  # deliver and forward
    IGNORE = "ignore"  # valid but not worth forwarding (old, duplicate in meaning); no penalty
    REJECT = "reject"  # invalid: penalize the peer that sent it


# A topic validator checks a signature-verified statement against the application's rules.
# It returns a verdict or raises wire.WireError (same as REJECT, with the reason).
TopicValidator = Callable[[Signed, float], Verdict]


@dataclass(frozen=True)
class OverlayConfig:
    degree: int = 8
    max_degree: int = 16
    seen_cache_size: int = 100_000
    seen_ttl: float = 300.0
    frames_per_second: float = 200.0
    frame_burst: float = 400.0
    ban_seconds: float = 600.0
    ban_score: float = -100.0
    peer_exchange_max: int = 32
    dial_backoff_min: float = 1.0
    dial_backoff_max: float = 60.0
    max_known_peers: int = 4096
    sync_max: int = 64


# ---- actions returned to the driver ----


@dataclass(frozen=True)
class Send:
    peer: bytes
    frame: bytes


@dataclass(frozen=True)
class Dial:
    node_id: bytes
    address: str


@dataclass(frozen=True)
class Disconnect:
    peer: bytes
    reason: str
    banned_until: float | None = None


@dataclass(frozen=True)
class Deliver:
    topic: str
    statement: Signed
    from_peer: bytes | None


@dataclass(frozen=True)
class PeerLearned:
    node_id: bytes
    address: str
    name: str


@dataclass(frozen=True)
class MembersChanged:
    changes: tuple[MemberChange, ...]


@dataclass(frozen=True)
class Request:
    """A peer asks this node something (blob chunks, blocks): the driver answers it."""

    peer: bytes
    id: int
    kind: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Response:
    peer: bytes
    id: int
    body: dict[str, Any]
    error: str | None


def request_frame(request_id: int, kind: str, body: dict[str, Any]) -> bytes:
    return wire.encode({"t": "req", "id": request_id, "kind": kind, "body": body})


def response_frame(request_id: int, body: dict[str, Any], error: str | None = None) -> bytes:
    frame: dict[str, Any] = {"t": "resp", "id": request_id, "body": body}
    if error is not None:
        frame["error"] = error
    return wire.encode(frame)


Action = Send | Dial | Disconnect | Deliver | PeerLearned | MembersChanged | Request | Response


@dataclass(frozen=True)
class PeerRecord:
    node_id: bytes
    address: str
    name: str
    time: float

    @classmethod
    def from_statement(cls, statement: Signed) -> PeerRecord:
        what = "peer record"
        p = statement.payload()
        node_id = wire.bytes_field(p, "node_id", 32, what)
        if node_id != statement.signer:
            raise wire.WireError("peer record signed by another node")
        address = wire.str_field(p, "address", MAX_ADDRESS_LEN, what)
        if address:
            check_address(address)
        return cls(
            node_id,
            address,
            wire.str_field(p, "name", 64, what),
            float(wire.field(p, "time", (int, float), what)),
        )


def check_address(address: str) -> None:
    parts = urlsplit(address)
    if parts.scheme not in ("ws", "wss") or not parts.hostname or parts.port is None:
        raise wire.WireError(f"peer address {address!r} is not ws://HOST:PORT")


def sign_peer_record(key: SigningKey, chain_id: str, address: str, name: str, now: float) -> Signed:
    payload = {"node_id": bytes(key.verify_key), "address": address, "name": name, "time": now}
    return sign(key, PEER_DOMAIN, chain_id, payload)


@dataclass
class _Known:
    address: str
    name: str
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class _Link:
    initiator: bool
    tokens: float
    refilled: float
    score: float = 0.0


@dataclass(frozen=True)
class OverlayStatistics:
    links: int
    known_peers: int
    members: int
    seen_cache: int
    delivered: int
    duplicates: int
    rejected: int
    banned: int


@dataclass
class Overlay:
    identity: SigningKey
    chain_id: str
    config: OverlayConfig = field(default_factory=OverlayConfig)
    membership: Membership | None = None
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self.node_id = bytes(self.identity.verify_key)
        if self.membership is None:
            self.membership = Membership(self.node_id)
        self.members: Membership = self.membership
        self._links: dict[bytes, _Link] = {}
        self._known: dict[bytes, _Known] = {}
        self._pending_dials: set[bytes] = set()
        self._banned: dict[bytes, float] = {}
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._validators: dict[str, TopicValidator] = {HEARTBEAT_TOPIC: self._check_heartbeat}
        self._self_record: Signed | None = None
        self._records: dict[bytes, bytes] = {}  # node id -> its newest signed peer record
        self._heartbeats: dict[bytes, bytes] = {}  # node id -> its newest signed heartbeat
        self._delivered = self._duplicates = self._rejected = 0

    # ---- configuration by the driver ----

    def register_topic(self, topic: str, validator: TopicValidator) -> None:
        self._validators[topic] = validator

    def set_self_record(self, address: str, name: str, now: float) -> Signed:
        self._self_record = sign_peer_record(self.identity, self.chain_id, address, name, now)
        return self._self_record

    @property
    def self_record(self) -> Signed | None:
        return self._self_record

    def ban(self, node_id: bytes, until: float) -> None:
        self._banned[node_id] = until

    def add_known(self, node_id: bytes, address: str, name: str = "") -> list[Action]:
        """Remember a dialable peer (from the peer store, bootstrap or peer exchange)."""
        if node_id == self.node_id or not address:
            return []
        known = self._known.get(node_id)
        if known is not None:
            changed = known.address != address or (name and known.name != name)
            known.address, known.name = address, name or known.name
            if known.address != address:
                known.failures, known.retry_at = 0, 0.0
            return [PeerLearned(node_id, address, known.name)] if changed else []
        if len(self._known) >= self.config.max_known_peers:
            # Forget one peer we are not linked to, chosen at random, to stay bounded.
            idle = [k for k in self._known if k not in self._links]
            if not idle:
                return []
            forget = self.rng.choice(sorted(idle))
            del self._known[forget]
            self._records.pop(forget, None)
        self._known[node_id] = _Known(address, name)
        return [PeerLearned(node_id, address, name)]

    def add_record(self, raw: bytes, now: float) -> list[Action]:
        """A signed peer record from outside (bootstrap, peer exchange). Raises WireError."""
        statement = parse(raw)
        if statement.domain != PEER_DOMAIN:
            raise wire.WireError(f"expected a peer record, got {statement.domain!r}")
        verify(statement, self.chain_id)
        return self._learn(statement)

    def _learn(self, statement: Signed) -> list[Action]:
        record = PeerRecord.from_statement(statement)
        if record.node_id == self.node_id or not record.address:
            return []
        actions = self.add_known(record.node_id, record.address, record.name)
        if record.node_id in self._known:
            self._records[record.node_id] = statement.raw
        return actions

    # ---- link lifecycle ----

    @property
    def linked(self) -> list[bytes]:
        return list(self._links)

    def dial_now(self, node_id: bytes, now: float) -> list[Action]:
        """Dial a known peer right away (a service needs it), unless linked or already dialing."""
        known = self._known.get(node_id)
        if (
            known is None
            or node_id in self._links
            or node_id in self._pending_dials
            or self.is_banned(node_id, now)
        ):
            return []
        self._pending_dials.add(node_id)
        return [Dial(node_id, known.address)]

    def address_of(self, node_id: bytes) -> str | None:
        known = self._known.get(node_id)
        return known.address if known else None

    def penalize(self, peer: bytes, points: float, reason: str, now: float) -> list[Action]:
        """For services above the overlay (blobs, sync) whose peers misbehave."""
        return self._penalize(peer, points, reason, now)

    def is_banned(self, node_id: bytes, now: float) -> bool:
        until = self._banned.get(node_id)
        if until is None:
            return False
        if until <= now:
            del self._banned[node_id]
            return False
        return True

    def on_link_up(self, peer: bytes, initiator: bool, now: float) -> list[Action]:
        self._pending_dials.discard(peer)
        if self.is_banned(peer, now):
            return [Disconnect(peer, "peer is banned")]
        if not initiator and len(self._links) >= self.config.max_degree:
            # Tell it about others before turning it away, so it can find room elsewhere.
            return [Send(peer, self._peers_frame(exclude=peer)), Disconnect(peer, "too many peers")]
        self._links[peer] = _Link(initiator, self.config.frame_burst, now)
        known = self._known.get(peer)
        if known is not None:
            known.failures, known.retry_at = 0, 0.0
        actions: list[Action] = []
        if self._self_record is not None:
            actions.append(Send(peer, wire.encode({"t": "hello", "record": self._self_record.raw})))
        actions.append(Send(peer, wire.encode({"t": "getpeers"})))
        # Membership sync: a new neighbour learns every live member at once instead of waiting
        # a heartbeat interval (like memberlist's push/pull on join). Bounded by sync_max.
        live = [m.node_id for m in self.members.live() if m.node_id in self._heartbeats]
        self.rng.shuffle(live)
        for node_id in live[: self.config.sync_max]:
            frame = {"t": "gossip", "topic": HEARTBEAT_TOPIC, "data": self._heartbeats[node_id]}
            actions.append(Send(peer, wire.encode(frame)))
        return actions

    def on_link_down(self, peer: bytes, now: float) -> list[Action]:
        if self._links.pop(peer, None) is None:
            return []
        change = self.members.connection_lost(peer, now)
        return [MembersChanged((change,))] if change else []

    def on_dial_failed(self, node_id: bytes, now: float) -> None:
        self._pending_dials.discard(node_id)
        known = self._known.get(node_id)
        if known is not None:
            known.failures += 1
            backoff = min(
                self.config.dial_backoff_max,
                self.config.dial_backoff_min * 2 ** min(known.failures - 1, 16),
            )
            known.retry_at = now + backoff * (0.5 + self.rng.random() / 2)

    # ---- frames from peers ----

    def on_frame(self, peer: bytes, data: bytes, now: float) -> list[Action]:
        link = self._links.get(peer)
        if link is None:
            return []
        if not self._take_token(link, now):
            return self._penalize(peer, 5, "exceeded the frame rate limit", now)
        try:
            msg = wire.expect_map(wire.decode(data), "frame")
            kind = wire.str_field(msg, "t", 16, "frame")
            if kind == "gossip":
                return self._on_gossip(peer, msg, now)
            if kind == "hello":
                record_raw: bytes = wire.field(msg, "record", bytes, "hello")
                return self._on_record(peer, record_raw, now, must_be=peer)
            if kind == "getpeers":
                return [Send(peer, self._peers_frame(exclude=peer))]
            if kind == "peers":
                records = wire.field(msg, "records", list, "peers")
                if len(records) > self.config.peer_exchange_max:
                    raise wire.WireError("peers: too many records")
                actions: list[Action] = []
                for raw in records:
                    if not isinstance(raw, bytes):
                        raise wire.WireError("peers: record is not bytes")
                    actions += self._on_record(peer, raw, now)
                return actions
            if kind == "req":
                return [
                    Request(
                        peer,
                        wire.int_field(msg, "id", 0, 2**53, "req"),
                        wire.str_field(msg, "kind", MAX_TOPIC_LEN, "req"),
                        wire.expect_map(wire.field(msg, "body", dict, "req"), "req.body"),
                    )
                ]
            if kind == "resp":
                error = msg.get("error")
                if error is not None and not isinstance(error, str):
                    raise wire.WireError("resp.error: expected a string")
                return [
                    Response(
                        peer,
                        wire.int_field(msg, "id", 0, 2**53, "resp"),
                        wire.expect_map(wire.field(msg, "body", dict, "resp"), "resp.body"),
                        error[:256] if error else None,
                    )
                ]
            raise wire.WireError(f"unknown frame type {kind!r}")
        except SignatureError as exc:
            return self._penalize(peer, 100, str(exc), now)
        except wire.WireError as exc:
            return self._penalize(peer, 50, f"invalid frame: {exc}", now)

    def _on_record(
        self, peer: bytes, raw: bytes, now: float, must_be: bytes | None = None
    ) -> list[Action]:
        statement = parse(raw)
        if statement.domain != PEER_DOMAIN:
            raise wire.WireError(f"expected a peer record, got {statement.domain!r}")
        if must_be is not None and statement.signer != must_be:
            raise wire.WireError("hello record names another node than the link's")
        verify(statement, self.chain_id)
        return self._learn(statement)

    def _on_gossip(self, peer: bytes, msg: dict[str, Any], now: float) -> list[Action]:
        topic = wire.str_field(msg, "topic", MAX_TOPIC_LEN, "gossip")
        data: bytes = wire.field(msg, "data", bytes, "gossip")
        validator = self._validators.get(topic)
        if validator is None:
            raise wire.WireError(f"unknown gossip topic {topic!r}")
        message_id = wire.sha256(data)
        if message_id in self._seen:
            self._duplicates += 1
            return []
        self._remember(message_id, now)
        statement = parse(data)
        verify(statement, self.chain_id)
        try:
            verdict = validator(statement, now)
        except wire.WireError as exc:
            self._rejected += 1
            return self._penalize(peer, 100, f"forged or invalid {topic} statement: {exc}", now)
        if verdict is Verdict.REJECT:
            self._rejected += 1
            return self._penalize(peer, 100, f"invalid {topic} statement", now)
        if verdict is Verdict.IGNORE:
            return []
        self._delivered += 1
        actions: list[Action] = [Deliver(topic, statement, peer)]
        actions += self._after_accept(topic, statement, now)
        actions += self._forward(topic, data, exclude=peer)
        return actions

    # ---- publishing ----

    def publish(self, topic: str, statement: Signed, now: float) -> list[Action]:
        """Gossip a statement made here. Delivered locally too, as if it arrived."""
        message_id = statement.message_id
        if message_id in self._seen:
            return []
        self._remember(message_id, now)
        validator = self._validators.get(topic)
        if validator is None:
            raise ValueError(f"unknown topic {topic!r}")
        actions: list[Action] = [Deliver(topic, statement, None)]
        if validator(statement, now) is Verdict.ACCEPT:
            actions += self._after_accept(topic, statement, now)
        actions += self._forward(topic, statement.raw, exclude=None)
        return actions

    def _forward(self, topic: str, data: bytes, exclude: bytes | None) -> list[Action]:
        frame = wire.encode({"t": "gossip", "topic": topic, "data": data})
        return [Send(p, frame) for p in self._links if p != exclude]

    def _after_accept(self, topic: str, statement: Signed, now: float) -> list[Action]:
        if topic != HEARTBEAT_TOPIC:
            return []
        hb = Heartbeat.from_statement(statement)
        actions: list[Action] = []
        change = self.members.observe(hb, now)
        if change is not None:
            actions.append(MembersChanged((change,)))
        self._heartbeats[hb.node_id] = statement.raw
        if hb.address and hb.node_id != self.node_id:
            actions += self.add_known(hb.node_id, hb.address, hb.name)
        return actions

    def _check_heartbeat(self, statement: Signed, now: float) -> Verdict:
        if statement.domain != HEARTBEAT_DOMAIN:
            raise wire.WireError(f"expected a heartbeat, got {statement.domain!r}")
        hb = Heartbeat.from_statement(statement)
        if hb.address:
            check_address(hb.address)
        if hb.seq <= self.members.newest_seq(hb.node_id):
            return Verdict.IGNORE
        return Verdict.ACCEPT

    # ---- time ----

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        changes = self.members.tick(now)
        if changes:
            actions.append(MembersChanged(tuple(changes)))
        horizon = now - self.config.seen_ttl
        while self._seen and next(iter(self._seen.values())) < horizon:
            self._seen.popitem(last=False)
        actions += self._dials(now)
        return actions

    def _dials(self, now: float) -> list[Action]:
        want = self.config.degree - len(self._links) - len(self._pending_dials)
        if want <= 0:
            return []
        candidates = [
            node_id
            for node_id, known in self._known.items()
            if node_id not in self._links
            and node_id not in self._pending_dials
            and known.retry_at <= now
            and not self.is_banned(node_id, now)
        ]
        candidates.sort()  # determinism before the seeded shuffle
        self.rng.shuffle(candidates)
        actions: list[Action] = []
        for node_id in candidates[:want]:
            self._pending_dials.add(node_id)
            actions.append(Dial(node_id, self._known[node_id].address))
        return actions

    # ---- helpers ----

    def _remember(self, message_id: bytes, now: float) -> None:
        self._seen[message_id] = now
        while len(self._seen) > self.config.seen_cache_size:
            self._seen.popitem(last=False)

    def _take_token(self, link: _Link, now: float) -> bool:
        elapsed = max(0.0, now - link.refilled)
        link.tokens = min(
            self.config.frame_burst, link.tokens + elapsed * self.config.frames_per_second
        )
        link.refilled = now
        if link.tokens < 1.0:
            return False
        link.tokens -= 1.0
        return True

    def _penalize(self, peer: bytes, points: float, reason: str, now: float) -> list[Action]:
        link = self._links.get(peer)
        if link is None:
            return []
        link.score -= points
        log.warning("peer %s: %s (score %.0f)", peer.hex()[:8], reason, link.score)
        if link.score > self.config.ban_score:
            return []
        until = now + self.config.ban_seconds
        self._banned[peer] = until
        self._links.pop(peer, None)
        return [Disconnect(peer, f"banned: {reason}", banned_until=until)]

    def _peers_frame(self, exclude: bytes) -> bytes:
        # Only records their owners signed are relayed; we keep the newest one per peer.
        records = [r for node_id, r in self._records.items() if node_id != exclude]
        if self._self_record is not None:
            records.append(self._self_record.raw)
        self.rng.shuffle(records)
        return wire.encode({"t": "peers", "records": records[: self.config.peer_exchange_max]})

    def statistics(self) -> OverlayStatistics:
        return OverlayStatistics(
            links=len(self._links),
            known_peers=len(self._known),
            members=len(self.members),
            seen_cache=len(self._seen),
            delivered=self._delivered,
            duplicates=self._duplicates,
            rejected=self._rejected,
            banned=len(self._banned),
        )

    def known_peers(self) -> Iterable[tuple[bytes, str, str]]:
        return ((k, v.address, v.name) for k, v in self._known.items())
