"""How credits are divided: integer shares by weight, and the planned work of a job.

Everything here is integer arithmetic on values every node agrees on, so every node pays
exactly the same credits to exactly the same accounts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from modelmine.trainer import JobSpec

REWARD_PERCENT: Final = 80  # of the stake, to the nodes that trained; the rest to validators

# Example counts of the built-in datasets (the ones scikit-learn ships); a unit test checks
# them against the loaded data.
BUNDLED_ROWS: Final = {"digits": 1797, "iris": 150, "wine": 178, "breast_cancer": 569}


def reward_pool(stake: int) -> int:
    """The workers' share of a stake: floor(80%); the validators get the rest."""
    return stake * REWARD_PERCENT // 100


def split(total: int, weights: Iterable[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
    """Divide ``total`` credits among ids in proportion to positive integer weights.

    Largest-remainder rule: each id first gets floor(total * w / W); the credits left over
    (fewer than the number of ids) go one each to the ids with the largest remainders
    ``total * w mod W``, ties to the smaller id. The result is sorted by id, holds every id
    with a positive weight, and sums to ``total`` exactly (0 if there is no positive weight).
    """
    parts = sorted((key, w) for key, w in weights if w > 0)
    whole = sum(w for _, w in parts)
    if whole == 0 or total <= 0:
        return [(key, 0) for key, _ in parts]
    shares = {key: total * w // whole for key, w in parts}
    left = total - sum(shares.values())
    by_remainder = sorted(parts, key=lambda kw: (-(total * kw[1] % whole), kw[0]))
    for key, _ in by_remainder[:left]:
        shares[key] += 1
    return [(key, shares[key]) for key, _ in parts]


def planned_samples(spec: JobSpec) -> int:
    """Samples a complete run processes (epochs x training examples); 0 if not known.

    Known for built-in and synthetic datasets, whose size follows from the spec; a file
    dataset's size is known only to whoever loads the file, so it is 0 (unknown). The
    training part is what the trainer's split leaves: n - ceil(validation_split * n).
    """
    dataset = spec.dataset
    if dataset.name in BUNDLED_ROWS:
        n = BUNDLED_ROWS[dataset.name]
    elif dataset.samples > 0:
        n = dataset.samples
    else:
        return 0
    train = n - math.ceil(dataset.validation_split * n)
    return max(train, 0) * spec.hyperparameters.epochs


def cancel_earnings(stake: int, samples_done: int, planned: int) -> int:
    """What the workers of a canceled job earn: floor(80% x stake x done / planned).

    Capped at the reward of a completed job; 0 when the planned total is unknown (0), in
    which case the submitter gets the whole stake back.
    """
    if planned <= 0 or samples_done <= 0:
        return 0
    earned = stake * REWARD_PERCENT * samples_done // (100 * planned)
    return min(earned, reward_pool(stake))
