"""The peer overlay (sans-IO): links, peer discovery, gossip, topics, membership and scoring.

The overlay never touches a socket or a clock. A driver (``host.py`` over real links, or an
in-memory network in ``modelmine.sim``) feeds it events -- a link came up or went down, a frame
arrived, time passed -- and carries out the actions it returns: send a frame, dial a peer, drop
a peer, deliver a statement to the application, remember a peer. ``next_tick`` says when the
driver should call ``tick`` again.

Broadcast topics travel over the sparse overlay by lazy push (Plumtree, Leitao et al. 2007):
a statement is pushed whole to the *eager* links and announced by id (``ihave``) to the *lazy*
ones. A node that hears of a statement it lacks waits ``graft_timeout`` for a push, then asks
an announcer (``iwant``), which also makes that link eager. A node that receives a statement
twice makes the second sender's link lazy (``prune``). The eager links settle into a spanning
tree, so each node receives about one copy of each statement, and the lazy announcements
repair the tree where links lose frames.

*Followed* topics (a job's progress) never flood: a node follows a topic at its publisher
(``sub``, renewed while it follows), and the publisher sends each statement straight to its
followers (``msg``). Any statement can also be sent straight to one node (``send_to``).

Membership (``membership.py``) runs SWIM over frames to arbitrary members, not only linked
ones: such *direct* frames come back as ``Send(direct=True)``; a driver delivers them over a
link when there is one and otherwise to the node's address (the host dials it; the simulator
sends a datagram, see ``on_datagram``).

The message id is SHA-256 of the exact signed bytes; a bounded seen-cache drops duplicates. A
statement is validated (signature, then the topic's own rules) before it is delivered or
forwarded. Peers that send malformed frames, bad signatures, forged statements or floods lose
score; at the threshold they are disconnected and banned for a while.
"""

from __future__ import annotations

import enum
import functools
import heapq
import logging
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from nacl.signing import SigningKey

from modelmine import wire
from modelmine.p2p.membership import (
    HEARTBEAT_DOMAIN,
    MAX_NONCE,
    MAX_PIGGYBACK,
    MAX_SYNC_IDS,
    MAX_SYNC_STATEMENTS,
    NOTICE_DOMAIN,
    Heartbeat,
    MemberChange,
    Membership,
    Notice,
    Status,
)
from modelmine.signing import SignatureError, Signed, parse, sign, verify

log = logging.getLogger(__name__)

PEER_DOMAIN: Final = "peer"
HEARTBEAT_TOPIC: Final = "heartbeat"
MAX_TOPIC_LEN: Final = 64
MAX_ADDRESS_LEN: Final = 256
MAX_IDS: Final = 64  # ids in one ihave / iwant frame

# Frames a node may send to another without a link between them (see on_datagram).
DIRECT_KINDS: Final = frozenset(
    {"ping", "ack", "nack", "preq", "sync", "syncd", "syncw", "syncp", "msg", "sub", "unsub"}
    | {"req", "resp"}
)
FRAME_KINDS: Final = (
    DIRECT_KINDS | {"ihave", "iwant", "gossip", "prune", "hello", "getpeers"} | {"peers"}
)
MAX_ANSWERED: Final = 256  # ids remembered per link as already sent in answer to an iwant


class Verdict(enum.Enum):
    ACCEPT = "accept"  # deliver and forward
    IGNORE = "ignore"  # valid but not worth forwarding (old, duplicate in meaning); no penalty
    REJECT = "reject"  # invalid: penalize the peer that sent it


# A topic validator checks a signature-verified statement against the application's rules.
# It returns a verdict or raises wire.WireError (same as REJECT, with the reason).
TopicValidator = Callable[[Signed, float], Verdict]
Verifier = Callable[[Signed], None]  # raises SignatureError
Signer = Callable[[str, dict[str, Any]], Signed]


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
    max_bans: int = 16_384  # banned node ids remembered; the oldest ban goes first
    # Useless items a link may send: a statement pushed again after we pruned the link, an
    # iwant for a statement we do not hold or already sent it. Honest peers send a few (races,
    # lost prunes, expired caches); beyond the budget each costs waste_penalty.
    waste_per_second: float = 20.0
    waste_burst: float = 200.0
    waste_penalty: float = 5.0
    iwant_answers_per_second: float = 200.0  # statements sent per link in answer to iwant
    iwant_answer_burst: float = 1000.0
    prune_resend: float = 1.0  # a prune is repeated on a lazy link at most this often
    peer_exchange_max: int = 32
    dial_backoff_min: float = 1.0
    dial_backoff_max: float = 60.0
    max_known_peers: int = 4096
    # lazy push
    announce_delay: float = 0.25  # announce to lazy links at least this long after arrival
    announce_slack: float = 0.75  # and at the node's next tick, at most this much later
    graft_timeout: float = 0.5  # wait this long for a push after an ihave, then ask
    iwant_timeout: float = 0.5  # then ask the next announcer
    iwant_tries: int = 12
    eager_min: int = 2  # fewer eager links than this: asking for a statement grafts
    graft_after_pulls: int = 3  # statements pulled in a row before asking grafts
    message_cache: int = 4096  # statements kept to answer iwant
    message_ttl: float = 60.0
    max_missing: int = 4096  # announced statements we are waiting for
    max_missing_per_peer: int = 256
    # followed topics
    follow_ttl: float = 60.0  # a follow lapses unless renewed (every third of this)
    max_followers: int = 64  # per topic
    max_followed_topics: int = 1024  # topics with followers, here
    max_follows_per_peer: int = 32
    # membership
    member_statement_cache: int = 16_384  # piggybacked statements already handled
    max_datagram_sources: int = 4096


# ---- actions returned to the driver ----


@dataclass(frozen=True)
class Send:
    """Send ``frame`` to ``peer``. ``direct`` frames may go to a node we have no link to."""

    peer: bytes
    frame: bytes
    direct: bool = False


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

