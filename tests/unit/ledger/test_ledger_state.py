"""The ledger state machine: every record rule, payouts, the Application protocol, the root."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from ledger_kit import (
    ALICE,
    BOB,
    CAROL,
    FILE_SPEC,
    NODE1,
    NODE2,
    NODE3,
    SPEC,
    VALIDATORS,
    World,
    pub,
)

from modelmine import signing, wire
from modelmine.consensus.types import Block, Commit
from modelmine.ledger import (
    STALL_MS,
    JobStatus,
    LedgerError,
    LedgerState,
    make_commit,
    payout,
    record_id,
)
from modelmine.ledger import records as rec
from modelmine.ledger.state import PENDING_HORIZON_MS

# ---- accounts and transfers ----


def test_registration_grants_the_genesis_credit_once() -> None:
    w = World(grant=1000)
    w.block(w.register(ALICE, "alice"))
    acc = w.state.account(pub(ALICE))
    assert acc is not None
    assert (acc.name, acc.balance, acc.registered, acc.registered_height) == (
        "alice",
        1000,
        True,
        1,
    )
    assert w.reason(w.register(ALICE, "again")) == (
        f"account.register from {pub(ALICE).hex()[:8]}: account {pub(ALICE).hex()[:8]} "
        "is already registered as 'alice'"
    )
    assert w.state.total_supply() == w.state.granted == 1000


def test_a_zero_grant_registers_without_credit() -> None:
    w = World(grant=0)
    w.block(w.register(ALICE, "alice"))
    assert w.state.balance(pub(ALICE)) == 0
    assert w.state.account(pub(ALICE)) is not None


def test_transfer_moves_credits() -> None:
    w = World().with_accounts()
    w.block(w.transfer(ALICE, BOB, 250, "thanks"))
    assert (w.state.balance(pub(ALICE)), w.state.balance(pub(BOB))) == (750, 1250)
    assert w.state.next_nonce(pub(ALICE)) == 3


def test_a_transfer_that_overdraws_is_rejected() -> None:
    w = World().with_accounts()
    reason = w.reason(w.transfer(ALICE, BOB, 1001))
    assert reason is not None
    assert "insufficient balance: " in reason and "has 1000 credits, needs 1001" in reason
    assert w.state.balance(pub(ALICE)) == 1000


def test_two_transfers_that_together_overdraw_cannot_share_a_block() -> None:
    w = World().with_accounts()
    first, second = w.transfer(ALICE, BOB, 600), w.transfer(ALICE, BOB, 600)
    reason = w.state.validate_block_records([first, second], w.time + 1000)
    assert reason is not None and reason.startswith("record 1: transfer from")
    assert w.state.select_records([first, second], 10) == [first]
    with pytest.raises(LedgerError, match="insufficient balance"):
        w.block(first, second)
    assert w.state.balance(pub(ALICE)) == 1000  # the failed block changed nothing


def test_a_replayed_transfer_is_rejected() -> None:
    w = World().with_accounts()
    transfer = w.transfer(ALICE, BOB, 10)
    w.block(transfer)
    reason = w.reason(transfer)
    assert reason is not None and "replay: nonce 2 of" in reason and "already used" in reason
    assert w.state.balance(pub(BOB)) == 1010


def test_two_encodings_of_one_signed_transfer_apply_once() -> None:
    w = World().with_accounts()
    body = msgpack.packb({"to": pub(BOB), "amount": 5, "nonce": 2}, use_bin_type=True)
    signature = ALICE.sign(signing.signing_input("transfer", w.genesis.chain_id, body)).signature
    odd = wire.encode(["transfer", pub(ALICE), body, signature])
    usual = rec.make_transfer(ALICE, w.genesis.chain_id, pub(BOB), 5, 2)
    assert w.state.select_records([odd, usual], 10) == [odd]
    w.block(odd)
    reason = w.reason(usual)
    assert reason is not None and "replay" in reason
    assert w.state.balance(pub(BOB)) == 1005


def test_a_nonce_that_skips_ahead_is_rejected() -> None:
    w = World().with_accounts()
    raw = rec.make_transfer(ALICE, w.genesis.chain_id, pub(BOB), 1, 5)
    reason = w.reason(raw)
    assert reason is not None and "nonce 5 of" in reason and "skips ahead of 2" in reason


def test_an_unknown_account_can_neither_send_nor_submit() -> None:
    w = World().with_accounts()
    short = pub(CAROL).hex()[:8]
    assert w.reason(w.transfer(CAROL, BOB, 1)) == (
        f"transfer from {short}: sender {short} is not a registered account"
    )
    assert w.reason(w.submit(CAROL)) == (
        f"job.submit from {short}: submitter {short} is not a registered account"
    )


def test_transfers_go_only_to_registered_accounts_other_than_the_sender() -> None:
    w = World().with_accounts()
    reason = w.reason(w.transfer(ALICE, CAROL, 1))
    assert reason is not None and "recipient" in reason and "is not a registered account" in reason
    reason = w.reason(w.transfer(ALICE, ALICE, 1))
    assert reason is not None and reason.endswith("cannot transfer credits to yourself")


def test_records_for_another_chain_or_with_bad_bytes_are_rejected() -> None:
    w = World().with_accounts()
    foreign = rec.make_transfer(ALICE, "other-chain", pub(BOB), 1, 2)
    reason = w.state.check_record(foreign)
    assert reason is not None and "bad signature" in reason
    assert w.state.check_record(b"\x00garbage") is not None


# ---- submission ----


def test_submission_locks_the_stake_and_the_job_is_pending() -> None:
    w = World().with_accounts()
    submit = w.submit(ALICE)
    w.block(submit)
    job = w.state.job(record_id(submit))
    assert job is not None
    assert (job.status, job.stake, job.locked, job.submitter) == (
        JobStatus.PENDING,
        100,
        100,
        pub(ALICE),
    )
    assert (job.created_height, job.created_ms, job.planned_samples) == (2, w.time, 2240)
    assert job.title == "iris softmax"
    assert w.state.balance(pub(ALICE)) == 900
    assert w.state.stats().credits_staked == 100


def test_the_same_signed_job_twice_makes_one_job() -> None:
    w = World().with_accounts()
    submit = w.submit(ALICE)
    assert w.state.select_records([submit, submit], 10) == [submit]
    w.block(submit)
    reason = w.reason(submit)
    assert reason is not None and "already exists" in reason
    assert len(w.state.jobs()) == 1
    assert w.state.balance(pub(ALICE)) == 900


def test_submission_beyond_the_balance_is_rejected() -> None:
    w = World(grant=50).with_accounts()
    reason = w.reason(w.submit(ALICE))
    assert reason is not None and "has 50 credits, needs 100" in reason


def test_submission_time_may_not_run_far_ahead_of_the_block() -> None:
    w = World().with_accounts()
    ahead = rec.make_job_submit(ALICE, w.genesis.chain_id, SPEC, 2, w.time + 1000 + 300_001)
    reason = w.reason(ahead)
    assert reason is not None and "ahead of the block time" in reason


# ---- claims, checkpoints and failover ----


def test_claim_starts_the_job_on_the_claiming_node() -> None:
    w = World().with_accounts()
    job_id = w.running_job(NODE1)
    job = w.state.job(job_id)
    assert job is not None
    assert (job.status, job.worker, job.last_activity_ms) == (JobStatus.RUNNING, pub(NODE1), w.time)
    assert [(c.node, c.time_ms, c.height) for c in job.claims] == [(pub(NODE1), w.time, 3)]
    assert w.state.account(pub(NODE1)) is not None  # nodes need not register


def test_a_running_job_cannot_be_claimed_before_it_stalls() -> None:
    w = World().with_accounts()
    job_id = w.running_job(NODE1)
    reason = w.reason(w.claim(NODE2, job_id))
    assert reason is not None and "is running on" in reason and "after 30000 ms" in reason
    reason = w.reason(w.claim(NODE1, job_id))
    assert reason is not None and "already works on job" in reason


def test_failover_after_the_stall_time_replaces_the_worker() -> None:
    w = World().with_accounts()
    job_id = w.running_job(NODE1)
    w.block(w.checkpoint(NODE1, job_id, 500))
    w.idle(STALL_MS - 2000)
    claim = w.claim(NODE2, job_id)
    assert w.reason(claim) is not None  # 29 s of silence: not yet
    w.block(claim, time_ms=w.time + 2000)  # exactly STALL_MS
    job = w.state.job(job_id)
    assert job is not None
    assert job.worker == pub(NODE2)
    assert [c.node for c in job.claims] == [pub(NODE1), pub(NODE2)]
    reason = w.reason(w.checkpoint(NODE1, job_id, 900))  # the old worker is out
    assert reason is not None and "is not the worker of job" in reason


def test_checkpoints_keep_the_job_alive() -> None:
    w = World().with_accounts()
    job_id = w.running_job(NODE1)
    w.idle(20_000)
    w.block(w.checkpoint(NODE1, job_id, 100))
    w.idle(20_000)
    assert w.reason(w.claim(NODE2, job_id)) is not None


def test_checkpoint_samples_may_not_decrease_and_only_the_worker_reports() -> None:
    w = World().with_accounts()
    job_id = w.running_job(NODE1)
    w.block(w.checkpoint(NODE1, job_id, 300, step=5))
    reason = w.reason(w.checkpoint(NODE1, job_id, 299))
    assert reason is not None and "samples 299 of job" in reason and "300 recorded" in reason
    reason = w.reason(w.checkpoint(NODE2, job_id, 400))
    assert reason is not None and "is not the worker" in reason
    job = w.state.job(job_id)
    assert job is not None
    assert (job.samples, job.steps, job.checkpoints, job.work) == (300, 5, 1, ((pub(NODE1), 300),))


def test_worker_records_for_a_pending_job_are_rejected() -> None:
    w = World().with_accounts()
    submit = w.submit(ALICE)
    w.block(submit)
    reason = w.reason(w.complete(NODE1, record_id(submit), 10))
    assert reason is not None and "is not the worker" in reason


def test_records_for_an_unknown_job_are_rejected() -> None:
    w = World().with_accounts()
    reason = w.reason(w.claim(NODE1, b"\x09" * 32))
    assert reason is not None and reason.endswith("unknown job 09090909")


# ---- completion and payouts ----


def _two_worker_job(w: World) -> bytes:
    """NODE1 processes 700 samples, stalls; NODE2 takes over and completes at 1000."""
    job_id = w.running_job(NODE1)
    w.block(w.checkpoint(NODE1, job_id, 700))
    w.idle(STALL_MS)
    w.block(w.claim(NODE2, job_id))
    w.block(w.complete(NODE2, job_id, 1000, {"val_accuracy": 0.8, "train_loss": 0.5}))
    return job_id


def test_completion_pays_80_percent_by_samples_and_20_percent_to_signers_next_block() -> None:
    w = World().with_accounts()
    job_id = _two_worker_job(w)
    height = w.state.height
    job = w.state.job(job_id)
    assert job is not None
    assert job.status is JobStatus.COMPLETED
    assert (job.ended_height, job.model_sha256, job.metrics_dict) == (
        height,
        b"\x07" * 32,
        {"val_accuracy": 0.8, "train_loss": 0.5},
    )
    # 80 credits: 700/1000 -> 56, 300/1000 -> 24.
    assert [(c.node_id, c.samples, c.credits) for c in w.state.contributions(job_id)] == sorted(
        [(pub(NODE1), 700, 56), (pub(NODE2), 300, 24)]
    )
    assert (w.state.balance(pub(NODE1)), w.state.balance(pub(NODE2))) == (56, 24)
    assert job.locked == 20  # the fee waits for the next block's commit
    assert w.state.total_supply() == w.state.granted
    w.idle(1000)
    job = w.state.job(job_id)
    assert job is not None
    assert job.locked == 0
    assert [w.state.balance(pub(v)) for v in VALIDATORS] == [5, 5, 5, 5]
    assert sorted(job.fees) == sorted((pub(v), 5) for v in VALIDATORS)
    assert w.state.total_supply() == w.state.granted


def test_fee_goes_to_the_signers_of_the_next_blocks_last_commit_by_power() -> None:
    w = World(powers=(1, 2, 3, 4)).with_accounts()
    job_id = w.running_job(NODE1)
    # Validators 1..3 (power 9 of 10) sign the commit of the completing block.
    signers = [pub(v) for v in VALIDATORS[1:]]
    w.block(w.complete(NODE1, job_id, 10), signers=signers)
    w.idle(1000)
    # 20 credits over powers 2, 3, 4: 4.44, 6.67, 8.89 -> 4, 6, 8 and 2 by largest remainder.
    balances = [w.state.balance(pub(v)) for v in VALIDATORS]
    assert balances == [0, 4, 7, 9]
    assert sum(balances) == 20


def test_reward_remainders_go_to_the_largest_fractions() -> None:
    assert payout.split(80, [(b"a", 1), (b"b", 1), (b"c", 1)]) == [
        (b"a", 27),
        (b"b", 27),
        (b"c", 26),
    ]
    assert payout.split(10, [(b"b", 2), (b"a", 1)]) == [(b"a", 3), (b"b", 7)]
    assert payout.split(5, [(b"a", 0)]) == []
    assert payout.split(0, [(b"a", 3)]) == [(b"a", 0)]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 10**12),
    st.lists(st.integers(1, 10**9), min_size=1, max_size=20),
)
def test_split_is_exact_and_within_one_credit_of_proportional(
    total: int, weights: list[int]
) -> None:
    parts = [(i.to_bytes(2, "big"), w) for i, w in enumerate(weights)]
    shares = payout.split(total, parts)
    assert sum(amount for _, amount in shares) == total
    whole = sum(weights)
    for (_, amount), (_, w) in zip(shares, parts, strict=True):
        assert total * w // whole <= amount <= total * w // whole + 1


def test_an_ended_job_takes_no_more_records() -> None:
    w = World().with_accounts()
    job_id = _two_worker_job(w)
    for record in (
        w.checkpoint(NODE2, job_id, 2000),
        w.complete(NODE2, job_id, 2000),
        w.fail(NODE2, job_id),
        w.cancel(ALICE, job_id),
        w.claim(NODE3, job_id),
    ):
        reason = w.reason(record)
        assert reason is not None and "is COMPLETED and takes no more records" in reason


def test_failure_refunds_the_whole_stake() -> None:
    w = World().with_accounts()
    job_id = w.running_job(NODE1)
    w.block(w.checkpoint(NODE1, job_id, 500))
    w.block(w.fail(NODE1, job_id, "diverged: loss is nan"))
    job = w.state.job(job_id)
    assert job is not None
    assert (job.status, job.error, job.locked) == (JobStatus.FAILED, "diverged: loss is nan", 0)
    assert w.state.balance(pub(ALICE)) == 1000
    assert w.state.balance(pub(NODE1)) == 0


# ---- cancellation ----


def test_cancel_by_someone_other_than_the_submitter_is_rejected() -> None:
    w = World().with_accounts()
    job_id = w.running_job(NODE1)
    reason = w.reason(w.cancel(BOB, job_id))
    assert reason == (
        f"job.cancel from {pub(BOB).hex()[:8]}: only the submitter can cancel job "
        f"{job_id.hex()[:8]}"
    )
    reason = w.reason(w.cancel(NODE1, job_id))
    assert reason is not None and "only the submitter can cancel" in reason


def test_cancel_of_a_pending_job_refunds_everything() -> None:
    w = World().with_accounts()
    submit = w.submit(ALICE)
    w.block(submit)
    w.block(w.cancel(ALICE, record_id(submit)))
    job = w.state.job(record_id(submit))
    assert job is not None
    assert (job.status, job.locked) == (JobStatus.CANCELED, 0)
    assert w.state.balance(pub(ALICE)) == 1000


def test_cancel_of_a_running_job_pays_workers_for_recorded_work() -> None:
    w = World().with_accounts()
    job_id = w.running_job(NODE1)
    # 1000 of the 2240 planned samples: floor(0.8 * 100 * 1000 / 2240) = 35 credits.
    w.block(w.checkpoint(NODE1, job_id, 1000))
    w.block(w.cancel(ALICE, job_id))
    assert w.state.balance(pub(NODE1)) == 35
    assert w.state.balance(pub(ALICE)) == 1000 - 35
    assert [(c.samples, c.credits) for c in w.state.contributions(job_id)] == [(1000, 35)]
    assert w.state.total_supply() == w.state.granted


def test_cancel_pay_is_capped_at_the_completion_reward() -> None:
    assert payout.cancel_earnings(100, 10_000, 2240) == 80
    assert payout.cancel_earnings(100, 0, 2240) == 0


def test_cancel_of_a_file_dataset_job_refunds_the_full_stake() -> None:
    w = World().with_accounts()
    job_id = w.running_job(NODE1, FILE_SPEC)
    w.block(w.checkpoint(NODE1, job_id, 1000))
    w.block(w.cancel(ALICE, job_id))
    assert (w.state.balance(pub(ALICE)), w.state.balance(pub(NODE1))) == (1000, 0)


# ---- the Application protocol ----


def test_select_records_skips_invalid_records_and_respects_the_limit() -> None:
    w = World().with_accounts()
    good = [w.transfer(ALICE, BOB, 1) for _ in range(3)]
    overdraw = w.transfer(BOB, ALICE, 10**6)
    pending = [good[0], overdraw, good[1], b"junk", good[2]]
    assert w.state.select_records(pending, 10) == good
    assert w.state.select_records(pending, 2) == good[:2]
    assert w.state.validate_block_records(good, w.time + 1) is None


def test_check_record_keeps_a_failover_claim_that_is_due_soon() -> None:
    w = World().with_accounts()
    job_id = w.running_job(NODE1)
    claim = w.claim(NODE2, job_id)
    assert w.state.check_record(claim) is None  # due within the pool horizon
    assert w.state.select_records([claim], 10) == []  # but not yet
    w.idle(STALL_MS - 1)
    assert w.state.select_records([claim], 10) == [claim]
    w.block(claim)


def test_check_record_refuses_what_time_cannot_make_valid() -> None:
    assert PENDING_HORIZON_MS >= STALL_MS
    w = World().with_accounts()
    job_id = w.running_job(NODE1)
    reason = w.state.check_record(w.claim(NODE1, job_id))
    assert reason is not None and "already works on" in reason
    reason = w.state.check_record(w.transfer(ALICE, BOB, 5000))
    assert reason is not None and "insufficient balance" in reason


def test_apply_block_refuses_a_block_built_on_another_state() -> None:
    w = World().with_accounts()
    other = World()
    other.block(other.register(CAROL, "carol"))
    block, commit = other.blocks[0]
    with pytest.raises(LedgerError, match="cannot follow the state at height 1"):
        w.state.apply_block(block, commit)
    fresh = LedgerState(w.genesis)
    with pytest.raises(LedgerError, match="was built on state"):
        fresh.apply_block(*_with_root(other, b"\x01" * 32))


def _with_root(w: World, root: bytes) -> tuple[Block, Commit]:
    block, _ = w.blocks[0]
    header = dataclasses.replace(block.header, state_root=root)
    forged = dataclasses.replace(block, header=header)
    return forged, make_commit(VALIDATORS, w.genesis.chain_id, 1, 0, forged.hash)


def test_apply_block_refuses_a_commit_of_another_block() -> None:
    w = World()
    w.block(w.register(ALICE, "alice"))
    _, commit = w.blocks[0]
    w2 = World()
    w2.block(w2.register(BOB, "bob"))
    block, _ = w2.blocks[0]
    with pytest.raises(LedgerError, match="is for another block"):
        LedgerState(w.genesis).apply_block(block, commit)


# ---- queries ----


def test_queries_for_the_dashboard() -> None:
    w = World().with_accounts()
    done = _two_worker_job(w)
    w.idle(1000)
    pending = w.submit(BOB)
    failed = w.running_job(NODE3)
    w.block(pending, w.fail(NODE3, failed))
    stats = w.state.stats()
    assert (stats.pending_jobs, stats.running_jobs, stats.completed_jobs, stats.failed_jobs) == (
        1,
        0,
        1,
        1,
    )
    assert (stats.active_jobs, stats.credits_staked, stats.accounts) == (1, 100, 2)
    assert stats.average_accuracy == pytest.approx(0.8)
    assert stats.total_supply == w.state.total_supply() == 2000
    assert [j.id for j in w.state.jobs(JobStatus.COMPLETED)] == [done]
    assert [j.id for j in w.state.jobs(submitter=pub(BOB))] == [record_id(pending)]
    assert w.state.jobs()[0].id == record_id(pending)  # newest first
    earnings = {e.node_id: e for e in w.state.node_earnings()}
    assert (earnings[pub(NODE1)].credits, earnings[pub(NODE1)].samples) == (56, 700)
    assert earnings[pub(VALIDATORS[0])].fees == 5
    assert pub(NODE3) not in earnings  # claimed, but did no recorded work and earned nothing
    assert w.state.contributions(b"\x00" * 32) == []
    assert w.state.balance(pub(CAROL)) == 0
    assert w.state.account(pub(CAROL)) is None


# ---- the state root ----


def test_the_root_is_a_function_of_the_blocks_alone() -> None:
    w = World().with_accounts()
    _two_worker_job(w)
    w.idle(1000)
    replica = LedgerState(w.genesis)
    for block, commit in w.blocks:
        replica.apply_block(block, commit)
    assert replica.state_root() == w.state.state_root()
    restored = LedgerState.restore(
        w.genesis,
        height=w.state.height,
        time_ms=w.state.time_ms,
        granted=w.state.granted,
        fee_due=w.state.fee_due,
        accounts=w.state.accounts(),
        jobs=w.state.jobs(),
    )
    assert restored.state_root() == w.state.state_root()
    changed = LedgerState.restore(
        w.genesis,
        height=w.state.height,
        time_ms=w.state.time_ms,
        granted=w.state.granted,
        fee_due=w.state.fee_due,
        accounts=[
            dataclasses.replace(a, balance=a.balance + (a.id == pub(BOB)))
            for a in w.state.accounts()
        ],
        jobs=w.state.jobs(),
    )
    assert changed.state_root() != w.state.state_root()


def test_every_block_header_commits_to_the_state_after_the_previous_block() -> None:
    w = World().with_accounts()
    w.block(w.transfer(ALICE, BOB, 1))
    replica = LedgerState(w.genesis)
    for block, commit in w.blocks:
        assert block.header.state_root == replica.state_root()
        replica.apply_block(block, commit)


def test_bundled_dataset_sizes_match_the_trainer() -> None:
    from modelmine.trainer._bundled import load_bundled

    for name, rows in payout.BUNDLED_ROWS.items():
        assert len(load_bundled(name).y) == rows


def test_planned_samples_match_the_trainers_split() -> None:
    from modelmine.trainer import JobSpec, load_dataset

    spec = JobSpec.from_dict(
        {
            "title": "m",
            "model": {"kind": "logistic"},
            "dataset": {"name": "moons", "samples": 333, "validation_split": 0.3},
            "hyperparameters": {"epochs": 3},
        }
    )
    data = load_dataset(spec.dataset)
    assert payout.planned_samples(spec) == 3 * len(data.y_train)


# ---- conservation over random histories ----

ACTORS = [ALICE, BOB, CAROL]
NODES = [NODE1, NODE2, NODE3]


@st.composite
def histories(draw: st.DrawFn) -> list[list[tuple[str, int, int, int]]]:
    action = st.tuples(
        st.sampled_from(
            ["register", "transfer", "fail", "cancel"]
            + ["submit", "claim", "checkpoint", "complete"] * 3
        ),
        st.integers(0, 2),  # who
        st.integers(0, 2),  # whom / which job
        st.integers(1, 1500),  # amount / samples
    )
    return draw(st.lists(st.lists(action, min_size=1, max_size=6), min_size=3, max_size=14))


@settings(max_examples=200, deadline=None)
@given(
    histories(), st.sampled_from([1000, 1000, 0]), st.lists(st.integers(500, 40_000), max_size=12)
)
def test_credits_are_conserved_over_random_histories(
    history: list[list[tuple[str, int, int, int]]], grant: int, gaps: list[int]
) -> None:
    w = World(grant=grant)
    w.block(*(w.register(user, f"user {i}") for i, user in enumerate(ACTORS[:2])))
    keys = {pub(k): k for k in ACTORS + NODES}
    jobs: list[bytes] = []
    events: set[str] = set()
    for i, actions in enumerate(history):
        pending: list[bytes] = []
        for kind, who, whom, amount in actions:
            user, node = ACTORS[who], NODES[who]
            job_id = jobs[-1 - whom % len(jobs)] if jobs else b"\x00" * 32
            job = w.state.job(job_id)
            if job is not None and who < 2:  # mostly act as the job's worker and submitter
                user = keys[job.submitter]
                node = keys[job.worker] if job.worker is not None else node
            so_far = (0 if job is None else job.samples) + amount
            if kind == "register":
                pending.append(w.register(user, f"u{who}"))
            elif kind == "transfer":
                pending.append(w.transfer(user, ACTORS[whom], amount))
            elif kind == "submit":
                spec = SPEC | {"stake": amount % 400 + 1, "title": f"job {i} {who}"}
                submit = w.submit(user, spec)
                jobs.append(record_id(submit))
                pending.append(submit)
            elif kind == "claim":
                pending.append(w.claim(NODES[who], job_id))
            elif kind == "checkpoint":
                pending.append(w.checkpoint(node, job_id, so_far))
            elif kind == "complete":
                pending.append(w.complete(node, job_id, so_far))
            elif kind == "fail":
                pending.append(w.fail(node, job_id))
            else:
                pending.append(w.cancel(user, job_id))
        chosen = w.state.select_records(pending, 100)
        w.block(*chosen, time_ms=w.time + (gaps[i] if i < len(gaps) else 1000))
        assert w.state.total_supply() == w.state.granted
        assert all(a.balance >= 0 for a in w.state.accounts())
        assert all(j.locked >= 0 for j in w.state.jobs())
        events.update(str(j.status) for j in w.state.jobs())
        due = [w.state.job(j) for j in w.state.fee_due]
        assert sum(j.locked for j in w.state.jobs() if j.status.ended) == sum(
            j.locked for j in due if j is not None
        )
    replica = LedgerState(w.genesis)
    for block, commit in w.blocks:
        replica.apply_block(block, commit)
    assert replica.state_root() == w.state.state_root()
    for name in sorted(events):
        event(name)
