"""What each record does to the ledger: its validity rules and its effects.

:func:`execute` applies one parsed record to a :class:`Scratch`, the copy-on-write view of
the state for one block. Every rule checks everything first and raises :class:`Rejected`
before it changes anything, so a rejected record leaves the scratch as it was.

The block time is the only clock. Every time-dependent rule is monotone: a record valid at
time t (on a given state) is valid at any later time. That lets a proposer select records
at a lower bound of the block time, and lets the pool keep a record that is valid soon.

Credits move but are never made, except by registration grants:
``sum(balances) + sum(job.locked) == granted`` holds after every record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from modelmine.ledger import payout
from modelmine.ledger.entries import Account, Claim, Job, JobStatus, Shares
from modelmine.ledger.records import (
    JobCancel,
    JobCheckpoint,
    JobClaim,
    JobComplete,
    JobFail,
    JobSubmit,
    Record,
    Register,
    Transfer,
    short,
)

STALL_MS: Final = 30_000  # a running job without activity this long may be claimed by another
MAX_SUBMIT_AHEAD_MS: Final = 300_000  # a submission's own time may be this far past block time
MAX_CLAIMS: Final = 64  # claims (first + failovers) per job


class Rejected(Exception):
    """A record that is invalid against the state; the text is the reason."""


class Scratch:
    """The state as one block changes it: reads fall through to ``accounts`` and ``jobs``,
    writes stay here until the owner merges them."""

    def __init__(
        self,
        accounts: Mapping[bytes, Account],
        jobs: Mapping[bytes, Job],
        *,
        height: int,
        time_ms: int,
        grant: int,
    ) -> None:
        self._base_accounts = accounts
        self._base_jobs = jobs
        self.height = height
        self.time_ms = time_ms
        self.grant = grant
        self.accounts: dict[bytes, Account] = {}
        self.jobs: dict[bytes, Job] = {}
        self.granted = 0  # credits created in this block
        self.completed: list[bytes] = []  # jobs completed in this block; their fee is due

    def account(self, key: bytes) -> Account | None:
        found = self.accounts.get(key)
        return found if found is not None else self._base_accounts.get(key)

    def holder(self, key: bytes) -> Account:
        """The account of ``key``, an empty unregistered one if it has none yet."""
        return self.account(key) or Account(key)

    def job(self, job_id: bytes) -> Job:
        found = self.jobs.get(job_id) or self._base_jobs.get(job_id)
        if found is None:
            raise Rejected(f"unknown job {short(job_id)}")
        return found

    def has_job(self, job_id: bytes) -> bool:
        return job_id in self.jobs or job_id in self._base_jobs

    def put(self, entry: Account | Job) -> None:
        if isinstance(entry, Account):
            self.accounts[entry.id] = entry
        else:
            self.jobs[entry.id] = entry

    def credit(self, key: bytes, amount: int, *, earned: int = 0, fees: int = 0) -> None:
        if amount:
            self.put(self.holder(key).credited(amount, earned=earned, fees=fees))

    def pay(self, shares: Shares, *, fees: bool = False) -> None:
        for key, amount in shares:
            self.credit(key, amount, earned=0 if fees else amount, fees=amount if fees else 0)


def execute(s: Scratch, record: Record) -> None:
    """Apply ``record`` to ``s`` or raise Rejected, leaving ``s`` unchanged."""
    if isinstance(record, Transfer):  # the most common record first
        _transfer(s, record)
    elif isinstance(record, Register):
        _register(s, record)
    elif isinstance(record, JobSubmit):
        _submit(s, record)
    elif isinstance(record, JobClaim):
        _claim(s, record)
    elif isinstance(record, JobCheckpoint):
        _checkpoint(s, record)
    elif isinstance(record, JobComplete):
        _complete(s, record)
    elif isinstance(record, JobFail):
        _fail(s, record)
    else:
        _cancel(s, record)


def pay_fees(s: Scratch, due: tuple[bytes, ...], signers: Shares) -> None:
    """Pay the validators' fee of each job in ``due`` to ``signers`` by voting power."""
    for job_id in due:
        job = s.job(job_id)
        shares = tuple(payout.split(job.locked, signers))
        s.pay(shares, fees=True)
        s.put(dataclasses.replace(job, locked=0, fees=shares))


