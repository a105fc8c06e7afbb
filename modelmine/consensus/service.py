"""The trio shell around the Tendermint core: gossip of proposals, votes and records, timers,
storing decided blocks, and catching up from peers (sync).

Consensus messages travel as ``consensus`` gossip statements, each wrapped and signed by the
node that sends it (payload: the message kind, its exact wire bytes and the send time). The
wrapper makes a deliberate resend (the core resends what it holds when a round stalls) a new
gossip message instead of a duplicate the seen-cache would swallow; the inner proposal or vote
keeps its own signature, which the core checks. Records travel as ``records`` gossip: the
signed record itself, checked against the current state before it is forwarded.

Store access runs on the event loop: a block append is one short SQLite transaction, at most a
few per second, and keeping it on one thread makes "the sign state is on disk before the vote
leaves" and "state and store change together" simple to see.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import trio
import trio.lowlevel
from nacl.signing import SigningKey

from modelmine import wire
from modelmine.consensus.application import Application
from modelmine.consensus.early import EarlyRecords
from modelmine.consensus.signstate import SignState
from modelmine.consensus.tendermint import (
    Action,
    Broadcast,
    Decide,
    Evidence,
    PersistSignState,
    ScheduleTimeout,
    Tendermint,
)
from modelmine.consensus.types import (
    Block,
    Commit,
    ConsensusError,
    Header,
    Proposal,
    ValidatorSet,
    Vote,
)
from modelmine.genesis import Genesis
from modelmine.p2p.host import Host, RequestError, RequestFailed
from modelmine.p2p.overlay import Deliver, Verdict
from modelmine.signing import Signed, parse, sign

log = logging.getLogger(__name__)

CONSENSUS_TOPIC: Final = "consensus"
RECORDS_TOPIC: Final = "records"
SYNC_EVERY: Final = 3.0
SYNC_BATCH: Final = 64
SYNC_PEERS: Final = 8  # linked peers asked for their head at once, each sync round
STATUS_TIMEOUT: Final = 5.0
BLOCKS_TIMEOUT: Final = 10.0
# A peer that claimed a head above ours and then served no blocks (no answer in time, or an
# error answer) loses this much score and is not asked again for SYNC_COOLDOWN seconds; one
# that sends a bad or empty batch is banned (100).
WITHHOLD_PENALTY: Final = 50.0
SYNC_COOLDOWN: Final = 60.0
MAX_WRAPPED: Final = 3 * 1024 * 1024
EARLY_RECORDS: Final = 256  # gossiped records kept in case they are only early (early.py)
EARLY_TTL: Final = 30.0
INCLUDED_MEMORY: Final = 100_000


class StoredLike(Protocol):
    def block(self) -> Block: ...
    def commit(self) -> Commit: ...


class ChainStore(Protocol):
    """What the service needs of the block store (``LedgerStore`` is one)."""

    def head(self) -> tuple[int, bytes]: ...
    def header(self, height: int) -> Header | None: ...
    def commit(self, height: int) -> Commit | None: ...
    def blocks(self, first: int, last: int) -> Sequence[StoredLike]: ...
    def sign_state(self) -> SignState | None: ...
    def put_sign_state(self, state: SignState) -> None: ...
    def append(self, block: Block, commit: Commit, state: Any) -> None: ...


@dataclass(frozen=True)
class ChainStatus:
    height: int
    head: bytes
    round: int
    pending: int
    validator: bool
    syncing: bool


class ChainService:
    def __init__(
        self,
        genesis: Genesis,
        key: SigningKey,
        app: Application,
        store: ChainStore,
        host: Host,
        *,
        on_block: Callable[[Block, Commit], None] | None = None,
    ) -> None:
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.key = key
        self.app = app
        self.store = store
        self.host = host
        self.on_block = on_block
        self.validators = ValidatorSet.from_genesis(genesis)
        height, _ = store.head()
        self.core = Tendermint(
            self.chain_id,
            self.validators,
            genesis.consensus,
            key,
            app,
            height + 1,
            store.header(height) if height else None,
            store.commit(height) if height else None,
            store.sign_state(),
        )
        self._timers: list[tuple[float, int, ScheduleTimeout]] = []
        self._timer_seq = itertools.count()
        self._timer_wake = trio.Event()
        self._decisions_send, self._decisions = trio.open_memory_channel[Decide](1)
        self._sync_wake = trio.Event()
        self._syncing = False
        self._committing = False
        self._included: OrderedDict[bytes, int] = OrderedDict()
        self._sync_cooldown: dict[bytes, float] = {}  # peer -> not asked before (trio time)
        self.sync_failures = 0  # peers that claimed blocks and did not serve them
        self._waiters: dict[bytes, trio.Event] = {}
        self._early = EarlyRecords(EARLY_RECORDS, EARLY_TTL)
        self._rng = random.Random()
        host.overlay.register_topic(CONSENSUS_TOPIC, self._check_consensus)
        host.overlay.register_topic(RECORDS_TOPIC, self._check_record)
        host.register_handler("chain.status", self._serve_status)
        host.register_handler("chain.blocks", self._serve_blocks)

    # ---- lifecycle ----

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._timer_loop)
            nursery.start_soon(self._commit_loop)
            nursery.start_soon(self._sync_loop)
            self._apply(self.core.start(time.time()))
            task_status.started()

    def status(self) -> ChainStatus:
        height, head = self.store.head()
        return ChainStatus(
            height=height,
            head=head,
            round=self.core.round,
            pending=len(self.core.pending),
            validator=self.core.is_validator,
            syncing=self._syncing,
        )

    # ---- records from clients ----

    def submit(self, record: bytes) -> str | None:
        """Check a signed record against the current state; if valid, gossip it and offer it
        for inclusion. Returns the reason it is invalid, or None."""
        reason = self.app.check_record(record)
        if reason is not None:
            return reason
        self.host.publish(RECORDS_TOPIC, parse(record))
        self._apply(self.core.add_pending([record], time.time()))
        return None

    def included_at(self, record_id: bytes) -> int | None:
        return self._included.get(record_id)

    async def wait_included(self, record_id: bytes, within: float) -> int | None:
        """The height of the block that included the record; None after ``within`` s, or as
        soon as the record left the pool without being included (it became invalid, e.g. a
        claim another node won)."""
        if record_id in self._included:
            return self._included[record_id]
        event = self._waiters.setdefault(record_id, trio.Event())
        with trio.move_on_after(within):
            await event.wait()
        return self._included.get(record_id)

    # ---- gossip validation and delivery ----

    def _check_consensus(self, statement: Signed, now: float) -> Verdict:
        p = statement.payload()
        kind = wire.str_field(p, "kind", 16, "consensus")
        data: bytes = wire.field(p, "msg", bytes, "consensus")
        if len(data) > MAX_WRAPPED:
            raise wire.WireError("consensus message too large")
        if kind == "vote":
            vote = Vote.from_wire(data)
            height = vote.height
            if vote.validator not in self.validators:
                raise wire.WireError("vote from a node that is not a validator")
        elif kind == "proposal":
            proposal = Proposal.from_wire(data)
            height = proposal.height
        else:
            raise wire.WireError(f"unknown consensus message kind {kind!r}")
        if height < self.core.height - 1:
            return Verdict.IGNORE  # long decided; nothing to learn, nothing to forward
        # The inner signature too, before forwarding: a relay that forwards a forged vote or
        # proposal pays for it (results are cached, so the core's own check is free).
        try:
            if kind == "vote":
                vote.verify(self.validators, self.chain_id)
            else:
                proposal.verify(self.validators, self.chain_id)
        except ConsensusError as exc:
            raise wire.WireError(str(exc)) from None
        if height > self.core.height:
            self._sync_wake.set()  # the network is ahead of us
        return Verdict.ACCEPT

    def _check_record(self, statement: Signed, now: float) -> Verdict:
        if self.app.check_record(statement.raw) is None:
            return Verdict.ACCEPT
        self._early.keep(statement.raw, time.monotonic())  # not forwarded; maybe only early
        return Verdict.IGNORE

    def deliver(self, delivery: Deliver) -> None:
        """Called by the node for every accepted statement on our topics."""
        now = time.time()
        if delivery.topic == RECORDS_TOPIC:
            self._apply(self.core.add_pending([delivery.statement.raw], now))
            return
        if delivery.topic != CONSENSUS_TOPIC or delivery.from_peer is None:
            return
        p = delivery.statement.payload()
        try:
            if p["kind"] == "vote":
                self._apply(self.core.on_vote(Vote.from_wire(p["msg"]), now))
            else:
                self._apply(self.core.on_proposal(Proposal.from_wire(p["msg"]), now))
        except (ConsensusError, wire.WireError) as exc:
            peer = delivery.statement.signer
            log.warning("consensus message relayed by %s refused: %s", peer.hex()[:8], exc)

    # ---- actions ----

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, PersistSignState):
                self.store.put_sign_state(action.state)  # durable before what follows
            elif isinstance(action, Broadcast):
                self._broadcast(action.message)
            elif isinstance(action, ScheduleTimeout):
                heapq.heappush(self._timers, (action.at, next(self._timer_seq), action))
                self._timer_wake.set()
            elif isinstance(action, Evidence):
                log.warning("evidence against %s: %s", action.validator.hex()[:8], action.reason)
            elif isinstance(action, Decide):
                self._decisions_send.send_nowait(action)

    def _broadcast(self, message: Proposal | Vote) -> None:
        kind = "vote" if isinstance(message, Vote) else "proposal"
        payload = {"kind": kind, "msg": message.to_wire(), "sent": time.time()}
        self.host.publish(CONSENSUS_TOPIC, sign(self.key, CONSENSUS_TOPIC, self.chain_id, payload))

    async def _timer_loop(self) -> None:
        while True:
            self._timer_wake = trio.Event()
            if self._timers:
                delay = self._timers[0][0] - time.time()
                if delay <= 0:
                    _, _, timeout = heapq.heappop(self._timers)
                    if not self._committing:
                        self._apply(self.core.on_timeout(timeout, time.time()))
                    else:
                        heapq.heappush(
                            self._timers, (time.time() + 0.05, next(self._timer_seq), timeout)
                        )
                    continue
                with trio.move_on_after(delay):
                    await self._timer_wake.wait()
            else:
                await self._timer_wake.wait()

    async def _commit_loop(self) -> None:
        async for decision in self._decisions:
            self._commit(decision)

    def _commit(self, decision: Decide) -> None:
        block, commit = decision.block, decision.commit
        if block.height != self.store.head()[0] + 1:
            # Sync stored this height while the live decision waited in the queue.
            log.debug("decision for height %d already stored", block.height)
            return
        self._committing = True
        try:
            self.app.apply_block(block, commit)
            self.store.append(block, commit, self.app)
        finally:
            self._committing = False
        for record in block.records:
            record_id = wire.sha256(record)
            self._included[record_id] = block.height
            waiter = self._waiters.pop(record_id, None)
            if waiter is not None:
                waiter.set()
        while len(self._included) > INCLUDED_MEMORY:
            self._included.popitem(last=False)
        log.info(
            "committed block %d %s with %d records",
            block.height,
            block.hash.hex()[:12],
            len(block.records),
        )
        if self.on_block is not None:
            self.on_block(block, commit)
        self._apply(self.core.next_height(time.time()))
        early = self._early.take_valid(self.app.check_record, time.monotonic())
        if early:
            self._apply(self.core.add_pending(early, time.time()))
        # next_height dropped the pending records that no longer apply: release their waiters.
        for record_id in [r for r in self._waiters if r not in self.core.pending]:
            self._waiters.pop(record_id).set()

    # ---- sync ----

    async def _serve_status(self, peer: bytes, body: dict[str, Any]) -> dict[str, Any]:
        height, head = self.store.head()
        return {"height": height, "head": head}

    async def _serve_blocks(self, peer: bytes, body: dict[str, Any]) -> dict[str, Any]:
        first = wire.int_field(body, "first", 1, 2**62, "chain.blocks")
        count = wire.int_field(body, "count", 1, SYNC_BATCH, "chain.blocks")
        height, _ = self.store.head()
        if first > height:
            raise RequestError(f"no blocks from {first}: head is {height}")
        stored = self.store.blocks(first, min(height, first + count - 1))
        blocks: list[bytes] = []
        commits: list[bytes] = []
        size = 0
        for item in stored:
            b, c = item.block().to_wire(), item.commit().to_wire()
            size += len(b) + len(c)
            if blocks and size > 2 * 1024 * 1024:
                break
            blocks.append(b)
            commits.append(c)
        return {"blocks": blocks, "commits": commits}

    async def _sync_loop(self) -> None:
        while True:
            with trio.move_on_after(SYNC_EVERY):
                await self._sync_wake.wait()
            self._sync_wake = trio.Event()
            await self._sync_once()

    async def _sync_once(self) -> None:
        """Ask up to SYNC_PEERS linked peers for their head at once, then fetch from those
        ahead of us, lowest claim first (ties in random order), until none is. A claimed head
        is only a hint: every block is verified, a peer that exaggerates is asked last, and a
        peer that claims more than it serves is penalized and left alone for SYNC_COOLDOWN,
        so one withholder delays a sync by at most one request timeout."""
        now = trio.current_time()
        cooldown = self._sync_cooldown
        for peer in [p for p, until in cooldown.items() if until <= now]:
            del cooldown[peer]
        peers = [p for p, _, _ in self.host.link_info() if p not in cooldown]
        self._rng.shuffle(peers)
        claims: dict[bytes, int] = {}
        async with trio.open_nursery() as nursery:
            for peer in peers[:SYNC_PEERS]:
                nursery.start_soon(self._ask_status, peer, claims)
        ahead = sorted((p for p in peers if p in claims), key=claims.__getitem__)
        for peer in ahead:  # a stable sort of shuffled peers: random among equal claims
            remote = claims[peer]
            if remote <= self.store.head()[0]:
                continue
            self._syncing = True
            try:
                await self._fetch_from(peer, remote)
            finally:
                self._syncing = False

    async def _ask_status(self, peer: bytes, claims: dict[bytes, int]) -> None:
        try:
            status = await self.host.request(peer, "chain.status", {}, within=STATUS_TIMEOUT)
            claims[peer] = wire.int_field(status, "height", 0, 2**62, "chain.status")
        except (RequestFailed, wire.WireError):
            pass

    async def _fetch_from(self, peer: bytes, remote: int) -> None:
        while (height := self.store.head()[0]) < remote:
            try:
                reply = await self.host.request(
                    peer,
                    "chain.blocks",
                    {"first": height + 1, "count": SYNC_BATCH},
                    within=BLOCKS_TIMEOUT,
                )
                blocks = wire.field(reply, "blocks", list, "chain.blocks")
                commits = wire.field(reply, "commits", list, "chain.blocks")
                if not blocks or len(blocks) != len(commits):
                    raise wire.WireError("empty or mismatched batch")
                for raw_block, raw_commit in zip(blocks, commits, strict=True):
                    block = Block.from_wire(raw_block)
                    commit = Commit.from_wire(raw_commit)
                    head = self.store.head()[0]
                    if block.height <= head:
                        # Consensus committed it while we waited for this batch: the same
                        # block, or the peer's chain forks from ours.
                        if self.store.header(block.height) != block.header:
                            raise wire.WireError(f"block {block.height} differs from ours")
                        continue
                    if block.height != head + 1:
                        raise wire.WireError(f"block {block.height} out of order")
                    pending = self.core.decision
                    if pending is not None and pending.block.height == block.height:
                        self._commit(pending)  # consensus decided it here meanwhile
                        continue
                    actions = self.core.on_committed_block(block, commit, time.time())
                    decisions = [a for a in actions if isinstance(a, Decide)]
                    self._apply([a for a in actions if not isinstance(a, Decide)])
                    if not decisions:
                        raise ConsensusError(f"block {block.height} did not decide")
                    self._commit(decisions[0])
            except RequestFailed as exc:
                log.info("sync from %s stopped: %s", peer.hex()[:8], exc)
                if exc.why in ("timeout", "error"):
                    # It said it had blocks up to `remote` and served none of them.
                    self.sync_failures += 1
                    self._sync_cooldown[peer] = trio.current_time() + SYNC_COOLDOWN
                    self.host.penalize(
                        peer, WITHHOLD_PENALTY, f"claimed height {remote} but did not serve it"
                    )
                return
            except (ConsensusError, wire.WireError) as exc:
                log.warning("peer %s sent a bad block during sync: %s", peer.hex()[:8], exc)
                self.sync_failures += 1
                self._sync_cooldown[peer] = trio.current_time() + SYNC_COOLDOWN
                self.host.penalize(peer, 100, f"bad block in sync: {exc}")
                return
            await trio.lowlevel.checkpoint()
