"""Checkpoints: everything a run needs to continue exactly where it stopped, as NPZ bytes.

A checkpoint holds the parameters, the optimizer's buffers and step count, the dropout
generator's state and the position (step, samples seen, seconds spent). The shuffling order is
not stored: it is a function of the seed and the epoch. The spec and the dataset fingerprint
are stored too, so a checkpoint cannot silently be resumed against different work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._npz import NpzError, read_npz, write_npz
from ._spec import MAX_PARAMETERS

FORMAT = "modelmine-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """Checkpoint bytes that are corrupt, or that belong to another spec or dataset."""


@dataclass(frozen=True, eq=False)
class Checkpoint:
    params: dict[str, NDArray[Any]]
    optimizer: dict[str, NDArray[Any]]
    optimizer_t: int
    rng_state: dict[str, Any]
    step: int
    samples_seen: int
    seconds: float
    spec: dict[str, Any]
    dataset_fingerprint: str

    def to_bytes(self) -> bytes:
        arrays = {f"param/{k}": v for k, v in self.params.items()}
        arrays |= {f"optim/{k}": v for k, v in self.optimizer.items()}
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "optimizer_t": self.optimizer_t,
            "rng_state": self.rng_state,
            "step": self.step,
            "samples_seen": self.samples_seen,
            "seconds": self.seconds,
            "spec": self.spec,
            "dataset_fingerprint": self.dataset_fingerprint,
        }
        return write_npz(arrays, meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """Parse checkpoint bytes; raises `CheckpointError` on anything malformed."""
        try:
            arrays, meta = read_npz(data, max_elements=4 * MAX_PARAMETERS, what="checkpoint")
        except NpzError as exc:
            raise CheckpointError(str(exc)) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError("checkpoint: not a ModelMine checkpoint")
        if meta.get("version") != VERSION:
            raise CheckpointError(f"checkpoint: unsupported version {meta.get('version')!r}")
        expected = {
            "optimizer_t": int,
            "rng_state": dict,
            "step": int,
            "samples_seen": int,
            "seconds": float,
            "spec": dict,
            "dataset_fingerprint": str,
        }
        for key, kind in expected.items():
            value = meta.get(key)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = meta[key] = float(value)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise CheckpointError(
                    f"checkpoint: field {key!r} is missing or not a {kind.__name__}"
                )
        if not math.isfinite(meta["seconds"]) or meta["seconds"] < 0:
            raise CheckpointError("checkpoint: seconds must be a finite number >= 0")
        if meta["samples_seen"] < 0 or meta["step"] < 0 or meta["optimizer_t"] != meta["step"]:
            raise CheckpointError("checkpoint: inconsistent position (step, samples, optimizer)")
        params = {k.removeprefix("param/"): v for k, v in arrays.items() if k.startswith("param/")}
        optimizer = {
            k.removeprefix("optim/"): v for k, v in arrays.items() if k.startswith("optim/")
        }
        if len(params) + len(optimizer) != len(arrays):
            raise CheckpointError("checkpoint: unexpected arrays")
        return cls(
            params=params,
            optimizer=optimizer,
            optimizer_t=meta["optimizer_t"],
            rng_state=meta["rng_state"],
            step=meta["step"],
            samples_seen=meta["samples_seen"],
            seconds=meta["seconds"],
            spec=meta["spec"],
            dataset_fingerprint=meta["dataset_fingerprint"],
        )


def restore_rng(rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Set `rng` to a saved state; raises `CheckpointError` if the state does not fit it."""
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint: bad random generator state: {exc}") from None