_PRUNE: Final = wire.encode({"t": "prune"})
_GETPEERS: Final = wire.encode({"t": "getpeers"})


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


@functools.lru_cache(maxsize=4096)
def check_address(address: str) -> None:
    # Cached: the same few addresses come back in every record and heartbeat of a peer.
    parts = urlsplit(address)
    if parts.scheme not in ("ws", "wss") or not parts.hostname or parts.port is None:
        raise wire.WireError(f"peer address {address!r} is not ws://HOST:PORT")


def sign_peer_record(key: SigningKey, chain_id: str, address: str, name: str, now: float) -> Signed:
    payload = {"node_id": bytes(key.verify_key), "address": address, "name": name, "time": now}
    return sign(key, PEER_DOMAIN, chain_id, payload)


@dataclass(slots=True)
class _Known:
    address: str
    name: str
    failures: int = 0
    retry_at: float = 0.0


@dataclass(slots=True)
class _Link:
    initiator: bool
    tokens: float
    refilled: float
    score: float = 0.0
    eager: bool = True  # lazy push: pushed whole (eager) or announced by id (lazy)
    promised: set[bytes] = field(default_factory=set)  # announced ids we wait for, first
    # heard of from this link (dropped with the link, so a banned spammer's ids go with it)
    waste: float = 0.0  # budget of useless items (see OverlayConfig.waste_per_second)
    wasted_at: float = 0.0
    answers: float = 0.0  # budget of statements sent in answer to iwant
    answered_at: float = 0.0
    pruned_at: float = -math.inf
    answered: OrderedDict[bytes, None] = field(default_factory=OrderedDict)


@dataclass(slots=True)
class _Source:
    """Rate and score of a node that sends frames without a link (datagrams)."""

    tokens: float
    refilled: float
    score: float = 0.0


@dataclass(slots=True)
class _Missing:
    """A statement announced to us that has not arrived yet."""

    first: bytes
    announcers: list[bytes]
    due: float
    tries: int = 0


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
    eager_links: int = 0
    payloads: int = 0  # broadcast payload copies received (first + duplicates)
    frames: int = 0  # frames handled, of every kind
    strays: int = 0  # followed-topic statements received after we stopped following
    # sizes of the bounded tables, for operators and tests (caps in OverlayConfig)
    message_cache: int = 0  # statements kept to answer iwant
    missing: int = 0  # announced statements we wait for
    missing_timers: int = 0
    announcing: int = 0  # statements waiting to be announced to lazy links
    pulled: int = 0
    followers: int = 0
    datagram_sources: int = 0
    member_statements: int = 0
    peer_records: int = 0
    wasted: int = 0  # useless items received (duplicates after a prune, useless iwants)
    iwant_answers: int = 0  # statements sent in answer to iwant


