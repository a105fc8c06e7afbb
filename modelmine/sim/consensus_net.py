"""An in-memory network of real :class:`~modelmine.consensus.tendermint.Tendermint` cores.

Virtual time, one heap of events ordered by (time, sequence number), and one seeded RNG for
every random choice (keys, delays, loss, duplication, reordering, partitions, crashes and the
Byzantine node's moves), so a seed reproduces a run exactly. Messages cross the links as
canonical wire bytes and are decoded strictly on arrival, with real Ed25519 signatures.

The harness plays the driver: it persists each node's sign state when told to (before sending
what follows), applies decided blocks to the node's :class:`KVApp` and "store", and calls
``next_height``. It also plays the sync layer in its simplest form: a node that hears a
message of a lower height from a peer offers that peer the stored block and commit, and a node
that hears a higher height asks the sender for its own next block; offers go through
``on_committed_block``.

Invariants are checked as the run goes, raising :class:`AgreementViolation` with the seed:
no two honest nodes commit different blocks at one height, no honest validator signs two
different messages for one (height, round, step), and no block with an invalid record is
ever committed (the application refuses to apply it).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from nacl.signing import SigningKey

from modelmine import wire
from modelmine.consensus.application import KVApp, kv_record
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
    Proposal,
    ValidatorSet,
    Vote,
    VoteType,
    verify_commit,
)
from modelmine.genesis import ConsensusParams, Validator

SIM_CHAIN_ID: Final = "sim-consensus"
SIM_PARAMS: Final = ConsensusParams(
    timeout_propose=0.3,
    timeout_prevote=0.15,
    timeout_precommit=0.15,
    timeout_delta=0.1,
    idle_block_interval=1.0,
    max_block_records=20,
)
DECODE_CACHE: Final = 4096
SYNC_RETRY: Final = 0.2  # seconds between two catch-up offers for one (peer, height)


class AgreementViolation(AssertionError):
    """A safety invariant failed; the message names the seed that reproduces it."""


@dataclass(frozen=True)
class Faults:
    """Per-message link faults. ``late`` holds a message back by up to ``late_delay``."""

    delay: tuple[float, float] = (0.002, 0.03)
    loss: float = 0.0
    duplicate: float = 0.0
    late: float = 0.0
    late_delay: float = 0.4


@dataclass
class NetStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    late: int = 0
    cut: int = 0  # dropped by a partition
    rejected: int = 0  # messages or sync offers a node refused with a reason
    evidence: int = 0
    sync_offers: int = 0
    byzantine_messages: int = 0
    byzantine_invalid_blocks: int = 0  # proposals holding an invalid record
    crashes: int = 0
    partitions: int = 0
    records_submitted: int = 0
    invalid_records_submitted: int = 0
    records_committed: int = 0


@dataclass
class SimNode:
    index: int
    key: SigningKey
    app: KVApp
    core: Tendermint
    byzantine: bool = False
    observer: bool = False
    up: bool = True
    epoch: int = 0  # bumped by a crash; timers of an older epoch are void
    store: list[tuple[Block, Commit]] = field(default_factory=list)
    sign_state: SignState | None = None  # what is on "disk"
    evidence: list[Evidence] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        """Height of the last committed block."""
        return len(self.store)

    @property
    def honest(self) -> bool:
        return not self.byzantine


class ConsensusNet:
    """``validators`` equal-power validators (indexes ``byzantine`` misbehave) + observers."""

    def __init__(
        self,
        validators: int = 4,
        *,
        seed: int,
        byzantine: Sequence[int] = (),
        observers: int = 0,
        params: ConsensusParams = SIM_PARAMS,
        faults: Faults = Faults(),
        chain_id: str = SIM_CHAIN_ID,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.faults = faults
        self.params = params
        self.chain_id = chain_id
        self.stats = NetStats()
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        keys = [SigningKey(self.rng.randbytes(32)) for _ in range(validators + observers)]
        self.validator_set = ValidatorSet(
            Validator(bytes(k.verify_key), 10, f"v{i}") for i, k in enumerate(keys[:validators])
        )
        self.nodes: list[SimNode] = []
        for i, key in enumerate(keys):
            app = KVApp(chain_id)
            observer = i >= validators
            core = self._new_core(None if observer else key, app, [], None)
            self.nodes.append(SimNode(i, key, app, core, i in byzantine, observer))
        self._group: dict[int, int] = {}  # node index -> partition group; empty when healed
        self.committed: dict[int, tuple[bytes, int]] = {}  # height -> (block hash, first node)
        self._signed: dict[tuple[bytes, int, int, str], bytes | None] = {}
        self._last_offer: dict[tuple[int, int], float] = {}
        self._byz_known: dict[int, list[bytes]] = {}  # height -> block hashes seen
        self._client_seq = itertools.count()
        self._committed_records: list[bytes] = []
        self._counted_height = 0
        self._decoded: dict[bytes, Proposal | Vote] = {}

    def _new_core(
        self,
        key: SigningKey | None,
        app: KVApp,
        store: list[tuple[Block, Commit]],
        sign_state: SignState | None,
    ) -> Tendermint:
        prev_header = store[-1][0].header if store else None
        last_commit = store[-1][1] if store else None
        return Tendermint(
            self.chain_id,
            self.validator_set,
            self.params,
            key,
            app,
            len(store) + 1,
            prev_header,
            last_commit,
            sign_state,
        )

    # ---- running ----

    def start(self) -> None:
        for node in self.nodes:
            self._apply(node, node.core.start(self.now))

    def at(self, when: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` at virtual time ``when``."""
        heapq.heappush(self._queue, (when, next(self._counter), fn))

    def run_until(self, t: float) -> None:
        while self._queue and self._queue[0][0] <= t:
            when, _, fn = heapq.heappop(self._queue)
            self.now = when
            fn()
        self.now = t

    def fail(self, what: str) -> AgreementViolation:
        return AgreementViolation(
            f"seed {self.seed}: {what} (reproduce with ConsensusNet(seed={self.seed}) or "
            f"chaos_run({self.seed}))"
        )

    # ---- faults ----

    def partition(self, groups: Sequence[Sequence[int]]) -> None:
        """Cut every link between nodes of different groups; unnamed nodes are isolated."""
        self.stats.partitions += 1
        self._group = {i: g for g, members in enumerate(groups) for i in members}

    def heal(self) -> None:
        self._group = {}

    def connected(self, a: int, b: int) -> bool:
        if not self._group:
            return True
        return self._group.get(a, -1 - a) == self._group.get(b, -1 - b)

    def crash(self, index: int) -> None:
        """Stop a node: memory is lost; its store, app and sign state survive."""
        node = self.nodes[index]
        if node.up:
            self.stats.crashes += 1
            node.up = False
            node.epoch += 1

    def restart(self, index: int) -> None:
        node = self.nodes[index]
        if node.up:
            return
        node.up = True
        key = None if node.observer else node.key
        node.core = self._new_core(key, node.app, node.store, node.sign_state)
        self._apply(node, node.core.start(self.now))

    # ---- records ----

    def submit(self, record: bytes, *, invalid: bool = False) -> None:
        """Hand a record to every node that is up, each after its own gossip delay."""
        self.stats.records_submitted += 1
        self.stats.invalid_records_submitted += invalid
        for node in self.nodes:
            if node.up:
                delay = self.rng.uniform(*self.faults.delay)
                self.at(self.now + delay, functools.partial(self._add_pending, node, record))

    def _add_pending(self, node: SimNode, record: bytes) -> None:
        if node.up:
            self._apply(node, node.core.add_pending([record], self.now))

    def submit_random(self) -> None:
        """One record from a fresh client; about one in four is invalid."""
        n = next(self._client_seq)
        client = SigningKey(self.rng.randbytes(32))
        roll = self.rng.random()
        if roll < 0.1:
            good = kv_record(client, self.chain_id, f"k{n % 7}", f"v{n}", 1)
            self.submit(good[:-1] + bytes([good[-1] ^ 1]), invalid=True)  # bad signature
        elif roll < 0.2 and self._committed_records:
            self.submit(self.rng.choice(self._committed_records), invalid=True)  # replay
        elif roll < 0.25:
            self.submit(kv_record(client, self.chain_id, "gap", f"v{n}", 2), invalid=True)
        else:
            self.submit(kv_record(client, self.chain_id, f"k{n % 7}", f"v{n}", 1))

    # ---- the driver ----

    def _apply(self, node: SimNode, actions: list[Action]) -> None:
        for action in actions:
            if not node.up:
                return
            if isinstance(action, PersistSignState):
                node.sign_state = action.state
            elif isinstance(action, Broadcast):
                if node.byzantine:
                    self._byzantine_broadcast(node, action.message)
                else:
                    self._check_signed_once(node, action.message)
                    self._broadcast(node, action.message)
            elif isinstance(action, ScheduleTimeout):
                self.at(action.at, functools.partial(self._timeout, node, node.epoch, action))
            elif isinstance(action, Decide):
                self._decide(node, action)
            elif isinstance(action, Evidence):
                self.stats.evidence += 1
                node.evidence.append(action)

    def _timeout(self, node: SimNode, epoch: int, timeout: ScheduleTimeout) -> None:
        if node.up and node.epoch == epoch:
            self._apply(node, node.core.on_timeout(timeout, self.now))

    def _decide(self, node: SimNode, decision: Decide) -> None:
        block, commit = decision.block, decision.commit
        if node.honest:
            self.check_decision(node.index, block, commit)
        try:
            node.app.apply_block(block, commit)
        except ValueError as exc:
            raise self.fail(f"node {node.index} committed an invalid block: {exc}") from None
        node.store.append((block, commit))
        if node.honest and block.height == self._counted_height + 1:
            self._counted_height += 1
            self._committed_records.extend(block.records)
            self.stats.records_committed += len(block.records)
        self._apply(node, node.core.next_height(self.now))

    def check_decision(self, index: int, block: Block, commit: Commit) -> None:
        """Record an honest node's decision; raise AgreementViolation if it breaks agreement."""
        try:
            verify_commit(commit, self.validator_set, self.chain_id, block.hash)
        except ConsensusError as exc:
            raise self.fail(f"node {index} decided on a bad commit: {exc}") from None
        first = self.committed.setdefault(block.height, (block.hash, index))
        if first[0] != block.hash:
            raise self.fail(
                f"nodes {first[1]} and {index} committed different blocks at height "
                f"{block.height}: {first[0].hex()[:8]} and {block.hash.hex()[:8]}"
            )

    def _check_signed_once(self, node: SimNode, message: Proposal | Vote) -> None:
        if isinstance(message, Vote):
            key = (message.validator, message.height, message.round, str(message.type))
            value = message.block_hash
        else:
            key = (message.proposer, message.height, message.round, "proposal")
            value = message.block.hash
        if key[0] != bytes(node.key.verify_key):
            return  # a relayed message of another validator
        earlier = self._signed.setdefault(key, value)
        if earlier != value:
            raise self.fail(
                f"honest node {node.index} signed two different {key[3]}s at height {key[1]} "
                f"round {key[2]}"
            )

    # ---- links ----

    def _broadcast(self, node: SimNode, message: Proposal | Vote) -> None:
        data = message.to_wire()
        kind = "vote" if isinstance(message, Vote) else "proposal"
        for peer in self.nodes:
            if peer is not node:
                self._send(node, peer, kind, data)

    def _send(self, src: SimNode, dst: SimNode, kind: str, data: bytes) -> None:
        self.stats.sent += 1
        if not self.connected(src.index, dst.index):
            self.stats.cut += 1
            return
        f = self.faults
        if f.loss and self.rng.random() < f.loss:
            self.stats.lost += 1
            return
        copies = 1
        if f.duplicate and self.rng.random() < f.duplicate:
            self.stats.duplicated += 1
            copies = 2
        for _ in range(copies):
            delay = self.rng.uniform(*f.delay)
            if f.late and self.rng.random() < f.late:
                self.stats.late += 1
                delay += self.rng.uniform(0, f.late_delay)
            self.at(self.now + delay, functools.partial(self._arrive, src, dst, kind, data))

    def _arrive(self, src: SimNode, dst: SimNode, kind: str, data: bytes) -> None:
        if not dst.up or not self.connected(src.index, dst.index):
            return
        self.stats.delivered += 1
        try:
            if kind == "offer":
                self._on_offer(dst, data)
                return
            message = self._decode(kind, data)
            self._catch_up(src, dst, message.height)
            if dst.byzantine and isinstance(message, Proposal):
                self._byz_known.setdefault(message.height, []).append(message.block.hash)
            if isinstance(message, Vote):
                actions = dst.core.on_vote(message, self.now)
            else:
                actions = dst.core.on_proposal(message, self.now)
        except (wire.WireError, ConsensusError) as exc:
            self.stats.rejected += 1
            dst.rejections.append(f"from node {src.index}: {exc}")
            return
        self._apply(dst, actions)

    def _decode(self, kind: str, data: bytes) -> Proposal | Vote:
        # Decoding is a pure function of the bytes, so each distinct message is decoded
        # (strictly) once per run rather than once per recipient.
        found = self._decoded.get(data)
        if found is None:
            found = Vote.from_wire(data) if kind == "vote" else Proposal.from_wire(data)
            if len(self._decoded) >= DECODE_CACHE:
                self._decoded.clear()
            self._decoded[data] = found
        return found

    # ---- catch-up (a stand-in for the sync layer) ----

    def _catch_up(self, src: SimNode, dst: SimNode, height: int) -> None:
        if height < dst.core.height and height <= dst.height:
            self._offer(dst, src, height)  # src is behind: dst answers from its store
        elif height > dst.core.height:
            self._offer(src, dst, dst.core.height)  # dst is behind: it asks src

    def _offer(self, giver: SimNode, taker: SimNode, height: int) -> None:
        if not giver.up or height > giver.height:
            return
        last = self._last_offer.get((taker.index, height), -SYNC_RETRY)
        if self.now - last < SYNC_RETRY:
            return
        self._last_offer[(taker.index, height)] = self.now
        block, commit = giver.store[height - 1]
        if giver.byzantine and self.rng.random() < 0.5:
            block, commit = self._fake_commit(giver, block, commit)
        self.stats.sync_offers += 1
        data = wire.encode({"block": block.to_dict(), "commit": commit.to_dict()})
        self._send(giver, taker, "offer", data)

    def _on_offer(self, node: SimNode, data: bytes) -> None:
        msg = wire.expect_map(wire.decode(data), "offer")
        block = Block.from_dict(wire.field(msg, "block", dict, "offer"))
        commit = Commit.from_dict(wire.field(msg, "commit", dict, "offer"))
        if block.height == node.core.height:
            self._apply(node, node.core.on_committed_block(block, commit, self.now))

    # ---- the Byzantine validator ----

    def _fake_commit(self, node: SimNode, block: Block, commit: Commit) -> tuple[Block, Commit]:
        """A block of the byzantine node's own making, or a real one with a short commit."""
        if self.rng.random() < 0.5:
            fake = Block.create(
                node.key,
                chain_id=self.chain_id,
                height=block.height,
                round=block.header.round,
                time=block.header.time + 1,
                prev_hash=block.header.prev_hash,
                state_root=block.header.state_root,
                records=(),
                last_commit=block.last_commit,
            )
            vote = Vote.create(
                node.key, self.chain_id, VoteType.PRECOMMIT, block.height, commit.round, fake.hash
            )
            return fake, Commit(
                block.height, commit.round, fake.hash, ((vote.validator, vote.signature),)
            )
        return block, Commit(commit.height, commit.round, commit.block_hash, commit.signatures[:1])

    def _byzantine_broadcast(self, node: SimNode, message: Proposal | Vote) -> None:
        """Equivocate: send different peers different proposals and votes, some of them two."""
        peers = [p for p in self.nodes if p is not node]
        if isinstance(message, Proposal):
            variants: list[Proposal | Vote] = [message]
            if self.rng.random() < 0.8:
                variants.append(self._conflicting_proposal(node, message))
        else:
            variants = self._conflicting_votes(node, message)
        for peer in peers:
            roll = self.rng.random()
            if roll < 0.1:
                continue  # withhold
            picks = [self.rng.choice(variants)]
            if roll > 0.6 and len(variants) > 1:
                picks.append(self.rng.choice(variants))  # double-send
            for pick in picks:
                self.stats.byzantine_messages += 1
                kind = "vote" if isinstance(pick, Vote) else "proposal"
                self._send(node, peer, kind, pick.to_wire())

    def _conflicting_proposal(self, node: SimNode, proposal: Proposal) -> Proposal:
        block = proposal.block
        records: tuple[bytes, ...] = block.records[: self.rng.randint(0, len(block.records))]
        if self.rng.random() < 0.3:
            bad = kv_record(node.key, self.chain_id, "evil", "x", 1)
            records = (*records, bad[:-1] + bytes([bad[-1] ^ 1]))  # an invalid record
            self.stats.byzantine_invalid_blocks += 1
        other = Block.create(
            node.key,
            chain_id=self.chain_id,
            height=block.height,
            round=proposal.round,
            time=block.header.time + self.rng.randint(1, 50),
            prev_hash=block.header.prev_hash,
            state_root=block.header.state_root,
            records=records,
            last_commit=block.last_commit,
        )
        self._byz_known.setdefault(block.height, []).append(other.hash)
        # Sometimes it claims a proof of lock from an earlier round that may not exist.
        pol_round = self.rng.randrange(-1, proposal.round) if proposal.round else -1
        return Proposal.create(node.key, self.chain_id, proposal.round, pol_round, other)

    def _conflicting_votes(self, node: SimNode, vote: Vote) -> list[Proposal | Vote]:
        choices: list[bytes | None] = [vote.block_hash, None]
        choices += self._byz_known.get(vote.height, [])[-4:]
        out: list[Proposal | Vote] = [vote]
        for target in dict.fromkeys(choices):
            if target != vote.block_hash:
                out.append(
                    Vote.create(node.key, self.chain_id, vote.type, vote.height, vote.round, target)
                )
        return out

    # ---- views ----

    def honest_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes if n.honest]


