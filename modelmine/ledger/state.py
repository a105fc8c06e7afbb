"""The ledger's state machine: the consensus ``Application`` for accounts, credits and jobs.

:class:`LedgerState` holds accounts and jobs in memory and changes them only in
:meth:`LedgerState.apply_block`, with the block's header time as the clock of every rule
(see :mod:`modelmine.ledger.rules`). Everything is a pure function of the genesis and the
blocks, so any node, or ``verify``, recomputes the same state root from the blocks alone.

State root. Every account and job has a leaf, SHA-256 of the canonical msgpack of its plain
form (``to_value``; a job's without its spec, to which the job id already commits). The root
is SHA-256 of the canonical msgpack of the map::

    {"version": 1, "network": genesis network id, "height", "time_ms", "granted",
     "fee_due": [job ids completed in the last block, in order],
     "accounts": SHA-256(leaf || leaf ... sorted by account id), "account_count",
     "jobs": SHA-256(leaf || leaf ... sorted by job id), "job_count"}

Leaves are cached and recomputed only for entries a block changed, so a block costs
O(changes) hashing plus one O(state) pass of concatenation.

Validators' fees. The commit a node decides with is its own collection of precommits, and
other nodes may hold different ones; paying by it would let replicas diverge. So the fee of a
job completed in block h is paid when block h+1 is applied, to the signers of block h+1's
``last_commit`` (the canonical commit of block h, agreed on as part of block h+1). Until then
it stays locked in the job.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from modelmine import wire
from modelmine.consensus.types import Block, Commit
from modelmine.consensus.validators import ValidatorSet
from modelmine.genesis import Genesis
from modelmine.ledger import rules
from modelmine.ledger.entries import (
    Account,
    Contribution,
    Job,
    JobStatus,
    LedgerStats,
    NodeEarnings,
    Shares,
)
from modelmine.ledger.records import Record, RecordError, parse_record_with_id, short

STATE_VERSION: Final = 1
PENDING_HORIZON_MS: Final = 300_000  # check_record judges time rules this far past the last block
PARSE_CACHE_SIZE: Final = 4096
ACCURACY_METRICS: Final = ("val_accuracy", "accuracy")


class LedgerError(ValueError):
    """A block that cannot be applied to this state; the text says why."""


@dataclass(frozen=True)
class StateChanges:
    """What changed since the state was last saved, for the store to write in one go."""

    height: int
    time_ms: int
    granted: int
    fee_due: tuple[bytes, ...]
    root: bytes
    accounts: tuple[Account, ...]
    jobs: tuple[Job, ...]


class LedgerState:
    """Accounts and jobs after the last applied block. Implements ``Application``."""

    def __init__(self, genesis: Genesis, *, parse_cache: int = PARSE_CACHE_SIZE) -> None:
        """``parse_cache``: how many parsed records to remember (0: none, for a state that
        sees every record once, as ``verify`` does)."""
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.validators = ValidatorSet.from_genesis(genesis)
        self._network_id = genesis.network_id
        self._height = 0
        self._time_ms = 0
        self._granted = 0
        self._fee_due: tuple[bytes, ...] = ()
        self._accounts: dict[bytes, Account] = {}
        self._jobs: dict[bytes, Job] = {}
        self._account_leaves = _Leaves()
        self._job_leaves = _Leaves()
        self._unsaved_accounts: set[bytes] = set()
        self._unsaved_jobs: set[bytes] = set()
        self._parsed: OrderedDict[bytes, Record | str] = OrderedDict()
        self._parse_cache = parse_cache
        self._root = self._compute_root()

    @classmethod
    def restore(
        cls,
        genesis: Genesis,
        *,
        height: int,
        time_ms: int,
        granted: int,
        fee_due: Iterable[bytes],
        accounts: Iterable[Account],
        jobs: Iterable[Job],
    ) -> LedgerState:
        """A state from its saved parts (see :meth:`unsaved`); nothing counts as unsaved."""
        state = cls(genesis)
        state._height, state._time_ms, state._granted = height, time_ms, granted
        state._fee_due = tuple(fee_due)
        for acc in accounts:
            state._accounts[acc.id] = acc
        for job in jobs:
            state._jobs[job.id] = job
        state._account_leaves.update({k: _leaf(a) for k, a in state._accounts.items()})
        state._job_leaves.update({k: _leaf(j) for k, j in state._jobs.items()})
        state._root = state._compute_root()
        return state

    @property
    def height(self) -> int:
        """Height of the last applied block (0: the genesis state)."""
        return self._height

    @property
    def time_ms(self) -> int:
        """Header time of the last applied block (0 before the first)."""
        return self._time_ms

    @property
    def granted(self) -> int:
        """Credits ever created by registration grants: the total supply."""
        return self._granted

    @property
    def fee_due(self) -> tuple[bytes, ...]:
        """Jobs completed in the last block, whose validators' fee the next block pays."""
        return self._fee_due

    # ---- the Application protocol ----

    def state_root(self) -> bytes:
        return self._root

    def check_record(self, record: bytes) -> str | None:
        """Valid now, or within PENDING_HORIZON_MS of the last block's time (a failover claim
        that becomes possible soon may wait in the pool)."""
        scratch = self._scratch(self.height + 1, self.time_ms + PENDING_HORIZON_MS)
        return self._try(scratch, record)

    def select_records(
        self, pending: Sequence[bytes], max_records: int, *, block_time_ms: int | None = None
    ) -> list[bytes]:
        """The records of ``pending`` that apply one after another, in order, at most
        ``max_records``. Judged at ``block_time_ms``, by default the least time the next
        block can have (time rules are monotone, so the block will validate)."""
        time_ms = self.time_ms + 1 if block_time_ms is None else block_time_ms
        scratch = self._scratch(self.height + 1, time_ms)
        chosen: list[bytes] = []
        for record in pending:
            if len(chosen) >= max_records:
                break
            if self._try(scratch, record) is None:
                chosen.append(record)
        return chosen

    def validate_block_records(self, records: Sequence[bytes], block_time_ms: int) -> str | None:
        scratch = self._scratch(self.height + 1, block_time_ms)
        for i, record in enumerate(records):
            reason = self._try(scratch, record)
            if reason is not None:
                return f"record {i}: {reason}"
        return None

    def apply_block(self, block: Block, commit: Commit) -> bytes:
        """Apply a committed block and return the new state root; raises LedgerError.

        ``commit`` is checked to be for this block; fees are paid by ``block.last_commit``
        (see the module docstring), so the state never depends on which commit a node holds.
        """
        h = block.header
        if h.chain_id != self.chain_id:
            raise LedgerError(f"block is for chain {h.chain_id!r}, not {self.chain_id!r}")
        if h.height != self.height + 1:
            raise LedgerError(f"block {h.height} cannot follow the state at height {self.height}")
        if commit.height != h.height or commit.block_hash != block.hash:
            raise LedgerError(f"the commit given with block {h.height} is for another block")
        if h.state_root != self._root:
            raise LedgerError(
                f"block {h.height} was built on state {short(h.state_root)}, "
                f"but the state after block {self.height} is {short(self._root)}"
            )
        if self.height > 0 and h.time <= self.time_ms:
            raise LedgerError(f"block {h.height} time {h.time} ms is not after {self.time_ms} ms")
        scratch = self._scratch(h.height, h.time)
        for i, raw in enumerate(block.records):
            reason = self._try(scratch, raw)
            if reason is not None:
                raise LedgerError(f"block {h.height} record {i}: {reason}")
        if self.fee_due:
            rules.pay_fees(scratch, self.fee_due, self._fee_signers(block.last_commit))
        self._merge(scratch)
        self._height, self._time_ms = h.height, h.time
        self._granted += scratch.granted
        self._fee_due = tuple(scratch.completed)
        self._root = self._compute_root()
        return self._root

    # ---- queries ----

    def parse(self, raw: bytes) -> Record:
        """The verified record in ``raw``; raises RecordError. Results are cached."""
        parsed = self._parse(raw)
        if isinstance(parsed, str):
            raise RecordError(parsed)
        return parsed

    def account(self, key: bytes) -> Account | None:
        return self._accounts.get(key)

    def balance(self, key: bytes) -> int:
        acc = self._accounts.get(key)
        return 0 if acc is None else acc.balance

    def next_nonce(self, key: bytes) -> int:
        """The nonce the next record signed by ``key`` must carry."""
        acc = self._accounts.get(key)
        return 1 if acc is None else acc.nonce + 1

    def accounts(self) -> list[Account]:
        """Every account, registered or not, by id."""
        return [self._accounts[k] for k in self._account_leaves.by_id]

    def job(self, job_id: bytes) -> Job | None:
        return self._jobs.get(job_id)

    def jobs(self, status: JobStatus | None = None, *, submitter: bytes | None = None) -> list[Job]:
        """Jobs, newest first, optionally only of one status or one submitter."""
        found = [
            j
            for j in self._jobs.values()
            if (status is None or j.status is status)
            and (submitter is None or j.submitter == submitter)
        ]
        found.sort(key=lambda j: (-j.created_height, j.id))
        return found

    def contributions(self, job_id: bytes) -> list[Contribution]:
        job = self._jobs.get(job_id)
        return [] if job is None else job.contributions()

    def node_earnings(self) -> list[NodeEarnings]:
        """Every key that trained or validated for credits, highest total first."""
        jobs: dict[bytes, int] = {}
        samples: dict[bytes, int] = {}
        for job in self._jobs.values():
            for node, n in job.work:
                jobs[node] = jobs.get(node, 0) + 1
                samples[node] = samples.get(node, 0) + n
        out = [
            NodeEarnings(a.id, a.earned, a.fees, jobs.get(a.id, 0), samples.get(a.id, 0))
            for a in self._accounts.values()
            if a.earned or a.fees or a.id in jobs
        ]
        out.sort(key=lambda e: (-e.total, e.node_id))
        return out

    def stats(self) -> LedgerStats:
        counts = dict.fromkeys(JobStatus, 0)
        staked = 0
        accuracies: list[float] = []
        for job in self._jobs.values():
            counts[job.status] += 1
            if not job.status.ended:
                staked += job.locked
            elif job.status is JobStatus.COMPLETED:
                metrics = job.metrics_dict
                accuracy = next((metrics[k] for k in ACCURACY_METRICS if k in metrics), None)
                if accuracy is not None:
                    accuracies.append(accuracy)
        return LedgerStats(
            height=self.height,
            accounts=sum(1 for a in self._accounts.values() if a.registered),
            pending_jobs=counts[JobStatus.PENDING],
            running_jobs=counts[JobStatus.RUNNING],
            completed_jobs=counts[JobStatus.COMPLETED],
            failed_jobs=counts[JobStatus.FAILED],
            canceled_jobs=counts[JobStatus.CANCELED],
            credits_staked=staked,
            # fsum: the same value on every node, whatever order the jobs were loaded in.
            average_accuracy=math.fsum(accuracies) / len(accuracies) if accuracies else 0.0,
            total_supply=self.total_supply(),
        )

    def total_supply(self) -> int:
        """Credits in balances plus credits locked in jobs; always equal to ``granted``."""
        return sum(a.balance for a in self._accounts.values()) + sum(
            j.locked for j in self._jobs.values()
        )

    # ---- saving (used by the store) ----

    def unsaved(self) -> StateChanges:
        return StateChanges(
            height=self.height,
            time_ms=self.time_ms,
            granted=self.granted,
            fee_due=self.fee_due,
            root=self._root,
            accounts=tuple(self._accounts[k] for k in sorted(self._unsaved_accounts)),
            jobs=tuple(self._jobs[k] for k in sorted(self._unsaved_jobs)),
        )

    def mark_saved(self, changes: StateChanges) -> None:
        """Forget the unsaved marks of ``changes`` (entries changed later stay marked)."""
        for acc in changes.accounts:
            if self._accounts.get(acc.id) is acc:
                self._unsaved_accounts.discard(acc.id)
        for job in changes.jobs:
            if self._jobs.get(job.id) is job:
                self._unsaved_jobs.discard(job.id)

    # ---- internals ----

    def _scratch(self, height: int, time_ms: int) -> rules.Scratch:
        return rules.Scratch(
            self._accounts,
            self._jobs,
            height=height,
            time_ms=time_ms,
            grant=self.genesis.initial_grant,
        )

    def _try(self, scratch: rules.Scratch, raw: bytes) -> str | None:
        parsed = self._parse(raw)
        if isinstance(parsed, str):
            return parsed
        try:
            rules.execute(scratch, parsed)
        except rules.Rejected as exc:
            return f"{parsed.kind} from {short(parsed.signer)}: {exc}"
        return None

    def _parse(self, raw: bytes) -> Record | str:
        # Parsing and signature checks are pure functions of the bytes and the chain id, so
        # a record checked for the pool or a proposal is not verified again when applied.
        digest = hashlib.sha256(raw).digest() if isinstance(raw, bytes) else b""
        hit = self._parsed.get(digest)
        if hit is not None:
            self._parsed.move_to_end(digest)
            return hit
        result: Record | str
        try:
            result = parse_record_with_id(raw, self.chain_id, digest or None)
        except RecordError as exc:
            result = str(exc)
        if digest and self._parse_cache:
            self._parsed[digest] = result
            if len(self._parsed) > self._parse_cache:
                self._parsed.popitem(last=False)
        return result

    def _fee_signers(self, last_commit: Commit | None) -> Shares:
        signers = tuple(
            (v, self.validators.power_of(v))
            for v, _ in (last_commit.signatures if last_commit is not None else ())
            if self.validators.power_of(v) > 0
        )
        if signers:
            return signers
        # Only reachable without a verified last commit: share among all validators.
        return tuple((v.node_id, v.power) for v in self.validators)

    def _merge(self, scratch: rules.Scratch) -> None:
        account_leaves = {key: _account_leaf(acc) for key, acc in scratch.accounts.items()}
        job_leaves = {key: _leaf(job) for key, job in scratch.jobs.items()}
        self._accounts.update(scratch.accounts)
        self._account_leaves.update(account_leaves)
        self._unsaved_accounts.update(scratch.accounts)
        self._jobs.update(scratch.jobs)
        self._job_leaves.update(job_leaves)
        self._unsaved_jobs.update(scratch.jobs)

    def _compute_root(self) -> bytes:
        accounts = hashlib.sha256(self._account_leaves.joined())
        jobs = hashlib.sha256(self._job_leaves.joined())
        return wire.sha256(
            wire.encode(
                {
                    "version": STATE_VERSION,
                    "network": self._network_id,
                    "height": self.height,
                    "time_ms": self.time_ms,
                    "granted": self.granted,
                    "fee_due": list(self.fee_due),
                    "accounts": accounts.digest(),
                    "account_count": len(self._account_leaves),
                    "jobs": jobs.digest(),
                    "job_count": len(self._job_leaves),
                }
            )
        )


