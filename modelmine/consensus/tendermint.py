"""Tendermint consensus for one node, sans-IO (Buchman, Kwon, Milosevic 2018, Algorithm 1).

Events go in with the current time, actions come out; there is no clock, socket or thread
here. One instance decides one height at a time:

- ``Decide(block, commit)`` is emitted once per height. The driver stores the block and its
  commit and applies the block to the application (one transaction), then calls
  :meth:`Tendermint.next_height`; until then the core only buffers messages of the next
  height. The core never applies blocks itself, so the store and the state stay in step.
- Every signature is checked against the :class:`SignState` first. The new state comes out
  as ``PersistSignState`` *before* the ``Broadcast`` it guards: the driver must make it
  durable before sending anything that follows it in the same list.
- ``ScheduleTimeout`` asks the driver to call :meth:`Tendermint.on_timeout` with the same
  object at ``at`` (seconds, the same clock as ``now``); stale timeouts are ignored.

Deviations from the paper, all safe: a block is looked up by hash whatever round proposed
it; a node skips to round ``r`` once validators with more than 1/3 of the power have sent
messages of round ``r`` or later (the paper asks for the same round); votes of rounds beyond
a small window are not stored, only the round they name. A node that makes no progress for a
gossip interval sends its own messages again, with the votes of the current and previous
round it holds, standing in for the paper's assumption that gossip eventually delivers.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from nacl.signing import SigningKey

from modelmine import wire
from modelmine.consensus.application import Application
from modelmine.consensus.signstate import Lock, SignState, SignStep
from modelmine.consensus.types import (
    MAX_FUTURE_MS,
    NO_HASH,
    Block,
    Commit,
    ConsensusError,
    Header,
    Proposal,
    ValidatorSet,
    Vote,
    VoteType,
    verify_block,
    verify_commit,
)
from modelmine.genesis import ConsensusParams

log = logging.getLogger(__name__)

ROUND_WINDOW: Final = 4  # votes and proposals are stored for rounds up to current + this
MAX_PROPOSALS_PER_ROUND: Final = 2  # the first one is acted on; a second one is evidence
MAX_VALUES_PER_VALIDATOR: Final = 4  # per (round, type); more is equivocation we stop storing
MAX_PENDING: Final = 10_000
IDLE_RECHECK: Final = 1.0  # seconds between looks at pending records not valid yet


class Step(enum.StrEnum):
    PROPOSE = "propose"
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"


class TimeoutKind(enum.StrEnum):
    IDLE = "idle"  # round 0 waits for records or the idle interval before proposing
    PROPOSE = "propose"
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"
    GOSSIP = "gossip"  # periodic check for a stalled node, which then resends


# ---- actions ----


@dataclass(frozen=True)
class Broadcast:
    message: Proposal | Vote


@dataclass(frozen=True)
class ScheduleTimeout:
    height: int
    round: int
    step: TimeoutKind
    at: float


@dataclass(frozen=True)
class PersistSignState:
    state: SignState


@dataclass(frozen=True)
class Decide:
    block: Block
    commit: Commit


@dataclass(frozen=True)
class Evidence:
    reason: str
    validator: bytes


Action = Broadcast | ScheduleTimeout | PersistSignState | Decide | Evidence


# ---- per-height message log ----


class _VoteSet:
    """Votes of one (round, type).

    As in the paper, a validator that votes for two values counts towards both (its
    signatures are real; quorum intersection already allows for it), but towards ``total``,
    the power that voted at all, only once. Past the first, a validator's votes are kept only
    for nil or a block this node holds, and only ``MAX_VALUES_PER_VALIDATOR`` of them.
    """

    def __init__(self) -> None:
        self.by_validator: dict[bytes, dict[bytes | None, Vote]] = {}
        self.power: dict[bytes | None, int] = {}
        self.total = 0

    def add(self, vote: Vote, power: int) -> None:
        values = self.by_validator.setdefault(vote.validator, {})
        if not values:
            self.total += power
        values[vote.block_hash] = vote
        self.power[vote.block_hash] = self.power.get(vote.block_hash, 0) + power

    def all(self) -> list[Vote]:
        return [vote for values in self.by_validator.values() for vote in values.values()]

    def for_value(self, block_hash: bytes | None) -> list[Vote]:
        found = (values.get(block_hash) for values in self.by_validator.values())
        return [vote for vote in found if vote is not None]


class _HeightLog:
    """Everything received for one height, bounded by rounds and validators."""

    def __init__(self, height: int) -> None:
        self.height = height
        self.votes: dict[tuple[int, VoteType], _VoteSet] = {}
        self.proposals: dict[int, list[Proposal]] = {}
        self.blocks: dict[bytes, Block] = {}
        self.claims: dict[bytes, int] = {}  # highest round each validator has sent
        self.reported: set[tuple[bytes, int, str]] = set()
        self.validity: dict[bytes, str | None] = {}

    def voteset(self, round: int, type: VoteType) -> _VoteSet:
        found = self.votes.get((round, type))
        if found is None:
            found = self.votes[(round, type)] = _VoteSet()
        return found

    def power_for(self, round: int, type: VoteType, block_hash: bytes | None) -> int:
        found = self.votes.get((round, type))
        return 0 if found is None else found.power.get(block_hash, 0)

    def total(self, round: int, type: VoteType) -> int:
        found = self.votes.get((round, type))
        return 0 if found is None else found.total

    def claim(self, validator: bytes, round: int) -> bool:
        if round > self.claims.get(validator, -1):
            self.claims[validator] = round
            return True
        return False


class Tendermint:
    """The consensus state machine of one node at one height at a time.

    ``key`` None (or a key that is not a validator's) makes an observer: it follows the
    rounds and decides but never signs. ``height`` is the next height to decide, with
    ``prev_header`` and ``last_commit`` the block before it and its commit (None at height 1).
    ``sign_state`` is the last persisted :class:`SignState`, or None for a fresh validator.
    ``now`` is Unix time in seconds; block times are ``int(now * 1000)``.
    """

    def __init__(
        self,
        chain_id: str,
        validators: ValidatorSet,
        params: ConsensusParams,
        key: SigningKey | None,
        app: Application,
        height: int,
        prev_header: Header | None,
        last_commit: Commit | None,
        sign_state: SignState | None,
        *,
        gossip_interval: float | None = None,
        max_future_ms: int = MAX_FUTURE_MS,
    ) -> None:
        expected_prev = 0 if prev_header is None else prev_header.height
        if height != expected_prev + 1 or (last_commit is None) != (prev_header is None):
            raise ValueError("height, prev_header and last_commit do not fit together")
        if last_commit is not None and prev_header is not None:
            verify_commit(last_commit, validators, chain_id, prev_header.hash)
        self.chain_id = chain_id
        self.validators = validators
        self.params = params
        self.app = app
        self._key = key
        node_id = None if key is None else bytes(key.verify_key)
        self.node_id: bytes | None = node_id if node_id in validators else None
        self.sign_state = sign_state or SignState()
        self.gossip_interval = gossip_interval or params.timeout_prevote
        self.max_future_ms = max_future_ms
        self.pending: OrderedDict[bytes, bytes] = OrderedDict()
        self.refused = 0  # signatures the sign state refused; a restart may cause a few
        self._decision: Decide | None = None
        self._locked_block: Block | None = None
        self._valid_block: Block | None = None
        self._waiting_idle = False
        self._idle_check_at = 0.0
        self._enter_height(height, prev_header, last_commit, _HeightLog(height), 0.0)

    # ---- public state ----

    @property
    def is_validator(self) -> bool:
        return self.node_id is not None

    @property
    def round(self) -> int:
        """The round in progress at the current height."""
        return self._round

    @property
    def decision(self) -> Decide | None:
        """The decision of the current height, once made (until ``next_height``)."""
        return self._decision

    # ---- events ----

    def start(self, now: float) -> list[Action]:
        """Begin the current height. A restart resumes at the round last signed."""
        self._height_started = now
        first = 0
        if self.sign_state.height == self.height:
            first = self.sign_state.round
            self._restore_lock(self.sign_state.lock)
        out: list[Action] = [self._gossip_timer(now)]
        self._start_round(first, now, out)
        self._progress(now, out)
        return out

    def next_height(self, now: float) -> list[Action]:
        """Move on after the driver stored and applied the decided block."""
        if self._decision is None:
            raise ConsensusError(f"next_height called before height {self.height} was decided")
        block, commit = self._decision.block, self._decision.commit
        for record in block.records:
            self.pending.pop(wire.sha256(record), None)
        for digest, record in list(self.pending.items()):
            if self.app.check_record(record) is not None:
                del self.pending[digest]
        buffered = self._next
        self._enter_height(self.height + 1, block.header, commit, buffered, now)
        out: list[Action] = [self._gossip_timer(now)]
        self._start_round(0, now, out)
        self._progress(now, out)
        return out

    def add_pending(self, records: Iterable[bytes], now: float) -> list[Action]:
        """Offer records for inclusion; invalid ones against the current state are dropped."""
        before = len(self.pending)
        for record in records:
            digest = wire.sha256(record)
            if digest in self.pending or len(self.pending) >= MAX_PENDING:
                continue
            if self.app.check_record(record) is None:
                self.pending[digest] = record
        out: list[Action] = []
        if self._waiting_idle and len(self.pending) > before:
            if self._has_work(now):
                self._waiting_idle = False
                self._enter_propose(now, out)
                self._progress(now, out)
            elif self._idle_check_at > now + IDLE_RECHECK:
                self._schedule_idle_check(now, out)  # look again soon, not at the deadline
        return out

    def on_proposal(self, proposal: Proposal, now: float) -> list[Action]:
        """Raises ConsensusError if the proposal is not signed by the round's proposer."""
        log_ = self._log_for(proposal.height, proposal.round)
        if log_ is None:
            return []
        stored = log_.proposals.setdefault(proposal.round, [])
        if any(
            p.block.hash == proposal.block.hash and p.pol_round == proposal.pol_round
            for p in stored
        ):
            return []
        proposal.verify(self.validators, self.chain_id)
        out: list[Action] = []
        if stored:
            self._report(
                log_,
                proposal.proposer,
                proposal.round,
                "proposal",
                f"two proposals at height {proposal.height} round {proposal.round}",
                out,
            )
        if len(stored) < MAX_PROPOSALS_PER_ROUND:
            stored.append(proposal)
            log_.blocks.setdefault(proposal.block.hash, proposal.block)
        if log_.claim(proposal.proposer, proposal.round):
            self._claims_changed = True
        self._progress(now, out)
        return out

    def on_vote(self, vote: Vote, now: float) -> list[Action]:
        """Raises ConsensusError if the vote is not validly signed by a validator."""
        out: list[Action] = []
        ahead = vote.height == self.height and vote.round > self._round + ROUND_WINDOW
        if ahead and self._decision is None:
            # Too far ahead to keep, but it still says where the validator is.
            vote.verify(self.validators, self.chain_id)
            if self._log.claim(vote.validator, vote.round):
                self._claims_changed = True
                self._progress(now, out)
            return out
        log_ = self._log_for(vote.height, vote.round)
        if log_ is None:
            return out
        voteset = log_.voteset(vote.round, vote.type)
        earlier = voteset.by_validator.get(vote.validator, {})
        if vote.block_hash in earlier:
            return out
        vote.verify(self.validators, self.chain_id)
        if earlier:
            first = next(iter(earlier))
            self._report(
                log_,
                vote.validator,
                vote.round,
                str(vote.type),
                f"two {vote.type}s at height {vote.height} round {vote.round}: "
                f"{_short(first)} and {_short(vote.block_hash)}",
                out,
            )
            relevant = vote.block_hash is None or vote.block_hash in log_.blocks
            if not relevant or len(earlier) >= MAX_VALUES_PER_VALIDATOR:
                return out
        voteset.add(vote, self.validators.power_of(vote.validator))
        if log_.claim(vote.validator, vote.round):
            self._claims_changed = True
        self._progress(now, out)
        return out

    def on_timeout(self, timeout: ScheduleTimeout, now: float) -> list[Action]:
        out: list[Action] = []
        if timeout.height != self.height:
            return out
        if timeout.step == TimeoutKind.GOSSIP:
            if self._decision is None:
                self._regossip_if_stalled(out)
                out.append(self._gossip_timer(now))
            return out
        if self._decision is not None or timeout.round != self._round:
            return out
        if timeout.step == TimeoutKind.IDLE and self._waiting_idle:
            if now < self._idle_check_at:
                return out  # an earlier check's timer
            if now < self._idle_deadline() and not self._has_work(now):
                self._schedule_idle_check(now, out)
                return out
            self._waiting_idle = False
            self._enter_propose(now, out)
        elif timeout.step == TimeoutKind.PROPOSE and self._step is Step.PROPOSE:
            self._prevote(None, out)
        elif timeout.step == TimeoutKind.PREVOTE and self._step is Step.PREVOTE:
            self._precommit(None, out)
        elif timeout.step == TimeoutKind.PRECOMMIT:
            self._start_round(self._round + 1, now, out)
        self._progress(now, out)
        return out

    def on_committed_block(self, block: Block, commit: Commit, now: float) -> list[Action]:
        """Decide the current height from a block and its commit (catch-up from sync).

        Raises ConsensusError unless the commit has more than 2/3 of the power for this block
        and the block is valid on top of the current state.
        """
        if self._decision is not None:
            return []
        if block.height != self.height or commit.height != self.height:
            raise ConsensusError(f"committed block {block.height} offered at height {self.height}")
        verify_commit(commit, self.validators, self.chain_id, block.hash)
        reason = self._validity(block)
        if reason is not None:
            raise ConsensusError(reason)
        self._decision = Decide(block, commit)
        return [self._decision]

    # ---- height and round ----

    def _enter_height(
        self,
        height: int,
        prev_header: Header | None,
        last_commit: Commit | None,
        log_: _HeightLog,
        now: float,
    ) -> None:
        self.height = height
        self.prev_header = prev_header
        self.last_commit = last_commit
        self._log = log_
        self._next = _HeightLog(height + 1)
        self._decision = None
        self._round = 0
        self._step = Step.PROPOSE
        self._locked_round = -1
        self._locked_block = None
        self._valid_round = -1
        self._valid_block = None
        self._waiting_idle = False
        self._claims_changed = bool(log_.claims)
        self._height_started = now
        self._reset_round_flags()
        self._own: list[Proposal | Vote] = []
        self._stall_mark: tuple[int, int, Step] | None = None

    def _restore_lock(self, lock: Lock | None) -> None:
        """Take back a persisted lock: it is also the valid value, and its proof is replayed."""
        if lock is None or lock.block.height != self.height:
            return
        self._locked_round, self._locked_block = lock.round, lock.block
        self._valid_round, self._valid_block = lock.round, lock.block
        self._log.blocks.setdefault(lock.block.hash, lock.block)
        voteset = self._log.voteset(lock.round, VoteType.PREVOTE)
        for prevote in lock.prevotes():
            try:
                prevote.verify(self.validators, self.chain_id)
            except ConsensusError:
                continue
            if not voteset.by_validator.get(prevote.validator):
                voteset.add(prevote, self.validators.power_of(prevote.validator))

    def _reset_round_flags(self) -> None:
        self._prevote_timer_set = False
        self._precommit_timer_set = False
        self._locked_this_round = False

    def _start_round(self, round: int, now: float, out: list[Action]) -> None:
        self._round = round
        self._step = Step.PROPOSE
        self._reset_round_flags()
        if round == 0 and now < self._idle_deadline() and not self._has_work(now):
            self._waiting_idle = True
            self._schedule_idle_check(now, out)
            return
        self._waiting_idle = False
        self._enter_propose(now, out)

    def _has_work(self, now: float) -> bool:
        """Whether a block made now would carry a record. Pending records that are valid but
        not yet at this time (a claim on a job that is not stalled yet) do not count: they
        would only make empty blocks back to back until their time comes."""
        if not self.pending:
            return False
        chosen = self.app.select_records(
            list(self.pending.values()), 1, block_time_ms=self._block_time(now)
        )
        return bool(chosen)

    def _schedule_idle_check(self, now: float, out: list[Action]) -> None:
        """Wait for the idle deadline; with records pending, look again every second."""
        at = self._idle_deadline()
        if self.pending:
            at = min(at, now + IDLE_RECHECK)
        self._idle_check_at = at
        out.append(ScheduleTimeout(self.height, 0, TimeoutKind.IDLE, at))

    def _block_time(self, now: float) -> int:
        time = int(now * 1000)
        if self.prev_header is not None:
            time = max(time, self.prev_header.time + 1)
        return time

    def _idle_deadline(self) -> float:
        if self.prev_header is None:
            return self._height_started + self.params.idle_block_interval
        return self.prev_header.time / 1000 + self.params.idle_block_interval

    def _enter_propose(self, now: float, out: list[Action]) -> None:
        r = self._round
        at = now + self.params.timeout_propose + r * self.params.timeout_delta
        out.append(ScheduleTimeout(self.height, r, TimeoutKind.PROPOSE, at))
        if self.node_id is None or self.validators.proposer(self.height, r) != self.node_id:
            return
        if self._valid_block is not None:
            block, pol_round = self._valid_block, self._valid_round
        else:
            block, pol_round = self._new_block(now), -1
        # Checked before the proposal is signed: a restart must not propose a second block.
        if not self._may_sign(SignStep.PROPOSE, block.hash, out):
            return
        proposal = Proposal.create(self._signer(), self.chain_id, r, pol_round, block)
        self._own.append(proposal)
        out.append(Broadcast(proposal))
        if pol_round >= 0:
            # The proof of lock goes with the proposal: others need it to accept the block.
            proof = self._log.voteset(pol_round, VoteType.PREVOTE).for_value(block.hash)
            out.extend(Broadcast(v) for v in proof)
        self._log.proposals.setdefault(r, []).append(proposal)
        self._log.blocks.setdefault(block.hash, block)

    def _new_block(self, now: float) -> Block:
        time = self._block_time(now)
        records = self.app.select_records(
            list(self.pending.values()), self.params.max_block_records, block_time_ms=time
        )
        block = Block.create(
            self._signer(),
            chain_id=self.chain_id,
            height=self.height,
            round=self._round,
            time=time,
            prev_hash=NO_HASH if self.prev_header is None else self.prev_header.hash,
            state_root=self.app.state_root(),
            records=records,
            last_commit=self.last_commit,
        )
        return block

    # ---- the rules of Algorithm 1 ----

    def _progress(self, now: float, out: list[Action]) -> None:
        """Apply every rule whose condition holds, until none does."""
        while self._decision is None:
            if self._try_decide(out):
                return
            if self._try_skip_round(now, out):
                continue
            if not self._try_round_rules(now, out):
                return

    def _try_decide(self, out: list[Action]) -> bool:
        # Lines 49-54: a quorum of precommits for a known, valid block in any round.
        for (round, type), voteset in self._log.votes.items():
            if type is not VoteType.PRECOMMIT or not self.validators.has_quorum(voteset.total):
                continue
            for block_hash, power in voteset.power.items():
                if block_hash is None or not self.validators.has_quorum(power):
                    continue
                block = self._log.blocks.get(block_hash)
                if block is None or self._validity(block) is not None:
                    continue
                signatures = tuple(
                    sorted((v.validator, v.signature) for v in voteset.for_value(block_hash))
                )
                commit = Commit(self.height, round, block_hash, signatures)
                self._decision = Decide(block, commit)
                out.append(self._decision)
                return True
        return False

    def _try_skip_round(self, now: float, out: list[Action]) -> bool:
        # Lines 55-56, relaxed to "this round or later": skipping rounds is always safe.
        if not self._claims_changed:
            return False
        self._claims_changed = False
        power = 0
        for round, validator in sorted(((r, v) for v, r in self._log.claims.items()), reverse=True):
            if round <= self._round:
                break
            power += self.validators.power_of(validator)
            if self.validators.has_one_third(power):
                self._start_round(round, now, out)
                return True
        return False

    def _try_round_rules(self, now: float, out: list[Action]) -> bool:
        r, log_ = self._round, self._log
        if self._step is Step.PROPOSE:
            for proposal in log_.proposals.get(r, [])[:1]:
                if self._on_round_proposal(proposal, now, out):
                    return True
        if (
            self._step is Step.PREVOTE
            and not self._prevote_timer_set
            and self.validators.has_quorum(log_.total(r, VoteType.PREVOTE))
        ):
            # Lines 34-35.
            self._prevote_timer_set = True
            at = now + self.params.timeout_prevote + r * self.params.timeout_delta
            out.append(ScheduleTimeout(self.height, r, TimeoutKind.PREVOTE, at))
            return True
        if self._step is not Step.PROPOSE and not self._locked_this_round:
            # Lines 36-43: a quorum of prevotes for a valid block locks it.
            for block_hash, power in log_.voteset(r, VoteType.PREVOTE).power.items():
                if block_hash is None or not self.validators.has_quorum(power):
                    continue
                block = log_.blocks.get(block_hash)
                if block is None or self._validity(block) is not None:
                    continue
                self._locked_this_round = True
                if self._step is Step.PREVOTE:
                    self._locked_round, self._locked_block = r, block
                    self._precommit(block_hash, out)
                self._valid_round, self._valid_block = r, block
                return True
        if self._step is Step.PREVOTE and self.validators.has_quorum(
            log_.power_for(r, VoteType.PREVOTE, None)
        ):
            # Lines 44-46.
            self._precommit(None, out)
            return True
        if not self._precommit_timer_set and self.validators.has_quorum(
            log_.total(r, VoteType.PRECOMMIT)
        ):
            # Lines 47-48.
            self._precommit_timer_set = True
            at = now + self.params.timeout_precommit + r * self.params.timeout_delta
            out.append(ScheduleTimeout(self.height, r, TimeoutKind.PRECOMMIT, at))
            return True
        return False

    def _on_round_proposal(self, proposal: Proposal, now: float, out: list[Action]) -> bool:
        """Lines 22-33: prevote for the round's proposal, or nil."""
        block, vr = proposal.block, proposal.pol_round
        if vr >= 0 and not self.validators.has_quorum(
            self._log.power_for(vr, VoteType.PREVOTE, block.hash)
        ):
            return False  # wait for the proof of lock
        locked = self._locked_block
        acceptable = locked is None or locked.hash == block.hash
        if vr >= 0:
            acceptable = acceptable or self._locked_round <= vr
        timely = block.header.time <= int(now * 1000) + self.max_future_ms
        if acceptable and timely and self._validity(block) is None:
            self._prevote(block.hash, out)
        else:
            self._prevote(None, out)
        return True

    def _validity(self, block: Block) -> str | None:
        """valid(v) of the paper, minus timeliness; cached per block hash at this height."""
        if block.hash in self._log.validity:
            return self._log.validity[block.hash]
        reason: str | None = None
        try:
            verify_block(
                block,
                self.prev_header,
                self.validators,
                self.chain_id,
                state_root=self.app.state_root(),
                max_records=self.params.max_block_records,
            )
            reason = self.app.validate_block_records(block.records, block.header.time)
        except ConsensusError as exc:
            reason = exc.reason
        if reason is not None:
            log.info("height %d: rejecting block %s: %s", self.height, _short(block.hash), reason)
        self._log.validity[block.hash] = reason
        return reason

    # ---- signing ----

    def _may_sign(self, step: SignStep, block_hash: bytes | None, out: list[Action]) -> bool:
        """Consult and advance the sign state; emits PersistSignState when allowed."""
        reason = self.sign_state.refusal(self.height, self._round, step, block_hash)
        if reason is not None:
            self.refused += 1
            log.warning("not signing: %s", reason)
            return False
        state = self.sign_state.signed(self.height, self._round, step, block_hash)
        locked = self._locked_block
        if step is SignStep.PRECOMMIT and locked is not None and locked.hash == block_hash:
            r = self._locked_round
            proof = self._log.voteset(r, VoteType.PREVOTE).for_value(locked.hash)
            lock = Lock(r, locked, tuple(sorted((v.validator, v.signature) for v in proof)))
            state = state.locked(lock)
        self.sign_state = state
        out.append(PersistSignState(state))
        return True

    def _prevote(self, block_hash: bytes | None, out: list[Action]) -> None:
        self._step = Step.PREVOTE
        self._waiting_idle = False
        self._vote(VoteType.PREVOTE, SignStep.PREVOTE, block_hash, out)

    def _precommit(self, block_hash: bytes | None, out: list[Action]) -> None:
        self._step = Step.PRECOMMIT
        self._vote(VoteType.PRECOMMIT, SignStep.PRECOMMIT, block_hash, out)

    def _vote(
        self, type: VoteType, step: SignStep, block_hash: bytes | None, out: list[Action]
    ) -> None:
        if self.node_id is None or not self._may_sign(step, block_hash, out):
            return
        vote = Vote.create(
            self._signer(), self.chain_id, type, self.height, self._round, block_hash
        )
        self._own.append(vote)
        out.append(Broadcast(vote))
        voteset = self._log.voteset(self._round, type)
        if block_hash not in voteset.by_validator.get(vote.validator, {}):
            voteset.add(vote, self.validators.power_of(vote.validator))

    def _signer(self) -> SigningKey:
        if self._key is None or self.node_id is None:
            raise RuntimeError("an observer has no key to sign with")
        return self._key

    # ---- bookkeeping ----

    def _log_for(self, height: int, round: int) -> _HeightLog | None:
        """The log that keeps a message of (height, round), or None to ignore it."""
        if height == self.height and self._decision is None:
            return self._log if round <= self._round + ROUND_WINDOW else None
        if height == self.height + 1:
            return self._next if round <= ROUND_WINDOW else None
        return None

    def _report(
        self,
        log_: _HeightLog,
        validator: bytes,
        round: int,
        kind: str,
        reason: str,
        out: list[Action],
    ) -> None:
        key = (validator, round, kind)
        if key not in log_.reported:
            log_.reported.add(key)
            log.warning("evidence against %s: %s", _short(validator), reason)
            out.append(Evidence(reason, validator))

    def _gossip_timer(self, now: float) -> ScheduleTimeout:
        return ScheduleTimeout(self.height, 0, TimeoutKind.GOSSIP, now + self.gossip_interval)

    def _regossip_if_stalled(self, out: list[Action]) -> None:
        mark = (self.height, self._round, self._step)
        stalled, self._stall_mark = mark == self._stall_mark, mark
        if not stalled:
            return
        r = self._round
        for message in self._own:
            if message.round >= r - 1:
                out.append(Broadcast(message))
        own_ids = {id(m) for m in self._own}
        for (round, _), voteset in self._log.votes.items():
            if r - 1 <= round <= r:
                out.extend(Broadcast(v) for v in voteset.all() if id(v) not in own_ids)
        for proposal in self._log.proposals.get(r, [])[:1]:
            if proposal.pol_round >= 0:
                prevotes = self._log.votes.get((proposal.pol_round, VoteType.PREVOTE))
                if prevotes is not None:
                    out.extend(Broadcast(v) for v in prevotes.for_value(proposal.block.hash))


def _short(value: bytes | None) -> str:
    return "nil" if value is None else value.hex()[:8]