@dataclass(frozen=True)
class ChaosReport:
    seed: int
    byzantine: int  # index of the Byzantine validator
    heights_at_heal: tuple[int, ...]  # committed height of each honest node at the heal
    heights_at_end: tuple[int, ...]
    recovery: float | None  # seconds from the heal until every honest node had new blocks
    stats: NetStats

    @property
    def new_blocks_after_heal(self) -> int:
        return min(e - h for h, e in zip(self.heights_at_heal, self.heights_at_end))


def chaos_run(
    seed: int,
    *,
    validators: int = 4,
    observers: int = 1,
    chaos_until: float = 4.0,
    recover_within: float = 10.0,
    blocks_after_heal: int = 2,
    **overrides: Any,
) -> ChaosReport:
    """The standard adversarial run, fully determined by ``seed``.

    One Byzantine validator (equivocating proposals and votes, fake sync offers) throughout;
    until ``chaos_until``, random partitions and crash-restarts of honest nodes; always, the
    seed's rates of loss, duplication and reordering. Then the partitions heal and every node
    is up: the run goes on until each honest node has committed ``blocks_after_heal`` more
    blocks, or ``recover_within`` seconds pass (``recovery`` is then None). Safety is checked
    throughout: a breach raises AgreementViolation naming the seed.
    """
    rng = random.Random(seed ^ 0x5EED)
    faults = Faults(
        loss=rng.uniform(0.0, 0.15),
        duplicate=rng.uniform(0.0, 0.1),
        late=rng.uniform(0.0, 0.1),
    )
    byzantine = rng.randrange(validators)
    net = ConsensusNet(
        validators,
        seed=seed,
        byzantine=[byzantine],
        observers=observers,
        faults=faults,
        **overrides,
    )
    honest = [n.index for n in net.nodes if n.honest]
    end = chaos_until + recover_within
    t = 0.0
    while t < end:
        t += rng.expovariate(1 / 0.35)
        net.at(t, net.submit_random)
    t = rng.uniform(0.0, 0.5)
    while t < chaos_until:
        nodes = list(range(len(net.nodes)))
        rng.shuffle(nodes)
        cut = rng.randint(1, len(nodes) - 1)
        net.at(t, functools.partial(net.partition, [nodes[:cut], nodes[cut:]]))
        t = min(chaos_until, t + rng.uniform(0.2, 1.2))
        net.at(t, net.heal)
        t += rng.uniform(0.1, 0.8)
    for _ in range(rng.randint(0, 2)):
        victim = rng.choice(honest)
        down = rng.uniform(0.2, chaos_until - 0.5)
        back = min(chaos_until, down + rng.uniform(0.1, 1.5))
        net.at(down, functools.partial(net.crash, victim))
        net.at(back, functools.partial(net.restart, victim))
    net.start()
    net.run_until(chaos_until)
    net.heal()
    for index in honest:
        net.restart(index)
    at_heal = tuple(net.nodes[i].height for i in honest)
    recovery: float | None = None
    while net.now < end:
        net.run_until(net.now + 0.05)
        if all(net.nodes[i].height >= h + blocks_after_heal for i, h in zip(honest, at_heal)):
            recovery = net.now - chaos_until
            break
    at_end = tuple(net.nodes[i].height for i in honest)
    return ChaosReport(seed, byzantine, at_heal, at_end, recovery, net.stats)