class _Leaves:
    """The leaves of one kind of entry by id, kept in id order (a dict keeps the order of
    insertion): the state root joins them as they stand, without a lookup per entry. A new
    leaf for a known id keeps its place; only a block that adds ids re-sorts (in C, and
    nearly in order already)."""

    def __init__(self) -> None:
        self.by_id: dict[bytes, bytes] = {}

    def __len__(self) -> int:
        return len(self.by_id)

    def update(self, leaves: dict[bytes, bytes]) -> None:
        by_id = self.by_id
        grows = not by_id.keys() >= leaves.keys()
        by_id.update(leaves)
        if grows:
            ids = sorted(by_id)
            self.by_id = dict(zip(ids, map(by_id.__getitem__, ids)))

    def joined(self) -> bytes:
        """Every leaf, in id order, concatenated."""
        return b"".join(self.by_id.values())


def _leaf(entry: Account | Job) -> bytes:
    """SHA-256 of the canonical msgpack of ``entry.to_value()``; a job's without its spec:
    the job id is the hash of the signed submission holding the spec, so it commits to the
    spec already, and leaving it out keeps a job's leaf cheap to recompute."""
    if type(entry) is Account:
        return _account_leaf(entry)
    if type(entry) is Job:
        return _job_leaf(entry)
    value = entry.to_value()
    if isinstance(entry, Job):
        del value["spec"]
    return wire.sha256(wire.encode(value))


