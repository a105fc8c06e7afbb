"""What a validator has signed, kept on disk so that a restart can never make it equivocate.

The rule (CometBFT's double-sign guard): a validator signs a message for
``(height, round, step)`` only if that triple is later than the last one it signed, or equal
to it with the same block hash (re-signing identical content gives identical bytes). The core
consults :meth:`SignState.refusal` before every signature and emits the next state in a
``PersistSignState`` action that the driver must make durable before sending what follows.

The state also carries the validator's lock, which Tendermint sets together with a precommit:
the locked block and the prevotes that justified it. A restarted validator that forgot its lock
could later prevote against it, which is as unsafe as signing twice; one that remembered only
the lock's hash could neither propose the block nor prove the lock to others, and the height
could stall.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any, Final

from modelmine import wire
from modelmine.consensus.types import MAX_COMMIT_SIGNATURES, Block, Vote, VoteType

MAX_HEIGHT: Final = 2**62
MAX_ROUND: Final = 2**31


class SignStep(enum.IntEnum):
    """Order of the signed steps within one round."""

    NONE = 0
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3


@dataclass(frozen=True)
class Lock:
    """A block locked at ``round``, with the prevotes (validator, signature) for it that round."""

    round: int
    block: Block
    proof: tuple[tuple[bytes, bytes], ...]

    def prevotes(self) -> list[Vote]:
        h = self.block.height
        return [
            Vote(VoteType.PREVOTE, h, self.round, self.block.hash, validator, signature)
            for validator, signature in self.proof
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "block": self.block.to_dict(),
            "proof": [[v, s] for v, s in self.proof],
        }

    @classmethod
    def from_dict(cls, value: Any) -> Lock:
        what = "lock"
        msg = wire.expect_map(value, what)
        raw = wire.field(msg, "proof", list, what)
        if len(raw) > MAX_COMMIT_SIGNATURES:
            raise wire.WireError("lock.proof: too many prevotes")
        proof: list[tuple[bytes, bytes]] = []
        for pair in raw:
            if not (
                isinstance(pair, list)
                and len(pair) == 2
                and all(isinstance(x, bytes) for x in pair)
                and (len(pair[0]), len(pair[1])) == (32, 64)
            ):
                raise wire.WireError("lock.proof: expected [32-byte id, 64-byte signature] pairs")
            proof.append((pair[0], pair[1]))
        return cls(
            round=wire.int_field(msg, "round", 0, MAX_ROUND, what),
            block=Block.from_dict(wire.field(msg, "block", dict, what)),
            proof=tuple(proof),
        )


@dataclass(frozen=True)
class SignState:
    height: int = 0
    round: int = 0
    step: SignStep = SignStep.NONE
    block_hash: bytes | None = None
    lock: Lock | None = None  # the lock at ``height``, if any

    def refusal(
        self, height: int, round: int, step: SignStep, block_hash: bytes | None
    ) -> str | None:
        """Why signing ``block_hash`` at (height, round, step) would be unsafe, or None."""
        mine = (self.height, self.round, self.step)
        asked = (height, round, step)
        if asked > mine:
            return None
        if asked == mine and block_hash == self.block_hash:
            return None
        if asked == mine:
            return (
                f"already signed {step.name.lower()} for {_short(self.block_hash)} at "
                f"height {height} round {round}; refusing {_short(block_hash)}"
            )
        return (
            f"already signed height {self.height} round {self.round} "
            f"{self.step.name.lower()}; refusing an older {step.name.lower()} "
            f"at height {height} round {round}"
        )

    def signed(
        self, height: int, round: int, step: SignStep, block_hash: bytes | None
    ) -> SignState:
        """The state after signing; a new height drops the lock of the old one."""
        if height != self.height:
            return SignState(height, round, step, block_hash)
        return replace(self, round=round, step=step, block_hash=block_hash)

    def locked(self, lock: Lock) -> SignState:
        return replace(self, lock=lock)

    def to_wire(self) -> bytes:
        return wire.encode(
            {
                "height": self.height,
                "round": self.round,
                "step": int(self.step),
                "block_hash": self.block_hash,
                "lock": None if self.lock is None else self.lock.to_dict(),
            }
        )

    @classmethod
    def from_wire(cls, data: bytes) -> SignState:
        what = "sign state"
        msg = wire.expect_map(wire.decode(data), what)
        raw_lock = wire.field(msg, "lock", (dict, type(None)), what)
        block_hash = None
        if msg.get("block_hash", b"") is not None:
            block_hash = wire.bytes_field(msg, "block_hash", 32, what)
        return cls(
            height=wire.int_field(msg, "height", 0, MAX_HEIGHT, what),
            round=wire.int_field(msg, "round", 0, MAX_ROUND, what),
            step=SignStep(wire.int_field(msg, "step", 0, 3, what)),
            block_hash=block_hash,
            lock=None if raw_lock is None else Lock.from_dict(raw_lock),
        )


def _short(block_hash: bytes | None) -> str:
    return "nil" if block_hash is None else block_hash.hex()[:8]
