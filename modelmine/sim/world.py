"""A whole ModelMine network in virtual time: membership, gossip, topics, consensus, the
ledger and job assignment, under faults, with its invariants checked as it runs.

On top of :class:`~modelmine.sim.overlay_net.OverlayNet` (real ``Overlay`` and
``Membership`` cores):

- **Validators** (the first ``validators`` nodes) run the real ``Tendermint`` core with the
  real ``LedgerState`` as its application, exactly as ``ChainService`` drives them: proposals
  and votes wrapped in a statement of the sender and sent to the other validators; timers;
  sign state persisted before what follows is sent; decided blocks applied and stored; a node
  that hears of a higher height asks the sender for the blocks it lacks (``chain.block``).
  Votes, blocks and ledger records carry real Ed25519 signatures.
- **Every node** follows the chain as a light client: the proposer of a block announces the
  head (height, hash, and the job and nonce changes since the last announcement) on the
  broadcast topic ``head`` at most every ``head_every`` seconds; a node that missed
  announcements asks a validator (``chain.events``). Its view of jobs comes only from there.
- **Jobs** (``modelmine.jobs`` logic in miniature): submitters announce a job every
  ``job_every`` seconds on the broadcast topic ``jobs`` (the signed ``job.submit`` record,
  which the validators take in); every node ranks the eligible members of its own membership
  view with the real rendezvous hashing (``jobs.assignment``) and claims a job when it is first;
  the worker "trains" for a while, sends progress on the followed topic ``progress/<job>`` to
  the submitter's node and a few watchers that follow it, checkpoints, then completes or fails
  it; submitters cancel some jobs; when a worker dies, the next node by rank takes over after
  30 s without ledger activity, as the ledger allows. Records are sent straight to the
  validators, one at a time per signing key (as ``jobs.outbox`` does).

Invariants, checked as the run goes (a breach raises :class:`InvariantViolation` naming the
seed): no two honest validators commit different blocks at a height; a job that ended
(COMPLETED, FAILED or CANCELED) never changes again; credits are conserved (balances plus locked
stakes equal the credits granted) after every block on every validator. :meth:`World.check_end`
checks what must hold once the network has healed and settled: every job ended exactly once,
membership views agree with who is up, and every node holds the same ledger head.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from nacl.signing import SigningKey

from modelmine import wire
from modelmine.consensus.signstate import SignState
from modelmine.consensus.tendermint import (
    Action as CoreAction,
)
from modelmine.consensus.tendermint import (
    Broadcast,
    Decide,
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
    verify_commit,
)
from modelmine.genesis import ConsensusParams, Genesis, Validator
from modelmine.jobs.assignment import rank
from modelmine.jobs.progress import PROGRESS_FAMILY, progress_topic
from modelmine.ledger import (
    STALL_MS,
    JobStatus,
    LedgerState,
    make_job_cancel,
    make_job_checkpoint,
    make_job_claim,
    make_job_complete,
    make_job_fail,
    make_job_submit,
    make_register,
    record_id,
)
from modelmine.p2p.membership import Status, SwimConfig
from modelmine.p2p.overlay import (
    Deliver,
    OverlayConfig,
    Request,
    Response,
    Send,
    Verdict,
    request_frame,
    response_frame,
)
from modelmine.signing import Signed
from modelmine.sim.overlay_net import Faults, OverlayNet, SimNode

WORLD_CHAIN: Final = "sim-world"
EPOCH: Final = 1_700_000_000.0  # virtual time 0, as Unix time for block times
WORLD_PARAMS: Final = ConsensusParams(
    timeout_propose=1.0,
    timeout_prevote=0.5,
    timeout_precommit=0.5,
    timeout_delta=0.25,
    idle_block_interval=10.0,
    max_block_records=100,
)
RECORDS_TOPIC: Final = "records"
CONSENSUS_TOPIC: Final = "consensus"
HEAD_TOPIC: Final = "head"
SPEC: Final = {
    "title": "sim job",
    "model": {"kind": "logistic"},
    "dataset": {"name": "iris"},
    "stake": 100,
}
PLANNED_SAMPLES: Final = 2240  # iris, 20 epochs: what the ledger plans for SPEC
RECORD_GIVE_UP: Final = 20.0  # a record not final by then is taken as dropped
CLAIM_RETRY: Final = 10.0
DECIDE_EVERY: Final = 5.0  # a node looks at what to claim at least this often (and on news)
SYNC_RETRY: Final = 1.0
MAX_EVENTS: Final = 512  # job and nonce changes in one head announcement


class InvariantViolation(AssertionError):
    """An invariant failed; the message names the seed that reproduces the run."""


@dataclass
class Replica:
    """A validator's consensus core, ledger and store (the store survives a crash)."""

    core: Tendermint
    state: LedgerState
    store: list[tuple[Block, Commit]] = field(default_factory=list)
    sign_state: SignState | None = None
    epoch: int = 0
    asked: dict[int, float] = field(default_factory=dict)  # height -> when we asked for it

    @property
    def height(self) -> int:
        return len(self.store)


