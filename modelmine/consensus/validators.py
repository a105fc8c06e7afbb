"""The validator set: voting power, quorum thresholds and weighted proposer rotation.

Proposer rotation is CometBFT's proposer-priority algorithm (smooth weighted round robin)
for a fixed set: every step each validator's priority grows by its power, the highest
priority proposes (ties go to the lowest node id) and loses the total power. Starting from
zero priorities, every window of ``total`` steps (powers divided by their gcd) names each
validator exactly ``power`` times, spread evenly. Height ``h`` round ``r`` uses step
``h - 1 + r`` (0-based), so a failed round hands the turn to the next proposer in line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from functools import reduce
from typing import Final

from modelmine.genesis import Genesis, Validator

# How far back from the last answer a proposer query may reach before it is recomputed
# from the start of the period: round r of height h and round 0 of height h+1 are close.
_LOOKBACK: Final = 64


class ValidatorSet:
    """An immutable set of validators in genesis order. Node ids are unique 32-byte keys."""

    def __init__(self, validators: Iterable[Validator]) -> None:
        members = tuple(validators)
        if not members:
            raise ValueError("a validator set needs at least one validator")
        ids = {v.node_id for v in members}
        if len(ids) != len(members):
            raise ValueError("duplicate validator node id")
        for v in members:
            if len(v.node_id) != 32 or v.power < 1:
                raise ValueError(f"validator {v.node_id.hex()[:8]}: bad node id or power")
        self._members = members
        self._power = {v.node_id: v.power for v in members}
        self._total = sum(v.power for v in members)
        # Rotation order: the tie-break is the lowest node id, so sort by it once.
        ordered = sorted(members, key=lambda v: v.node_id)
        self._ordered_ids = tuple(v.node_id for v in ordered)
        divisor = reduce(math.gcd, (v.power for v in ordered))
        self._weights = tuple(v.power // divisor for v in ordered)
        self._period = sum(self._weights)
        self._anchor_step = 0
        self._anchor = (0,) * len(ordered)

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> ValidatorSet:
        return cls(genesis.validators)

    def __iter__(self) -> Iterator[Validator]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._power

    @property
    def total_power(self) -> int:
        return self._total

    @property
    def quorum(self) -> int:
        """The least power that is more than 2/3 of the total."""
        return self._total * 2 // 3 + 1

    def power_of(self, node_id: bytes) -> int:
        """Voting power of ``node_id``; 0 for a node that is not a validator."""
        return self._power.get(node_id, 0)

    def has_quorum(self, power: int) -> bool:
        """More than 2/3 of the total power."""
        return 3 * power > 2 * self._total

    def has_one_third(self, power: int) -> bool:
        """More than 1/3 of the total power: at least one honest validator is among them."""
        return 3 * power > self._total

    def proposer(self, height: int, round: int) -> bytes:
        """Node id of the proposer of ``round`` at ``height`` (height >= 1, round >= 0)."""
        if height < 1 or round < 0:
            raise ValueError(f"no proposer for height {height} round {round}")
        return self._ordered_ids[self._chosen((height - 1 + round) % self._period)]

    def _chosen(self, step: int) -> int:
        """Index (in node id order) of the validator chosen at 0-based ``step``."""
        if step < self._anchor_step:
            self._anchor_step, self._anchor = 0, (0,) * len(self._weights)
        priorities = list(self._anchor)
        keep = max(self._anchor_step, step - _LOOKBACK)
        chosen = 0
        for current in range(self._anchor_step, step + 1):
            if current == keep:
                self._anchor_step, self._anchor = current, tuple(priorities)
            chosen = self._advance(priorities)
        return chosen

    def _advance(self, priorities: list[int]) -> int:
        best = 0
        for i, weight in enumerate(self._weights):
            priorities[i] += weight
            if priorities[i] > priorities[best]:
                best = i
        priorities[best] -= self._period
        return best
