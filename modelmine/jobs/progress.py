"""Signed training progress, sent by the worker of a job to the nodes that follow it.

Each job has its own followed topic, ``progress/<first 128 bits of the job id>``: a node that
wants a job's live progress (its submitter's node, a node whose control clients watch it)
follows that topic at the worker, and the worker sends each report straight to its followers.
Nobody else receives it, so the cost of progress does not grow with the size of the network.

Only the node that the ledger names as the job's worker may speak for it: a progress statement
from any other node is forged and costs the sending peer its score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from modelmine import wire
from modelmine.signing import Signed

PROGRESS_FAMILY: Final = "progress"
PROGRESS_DOMAIN: Final = "progress"


def progress_topic(job_id: bytes) -> str:
    """The followed topic of one job's progress (128 bits of the id keep it under 64 chars)."""
    return f"{PROGRESS_FAMILY}/{job_id[:16].hex()}"


@dataclass(frozen=True)
class ProgressReport:
    job_id: bytes
    worker: bytes
    step: int
    total_steps: int
    epoch: int
    train_loss: float | None
    val_loss: float | None
    val_accuracy: float | None
    samples_per_second: float
    time: float

    def payload(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "step": self.step,
            "total_steps": self.total_steps,
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_accuracy": self.val_accuracy,
            "samples_per_second": self.samples_per_second,
            "time": self.time,
        }

    def to_json(self) -> dict[str, Any]:
        out = self.payload()
        out["job_id"] = self.job_id.hex()
        out["worker"] = self.worker.hex()
        out["progress"] = round(100 * self.step / max(1, self.total_steps), 1)
        return out

    @classmethod
    def from_statement(cls, statement: Signed) -> ProgressReport:
        what = "progress"
        if statement.domain != PROGRESS_DOMAIN:
            raise wire.WireError(f"expected a progress statement, got {statement.domain!r}")
        p = statement.payload()
        total = wire.int_field(p, "total_steps", 1, 10**12, what)
        return cls(
            job_id=wire.bytes_field(p, "job_id", 32, what),
            worker=statement.signer,
            step=wire.int_field(p, "step", 0, total, what),
            total_steps=total,
            epoch=wire.int_field(p, "epoch", 0, 10**9, what),
            train_loss=_number(p, "train_loss"),
            val_loss=_number(p, "val_loss"),
            val_accuracy=_number(p, "val_accuracy"),
            samples_per_second=_number(p, "samples_per_second") or 0.0,
            time=float(wire.field(p, "time", (int, float), what)),
        )


def finite(value: float | None) -> float | None:
    """JSON and msgpack consumers get None instead of NaN or infinity."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _number(p: dict[str, Any], name: str) -> float | None:
    value = p.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise wire.WireError(f"progress.{name}: expected a finite number or nil")
    return float(value)