@dataclass
class JobView:
    status: str
    worker: bytes
    last_ms: int
    submitter: bytes
    samples: int  # as the last checkpoint recorded: a new worker resumes from there


@dataclass
class _Outbox:
    """Records of one key, one in flight at a time (as jobs/outbox.py)."""

    key: SigningKey
    confirmed: int = 0  # the key's last nonce the chain has taken, as this node knows it
    queue: list[tuple[Callable[[int], bytes], str, bytes]] = field(default_factory=list)
    in_flight: tuple[int, float, str, bytes] | None = None  # nonce, sent at, what, job id


@dataclass
class _Training:
    job_id: bytes
    started: float
    duration: float
    outcome: str  # "complete" or "fail"
    samples: int = 0
    step: int = 0
    finishing: bool = False
    resumed: int = 0  # samples already done when this worker took over


@dataclass
class Agent:
    """What one node knows and does about the chain and jobs."""

    node_out: _Outbox
    account: _Outbox | None = None
    head_height: int = 0
    head_hash: bytes = b""
    head_ms: int = 0
    jobs: dict[bytes, JobView] = field(default_factory=dict)
    open_jobs: dict[bytes, JobView] = field(default_factory=dict)  # PENDING or RUNNING
    claimed_at: dict[bytes, float] = field(default_factory=dict)
    training: dict[bytes, _Training] = field(default_factory=dict)
    submitted: set[bytes] = field(default_factory=set)
    asked_events: float = -1e9
    progress_seen: int = 0


@dataclass
class WorldStats:
    jobs_submitted: int = 0
    claims_sent: int = 0
    records_sent: int = 0
    records_dropped: int = 0
    blocks: int = 0
    heads_announced: int = 0
    events_fetched: int = 0
    progress_sent: int = 0
    progress_received: int = 0
    progress_elsewhere: int = 0  # progress at a node that follows no such job (must stay 0)
    cancels: int = 0
    failovers: int = 0
    sync_blocks: int = 0
    rejected: list[str] = field(default_factory=list)


