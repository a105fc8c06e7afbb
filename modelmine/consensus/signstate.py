"""What a validator has signed, kept on disk so that a restart can never make it equivocate.

The rule (CometBFT's double-sign guard): a validator signs a message for
``(height, round, step)`` only if that triple is later than the last one it signed, or equal
to it with the same block hash (re-signing identical content gives identical bytes). The core
consults :meth:`SignState.refusal` before every signature and emits the next state in a
``PersistSignState`` action that the driver must make durable before sending what follows.

The state also carries the validator's lock (round and block hash), which Tendermint sets
together with a precommit: a restarted validator that forgot its lock could prevote against
it later, which is as unsafe as signing twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Final

from modelmine import wire

MAX_HEIGHT: Final = 2**62
MAX_ROUND: Final = 2**31


class SignStep(enum.IntEnum):
    """Order of the signed steps within one round."""

    NONE = 0
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3


@dataclass(frozen=True)
class SignState:
    height: int = 0
    round: int = 0
    step: SignStep = SignStep.NONE
    block_hash: bytes | None = None
    locked_round: int = -1
    locked_hash: bytes | None = None

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

    def locked(self, round: int, block_hash: bytes) -> SignState:
        return replace(self, locked_round=round, locked_hash=block_hash)

    def to_wire(self) -> bytes:
        return wire.encode(
            {
                "height": self.height,
                "round": self.round,
                "step": int(self.step),
                "block_hash": self.block_hash,
                "locked_round": self.locked_round,
                "locked_hash": self.locked_hash,
            }
        )

    @classmethod
    def from_wire(cls, data: bytes) -> SignState:
        what = "sign state"
        msg = wire.expect_map(wire.decode(data), what)
        return cls(
            height=wire.int_field(msg, "height", 0, MAX_HEIGHT, what),
            round=wire.int_field(msg, "round", 0, MAX_ROUND, what),
            step=SignStep(wire.int_field(msg, "step", 0, 3, what)),
            block_hash=_optional_hash(msg, "block_hash", what),
            locked_round=wire.int_field(msg, "locked_round", -1, MAX_ROUND, what),
            locked_hash=_optional_hash(msg, "locked_hash", what),
        )


def _optional_hash(msg: dict[str, wire.Value], name: str, what: str) -> bytes | None:
    if msg.get(name, b"") is None:
        return None
    return wire.bytes_field(msg, name, 32, what)


def _short(block_hash: bytes | None) -> str:
    return "nil" if block_hash is None else block_hash.hex()[:8]
