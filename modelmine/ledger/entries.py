"""What the ledger holds: accounts and jobs, as frozen values with one canonical plain form.

``to_value`` gives the plain form (str-keyed maps, lists, ints, bytes) that is hashed into
the state root and stored in SQLite; ``from_value`` reads it back strictly, raising
:class:`~modelmine.wire.WireError`. Both are exact inverses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from modelmine import wire

_BIG = 2**63 - 1
_KEY = 32


class JobStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def ended(self) -> bool:
        return self not in (JobStatus.PENDING, JobStatus.RUNNING)


@dataclass(frozen=True)
class Account:
    """Credits and record count of one key. Any key may hold credits (nodes earn without
    registering); only registered accounts may send credits or submit jobs."""

    id: bytes
    balance: int = 0
    nonce: int = 0  # of the last record this key signed; the next must be nonce + 1
    name: str | None = None  # set by registration
    registered_height: int = 0
    earned: int = 0  # credits received for training
    fees: int = 0  # credits received as a validator

    @property
    def registered(self) -> bool:
        return self.name is not None

    # Direct constructors: these run for every record, and dataclasses.replace is slow.

    def with_nonce(self, nonce: int) -> Account:
        return Account(
            self.id, self.balance, nonce, self.name, self.registered_height, self.earned, self.fees
        )

    def with_balance(self, balance: int) -> Account:
        return Account(
            self.id, balance, self.nonce, self.name, self.registered_height, self.earned, self.fees
        )

    def credited(self, amount: int, *, earned: int = 0, fees: int = 0) -> Account:
        return Account(
            self.id,
            self.balance + amount,
            self.nonce,
            self.name,
            self.registered_height,
            self.earned + earned,
            self.fees + fees,
        )

    def to_value(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "balance": self.balance,
            "nonce": self.nonce,
            "name": self.name,
            "registered_height": self.registered_height,
            "earned": self.earned,
            "fees": self.fees,
        }

    @classmethod
    def from_value(cls, value: Any) -> Account:
        what = "account"
        m = wire.expect_map(value, what)
        name = m.get("name")
        if name is not None and not isinstance(name, str):
            raise wire.WireError(f"{what}.name: expected str or nil")
        return cls(
            id=wire.bytes_field(m, "id", _KEY, what),
            balance=wire.int_field(m, "balance", 0, _BIG, what),
            nonce=wire.int_field(m, "nonce", 0, _BIG, what),
            name=name,
            registered_height=wire.int_field(m, "registered_height", 0, _BIG, what),
            earned=wire.int_field(m, "earned", 0, _BIG, what),
            fees=wire.int_field(m, "fees", 0, _BIG, what),
        )


@dataclass(frozen=True)
class Claim:
    """A node took a job (first claim, or failover) in the block at ``height``."""

    node: bytes
    time_ms: int
    height: int


@dataclass(frozen=True)
class Contribution:
    """Work a node did for a job and the credits it was paid for it (0 until paid)."""

    job_id: bytes
    node_id: bytes
    samples: int
    credits: int


Shares = tuple[tuple[bytes, int], ...]  # (id, amount), sorted by id


@dataclass(frozen=True)
class Job:
    id: bytes
    submitter: bytes
    spec: dict[str, Any]  # as submitted; do not mutate
    stake: int
    locked: int  # credits still held: the stake while active, the validators' fee after
    # completion until the next block pays it, 0 once settled
    status: JobStatus
    planned_samples: int  # epochs x training examples, 0 if unknown (file datasets)
    submitted_ms: int  # the submitter's clock
    created_height: int
    created_ms: int  # block time
    worker: bytes | None = None
    claims: tuple[Claim, ...] = ()
    last_activity_ms: int = 0  # block time of the last claim or checkpoint
    samples: int = 0  # total samples processed, as last reported
    steps: int = 0
    checkpoints: int = 0
    checkpoint_sha256: bytes | None = None
    work: Shares = ()  # samples per node
    paid: Shares = ()  # training credits per node
    fees: Shares = ()  # fee credits per validator
    metrics: tuple[tuple[str, float], ...] = ()
    model_sha256: bytes | None = None
    error: str = ""
    ended_height: int = 0
    ended_ms: int = 0

    @property
    def title(self) -> str:
        title = self.spec.get("title", "")
        return title if isinstance(title, str) else ""

    @property
    def metrics_dict(self) -> dict[str, float]:
        return dict(self.metrics)

    def contributions(self) -> list[Contribution]:
        paid = dict(self.paid)
        return [Contribution(self.id, node, n, paid.get(node, 0)) for node, n in self.work]

    def to_value(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "submitter": self.submitter,
            "spec": self.spec,
            "stake": self.stake,
            "locked": self.locked,
            "status": str(self.status),
            "planned_samples": self.planned_samples,
            "submitted_ms": self.submitted_ms,
            "created_height": self.created_height,
            "created_ms": self.created_ms,
            "worker": self.worker,
            "claims": [[c.node, c.time_ms, c.height] for c in self.claims],
            "last_activity_ms": self.last_activity_ms,
            "samples": self.samples,
            "steps": self.steps,
            "checkpoints": self.checkpoints,
            "checkpoint_sha256": self.checkpoint_sha256,
            "work": [list(pair) for pair in self.work],
            "paid": [list(pair) for pair in self.paid],
            "fees": [list(pair) for pair in self.fees],
            "metrics": dict(self.metrics),
            "model_sha256": self.model_sha256,
            "error": self.error,
            "ended_height": self.ended_height,
            "ended_ms": self.ended_ms,
        }

    @classmethod
    def from_value(cls, value: Any) -> Job:
        what = "job"
        m = wire.expect_map(value, what)
        status = wire.str_field(m, "status", 16, what)
        if status not in JobStatus.__members__:
            raise wire.WireError(f"{what}.status: unknown status {status!r}")
        metrics = wire.field(m, "metrics", dict, what)
        if not all(isinstance(v, float) for v in metrics.values()):
            raise wire.WireError(f"{what}.metrics: values must be floats")
        claims = []
        for item in wire.field(m, "claims", list, what):
            if not (isinstance(item, list) and len(item) == 3):
                raise wire.WireError(f"{what}.claims: expected [node, time_ms, height]")
            c = {"node": item[0], "time_ms": item[1], "height": item[2]}
            claims.append(
                Claim(
                    wire.bytes_field(c, "node", _KEY, what),
                    wire.int_field(c, "time_ms", 0, _BIG, what),
                    wire.int_field(c, "height", 0, _BIG, what),
                )
            )
        return cls(
            id=wire.bytes_field(m, "id", 32, what),
            submitter=wire.bytes_field(m, "submitter", _KEY, what),
            spec=wire.field(m, "spec", dict, what),
            stake=wire.int_field(m, "stake", 0, _BIG, what),
            locked=wire.int_field(m, "locked", 0, _BIG, what),
            status=JobStatus(status),
            planned_samples=wire.int_field(m, "planned_samples", 0, _BIG, what),
            submitted_ms=wire.int_field(m, "submitted_ms", 0, _BIG, what),
            created_height=wire.int_field(m, "created_height", 0, _BIG, what),
            created_ms=wire.int_field(m, "created_ms", 0, _BIG, what),
            worker=_optional(m, "worker", what),
            claims=tuple(claims),
            last_activity_ms=wire.int_field(m, "last_activity_ms", 0, _BIG, what),
            samples=wire.int_field(m, "samples", 0, _BIG, what),
            steps=wire.int_field(m, "steps", 0, _BIG, what),
            checkpoints=wire.int_field(m, "checkpoints", 0, _BIG, what),
            checkpoint_sha256=_optional(m, "checkpoint_sha256", what),
            work=_shares(m, "work", what),
            paid=_shares(m, "paid", what),
            fees=_shares(m, "fees", what),
            metrics=tuple(sorted(metrics.items())),
            model_sha256=_optional(m, "model_sha256", what),
            error=wire.str_field(m, "error", 1024, what),
            ended_height=wire.int_field(m, "ended_height", 0, _BIG, what),
            ended_ms=wire.int_field(m, "ended_ms", 0, _BIG, what),
        )


def _optional(m: dict[str, Any], name: str, what: str) -> bytes | None:
    if name in m and m[name] is None:
        return None
    return wire.bytes_field(m, name, 32, what)


def _shares(m: dict[str, Any], name: str, what: str) -> Shares:
    out: list[tuple[bytes, int]] = []
    for item in wire.field(m, name, list, what):
        if not (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], bytes)
            and len(item[0]) == _KEY
            and isinstance(item[1], int)
            and not isinstance(item[1], bool)
            and item[1] >= 0
        ):
            raise wire.WireError(f"{what}.{name}: expected [32-byte id, amount] pairs")
        out.append((item[0], item[1]))
    return tuple(out)


@dataclass(frozen=True)
class NodeEarnings:
    node_id: bytes
    credits: int  # for training
    fees: int  # as a validator
    jobs: int  # jobs it did work for
    samples: int  # samples it processed, over all jobs

    @property
    def total(self) -> int:
        return self.credits + self.fees


@dataclass(frozen=True)
class LedgerStats:
    height: int
    accounts: int  # registered
    pending_jobs: int
    running_jobs: int
    completed_jobs: int
    failed_jobs: int
    canceled_jobs: int
    credits_staked: int  # locked in pending and running jobs
    average_accuracy: float  # mean validation accuracy (0..1) of completed jobs, 0 if none
    total_supply: int

    @property
    def active_jobs(self) -> int:
        return self.pending_jobs + self.running_jobs