# The leaves of the entries a block changed are recomputed with every block: the two below
# write ``to_value()`` directly in canonical form (keys in sorted order, pairs as arrays) and
# pack it as it stands. Tests hold them to ``wire.encode(to_value())``.


def _account_leaf(acc: Account) -> bytes:
    return hashlib.sha256(
        wire.encode_canonical_form(
            {
                "balance": acc.balance,
                "earned": acc.earned,
                "fees": acc.fees,
                "id": acc.id,
                "name": acc.name,
                "nonce": acc.nonce,
                "registered_height": acc.registered_height,
            }
        )
    ).digest()


def _job_leaf(job: Job) -> bytes:
    metrics = dict(job.metrics)
    return hashlib.sha256(
        wire.encode_canonical_form(
            {
                "checkpoint_sha256": job.checkpoint_sha256,
                "checkpoints": job.checkpoints,
                "claims": [[c.node, c.time_ms, c.height] for c in job.claims],
                "created_height": job.created_height,
                "created_ms": job.created_ms,
                "ended_height": job.ended_height,
                "ended_ms": job.ended_ms,
                "error": job.error,
                "fees": job.fees,
                "id": job.id,
                "last_activity_ms": job.last_activity_ms,
                "locked": job.locked,
                "metrics": {name: metrics[name] for name in sorted(metrics)},
                "model_sha256": job.model_sha256,
                "paid": job.paid,
                "planned_samples": job.planned_samples,
                "samples": job.samples,
                "stake": job.stake,
                "status": str(job.status),
                "steps": job.steps,
                "submitted_ms": job.submitted_ms,
                "submitter": job.submitter,
                "work": job.work,
                "worker": job.worker,
            }
        )
    ).digest()