# ---- common checks ----


def _next_nonce(s: Scratch, record: Record) -> Account:
    """The signer's account (maybe new), after checking the record's nonce."""
    acc = s.holder(record.signer)
    _check_nonce(acc, record)
    return acc.with_nonce(record.nonce)


def _check_nonce(acc: Account, record: Record) -> None:
    """Raise Rejected unless ``record`` carries the next nonce of its signer ``acc``."""
    expected = acc.nonce + 1
    if record.nonce < expected:
        raise Rejected(
            f"replay: nonce {record.nonce} of {short(record.signer)} is already used "
            f"(next is {expected})"
        )
    if record.nonce > expected:
        raise Rejected(f"nonce {record.nonce} of {short(record.signer)} skips ahead of {expected}")


def _registered(s: Scratch, key: bytes, who: str) -> Account:
    acc = s.account(key)
    if acc is None or not acc.registered:
        raise Rejected(f"{who} {short(key)} is not a registered account")
    return acc


def _active_job(s: Scratch, job_id: bytes) -> Job:
    job = s.job(job_id)
    if job.status.ended:
        raise Rejected(f"job {short(job_id)} is {job.status} and takes no more records")
    return job


def _worker_job(s: Scratch, job_id: bytes, signer: bytes) -> Job:
    job = _active_job(s, job_id)
    if job.status is not JobStatus.RUNNING or job.worker != signer:
        raise Rejected(f"{short(signer)} is not the worker of job {short(job_id)}")
    return job


def _insufficient(acc: Account, need: int) -> Rejected:
    return Rejected(
        f"insufficient balance: {short(acc.id)} has {acc.balance} credits, needs {need}"
    )


def _add_work(job: Job, node: bytes, samples: int) -> Shares:
    """The job's samples-per-node after ``node`` reports the total ``samples``."""
    gain = samples - job.samples
    work = dict(job.work)
    if gain > 0 or node in work:
        work[node] = work.get(node, 0) + gain
    return tuple(sorted(work.items()))


def _check_samples(job: Job, samples: int) -> None:
    if samples < job.samples:
        raise Rejected(
            f"samples {samples} of job {short(job.id)} is less than the {job.samples} recorded"
        )


# ---- the rules ----


def _register(s: Scratch, r: Register) -> None:
    existing = s.account(r.signer)
    if existing is not None and existing.registered:
        raise Rejected(f"account {short(r.signer)} is already registered as {existing.name!r}")
    acc = _next_nonce(s, r)
    s.put(
        dataclasses.replace(
            acc, balance=acc.balance + s.grant, name=r.name, registered_height=s.height
        )
    )
    s.granted += s.grant


def _transfer(s: Scratch, r: Transfer) -> None:
    sender = _registered(s, r.signer, "sender")
    if r.to == r.signer:
        raise Rejected("cannot transfer credits to yourself")
    recipient = _registered(s, r.to, "recipient")
    _check_nonce(sender, r)
    if sender.balance < r.amount:
        raise _insufficient(sender, r.amount)
    # The most common record: the sender's new nonce and balance in one new Account, both
    # accounts written straight into the scratch (what ``s.put`` does for an Account).
    s.accounts[sender.id] = Account(
        sender.id,
        sender.balance - r.amount,
        r.nonce,
        sender.name,
        sender.registered_height,
        sender.earned,
        sender.fees,
    )
    if r.amount:
        s.accounts[recipient.id] = recipient.credited(r.amount)


def _submit(s: Scratch, r: JobSubmit) -> None:
    _registered(s, r.signer, "submitter")
    if s.has_job(r.id):
        raise Rejected(f"job {short(r.id)} already exists")
    acc = _next_nonce(s, r)
    if r.time_ms > s.time_ms + MAX_SUBMIT_AHEAD_MS:
        raise Rejected(
            f"job.submit time {r.time_ms} ms is more than {MAX_SUBMIT_AHEAD_MS} ms "
            f"ahead of the block time {s.time_ms} ms"
        )
    if acc.balance < r.stake:
        raise _insufficient(acc, r.stake)
    s.put(acc.with_balance(acc.balance - r.stake))
    s.put(
        Job(
            id=r.id,
            submitter=r.signer,
            spec=r.spec,
            stake=r.stake,
            locked=r.stake,
            status=JobStatus.PENDING,
            planned_samples=payout.planned_samples(r.job),
            submitted_ms=r.time_ms,
            created_height=s.height,
            created_ms=s.time_ms,
        )
    )


