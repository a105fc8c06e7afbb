"""The Tendermint core driven by hand: events in, actions out, no clock or network."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence
from typing import Any

import pytest
from nacl.signing import SigningKey

from modelmine.consensus.application import KVApp, kv_record
from modelmine.consensus.signstate import Lock, SignState, SignStep
from modelmine.consensus.tendermint import (
    ROUND_WINDOW,
    Action,
    Broadcast,
    Decide,
    Evidence,
    PersistSignState,
    ScheduleTimeout,
    Tendermint,
    TimeoutKind,
)
from modelmine.consensus.types import (
    NO_HASH,
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

CHAIN = "test-chain"
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
IDS = [bytes(k.verify_key) for k in KEYS]
VALIDATORS = ValidatorSet(Validator(node_id, 10, f"v{i}") for i, node_id in enumerate(IDS))
PARAMS = ConsensusParams(
    timeout_propose=1.0,
    timeout_prevote=0.5,
    timeout_precommit=0.5,
    timeout_delta=0.25,
    idle_block_interval=10.0,
    max_block_records=5,
)
PREVOTE, PRECOMMIT = VoteType.PREVOTE, VoteType.PRECOMMIT


def record(n: int, nonce: int = 1) -> bytes:
    return kv_record(SigningKey(bytes([100 + n]) * 32), CHAIN, f"k{n}", f"v{n}", nonce)


def proposer(height: int, round: int = 0) -> int:
    return IDS.index(VALIDATORS.proposer(height, round))


def bystander(height: int, *rounds: int) -> int:
    """A validator that proposes in none of ``rounds`` at ``height``."""
    busy = {proposer(height, r) for r in rounds or (0,)}
    return next(i for i in range(4) if i not in busy)


def make_core(
    index: int | None,
    *,
    app: KVApp | None = None,
    height: int = 1,
    prev: Block | None = None,
    last_commit: Commit | None = None,
    sign_state: SignState | None = None,
) -> Tendermint:
    return Tendermint(
        CHAIN,
        VALIDATORS,
        PARAMS,
        None if index is None else KEYS[index],
        app or KVApp(CHAIN),
        height,
        None if prev is None else prev.header,
        last_commit,
        sign_state,
    )


def make_block(
    height: int = 1,
    round: int = 0,
    *,
    key: SigningKey | None = None,
    records: Sequence[bytes] = (),
    time: int = 1_000,
    prev: Block | None = None,
    last_commit: Commit | None = None,
    state_root: bytes | None = None,
    chain_id: str = CHAIN,
) -> Block:
    return Block.create(
        key or KEYS[proposer(height, round)],
        chain_id=chain_id,
        height=height,
        round=round,
        time=time,
        prev_hash=NO_HASH if prev is None else prev.hash,
        state_root=state_root if state_root is not None else KVApp(CHAIN).state_root(),
        records=records,
        last_commit=last_commit,
    )


def propose(block: Block, round: int = 0, pol_round: int = -1) -> Proposal:
    return Proposal.create(KEYS[proposer(block.height, round)], CHAIN, round, pol_round, block)


def vote(i: int, type: VoteType, block_hash: bytes | None, height: int = 1, round: int = 0) -> Vote:
    return Vote.create(KEYS[i], CHAIN, type, height, round, block_hash)


def commit_for(block: Block, signers: Sequence[int], round: int = 0) -> Commit:
    votes = [vote(i, PRECOMMIT, block.hash, block.height, round) for i in signers]
    return Commit(
        block.height, round, block.hash, tuple(sorted((v.validator, v.signature) for v in votes))
    )


def sent(actions: list[Action]) -> list[Proposal | Vote]:
    return [a.message for a in actions if isinstance(a, Broadcast)]


def own_votes(actions: list[Action], type: VoteType) -> list[Vote]:
    return [m for m in sent(actions) if isinstance(m, Vote) and m.type is type]


def timeouts(actions: list[Action], kind: TimeoutKind) -> list[ScheduleTimeout]:
    return [a for a in actions if isinstance(a, ScheduleTimeout) and a.step == kind]


class Cluster:
    """Four validators (plus observers) wired by a lossless, instant network."""

    def __init__(self, observers: int = 0) -> None:
        indexes: list[int | None] = [0, 1, 2, 3, *([None] * observers)]
        self.apps = [KVApp(CHAIN) for _ in indexes]
        self.cores = [make_core(i, app=app) for i, app in zip(indexes, self.apps)]
        self.now = 0.0
        self.queue: deque[tuple[int, Proposal | Vote]] = deque()
        self.timers: list[tuple[float, int, ScheduleTimeout]] = []
        self.decided: list[list[Decide]] = [[] for _ in indexes]
        self.actions: list[list[Action]] = [[] for _ in indexes]

    def handle(self, i: int, actions: list[Action]) -> None:
        self.actions[i].extend(actions)
        for action in actions:
            if isinstance(action, Broadcast):
                self.queue.append((i, action.message))
            elif isinstance(action, ScheduleTimeout):
                self.timers.append((action.at, i, action))
            elif isinstance(action, Decide):
                self.apps[i].apply_block(action.block, action.commit)
                self.decided[i].append(action)
                self.handle(i, self.cores[i].next_height(self.now))

    def start(self) -> None:
        for i, core in enumerate(self.cores):
            self.handle(i, core.start(self.now))
        self.flush()

    def add_pending(self, records: list[bytes]) -> None:
        for i, core in enumerate(self.cores):
            self.handle(i, core.add_pending(records, self.now))
        self.flush()

    def flush(self) -> None:
        while self.queue:
            src, message = self.queue.popleft()
            for j, core in enumerate(self.cores):
                if j != src:
                    if isinstance(message, Vote):
                        self.handle(j, core.on_vote(message, self.now))
                    else:
                        self.handle(j, core.on_proposal(message, self.now))

    def advance(self, until: float) -> None:
        while True:
            due = sorted((t for t in self.timers if t[0] <= until), key=lambda t: t[:2])
            if not due:
                break
            self.timers.remove(due[0])
            at, i, timeout = due[0]
            self.now = at
            self.handle(i, self.cores[i].on_timeout(timeout, at))
            self.flush()
        self.now = until


# ---- progress ----


def test_validators_and_an_observer_commit_the_same_blocks() -> None:
    cluster = Cluster(observers=1)
    cluster.start()
    cluster.add_pending([record(1), record(2)])
    first = [d[0] for d in cluster.decided]
    assert {d.block.hash for d in first} == {first[0].block.hash}
    assert first[0].block.records == (record(1), record(2))
    verify_commit(first[0].commit, VALIDATORS, CHAIN, first[0].block.hash)
    # Nothing pending: the next block waits for the idle interval, then comes empty.
    cluster.advance(9.9)
    assert all(len(d) == 1 for d in cluster.decided)
    cluster.advance(10.1)
    second = [d[1] for d in cluster.decided]
    assert {d.block.hash for d in second} == {second[0].block.hash}
    assert second[0].block.records == ()
    assert second[0].block.header.prev_hash == first[0].block.hash
    assert second[0].block.last_commit is not None
    verify_commit(second[0].block.last_commit, VALIDATORS, CHAIN, first[0].block.hash)
    observer = cluster.actions[4]
    assert not [a for a in observer if isinstance(a, Broadcast | PersistSignState)]


def test_a_proposer_waits_for_records_then_proposes_promptly() -> None:
    core = make_core(proposer(1))
    actions = core.start(0.0)
    assert not sent(actions)
    assert [t.at for t in timeouts(actions, TimeoutKind.IDLE)] == [10.0]
    actions = core.add_pending([record(1)], 2.0)
    (proposal,) = [m for m in sent(actions) if isinstance(m, Proposal)]
    assert proposal.block.records == (record(1),)
    assert proposal.block.header.time == 2_000


def test_with_nothing_pending_an_empty_block_comes_after_the_idle_interval() -> None:
    core = make_core(proposer(1))
    (idle,) = timeouts(core.start(0.0), TimeoutKind.IDLE)
    (proposal,) = [m for m in sent(core.on_timeout(idle, idle.at)) if isinstance(m, Proposal)]
    assert proposal.block.records == ()


class _NotBefore(KVApp):
    """An application whose records are valid but may only go into blocks from 5 s on (as a
    claim on a job that has not stalled yet)."""

    def select_records(
        self, pending: Sequence[bytes], max_records: int, *, block_time_ms: int | None = None
    ) -> list[bytes]:
        if block_time_ms is not None and block_time_ms < 5_000:
            return []
        return super().select_records(pending, max_records, block_time_ms=block_time_ms)


def test_records_not_valid_yet_make_no_empty_blocks_and_go_in_when_their_time_comes() -> None:
    core = make_core(proposer(1), app=_NotBefore(CHAIN))
    core.start(0.0)
    actions = core.add_pending([record(1)], 1.0)
    assert not [m for m in sent(actions) if isinstance(m, Proposal)]  # no empty block now
    proposals: list[Proposal] = []
    t = 1.0
    while not proposals and t < 9.0:
        (check,) = timeouts(actions, TimeoutKind.IDLE)
        assert check.at - t <= 1.0  # looked at again every second, not at the idle deadline
        t = check.at
        actions = core.on_timeout(check, t)
        proposals = [m for m in sent(actions) if isinstance(m, Proposal)]
    assert 5.0 <= t < 6.5
    (proposal,) = proposals
    assert proposal.block.records == (record(1),)


def test_invalid_records_are_never_proposed() -> None:
    core = make_core(proposer(1))
    core.start(0.0)
    good = record(1)
    bad_signature = good[:-1] + bytes([good[-1] ^ 1])
    actions = core.add_pending([bad_signature, record(2, nonce=2), good], 1.0)
    (proposal,) = [m for m in sent(actions) if isinstance(m, Proposal)]
    assert proposal.block.records == (good,)


def test_timeouts_grow_with_the_round() -> None:
    core = make_core(bystander(1, 0, 7))
    core.add_pending([record(1)], 0.0)
    (first,) = timeouts(core.start(0.0), TimeoutKind.PROPOSE)
    assert (first.round, first.at) == (0, 1.0)
    # Two validators (more than 1/3 of the power) already in round 7: skip there.
    others = [i for i in range(4) if i != bystander(1, 0, 7)]
    core.on_vote(vote(others[0], PREVOTE, None, round=7), 3.0)
    (later,) = timeouts(
        core.on_vote(vote(others[1], PREVOTE, None, round=7), 3.0), TimeoutKind.PROPOSE
    )
    assert (later.round, later.at) == (7, 3.0 + 1.0 + 7 * 0.25)


# ---- judging proposals ----


@pytest.fixture
def height_two() -> tuple[Block, Commit, KVApp]:
    """Block 1 committed and applied; the app is at height 1."""
    b1 = make_block(records=[record(1)])
    c1 = commit_for(b1, [0, 1, 2])
    app = KVApp(CHAIN)
    app.apply_block(b1, c1)
    return b1, c1, app


def prevote_on(core: Tendermint, proposal: Proposal, now: float = 5.0) -> bytes | None:
    core.start(now)
    (prevote,) = own_votes(core.on_proposal(proposal, now), PREVOTE)
    return prevote.block_hash


BAD_BLOCKS: dict[str, dict[str, Any]] = {
    "an invalid record": {"records": [record(9)[:-1] + b"\x00"]},
    "a replayed record": {"records": [record(1)]},
    "a wrong state root": {"state_root": bytes(32)},
    "a wrong prev hash": {"prev": make_block(records=[record(5)])},
    "a time not after the previous block": {"time": 1_000},
    "a time too far in the future": {"time": 5_000 + 10_001},
    "the wrong proposer": {"key": KEYS[proposer(2) - 1]},
    "a wrong chain id": {"chain_id": "other-chain"},
}


@pytest.mark.parametrize("defect", BAD_BLOCKS)
def test_honest_validators_prevote_nil_on_a_bad_block(
    defect: str, height_two: tuple[Block, Commit, KVApp]
) -> None:
    b1, c1, app = height_two
    fields: dict[str, Any] = {"prev": b1, "last_commit": c1, "time": 2_000}
    fields |= {"state_root": app.state_root()} | BAD_BLOCKS[defect]
    block = make_block(2, **fields)
    core = make_core(bystander(2), app=app, height=2, prev=b1, last_commit=c1)
    assert prevote_on(core, propose(block)) is None


def test_a_good_block_gets_the_prevote(height_two: tuple[Block, Commit, KVApp]) -> None:
    b1, c1, app = height_two
    block = make_block(
        2, prev=b1, last_commit=c1, time=2_000, state_root=app.state_root(), records=[record(2)]
    )
    core = make_core(bystander(2), app=app, height=2, prev=b1, last_commit=c1)
    assert prevote_on(core, propose(block)) == block.hash


def test_a_bad_block_signature_or_short_last_commit_gets_nil(
    height_two: tuple[Block, Commit, KVApp],
) -> None:
    b1, c1, app = height_two
    good = make_block(2, prev=b1, last_commit=c1, time=2_000, state_root=app.state_root())
    unsigned = dataclasses.replace(good, signature=bytes(64))
    core = make_core(bystander(2), app=app, height=2, prev=b1, last_commit=c1)
    assert prevote_on(core, propose(unsigned)) is None
    short = make_block(
        2, prev=b1, last_commit=commit_for(b1, [0, 1]), time=2_000, state_root=app.state_root()
    )
    core = make_core(bystander(2), app=app, height=2, prev=b1, last_commit=c1)
    assert prevote_on(core, propose(short)) is None


def test_a_proposal_not_from_the_proposer_or_badly_signed_is_refused() -> None:
    block = make_block(records=[record(1)])
    core = make_core(bystander(1))
    core.start(0.0)
    impostor = Proposal.create(KEYS[bystander(1)], CHAIN, 0, -1, block)
    with pytest.raises(ConsensusError, match="but the proposer is"):
        core.on_proposal(impostor, 0.0)
    with pytest.raises(ConsensusError, match="bad signature on the proposal"):
        core.on_proposal(dataclasses.replace(propose(block), signature=bytes(64)), 0.0)
    wrong_height = dataclasses.replace(propose(block), height=1, block=make_block(2, time=5))
    with pytest.raises(ConsensusError, match="carries block 2"):
        core.on_proposal(wrong_height, 0.0)
    assert not own_votes(core.on_timeout(ScheduleTimeout(1, 0, TimeoutKind.IDLE, 10), 10), PREVOTE)


# ---- locking ----


def test_a_locked_validator_prevotes_nil_until_a_later_proof_of_lock() -> None:
    me = bystander(1, 0, 1, 2)
    others = [i for i in range(4) if i != me]
    core = make_core(me)
    core.start(0.0)
    b = make_block(records=[record(1)])
    assert own_votes(core.on_proposal(propose(b), 0.1), PREVOTE)[0].block_hash == b.hash
    core.on_vote(vote(others[0], PREVOTE, b.hash), 0.2)
    actions = core.on_vote(vote(others[1], PREVOTE, b.hash), 0.2)
    (precommit,) = own_votes(actions, PRECOMMIT)
    assert precommit.block_hash == b.hash
    persisted = [a.state for a in actions if isinstance(a, PersistSignState)]
    lock = persisted[-1].lock
    assert lock is not None and (lock.round, lock.block) == (0, b)
    assert {v.validator for v in lock.prevotes()} == {IDS[me], IDS[others[0]], IDS[others[1]]}
    # Round 0 fails to commit; round 1 proposes another block without a proof of lock.
    core.on_vote(vote(others[0], PRECOMMIT, None), 0.3)
    (timer,) = timeouts(core.on_vote(vote(others[1], PRECOMMIT, None), 0.3), TimeoutKind.PRECOMMIT)
    core.on_timeout(timer, timer.at)
    c = make_block(1, 1, records=[record(2)], time=2_000)
    (prevote,) = own_votes(core.on_proposal(propose(c, 1), 2.0), PREVOTE)
    assert prevote.block_hash is None
    # The others move on to round 2, where c comes back with a proof of lock from round 1
    # (a quorum of prevotes for it), which releases the lock from round 0.
    core.on_vote(vote(others[0], PREVOTE, None, round=2), 2.5)
    core.on_vote(vote(others[1], PREVOTE, None, round=2), 2.5)
    assert not sent(core.on_proposal(propose(c, 2, pol_round=1), 2.6))  # no proof yet
    core.on_vote(vote(others[0], PREVOTE, c.hash, round=1), 2.7)
    core.on_vote(vote(others[1], PREVOTE, c.hash, round=1), 2.7)
    (prevote,) = own_votes(core.on_vote(vote(others[2], PREVOTE, c.hash, round=1), 2.7), PREVOTE)
    assert (prevote.round, prevote.block_hash) == (2, c.hash)


# ---- the sign state ----


def test_the_sign_state_is_persisted_before_each_signature_is_sent() -> None:
    cluster = Cluster()
    cluster.start()
    cluster.add_pending([record(1)])
    for actions in cluster.actions:
        persisted: SignState | None = None
        for action in actions:
            if isinstance(action, PersistSignState):
                persisted = action.state
            elif isinstance(action, Broadcast) and isinstance(action.message, Vote):
                message = action.message
                assert persisted is not None
                assert (persisted.height, persisted.round, persisted.block_hash) == (
                    message.height,
                    message.round,
                    message.block_hash,
                )


def test_a_restarted_validator_never_signs_a_conflicting_prevote() -> None:
    me = bystander(1)
    a = make_block(records=[record(1)])
    b = make_block(records=[record(2)])
    first = make_core(me)
    first.start(0.0)
    (original,) = own_votes(first.on_proposal(propose(a), 0.1), PREVOTE)
    saved = first.sign_state
    assert (saved.height, saved.round, saved.step, saved.block_hash) == (
        1,
        0,
        SignStep.PREVOTE,
        a.hash,
    )
    # Restarted from what was persisted, it is shown the conflicting proposal first.
    restarted = make_core(me, sign_state=SignState.from_wire(saved.to_wire()))
    restarted.start(0.2)
    actions = restarted.on_proposal(propose(b), 0.3)
    assert not sent(actions) and restarted.refused == 1
    assert not own_votes(
        restarted.on_timeout(ScheduleTimeout(1, 0, TimeoutKind.PROPOSE, 9), 9), PREVOTE
    )
    # The same vote again is harmless: it is the very same signed bytes.
    again = make_core(me, sign_state=saved)
    again.start(0.2)
    (repeat,) = own_votes(again.on_proposal(propose(a), 0.3), PREVOTE)
    assert repeat.to_wire() == original.to_wire()


def test_a_restarted_validator_keeps_its_lock_and_can_prove_it() -> None:
    me = proposer(1, 2)
    others = [i for i in range(4) if i != me]
    b = make_block(records=[record(1)])
    proof = [vote(i, PREVOTE, b.hash) for i in (me, *others[:2])]
    lock = Lock(0, b, tuple(sorted((v.validator, v.signature) for v in proof)))
    core = make_core(me, sign_state=SignState(1, 0, SignStep.PRECOMMIT, b.hash, lock))
    core.start(1.0)
    for i in others[:2]:
        core.on_vote(vote(i, PREVOTE, None, round=1), 1.0)
    c = make_block(1, 1, records=[record(2)], time=1_500)
    (prevote,) = own_votes(core.on_proposal(propose(c, 1), 1.5), PREVOTE)
    assert prevote.block_hash is None
    # Its turn to propose: it offers the locked block again, with the proof of lock.
    core.on_vote(vote(others[0], PREVOTE, None, round=2), 2.0)
    actions = core.on_vote(vote(others[1], PREVOTE, None, round=2), 2.0)
    (proposal,) = [m for m in sent(actions) if isinstance(m, Proposal)]
    assert (proposal.round, proposal.pol_round, proposal.block) == (2, 0, b)
    relayed = {v for v in sent(actions) if isinstance(v, Vote) and v.round == 0}
    assert relayed == set(proof)


def test_a_restarted_proposer_does_not_propose_a_second_block() -> None:
    me = proposer(1)
    first = make_core(me)
    first.start(0.0)
    (proposal,) = [m for m in sent(first.add_pending([record(1)], 0.5)) if isinstance(m, Proposal)]
    restarted = make_core(me, sign_state=first.sign_state)
    restarted.add_pending([record(2)], 1.0)
    assert not [m for m in sent(restarted.start(1.0)) if isinstance(m, Proposal)]
    assert restarted.refused == 1
    assert proposal.block.records == (record(1),)


# ---- votes ----


def test_duplicate_votes_count_once() -> None:
    me = bystander(1)
    core = make_core(me)
    core.add_pending([record(1)], 0.0)
    (timer,) = timeouts(core.start(0.0), TimeoutKind.PROPOSE)
    core.on_timeout(timer, timer.at)  # prevote nil: 10 of 40
    other = next(i for i in range(4) if i != me)
    v = vote(other, PREVOTE, None)
    assert not timeouts(core.on_vote(v, 1.1), TimeoutKind.PREVOTE)  # 20 of 40
    assert core.on_vote(v, 1.2) == []
    assert core.on_vote(Vote.from_wire(v.to_wire()), 1.3) == []


def test_equivocation_is_reported_once() -> None:
    core = make_core(bystander(1))
    core.start(0.0)
    a, b = bytes([1]) * 32, bytes([2]) * 32
    core.on_vote(vote(1, PREVOTE, a), 0.1)
    (evidence,) = [x for x in core.on_vote(vote(1, PREVOTE, b), 0.2) if isinstance(x, Evidence)]
    assert evidence.validator == IDS[1] and "two prevotes" in evidence.reason
    assert not [x for x in core.on_vote(vote(1, PREVOTE, None), 0.3) if isinstance(x, Evidence)]


def test_votes_far_ahead_are_not_kept_and_bad_votes_raise() -> None:
    me = bystander(1)
    core = make_core(me)
    core.start(0.0)
    other = next(i for i in range(4) if i != me)
    forged = dataclasses.replace(vote(other, PREVOTE, None, height=3), signature=bytes(64))
    assert core.on_vote(forged, 0.1) == []  # two heights ahead: dropped unread
    far = vote(other, PREVOTE, None, round=ROUND_WINDOW + 1)
    assert core.on_vote(far, 0.1) == []  # one validator is not enough to skip rounds
    with pytest.raises(ConsensusError, match="bad signature"):
        core.on_vote(dataclasses.replace(vote(other, PREVOTE, None), signature=bytes(64)), 0.2)
    outsider = Vote.create(SigningKey(bytes(32)), CHAIN, PREVOTE, 1, 0, None)
    with pytest.raises(ConsensusError, match="not a validator"):
        core.on_vote(outsider, 0.2)


# ---- deciding ----


def test_a_block_with_its_commit_is_decided_directly() -> None:
    block = make_block(records=[record(1)])
    core = make_core(bystander(1))
    core.start(0.0)
    with pytest.raises(ConsensusError, match="more than 2/3"):
        core.on_committed_block(block, commit_for(block, [0, 1]), 0.1)
    later = make_block(2, time=2_000, prev=block, last_commit=commit_for(block, [0, 1, 2]))
    with pytest.raises(ConsensusError, match="offered at height 1"):
        core.on_committed_block(later, commit_for(later, [0, 1, 2]), 0.1)
    bad = make_block(records=[record(1)[:-1] + b"\x00"])
    with pytest.raises(ConsensusError, match="record 0"):
        core.on_committed_block(bad, commit_for(bad, [0, 1, 2]), 0.1)
    with pytest.raises(ConsensusError, match="before height 1 was decided"):
        core.next_height(0.1)
    commit = commit_for(block, [1, 2, 3])
    (decision,) = core.on_committed_block(block, commit, 0.2)
    assert decision == Decide(block, commit)
    core.app.apply_block(block, commit)
    core.next_height(0.3)
    assert core.height == 2 and core.prev_header == block.header and core.last_commit == commit


def test_an_observer_decides_without_signing() -> None:
    observer = make_core(None)
    assert not observer.is_validator
    block = make_block(records=[record(1)])
    actions = observer.start(0.0) + observer.on_proposal(propose(block), 0.1)
    for i in range(3):
        actions += observer.on_vote(vote(i, PREVOTE, block.hash), 0.2)
    for i in range(3):
        actions += observer.on_vote(vote(i, PRECOMMIT, block.hash), 0.3)
    assert not [a for a in actions if isinstance(a, Broadcast | PersistSignState)]
    (decision,) = [a for a in actions if isinstance(a, Decide)]
    assert decision.block == block and len(decision.commit.signatures) == 3