class World(OverlayNet):
    def __init__(
        self,
        n: int,
        *,
        seed: int,
        validators: int = 4,
        submitters: int = 4,
        faults: Faults | None = None,
        config: OverlayConfig | None = None,
        swim: SwimConfig | None = None,
        formed: bool = True,
        params: ConsensusParams = WORLD_PARAMS,
        job_every: float = 5.0,
        job_seconds: tuple[float, float] = (15.0, 45.0),
        progress_every: float = 2.0,
        head_every: float = 5.0,
        watchers: int = 2,
        cancel_rate: float = 0.15,
        fail_rate: float = 0.1,
    ) -> None:
        self.validator_count = validators
        super().__init__(
            n,
            seed=seed,
            faults=faults,
            config=config,
            swim=swim,
            formed=formed,
            record=False,
            chain_id=WORLD_CHAIN,
        )
        if not 1 <= validators <= n or submitters > n - validators:
            raise ValueError("need 1..n validators and at most n - validators submitters")
        self.world_rng = random.Random(seed ^ 0x5EED)
        self.params = params
        self.job_every = job_every
        self.job_seconds = job_seconds
        self.progress_every = progress_every
        self.head_every = head_every
        self.watchers = watchers
        self.cancel_rate = cancel_rate
        self.fail_rate = fail_rate
        self.stats = WorldStats()
        self.validator_nodes = self.nodes[:validators]
        self.genesis = Genesis(
            chain_id=WORLD_CHAIN,
            genesis_time=int(EPOCH),
            validators=tuple(
                Validator(node.node_id, 10, node.name) for node in self.validator_nodes
            ),
            initial_grant=1000,
            consensus=params,
        )
        self.validator_set = ValidatorSet.from_genesis(self.genesis)
        self._validator_index = {node.node_id: node.index for node in self.validator_nodes}
        self.replicas: dict[int, Replica] = {}
        for node in self.validator_nodes:
            state = LedgerState(self.genesis)
            self.replicas[node.index] = Replica(self._new_core(node, state, [], None), state)
        self.agents: list[Agent] = [Agent(_Outbox(node.key)) for node in self.nodes]
        for i in range(submitters):
            node = self.nodes[validators + i]
            self.agents[node.index].account = _Outbox(SigningKey(self.rng.randbytes(32)))
        self.submitter_nodes = [self.nodes[validators + i] for i in range(submitters)]
        self.committed: dict[int, tuple[bytes, int]] = {}  # height -> (hash, first validator)
        self.deltas: dict[int, tuple[list[list[Any]], list[list[Any]]]] = {}
        self.job_meta: dict[bytes, int] = {}  # job id -> submitter node index
        self.ended: dict[bytes, tuple[str, int]] = {}  # job id -> (status, height)
        self.all_jobs: dict[bytes, str] = {}  # job id -> latest status on the chain
        self._head_seen: dict[int, tuple[int, float]] = {}  # validator -> (height, when)
        self._progress_sent_at: dict[bytes, float] = {}
        self._submitting = True
        self._cancel_planned: set[bytes] = set()
        self._rankings: dict[bytes, list[bytes]] = {}
        self._watchers: dict[bytes, set[int]] = {}
        for node in self.nodes:
            self._register_topics(node)

    def initial_slots(self, index: int) -> int:
        return 0 if index < self.validator_count else 1  # validators do not train

    # ---- setup ----

    def _new_core(
        self,
        node: SimNode,
        state: LedgerState,
        store: list[tuple[Block, Commit]],
        sign_state: SignState | None,
    ) -> Tendermint:
        return Tendermint(
            WORLD_CHAIN,
            self.validator_set,
            self.params,
            node.key,
            state,
            len(store) + 1,
            store[-1][0].header if store else None,
            store[-1][1] if store else None,
            sign_state,
        )

    def _register_topics(self, node: SimNode) -> None:
        overlay = node.overlay
        overlay.register_topic(RECORDS_TOPIC, self._check_wrapped)
        overlay.register_topic(CONSENSUS_TOPIC, self._check_consensus)
        overlay.register_topic(HEAD_TOPIC, self._check_head)
        overlay.register_topic(PROGRESS_FAMILY + "/", self._check_progress, followed=True)

    def _check_wrapped(self, statement: Signed, now: float) -> Verdict:
        record = wire.field(statement.payload(), "record", bytes, "record wrapper")
        if len(record) > 64 * 1024:
            raise wire.WireError("record wrapper: record too large")
        return Verdict.ACCEPT

    def _check_consensus(self, statement: Signed, now: float) -> Verdict:
        if statement.signer not in self._validator_index:
            raise wire.WireError("consensus message from a non-validator")
        return Verdict.ACCEPT

    def _check_head(self, statement: Signed, now: float) -> Verdict:
        if statement.signer not in self._validator_index:
            raise wire.WireError("head announcement from a non-validator")
        return Verdict.ACCEPT

    def _check_progress(self, statement: Signed, now: float) -> Verdict:
        p = statement.payload()
        wire.bytes_field(p, "job_id", 32, "progress")
        wire.int_field(p, "step", 0, 10**9, "progress")
        return Verdict.ACCEPT

    def fail(self, what: str) -> InvariantViolation:
        return InvariantViolation(
            f"seed {self.seed}: {what} (replay with: python -m modelmine.sim chaos --seed "
            f"{self.seed})"
        )

    def start(self) -> None:
        for node in self.validator_nodes:
            self._core_apply(node, self.replicas[node.index].core.start(EPOCH + self.now))
        for node in self.nodes:
            agent = self.agents[node.index]
            if agent.account is not None:
                make = functools.partial(make_register, agent.account.key, WORLD_CHAIN, "user")
                self._queue_record(node, agent.account, "register", b"", make)
            self.at(self.world_rng.uniform(0, DECIDE_EVERY), self._decide_loop, node, node=node)
        self.at(self.job_every, self._submit_loop)

    def stop_submitting(self) -> None:
        self._submitting = False

    # ---- restart hooks ----

    def restart(self, node: SimNode) -> None:
        if node.up:
            return
        super().restart(node)
        self._register_topics(node)
        agent = self.agents[node.index]
        agent.training.clear()
        agent.node_out.in_flight = None
        agent.node_out.queue.clear()
        if agent.account is not None:
            agent.account.in_flight = None
            agent.account.queue.clear()
        replica = self.replicas.get(node.index)
        if replica is not None:
            replica.epoch += 1
            replica.asked.clear()
            replica.core = self._new_core(node, replica.state, replica.store, replica.sign_state)
            self._core_apply(node, replica.core.start(EPOCH + self.now))
        self.at(self.now + DECIDE_EVERY, self._decide_loop, node, node=node)

    def crash(self, node: SimNode) -> None:
        if not node.up:
            return
        super().crash(node)
        replica = self.replicas.get(node.index)
        if replica is not None:
            replica.epoch += 1

    # ---- the overlay's hooks ----

    def on_deliver(self, node: SimNode, delivery: Deliver) -> None:
        topic = delivery.topic
        if topic == HEAD_TOPIC:
            self._on_head(node, delivery.statement)
        elif topic == CONSENSUS_TOPIC:
            self._on_consensus(node, delivery.statement)
        elif topic == RECORDS_TOPIC:
            replica = self.replicas.get(node.index)
            if replica is not None:
                record = delivery.statement.payload()["record"]
                self._core_apply(node, replica.core.add_pending([record], EPOCH + self.now))
        elif topic.startswith(PROGRESS_FAMILY + "/") and delivery.from_peer is not None:
            agent = self.agents[node.index]
            if topic not in node.overlay.follows:
                self.stats.progress_elsewhere += 1
            agent.progress_seen += 1
            self.stats.progress_received += 1

    def on_request(self, node: SimNode, request: Request) -> None:
        body: dict[str, Any] = {}
        error: str | None = None
        replica = self.replicas.get(node.index)
        if replica is None:
            error = "not a validator"
        elif request.kind == "chain.block":
            height = request.body.get("height")
            if not isinstance(height, int) or not 1 <= height <= replica.height:
                error = "no such block"
            else:
                block, commit = replica.store[height - 1]
                body = {"block": block.to_wire(), "commit": commit.to_wire()}
        elif request.kind == "chain.events":
            first = request.body.get("from")
            if not isinstance(first, int) or first < 0:
                error = "bad request"
            else:
                body = self._events_body(first, replica.height)
        else:
            error = "unknown request"
        self.apply(node, [_direct_send(request.peer, response_frame(request.id, body, error))])

    def on_response(self, node: SimNode, response: Response) -> None:
        if response.error is not None:
            return
        replica = self.replicas.get(node.index)
        body = response.body
        if "block" in body and replica is not None:
            try:
                block = Block.from_wire(body["block"])
                commit = Commit.from_wire(body["commit"])
            except (wire.WireError, ConsensusError, KeyError):
                return
            if block.height == replica.core.height:
                self.stats.sync_blocks += 1
                try:
                    actions = replica.core.on_committed_block(block, commit, EPOCH + self.now)
                except ConsensusError as exc:
                    self.stats.rejected.append(str(exc))
                    return
                self._core_apply(node, actions)
        elif "to" in body:
            self.stats.events_fetched += 1
            self._apply_events(node, body)

    # ---- consensus ----

    def _core_apply(self, node: SimNode, actions: list[CoreAction]) -> None:
        replica = self.replicas[node.index]
        for action in actions:
            if not node.up:
                return
            if isinstance(action, PersistSignState):
                replica.sign_state = action.state
            elif isinstance(action, Broadcast):
                self._send_consensus(node, action.message)
            elif isinstance(action, ScheduleTimeout):
                self.at(
                    action.at - EPOCH,
                    self._timeout,
                    node,
                    replica.epoch,
                    action,
                    node=node,
                )
            elif isinstance(action, Decide):
                self._decided(node, action)

    def _timeout(self, node: SimNode, epoch: int, timeout: ScheduleTimeout) -> None:
        replica = self.replicas[node.index]
        if replica.epoch == epoch:
            self._core_apply(node, replica.core.on_timeout(timeout, EPOCH + self.now))

    def _send_consensus(self, node: SimNode, message: Proposal | Vote) -> None:
        kind = "vote" if isinstance(message, Vote) else "proposal"
        payload = {"kind": kind, "msg": message.to_wire(), "sent": self.now}
        statement = self.keys.sign(node.node_id, CONSENSUS_TOPIC, payload)
        actions = []
        for other in self.validator_nodes:
            if other is not node:
                actions += node.overlay.send_to(other.node_id, CONSENSUS_TOPIC, statement)
        self.apply(node, actions)

    def _on_consensus(self, node: SimNode, statement: Signed) -> None:
        replica = self.replicas.get(node.index)
        if replica is None:
            return
        p = statement.payload()
        try:
            if p.get("kind") == "vote":
                message: Proposal | Vote = Vote.from_wire(p["msg"])
            else:
                message = Proposal.from_wire(p["msg"])
            if message.height > replica.core.height:
                self._ask_block(node, statement.signer, replica.core.height)
            if isinstance(message, Vote):
                actions = replica.core.on_vote(message, EPOCH + self.now)
            else:
                actions = replica.core.on_proposal(message, EPOCH + self.now)
        except (wire.WireError, ConsensusError, KeyError) as exc:
            self.stats.rejected.append(str(exc))
            return
        self._core_apply(node, actions)

    def _ask_block(self, node: SimNode, peer: bytes, height: int) -> None:
        replica = self.replicas[node.index]
        if self.now - replica.asked.get(height, -1e9) < SYNC_RETRY:
            return
        replica.asked[height] = self.now
        self.apply(
            node, [_direct_send(peer, request_frame(height, "chain.block", {"height": height}))]
        )

    def _decided(self, node: SimNode, decision: Decide) -> None:
        replica = self.replicas[node.index]
        block, commit = decision.block, decision.commit
        self.check_decision(node.index, block, commit)
        before = {job.id: job.status for job in replica.state.jobs()}
        try:
            replica.state.apply_block(block, commit)
        except ValueError as exc:
            raise self.fail(
                f"validator {node.index} could not apply block {block.height}: {exc}"
            ) from None
        replica.store.append((block, commit))
        self._check_ledger(node.index, replica.state, before, block.height)
        if block.height not in self.deltas:
            self._record_deltas(replica.state, block.height)
            self.stats.blocks += 1
        self._maybe_announce(node, block)
        self._core_apply(node, replica.core.next_height(EPOCH + self.now))

    def check_decision(self, index: int, block: Block, commit: Commit) -> None:
        """Record an honest validator's decision; raise InvariantViolation on a fork."""
        try:
            verify_commit(commit, self.validator_set, WORLD_CHAIN, block.hash)
        except ConsensusError as exc:
            raise self.fail(f"validator {index} decided on a bad commit: {exc}") from None
        first = self.committed.setdefault(block.height, (block.hash, index))
        if first[0] != block.hash:
            raise self.fail(
                f"validators {first[1]} and {index} committed different blocks at height "
                f"{block.height}: {first[0].hex()[:8]} and {block.hash.hex()[:8]}"
            )

    def _check_ledger(
        self, index: int, state: LedgerState, before: dict[bytes, JobStatus], height: int
    ) -> None:
        if state.total_supply() != state.granted:
            raise self.fail(
                f"credits not conserved on validator {index} at height {height}: "
                f"{state.total_supply()} held, {state.granted} granted"
            )
        changes = state.unsaved()
        state.mark_saved(changes)
        for job in changes.jobs:
            old = before.get(job.id)
            if old is not None and old.ended and job.status != old:
                raise self.fail(
                    f"job {job.id.hex()[:8]} ended {old} and then became {job.status} at height "
                    f"{height} on validator {index}"
                )
            if job.status.ended:
                seen = self.ended.setdefault(job.id, (str(job.status), job.ended_height))
                if seen != (str(job.status), job.ended_height):
                    raise self.fail(
                        f"job {job.id.hex()[:8]} ended twice: {seen} and "
                        f"{(str(job.status), job.ended_height)}"
                    )
            self.all_jobs[job.id] = str(job.status)

    def _record_deltas(self, state: LedgerState, height: int) -> None:
        # Computed once per height, by the first validator to apply it: every honest
        # validator's state after a height is the same (that is what agreement gives).
        block = self.committed[height]
        jobs: list[list[Any]] = []
        nonces: list[list[Any]] = []
        store = self.replicas[block[1]].store
        for raw in store[height - 1][0].records:
            record = state.parse(raw)
            nonces.append([record.signer, record.nonce])
            job_id = getattr(record, "job_id", None)
            if job_id is None and record.kind == "job.submit":
                job_id = record_id(raw)
            job = state.job(job_id) if job_id is not None else None
            if job is not None:
                jobs.append(
                    [
                        job.id,
                        str(job.status),
                        job.worker or b"",
                        job.last_activity_ms,
                        job.submitter,
                        job.samples,
                    ]
                )
        self.deltas[height] = (jobs, nonces)

    # ---- head announcements (the light-client view of the chain) ----

    def _maybe_announce(self, node: SimNode, block: Block) -> None:
        if block.header.proposer != node.node_id:
            return
        last_height, last_time = self._head_seen.get(node.index, (0, -1e9))
        if self.now - last_time < self.head_every and block.height - last_height < 20:
            return
        body = self._events_body(last_height, block.height)
        statement = self.keys.sign(node.node_id, HEAD_TOPIC, body)
        self._head_seen[node.index] = (block.height, self.now)
        self.stats.heads_announced += 1
        self.publish(node, HEAD_TOPIC, statement)

    def _events_body(self, first: int, last: int) -> dict[str, Any]:
        """Job and nonce changes of heights first+1..last, latest per job and per signer."""
        jobs: dict[bytes, list[Any]] = {}
        nonces: dict[bytes, int] = {}
        last_full = first
        for height in range(first + 1, last + 1):
            delta = self.deltas.get(height)
            if delta is None:
                break
            for entry in delta[0]:
                jobs[entry[0]] = entry
            for signer, nonce in delta[1]:
                nonces[signer] = nonce
            last_full = height
        block_hash = self.committed[last_full][0] if last_full in self.committed else b""
        return {
            "from": first,
            "to": last_full,
            "hash": block_hash,
            "jobs": list(jobs.values())[:MAX_EVENTS],
            "nonces": [[k, v] for k, v in nonces.items()][:MAX_EVENTS],
            "time": int((EPOCH + self.now) * 1000),
        }

    def _on_head(self, node: SimNode, statement: Signed) -> None:
        body = statement.payload()
        if node.index in self.replicas:  # validators announce only when nobody did lately
            height, _ = self._head_seen.get(node.index, (0, -1e9))
            self._head_seen[node.index] = (max(height, body["to"]), self.now)
        self._apply_events(node, body, announcer=statement.signer)

    def _apply_events(self, node: SimNode, body: dict[str, Any], announcer: bytes = b"") -> None:
        agent = self.agents[node.index]
        first, last = body["from"], body["to"]
        if last <= agent.head_height:
            return
        if first > agent.head_height:
            # We missed announcements: ask a validator for everything since our head.
            if self.now - agent.asked_events >= SYNC_RETRY:
                agent.asked_events = self.now
                peer = announcer or self.world_rng.choice(self.validator_nodes).node_id
                frame = request_frame(0, "chain.events", {"from": agent.head_height})
                self.apply(node, [_direct_send(peer, frame)])
            return
        agent.head_height, agent.head_hash = last, body["hash"]
        agent.head_ms = body["time"]
        for job_id, status, worker, last_ms, submitter, samples in body["jobs"]:
            view = agent.jobs[job_id] = JobView(status, worker, last_ms, submitter, samples)
            if status in ("PENDING", "RUNNING"):
                agent.open_jobs[job_id] = view
            else:
                agent.open_jobs.pop(job_id, None)
            self._job_changed(node, agent, job_id)
        for signer, nonce in body["nonces"]:
            for outbox in (agent.node_out, agent.account):
                if outbox is not None and bytes(outbox.key.verify_key) == signer:
                    outbox.confirmed = max(outbox.confirmed, nonce)
                    self._outbox_progress(node, outbox)
        self._decide(node)

    # ---- records (one in flight per key, like jobs/outbox.py) ----

    def _queue_record(
        self,
        node: SimNode,
        outbox: _Outbox,
        what: str,
        job_id: bytes,
        make: Callable[[int], bytes],
    ) -> None:
        outbox.queue.append((make, what, job_id))
        self._outbox_progress(node, outbox)

    def _outbox_progress(self, node: SimNode, outbox: _Outbox) -> None:
        if outbox.in_flight is not None:
            nonce, sent, what, job_id = outbox.in_flight
            if outbox.confirmed >= nonce:
                outbox.in_flight = None
            elif self.now - sent >= RECORD_GIVE_UP:
                outbox.in_flight = None
                self.stats.records_dropped += 1
                if what in ("complete", "fail") and self._still_mine(node, job_id):
                    self._finish(node, job_id)  # try again: the job is still ours
            else:
                return
        if not outbox.queue or not node.up:
            return
        make, what, job_id = outbox.queue.pop(0)
        nonce = outbox.confirmed + 1
        raw = make(nonce)
        outbox.in_flight = (nonce, self.now, what, job_id)
        self.stats.records_sent += 1
        wrapper = self.keys.sign(node.node_id, RECORDS_TOPIC, {"record": raw})
        if what == "submit":
            self.job_meta[record_id(raw)] = node.index
            self.agents[node.index].submitted.add(record_id(raw))
        actions = []
        for validator in self.validator_nodes:
            if validator is node:
                replica = self.replicas[node.index]
                self._core_apply(node, replica.core.add_pending([raw], EPOCH + self.now))
            else:
                actions += node.overlay.send_to(validator.node_id, RECORDS_TOPIC, wrapper)
        self.apply(node, actions)

    # ---- jobs ----

    def _submit_loop(self) -> None:
        if self._submitting:
            live = [n for n in self.submitter_nodes if n.up and n.paused_until <= self.now]
            if live:
                node = self.world_rng.choice(live)
                account = self.agents[node.index].account
                if account is None:
                    return
                key = account.key
                stamp = int((EPOCH + self.now) * 1000)
                self.stats.jobs_submitted += 1
                self._queue_record(
                    node,
                    account,
                    "submit",
                    b"",
                    lambda n: make_job_submit(key, WORLD_CHAIN, SPEC, n, stamp),
                )
            self.at(self.now + self.job_every, self._submit_loop)

    def _decide_loop(self, node: SimNode) -> None:
        self._decide(node)
        agent = self.agents[node.index]
        self._outbox_progress(node, agent.node_out)
        if agent.account is not None:
            self._outbox_progress(node, agent.account)
        self.at(self.now + DECIDE_EVERY, self._decide_loop, node, node=node)

    def _ranking(self, job_id: bytes) -> list[bytes]:
        # The real rendezvous ranking over every node, computed once per job; each node then
        # walks it from the top, skipping the nodes it does not see as eligible. The first
        # one left is exactly rank(job, eligible)[0], as worker.py computes it, without each
        # of a thousand nodes sorting a thousand hashes.
        found = self._rankings.get(job_id)
        if found is None:
            found = self._rankings[job_id] = rank(job_id, (n.node_id for n in self.nodes))
        return found

    def _first_eligible(self, node: SimNode, job_id: bytes, skip: bytes) -> bytes | None:
        members = node.overlay.members
        for candidate in self._ranking(job_id):
            if candidate == skip:
                continue
            if candidate == node.node_id:
                if node.busy < node.slots:
                    return candidate
                continue
            member = members.get(candidate)
            if member is None or member.status is not Status.ONLINE:
                continue
            capacity = member.heartbeat.capacity
            if capacity["busy"] < capacity["slots"]:
                return candidate
        return None

    def _decide(self, node: SimNode) -> None:
        """Claim what is ours by rank (as worker.py's _schedule)."""
        agent = self.agents[node.index]
        if node.busy >= node.slots or agent.node_out.in_flight is not None or not node.up:
            return
        now_ms = int((EPOCH + self.now) * 1000)
        for job_id, job in agent.open_jobs.items():
            stalled = (
                job.status == "RUNNING"
                and job.worker != node.node_id
                and now_ms - job.last_ms >= STALL_MS
            )
            if job.status != "PENDING" and not stalled:
                continue
            if self.now - agent.claimed_at.get(job_id, -1e9) < CLAIM_RETRY:
                continue
            if self._first_eligible(node, job_id, job.worker) == node.node_id:
                agent.claimed_at[job_id] = self.now
                self.stats.claims_sent += 1
                if stalled:
                    self.stats.failovers += 1
                make = functools.partial(make_job_claim, node.key, WORLD_CHAIN, job_id)
                self._queue_record(node, agent.node_out, "claim", job_id, make)
                return

    def _job_changed(self, node: SimNode, agent: Agent, job_id: bytes) -> None:
        job = agent.jobs[job_id]
        mine = job.status == "RUNNING" and job.worker == node.node_id
        training = agent.training.get(job_id)
        if mine and training is None and node.busy < node.slots:
            low, high = self.job_seconds
            outcome = "fail" if self.world_rng.random() < self.fail_rate else "complete"
            training = _Training(job_id, self.now, self.world_rng.uniform(low, high), outcome)
            training.resumed = job.samples  # from the last checkpoint, as worker.py resumes
            agent.training[job_id] = training
            node.busy += 1
            node.status = "BUSY" if node.busy >= node.slots else "ONLINE"
            self.heartbeat(node)
            self.at(self.now + self.progress_every, self._train_step, node, job_id, node=node)
        elif not mine and training is not None:
            self._stop_training(node, agent, job_id)
        submitted = job_id in agent.submitted
        # The submitter follows its job's progress at the worker, as do a few watchers.
        if submitted or self._is_watcher(node, job_id):
            topic = progress_topic(job_id)
            follows = node.overlay.follows
            if job.status == "RUNNING" and job.worker and follows.get(topic) != job.worker:
                self.apply(node, node.overlay.follow(topic, job.worker, self.now))
            elif job.status != "RUNNING" and topic in follows:
                self.apply(node, node.overlay.unfollow(topic))
        if (
            submitted
            and job.status in ("PENDING", "RUNNING")
            and job_id not in self._cancel_planned
        ):
            self._cancel_planned.add(job_id)
            if self.world_rng.random() < self.cancel_rate:
                self.at(
                    self.now + self.world_rng.uniform(3.0, 30.0),
                    self._cancel,
                    node,
                    job_id,
                    node=node,
                )

    def _is_watcher(self, node: SimNode, job_id: bytes) -> bool:
        # A few nodes, fixed per job, whose users watch it.
        if not self.watchers:
            return False
        watching = self._watchers.get(job_id)
        if watching is None:
            pick, count = int.from_bytes(job_id[:4], "big"), len(self.nodes)
            watching = self._watchers[job_id] = {
                (pick + 7919 * k) % count for k in range(self.watchers)
            }
        return node.index in watching

    def _cancel(self, node: SimNode, job_id: bytes) -> None:
        agent = self.agents[node.index]
        job = agent.jobs.get(job_id)
        if agent.account is None or job is None or job.status not in ("PENDING", "RUNNING"):
            return
        self.stats.cancels += 1
        key = agent.account.key
        self._queue_record(
            node,
            agent.account,
            "cancel",
            job_id,
            lambda n: make_job_cancel(key, WORLD_CHAIN, job_id, n),
        )

    def _stop_training(self, node: SimNode, agent: Agent, job_id: bytes) -> None:
        agent.training.pop(job_id, None)
        node.busy = max(0, node.busy - 1)
        node.status = "BUSY" if node.busy >= node.slots and node.slots else "ONLINE"
        self.heartbeat(node)

    def _still_mine(self, node: SimNode, job_id: bytes) -> bool:
        job = self.agents[node.index].jobs.get(job_id)
        return job is not None and job.status == "RUNNING" and job.worker == node.node_id

    def _train_step(self, node: SimNode, job_id: bytes) -> None:
        agent = self.agents[node.index]
        training = agent.training.get(job_id)
        if training is None or training.finishing:
            return
        elapsed = self.now - training.started
        fraction = min(1.0, elapsed / training.duration)
        training.step = int(100 * fraction)
        done = training.resumed + (PLANNED_SAMPLES - training.resumed) * fraction
        training.samples = max(training.samples, int(done))
        payload = {
            "job_id": job_id,
            "step": training.step,
            "total_steps": 100,
            "time": self.now,
        }
        topic = progress_topic(job_id)
        statement = self.keys.sign(node.node_id, topic, payload)
        self.stats.progress_sent += 1
        self.apply(node, node.overlay.publish(topic, statement, self.now))
        if fraction >= 1.0:
            self._finish(node, job_id)
            return
        if (
            training.step // 30
            != int(100 * (elapsed - self.progress_every) / training.duration) // 30
        ):
            key, samples, step = node.key, training.samples, training.step
            self._queue_record(
                node,
                agent.node_out,
                "checkpoint",
                job_id,
                lambda n: make_job_checkpoint(
                    key, WORLD_CHAIN, job_id, step, samples, bytes(32), n
                ),
            )
        self.at(self.now + self.progress_every, self._train_step, node, job_id, node=node)

    def _finish(self, node: SimNode, job_id: bytes) -> None:
        agent = self.agents[node.index]
        training = agent.training.get(job_id)
        if training is None:
            return
        training.finishing = True
        samples = PLANNED_SAMPLES
        make: Callable[[int], bytes]
        if training.outcome == "fail":
            make = functools.partial(make_job_fail, node.key, WORLD_CHAIN, job_id, "diverged")
        else:
            metrics = {"val_accuracy": 0.9}
            make = functools.partial(
                make_job_complete, node.key, WORLD_CHAIN, job_id, metrics, bytes(32), samples, 100
            )
        self._queue_record(node, agent.node_out, training.outcome, job_id, make)

    # ---- end of a run ----

    def honest_heads(self) -> list[tuple[int, bytes]]:
        out = []
        for index, replica in self.replicas.items():
            if self.nodes[index].up and replica.store:
                out.append((replica.height, replica.store[-1][0].hash))
        return out

    def converged(self) -> tuple[bool, str]:
        """Membership and ledger heads agree with who is up (what must hold after a heal)."""
        up = [n for n in self.nodes if n.up]
        down = {n.node_id for n in self.nodes if not n.up}
        for node in up:
            for member in node.overlay.members:
                if member.node_id == node.node_id:
                    continue
                if member.node_id in down:
                    if member.status is not Status.OFFLINE:
                        return False, f"node {node.index} sees down node as {member.status}"
                elif member.status in (Status.SUSPECT, Status.OFFLINE):
                    return False, (
                        f"node {node.index} sees live node {self._index[member.node_id]} as "
                        f"{member.status}"
                    )
            if len(node.overlay.members) < len(self.nodes):
                return False, f"node {node.index} knows {len(node.overlay.members)} members"
        heads = self.honest_heads()
        if len(set(heads)) > 1:
            return False, f"validators hold different heads {sorted({h for h, _ in heads})}"
        if heads:
            height, _ = heads[0]
            for node in up:
                agent = self.agents[node.index]
                if (
                    agent.head_height == 0
                    or self.committed.get(agent.head_height, (b"",))[0] != agent.head_hash
                ):
                    return False, f"node {node.index} holds head {agent.head_height}"
                if agent.head_height < height - 30:
                    return False, f"node {node.index} is at {agent.head_height}, chain at {height}"
        return True, ""

    def unfinished_jobs(self) -> list[bytes]:
        return [j for j, status in self.all_jobs.items() if status in ("PENDING", "RUNNING")]

    def check_end(self) -> None:
        """Raise InvariantViolation unless every job ended once and the network converged."""
        open_jobs = self.unfinished_jobs()
        if open_jobs:
            raise self.fail(f"{len(open_jobs)} jobs never ended, e.g. {open_jobs[0].hex()[:8]}")
        ok, why = self.converged()
        if not ok:
            raise self.fail(f"no convergence after the heal: {why}")
        if self.stats.progress_elsewhere:
            raise self.fail(
                f"{self.stats.progress_elsewhere} progress messages reached non-followers"
            )


def _direct_send(peer: bytes, frame: bytes) -> Send:
    return Send(peer, frame, direct=True)