def _claim(s: Scratch, r: JobClaim) -> None:
    job = _active_job(s, r.job_id)
    if job.status is JobStatus.RUNNING:
        if job.worker == r.signer:
            raise Rejected(f"{short(r.signer)} already works on job {short(job.id)}")
        idle = s.time_ms - job.last_activity_ms
        if idle < STALL_MS:
            worker = short(job.worker or b"")
            raise Rejected(
                f"job {short(job.id)} is running on {worker}, last active {idle} ms ago; "
                f"another node may claim it after {STALL_MS} ms without activity"
            )
    if len(job.claims) >= MAX_CLAIMS:
        raise Rejected(f"job {short(job.id)} was already claimed {MAX_CLAIMS} times")
    s.put(_next_nonce(s, r))
    s.put(
        dataclasses.replace(
            job,
            status=JobStatus.RUNNING,
            worker=r.signer,
            claims=(*job.claims, Claim(r.signer, s.time_ms, s.height)),
            last_activity_ms=s.time_ms,
        )
    )


def _checkpoint(s: Scratch, r: JobCheckpoint) -> None:
    job = _worker_job(s, r.job_id, r.signer)
    _check_samples(job, r.samples)
    s.put(_next_nonce(s, r))
    s.put(
        dataclasses.replace(
            job,
            work=_add_work(job, r.signer, r.samples),
            samples=r.samples,
            steps=r.step,
            checkpoints=job.checkpoints + 1,
            checkpoint_sha256=r.checkpoint_sha256,
            last_activity_ms=s.time_ms,
        )
    )


def _complete(s: Scratch, r: JobComplete) -> None:
    job = _worker_job(s, r.job_id, r.signer)
    _check_samples(job, r.samples)
    s.put(_next_nonce(s, r))
    work = _add_work(job, r.signer, r.samples)
    reward = payout.reward_pool(job.stake)
    paid = tuple(payout.split(reward, work))
    s.pay(paid)
    s.put(
        dataclasses.replace(
            job,
            status=JobStatus.COMPLETED,
            work=work,
            paid=paid,
            locked=job.stake - reward,  # the validators' fee, paid by the next block
            samples=r.samples,
            steps=r.steps,
            metrics=tuple(sorted(r.metrics.items())),
            model_sha256=r.model_sha256,
            last_activity_ms=s.time_ms,
            ended_height=s.height,
            ended_ms=s.time_ms,
        )
    )
    s.completed.append(job.id)


def _fail(s: Scratch, r: JobFail) -> None:
    job = _worker_job(s, r.job_id, r.signer)
    s.put(_next_nonce(s, r))
    s.credit(job.submitter, job.locked)
    s.put(
        dataclasses.replace(
            job,
            status=JobStatus.FAILED,
            locked=0,
            error=r.reason,
            last_activity_ms=s.time_ms,
            ended_height=s.height,
            ended_ms=s.time_ms,
        )
    )


def _cancel(s: Scratch, r: JobCancel) -> None:
    job = s.job(r.job_id)
    if r.signer != job.submitter:
        raise Rejected(f"only the submitter can cancel job {short(job.id)}")
    _active_job(s, r.job_id)
    s.put(_next_nonce(s, r))
    earned = payout.cancel_earnings(job.stake, job.samples, job.planned_samples)
    paid = tuple(payout.split(earned, job.work))
    s.pay(paid)
    s.credit(job.submitter, job.locked - earned)
    s.put(
        dataclasses.replace(
            job,
            status=JobStatus.CANCELED,
            locked=0,
            paid=paid,
            error="canceled by the submitter",
            ended_height=s.height,
            ended_ms=s.time_ms,
        )
    )