@dataclass
class Overlay:
    identity: SigningKey
    chain_id: str
    config: OverlayConfig = field(default_factory=OverlayConfig)
    membership: Membership | None = None
    rng: random.Random = field(default_factory=random.Random)
    verifier: Verifier | None = None
    signer: Signer | None = None
    # Heartbeat validation, replaceable by a driver that runs many nodes in one process and
    # may share the (pure) result among them; it must raise WireError as from_statement does.
    read_heartbeat: Callable[[Signed], Heartbeat] = Heartbeat.from_statement

    def __post_init__(self) -> None:
        self.node_id = bytes(self.identity.verify_key)
        chain_id = self.chain_id
        identity = self.identity
        if self.verifier is None:
            self.verifier = lambda statement: verify(statement, chain_id)
        if self.signer is None:
            self.signer = lambda domain, payload: sign(identity, domain, chain_id, payload)
        if self.membership is None:
            self.membership = Membership(self.node_id, rng=self.rng)
        self.members: Membership = self.membership
        self._sign: Signer = self.signer
        self._verify: Verifier = self.verifier
        self.members.sign = self._sign
        self._links: dict[bytes, _Link] = {}
        self._known: dict[bytes, _Known] = {}
        self._known_ids: list[bytes] = []  # the keys of _known, for sampling without a scan
        self._pending_dials: set[bytes] = set()
        self._banned: dict[bytes, float] = {}
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._validators: dict[str, TopicValidator] = {HEARTBEAT_TOPIC: self._check_heartbeat}
        self._families: dict[str, TopicValidator] = {}  # "progress" covers "progress/<id>"
        self._followed: set[str] = set()  # topics and families that travel to followers only
        self._self_record: Signed | None = None
        self._records: dict[bytes, bytes] = {}  # node id -> its newest signed peer record
        self._cache: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()  # id -> frame
        self._missing: dict[bytes, _Missing] = {}
        self._missing_due: list[tuple[float, bytes]] = []
        self._pulled: OrderedDict[bytes, None] = OrderedDict()  # ids we had to ask for
        self._announce: dict[bytes, set[bytes]] = {}  # id -> links known to have it already
        self._announce_due: list[tuple[float, bytes]] = []
        self._pulls_in_row = 0
        self._followers: dict[str, dict[bytes, float]] = {}  # topic -> follower -> until
        self._follows: dict[str, tuple[bytes, float]] = {}  # topic -> (publisher, renew at)
        self._member_raw: OrderedDict[bytes, None] = OrderedDict()
        self._record_raws: OrderedDict[bytes, None] = OrderedDict()
        self._sources: OrderedDict[bytes, _Source] = OrderedDict()
        self._next_dial = 0.0
        self._delivered = self._duplicates = self._rejected = 0
        self._payloads = self._frames = 0
        self._member_changes: list[MemberChange] = []
        self.frame_kinds: dict[str, int] = {}  # frames handled, by type
        self._wake_hint = math.inf
        self._strays = 0  # followed-topic statements that came after we stopped following
        self._wasted = 0
        self._iwant_answers = 0

    # ---- configuration by the driver ----

    def register_topic(
        self, topic: str, validator: TopicValidator, *, followed: bool = False
    ) -> None:
        """Accept statements on ``topic``; a name ending in "/" covers every "<name>/<id>".
        A ``followed`` topic goes only to the nodes that follow it at its publisher."""
        if topic.endswith("/"):
            self._families[topic[:-1]] = validator
        else:
            self._validators[topic] = validator
        if followed:
            self._followed.add(topic.rstrip("/"))

    def _validator_for(self, topic: str) -> TopicValidator | None:
        found = self._validators.get(topic)
        if found is None and "/" in topic:
            found = self._families.get(topic.split("/", 1)[0])
        return found

    def _is_followed(self, topic: str) -> bool:
        return topic in self._followed or topic.split("/", 1)[0] in self._followed

    def set_self_record(self, address: str, name: str, now: float) -> Signed:
        payload = {"node_id": self.node_id, "address": address, "name": name, "time": now}
        self._self_record = self._sign(PEER_DOMAIN, payload)
        return self._self_record

    @property
    def self_record(self) -> Signed | None:
        return self._self_record

    def ban(self, node_id: bytes, until: float) -> None:
        banned = self._banned
        banned.pop(node_id, None)
        banned[node_id] = until
        while len(banned) > self.config.max_bans:
            # Bans all last ban_seconds, so the first inserted is about the first to end.
            del banned[next(iter(banned))]

    def bans(self, now: float) -> dict[bytes, float]:
        """Node ids banned now, with the time their ban ends."""
        return {peer: until for peer, until in self._banned.items() if until > now}

    def announced_pending(self, peer: bytes) -> int:
        """Statements ``peer`` announced first that we still wait for (at most
        ``max_missing_per_peer``)."""
        link = self._links.get(peer)
        return len(link.promised) if link is not None else 0

    def scores(self) -> dict[bytes, float]:
        """The score of each linked peer (0 is clean; at ban_score it is banned)."""
        return {peer: link.score for peer, link in self._links.items()}

    def add_known(self, node_id: bytes, address: str, name: str = "") -> list[Action]:
        """Remember a dialable peer (from the peer store, bootstrap or peer exchange)."""
        if node_id == self.node_id or not address:
            return []
        known = self._known.get(node_id)
        if known is not None:
            changed = known.address != address or (name and known.name != name)
            if known.address != address:
                known.failures, known.retry_at = 0, 0.0
            known.address, known.name = address, name or known.name
            return [PeerLearned(node_id, address, known.name)] if changed else []
        if len(self._known) >= self.config.max_known_peers:
            # Forget one peer we are not linked to, chosen at random, to stay bounded.
            for _ in range(16):
                forget = self._known_ids[self.rng.randrange(len(self._known_ids))]
                if forget not in self._links and forget not in self._pending_dials:
                    break
            else:
                return []
            self._forget_known(forget)
        self._known[node_id] = _Known(address, name)
        self._known_ids.append(node_id)
        return [PeerLearned(node_id, address, name)]

    def remember(self, peers: Iterable[tuple[bytes, str, str]]) -> None:
        """Add many dialable peers at once, without actions (a peer store read at start)."""
        for node_id, address, name in peers:
            if node_id != self.node_id and address and node_id not in self._known:
                if len(self._known) >= self.config.max_known_peers:
                    return
                self._known[node_id] = _Known(address, name)
                self._known_ids.append(node_id)

    def _forget_known(self, node_id: bytes) -> None:
        del self._known[node_id]
        self._records.pop(node_id, None)
        ids = self._known_ids
        at = ids.index(node_id)
        ids[at] = ids[-1]
        ids.pop()

    def add_record(self, raw: bytes, now: float) -> list[Action]:
        """A signed peer record from outside (bootstrap, peer exchange). Raises WireError."""
        statement = parse(raw)
        if statement.domain != PEER_DOMAIN:
            raise wire.WireError(f"expected a peer record, got {statement.domain!r}")
        self._verify(statement)
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
        cfg = self.config
        self._links[peer] = _Link(
            initiator,
            cfg.frame_burst,
            now,
            waste=cfg.waste_burst,
            wasted_at=now,
            answers=cfg.iwant_answer_burst,
            answered_at=now,
        )
        known = self._known.get(peer)
        if known is not None:
            known.failures, known.retry_at = 0, 0.0
        actions: list[Action] = []
        if self._self_record is not None:
            actions.append(Send(peer, wire.encode({"t": "hello", "record": self._self_record.raw})))
        if len(self._known) < 2 * self.config.max_degree:  # discovery while we know few
            actions.append(Send(peer, _GETPEERS))
        # Membership push-pull: the two sides compare table digests and swap what differs, so
        # a joining node sees the whole network at once (memberlist's join).
        self.members.start_sync(peer)
        return actions + self._from_members([], now)

    def on_link_down(self, peer: bytes, now: float) -> list[Action]:
        if self._drop_link(peer) is None:
            return []
        self._next_dial = min(self._next_dial, now)
        self._hint(now)
        self.members.connection_lost(peer, now)  # probe it next
        return []

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
        """A frame on the link to ``peer``."""
        link = self._links.get(peer)
        if link is None:
            return []
        if not self._take_token(link, now):
            return self._penalize(peer, 5, "exceeded the frame rate limit", now)
        return self._handle(peer, data, now, link)

    def on_datagram(self, peer: bytes, data: bytes, now: float) -> list[Action]:
        """A direct frame from a node we have no link to (a driver without links per probe).
        Only membership, followed-topic, direct and request frames count; the rest is dropped
        silently (a frame of a link that has just closed)."""
        if peer in self._links:
            return self.on_frame(peer, data, now)
        if self._banned and self.is_banned(peer, now):
            return []
        source = self._sources.get(peer)
        if source is None:
            if len(self._sources) >= self.config.max_datagram_sources:
                self._sources.popitem(last=False)
            source = self._sources[peer] = _Source(self.config.frame_burst, now)
        if not self._take_token(source, now):
            return self._penalize(peer, 5, "exceeded the frame rate limit", now)
        return self._handle(peer, data, now, None)

    def _handle(self, peer: bytes, data: bytes, now: float, link: _Link | None) -> list[Action]:
        self._frames += 1
        try:
            msg = wire.decode(data)
            if type(msg) is not dict:
                raise wire.WireError("frame: expected a map")
            kind = msg.get("t")
            if type(kind) is not str:
                raise wire.WireError("frame: missing type")
            if kind not in FRAME_KINDS:  # counted below by kind: only kinds we know
                raise wire.WireError(f"unknown frame type {kind[:32]!r}")
            if link is None and kind not in DIRECT_KINDS:
                return []
            kinds = self.frame_kinds
            kinds[kind] = kinds.get(kind, 0) + 1
            return self._dispatch(peer, kind, msg, now, link)
        except SignatureError as exc:
            return self._penalize(peer, 100, str(exc), now)
        except wire.WireError as exc:
            return self._penalize(peer, 50, f"invalid frame: {exc}", now)

    def _dispatch(
        self, peer: bytes, kind: str, msg: dict[str, Any], now: float, link: _Link | None
    ) -> list[Action]:
        members = self.members
        if kind == "ping" or kind == "ack":
            actions = self._piggyback(msg, now) if "pb" in msg else []
            nonce = msg.get("n")
            if type(nonce) is not int or not 0 <= nonce <= MAX_NONCE:
                raise wire.WireError(f"{kind}.n: expected an integer 0..{MAX_NONCE}")
            if kind == "ping":
                members.on_ping(peer, nonce, now)
            else:
                members.on_ack(peer, nonce, now)
            return self._from_members(actions, now)
        if kind == "ihave" and link is not None:
            return self._on_ihave(peer, link, msg, now)
        if kind == "gossip" and link is not None:
            return self._on_gossip(peer, link, msg, now)
        if kind == "iwant" and link is not None:
            return self._on_iwant(peer, link, msg, now)
        if kind == "prune" and link is not None:
            link.eager = False
            return []
        if kind == "msg":
            return self._on_direct(peer, msg, now)
        if kind == "preq":
            actions = self._piggyback(msg, now)
            target = wire.bytes_field(msg, "target", 32, "preq")
            members.on_ping_req(peer, _nonce(msg, kind), target, now)
            return self._from_members(actions, now)
        if kind == "nack":
            members.on_nack(peer, _nonce(msg, kind), now)
            return []
        if kind == "sync":
            members.on_sync(peer, wire.int_field(msg, "h", 0, 2**64 - 1, "sync"), now)
            return self._from_members([], now)
        if kind == "syncd":
            entries = wire.field(msg, "e", list, "syncd")
            if len(entries) > members.config.max_members:
                raise wire.WireError("syncd: too many entries")
            members.on_sync_digest(peer, entries, now)
            return self._from_members([], now)
        if kind == "syncw":
            ids = wire.field(msg, "ids", list, "syncw")
            if len(ids) > MAX_SYNC_IDS:
                raise wire.WireError("syncw: too many ids")
            members.on_sync_want(peer, ids, now)
            return self._from_members([], now)
        if kind == "syncp":
            items = wire.field(msg, "pb", list, "syncp")
            if len(items) > MAX_SYNC_STATEMENTS:
                raise wire.WireError("syncp: too many statements")
            return self._from_members(self._member_statements(items, now), now)
        if kind in ("sub", "unsub"):
            return self._on_follow(peer, kind, msg, now)
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
        if kind == "hello" and link is not None:
            record_raw: bytes = wire.field(msg, "record", bytes, "hello")
            return self._on_record(peer, record_raw, now, must_be=peer)
        if kind == "getpeers" and link is not None:
            return [Send(peer, self._peers_frame(exclude=peer))]
        if kind == "peers" and link is not None:
            records = wire.field(msg, "records", list, "peers")
            if len(records) > self.config.peer_exchange_max:
                raise wire.WireError("peers: too many records")
            learned: list[Action] = []
            for raw in records:
                if not isinstance(raw, bytes):
                    raise wire.WireError("peers: record is not bytes")
                learned += self._on_record(peer, raw, now)
            return learned
        raise wire.WireError(f"unknown frame type {kind!r}")

    def _on_record(
        self, peer: bytes, raw: bytes, now: float, must_be: bytes | None = None
    ) -> list[Action]:
        if raw in self._record_raws and must_be is None:
            return []  # relayed unchanged: we checked and learned these very bytes already
        statement = parse(raw)
        if statement.domain != PEER_DOMAIN:
            raise wire.WireError(f"expected a peer record, got {statement.domain!r}")
        if must_be is not None and statement.signer != must_be:
            raise wire.WireError("hello record names another node than the link's")
        self._verify(statement)
        actions = self._learn(statement)
        self._record_raws[raw] = None
        if len(self._record_raws) > self.config.member_statement_cache:
            self._record_raws.popitem(last=False)
        return actions

    # ---- broadcast topics: lazy push ----

    def _on_gossip(self, peer: bytes, link: _Link, msg: dict[str, Any], now: float) -> list[Action]:
        topic = wire.str_field(msg, "topic", MAX_TOPIC_LEN, "gossip")
        data: bytes = wire.field(msg, "data", bytes, "gossip")
        validator = self._validator_for(topic)
        if validator is None:
            raise wire.WireError(f"unknown gossip topic {topic!r}")
        if self._is_followed(topic):
            raise wire.WireError(f"topic {topic!r} goes to its followers only, never as gossip")
        self._payloads += 1
        message_id = wire.sha256(data)
        if message_id in self._seen:
            self._duplicates += 1
            has = self._announce.get(message_id)
            if has is not None:
                has.add(peer)
            if message_id in self._pulled:
                return []  # we asked for it, and another copy was faster
            if link.eager:
                # Pushed to us along two paths: a cycle in the tree; drop this edge.
                link.eager = False
                link.pruned_at = now
                return [Send(peer, _PRUNE)]
            # A push on a link we already made lazy: a push that crossed our prune, our prune
            # was lost (say it again, not for every copy), or a peer repeating itself.
            actions: list[Action] = []
            if now - link.pruned_at >= self.config.prune_resend:
                link.pruned_at = now
                actions.append(Send(peer, _PRUNE))
            return actions + self._waste(peer, link, 1, "statements pushed again", now)
        self._remember(message_id, now)
        missing = self._missing.get(message_id)
        holders = missing.announcers if missing is not None else None
        if missing is not None and missing.tries:
            self._pulled[message_id] = None  # came (or will come) as an answer: not a cycle
            if len(self._pulled) > self.config.message_cache:
                self._pulled.popitem(last=False)
        elif link.eager:
            self._pulls_in_row = 0
        self._resolve_missing(message_id)
        statement = parse(data)
        self._verify(statement)
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
        if topic == HEARTBEAT_TOPIC:  # membership spreads heartbeats itself (piggybacked)
            return self._from_members(self._observe_heartbeat(statement, now), now)
        self._delivered += 1
        return [
            Deliver(topic, statement, peer),
            *self._push(message_id, topic, data, peer, now, holders),
        ]

    def _push(
        self,
        message_id: bytes,
        topic: str,
        data: bytes,
        exclude: bytes | None,
        now: float,
        holders: list[bytes] | None = None,
    ) -> list[Action]:
        """Push to the eager links now; announce to the lazy ones a moment later, skipping
        those that meanwhile showed they have it (so a lazy link mostly carries one
        announcement per statement, not one each way)."""
        frame = wire.encode({"t": "gossip", "topic": topic, "data": data})
        cache = self._cache
        cache[message_id] = (frame, now)
        if len(cache) > self.config.message_cache:
            cache.popitem(last=False)
        out: list[Action] = []
        lazy = False
        for peer, link in self._links.items():
            if peer != exclude:
                if link.eager:
                    out.append(Send(peer, frame))
                else:
                    lazy = True
        if lazy:
            has = set(holders or ())
            if exclude is not None:
                has.add(exclude)
            self._announce[message_id] = has
            due = now + self.config.announce_delay
            heapq.heappush(self._announce_due, (due, message_id))
            self._hint(due + self.config.announce_slack)
            if len(self._announce) > self.config.message_cache:
                self._announce.pop(next(iter(self._announce)))
        return out

    def _announce_now(self, now: float) -> list[Action]:
        heap = self._announce_due
        batches: dict[bytes, list[bytes]] = {}
        while heap and heap[0][0] <= now:
            _, message_id = heapq.heappop(heap)
            has = self._announce.pop(message_id, None)
            if has is None:
                continue
            for peer, link in self._links.items():
                if not link.eager and peer not in has:
                    batches.setdefault(peer, []).append(message_id)
        out: list[Action] = []
        frames: dict[tuple[bytes, ...], bytes] = {}  # most links get the very same list
        for peer, ids in batches.items():
            for i in range(0, len(ids), MAX_IDS):
                chunk = tuple(ids[i : i + MAX_IDS])
                frame = frames.get(chunk)
                if frame is None:
                    frame = frames[chunk] = wire.encode({"ids": list(chunk), "t": "ihave"})
                out.append(Send(peer, frame))
        return out

    def _on_ihave(self, peer: bytes, link: _Link, msg: dict[str, Any], now: float) -> list[Action]:
        ids = _ids(msg, "ihave")
        cfg = self.config
        for message_id in ids:
            if message_id in self._seen:
                has = self._announce.get(message_id)
                if has is not None:
                    has.add(peer)  # it has it: no need to announce it there
                continue
            missing = self._missing.get(message_id)
            if missing is not None:
                if peer not in missing.announcers and len(missing.announcers) < 8:
                    missing.announcers.append(peer)
                continue
            if len(self._missing) >= cfg.max_missing:
                continue
            if len(link.promised) >= cfg.max_missing_per_peer:
                return self._penalize(peer, 10, "announced too many statements at once", now)
            link.promised.add(message_id)
            due = now + cfg.graft_timeout
            self._missing[message_id] = _Missing(peer, [peer], due)
            heapq.heappush(self._missing_due, (due, message_id))
            self._hint(due)
        return []

    def _on_iwant(self, peer: bytes, link: _Link, msg: dict[str, Any], now: float) -> list[Action]:
        """Answer with the statements we hold, each id once per frame, within the link's
        answer budget. Ids we do not hold or sent this peer already are useless (waste)."""
        if msg.get("g") is True:
            link.eager = True  # graft: it wants pushes from us from now on
        ids = _ids(msg, "iwant")
        cfg = self.config
        elapsed = now - link.answered_at
        if elapsed > 0:
            link.answers = min(
                cfg.iwant_answer_burst, link.answers + elapsed * cfg.iwant_answers_per_second
            )
            link.answered_at = now
        wanted = dict.fromkeys(ids)
        useless = len(ids) - len(wanted)
        answered = link.answered
        out: list[Action] = []
        for message_id in wanted:
            cached = self._cache.get(message_id)
            if cached is None:
                useless += 1
                continue
            if message_id in answered:
                useless += 1
            if link.answers < 1.0:
                continue  # over the budget: not answered (it can ask another announcer)
            link.answers -= 1.0
            answered[message_id] = None
            if len(answered) > MAX_ANSWERED:
                answered.popitem(last=False)
            out.append(Send(peer, cached[0]))
        self._iwant_answers += len(out)
        if useless:
            return out + self._waste(
                peer, link, useless, "iwant for statements not held or sent", now
            )
        return out

    def _resolve_missing(self, message_id: bytes) -> None:
        missing = self._missing.pop(message_id, None)
        if missing is not None:
            link = self._links.get(missing.first)
            if link is not None:
                link.promised.discard(message_id)

    def _ask_missing(self, now: float) -> list[Action]:
        heap = self._missing_due
        asks: dict[bytes, list[bytes]] = {}
        cfg = self.config
        while heap and heap[0][0] <= now:
            due, message_id = heapq.heappop(heap)
            missing = self._missing.get(message_id)
            if missing is None or missing.due != due:
                continue
            announcers = [p for p in missing.announcers if p in self._links]
            if message_id in self._seen or not announcers or missing.tries >= cfg.iwant_tries:
                self._resolve_missing(message_id)
                continue
            peer = announcers[missing.tries % len(announcers)]
            missing.announcers = announcers
            if missing.tries == 0:
                self._pulls_in_row += 1
            missing.tries += 1
            missing.due = now + cfg.iwant_timeout
            heapq.heappush(heap, (missing.due, message_id))
            asks.setdefault(peer, []).append(message_id)
        # Graft (make the link eager on both ends) only when our pushes stopped coming: too
        # few eager links, or several statements in a row had to be pulled. A statement
        # lost on the way is only pulled, so random loss does not add cycles to the tree.
        eager = sum(1 for link in self._links.values() if link.eager) if asks else 0
        graft = eager < cfg.eager_min or self._pulls_in_row >= cfg.graft_after_pulls
        out: list[Action] = []
        for peer, ids in asks.items():
            if graft:
                self._links[peer].eager = True
            for i in range(0, len(ids), MAX_IDS):  # an ask counts as a try: send every one
                frame = wire.encode({"g": graft, "ids": ids[i : i + MAX_IDS], "t": "iwant"})
                out.append(Send(peer, frame))
        if graft:
            self._pulls_in_row = 0
        return out

    # ---- followed topics and direct statements ----

    def follow(self, topic: str, publisher: bytes, now: float) -> list[Action]:
        """Receive ``topic`` from ``publisher`` until :meth:`unfollow` (the lease is renewed)."""
        if self._validator_for(topic) is None:
            raise ValueError(f"unknown topic {topic!r}")
        self._follows[topic] = (publisher, now + self.config.follow_ttl / 3)
        if publisher == self.node_id:
            return []
        return [Send(publisher, wire.encode({"t": "sub", "topic": topic}), direct=True)]

    def unfollow(self, topic: str) -> list[Action]:
        found = self._follows.pop(topic, None)
        if found is None or found[0] == self.node_id:
            return []
        return [Send(found[0], wire.encode({"t": "unsub", "topic": topic}), direct=True)]

    @property
    def follows(self) -> dict[str, bytes]:
        return {topic: publisher for topic, (publisher, _) in self._follows.items()}

    def followers(self, topic: str, now: float) -> list[bytes]:
        table = self._followers.get(topic, {})
        return [peer for peer, until in table.items() if until > now]

    def _on_follow(self, peer: bytes, kind: str, msg: dict[str, Any], now: float) -> list[Action]:
        topic = wire.str_field(msg, "topic", MAX_TOPIC_LEN, kind)
        if self._validator_for(topic) is None or not self._is_followed(topic):
            raise wire.WireError(f"{kind}: {topic!r} is not a topic one can follow")
        table = self._followers.get(topic)
        if kind == "unsub":
            if table is not None:
                table.pop(peer, None)
                if not table:
                    del self._followers[topic]
            return []
        cfg = self.config
        if table is None:
            if len(self._followers) >= cfg.max_followed_topics:
                self._expire_followers(now)
                if len(self._followers) >= cfg.max_followed_topics:
                    return []
            table = self._followers[topic] = {}
        if peer not in table:
            if len(table) >= cfg.max_followers:
                return []
            if sum(1 for t in self._followers.values() if peer in t) >= cfg.max_follows_per_peer:
                return self._penalize(peer, 10, "follows too many topics", now)
        table[peer] = now + cfg.follow_ttl
        return []

    def _expire_followers(self, now: float) -> None:
        for topic, table in list(self._followers.items()):
            for peer in [p for p, until in table.items() if until <= now]:
                del table[peer]
            if not table:
                del self._followers[topic]

    def send_to(self, peer: bytes, topic: str, statement: Signed) -> list[Action]:
        """Send a statement straight to one node (it validates and delivers, never forwards)."""
        if self._validator_for(topic) is None:
            raise ValueError(f"unknown topic {topic!r}")
        frame = wire.encode({"t": "msg", "topic": topic, "data": statement.raw})
        return [Send(peer, frame, direct=True)]

    def _on_direct(self, peer: bytes, msg: dict[str, Any], now: float) -> list[Action]:
        topic = wire.str_field(msg, "topic", MAX_TOPIC_LEN, "msg")
        data: bytes = wire.field(msg, "data", bytes, "msg")
        validator = self._validator_for(topic)
        if validator is None or topic == HEARTBEAT_TOPIC:
            raise wire.WireError(f"msg: unknown topic {topic!r}")
        if self._is_followed(topic) and topic not in self._follows:
            # We stopped following (our unsub was lost, or the lease still runs): say so again.
            self._strays += 1
            return [Send(peer, wire.encode({"t": "unsub", "topic": topic}), direct=True)]
        message_id = wire.sha256(data)
        if message_id in self._seen:
            self._duplicates += 1
            return []
        self._remember(message_id, now)
        statement = parse(data)
        self._verify(statement)
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
        return [Deliver(topic, statement, peer)]

    # ---- publishing ----

    def publish(self, topic: str, statement: Signed, now: float) -> list[Action]:
        """Spread a statement made here. Delivered locally too, as if it arrived.

        A heartbeat becomes this node's membership entry (spread by membership); a followed
        topic goes to its followers; any other topic to everyone by lazy push."""
        message_id = statement.message_id
        if message_id in self._seen:
            return []
        self._remember(message_id, now)
        validator = self._validator_for(topic)
        if validator is None:
            raise ValueError(f"unknown topic {topic!r}")
        if topic == HEARTBEAT_TOPIC:
            return self._from_members(self._observe_heartbeat(statement, now), now)
        actions: list[Action] = [Deliver(topic, statement, None)]
        if self._is_followed(topic):
            frame = wire.encode({"t": "msg", "topic": topic, "data": statement.raw})
            return actions + [
                Send(p, frame, direct=True) for p in self.followers(topic, now) if p != self.node_id
            ]
        return actions + self._push(message_id, topic, statement.raw, None, now)

    # ---- membership ----

    def heartbeat_due(
        self, now: float, status: str = "", capacity: dict[str, int] | None = None
    ) -> bool:
        """Whether the driver should sign and publish a new heartbeat now (see Membership)."""
        return self.members.heartbeat_due(now, status, capacity)

    def _piggyback(self, msg: dict[str, Any], now: float) -> list[Action]:
        items = msg.get("pb")
        if items is None:
            return []
        if type(items) is not list or len(items) > MAX_PIGGYBACK:
            raise wire.WireError("pb: expected a list of at most 16 statements")
        return self._member_statements(items, now)

    def _member_statements(self, items: list[Any], now: float) -> list[Action]:
        """Heartbeats and notices piggybacked or pushed by a peer. Raises WireError."""
        seen = self._member_raw
        actions: list[Action] = []
        for raw in items:
            if type(raw) is not bytes:
                raise wire.WireError("membership statement is not bytes")
            # Keyed by the signature (the last 64 bytes): as unique as the statement, cheaper
            # to hash; remembered only once the statement checked out, so a forged copy of a
            # signature cannot make us skip the real statement.
            key = raw[-64:]
            if key in seen:
                continue
            statement = parse(raw)
            if statement.domain == HEARTBEAT_DOMAIN:
                self._verify(statement)
                actions += self._observe_heartbeat(statement, now)
            elif statement.domain == NOTICE_DOMAIN:
                self._verify(statement)
                notice = Notice.from_statement(statement)
                self._member_changes += self.members.on_notice(notice, raw, now)
            else:
                raise wire.WireError(f"{statement.domain} statement among membership statements")
            seen[key] = None
            if len(seen) > self.config.member_statement_cache:
                seen.popitem(last=False)
        return actions

    def _observe_heartbeat(self, statement: Signed, now: float) -> list[Action]:
        if statement.domain != HEARTBEAT_DOMAIN:
            raise wire.WireError(f"expected a heartbeat, got {statement.domain!r}")
        hb = self.read_heartbeat(statement)
        if hb.address:
            check_address(hb.address)
        if hb.node_id == self.node_id and statement.signer != self.node_id:
            return []
        change = self.members.observe(hb, now, statement.raw)
        if change is not None:
            self._member_changes.append(change)
        if hb.address and hb.node_id != self.node_id and change is not None:
            return self.add_known(hb.node_id, hb.address, hb.name)
        return []

    def _from_members(self, actions: list[Action], now: float) -> list[Action]:
        """Turn what membership has to say into actions: its frames and status changes."""
        if not self._member_changes and not self.members.has_output:
            return actions
        for peer, frame in self.members.take_frames():
            actions.append(Send(peer, frame, direct=True))
        changes = self._member_changes + self.members.take_changes()
        self._member_changes = []
        if changes:
            actions.append(MembersChanged(tuple(changes)))
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
        """Run what is due. Cheap when nothing is: a driver may call it early or often."""
        if now < self.next_tick():
            return []
        changes = self.members.tick(now)
        if changes:
            self._member_changes += changes
        actions = self._from_members([], now)
        seen = self._seen
        if seen:
            horizon = now - self.config.seen_ttl
            while seen and next(iter(seen.values())) < horizon:
                seen.popitem(last=False)
        cache = self._cache
        if cache:
            horizon = now - self.config.message_ttl
            while cache and next(iter(cache.values()))[1] < horizon:
                cache.popitem(last=False)
        if self._announce_due and self._announce_due[0][0] <= now:
            actions += self._announce_now(now)
        if self._missing_due and self._missing_due[0][0] <= now:
            actions += self._ask_missing(now)
        if self._follows:
            for topic, (publisher, renew) in list(self._follows.items()):
                if renew <= now:
                    actions += self.follow(topic, publisher, now)
        if now >= self._next_dial:
            self._next_dial = now + 1.0
            links = len(self._links)
            if links + len(self._pending_dials) < self.config.degree:
                actions += self._dials(now)
            elif links > self.config.max_degree:
                actions += self._trim()
        return actions

    def _trim(self) -> list[Action]:
        """Close lazy links we opened beyond the maximum degree (a driver opens links to carry
        direct frames, e.g. probes of members we had no link to)."""
        excess = len(self._links) - self.config.max_degree
        if excess <= 0:
            return []
        spare = [p for p, link in self._links.items() if link.initiator and not link.eager]
        for peer in spare[:excess]:
            self._drop_link(peer)
        return [Disconnect(peer, "too many peers") for peer in spare[:excess]]

    def _hint(self, when: float) -> None:
        if when < self._wake_hint:
            self._wake_hint = when

    def take_wake_hint(self) -> float:
        """The earliest timer set since the last call outside :meth:`tick`, or infinity.

        A driver that calls :meth:`tick` exactly at :meth:`next_tick` can, after a frame,
        check this instead of recomputing :meth:`next_tick` (a frame only ever adds timers)."""
        hint, self._wake_hint = self._wake_hint, math.inf
        members = self.members
        other, members.wake_hint = members.wake_hint, math.inf
        return hint if hint < other else other

    def next_tick(self) -> float:
        """The earliest time :meth:`tick` has something to do."""
        soonest = self.members.next_deadline()
        links = len(self._links)
        if (
            links + len(self._pending_dials) < self.config.degree or links > self.config.max_degree
        ) and self._next_dial < soonest:
            soonest = self._next_dial
        if self._missing_due and self._missing_due[0][0] < soonest:
            soonest = self._missing_due[0][0]
        if self._announce_due:
            # Announcements ride on the next tick the node has anyway (probes come every
            # second), so they do not need a wake-up of their own unless none is near.
            latest = self._announce_due[0][0] + self.config.announce_slack
            if latest < soonest:
                soonest = latest
        for _, renew in self._follows.values():
            if renew < soonest:
                soonest = renew
        return soonest

    def _dials(self, now: float) -> list[Action]:
        want = self.config.degree - len(self._links) - len(self._pending_dials)
        if want <= 0 or not self._known_ids:
            return []
        ids = self._known_ids
        actions: list[Action] = []
        for _ in range(4 * want):
            node_id = ids[self.rng.randrange(len(ids))]
            known = self._known[node_id]
            if (
                node_id in self._links
                or node_id in self._pending_dials
                or known.retry_at > now
                or self.is_banned(node_id, now)
                or self._dead(node_id)
            ):
                continue
            self._pending_dials.add(node_id)
            actions.append(Dial(node_id, known.address))
            if len(actions) >= want:
                break
        return actions

    def _dead(self, node_id: bytes) -> bool:
        member = self.members.get(node_id)
        return member is not None and member.status is Status.OFFLINE

    # ---- helpers ----

    def _remember(self, message_id: bytes, now: float) -> None:
        self._seen[message_id] = now
        if len(self._seen) > self.config.seen_cache_size:
            self._seen.popitem(last=False)

    def _take_token(self, link: _Link | _Source, now: float) -> bool:
        elapsed = now - link.refilled
        if elapsed > 0:
            link.tokens = min(
                self.config.frame_burst, link.tokens + elapsed * self.config.frames_per_second
            )
            link.refilled = now
        if link.tokens < 1.0:
            return False
        link.tokens -= 1.0
        return True

    def _waste(self, peer: bytes, link: _Link, items: int, what: str, now: float) -> list[Action]:
        """``items`` useless items from ``peer``: free within its budget, then penalized."""
        self._wasted += items
        cfg = self.config
        elapsed = now - link.wasted_at
        if elapsed > 0:
            link.waste = min(cfg.waste_burst, link.waste + elapsed * cfg.waste_per_second)
            link.wasted_at = now
        link.waste -= items
        if link.waste >= 0.0:
            return []
        over = -link.waste
        link.waste = 0.0
        return self._penalize(peer, cfg.waste_penalty * over, f"{what} beyond its budget", now)

    def _penalize(self, peer: bytes, points: float, reason: str, now: float) -> list[Action]:
        link = self._links.get(peer)
        holder: _Link | _Source | None = link if link is not None else self._sources.get(peer)
        if holder is None:
            return []
        holder.score -= points
        log.warning("peer %s: %s (score %.0f)", peer.hex()[:8], reason, holder.score)
        if holder.score > self.config.ban_score:
            return []
        until = now + self.config.ban_seconds
        self.ban(peer, until)
        self._sources.pop(peer, None)
        if link is None:
            return []
        self._drop_link(peer)
        return [Disconnect(peer, f"banned: {reason}", banned_until=until)]

    def _drop_link(self, peer: bytes) -> _Link | None:
        """Forget a link, and the announcements only it made (nobody else will deliver them)."""
        link = self._links.pop(peer, None)
        if link is not None and link.promised:
            missing = self._missing
            for message_id in link.promised:
                entry = missing.get(message_id)
                if entry is not None:
                    if peer in entry.announcers:
                        entry.announcers.remove(peer)
                    if not entry.announcers:
                        del missing[message_id]  # its timer is skipped when it comes due
        return link

    def _peers_frame(self, exclude: bytes) -> bytes:
        # Only records their owners signed are relayed; we keep the newest one per peer.
        records = [r for node_id, r in self._records.items() if node_id != exclude]
        if self._self_record is not None:
            records.append(self._self_record.raw)
        if len(records) > self.config.peer_exchange_max:
            records = self.rng.sample(records, self.config.peer_exchange_max)
        else:
            self.rng.shuffle(records)
        return wire.encode({"t": "peers", "records": records})

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
            eager_links=sum(1 for link in self._links.values() if link.eager),
            payloads=self._payloads,
            frames=self._frames,
            strays=self._strays,
            message_cache=len(self._cache),
            missing=len(self._missing),
            missing_timers=len(self._missing_due),
            announcing=len(self._announce),
            pulled=len(self._pulled),
            followers=sum(len(table) for table in self._followers.values()),
            datagram_sources=len(self._sources),
            member_statements=len(self._member_raw),
            peer_records=len(self._record_raws),
            wasted=self._wasted,
            iwant_answers=self._iwant_answers,
        )

    def known_peers(self) -> Iterable[tuple[bytes, str, str]]:
        return ((k, v.address, v.name) for k, v in self._known.items())


def _nonce(msg: dict[str, Any], what: str) -> int:
    nonce = msg.get("n")
    if type(nonce) is not int or not 0 <= nonce <= MAX_NONCE:
        raise wire.WireError(f"{what}.n: expected an integer 0..{MAX_NONCE}")
    return nonce


def _ids(msg: dict[str, Any], what: str) -> list[bytes]:
    ids: list[bytes] = wire.field(msg, "ids", list, what)
    if len(ids) > MAX_IDS:
        raise wire.WireError(f"{what}: more than {MAX_IDS} ids")
    for message_id in ids:
        if type(message_id) is not bytes or len(message_id) != 32:
            raise wire.WireError(f"{what}: an id is not 32 bytes")
    return ids
