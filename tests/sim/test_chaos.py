"""Small networks under every fault at once, one seed per run.

A run that breaks an invariant raises InvariantViolation naming the seed and the command that
replays it (``python -m modelmine.sim chaos --seed N --verbose``). ``MODELMINE_SIM_SEEDS`` runs
more seeds (``python -m modelmine.sim campaign`` runs 200).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from modelmine.consensus.types import Block, Commit, Vote, VoteType
from modelmine.sim.scenarios import chaos_run
from modelmine.sim.world import InvariantViolation, World

SEEDS = int(os.environ.get("MODELMINE_SIM_SEEDS", "100"))


@pytest.mark.parametrize("seed", range(SEEDS))
def test_every_invariant_holds_and_the_network_settles(seed: int) -> None:
    chaos_run(seed)  # raises InvariantViolation, naming the seed, on any breach


def test_the_chaos_really_happens() -> None:
    reports = [chaos_run(seed) for seed in range(8)]
    counters = [r.counters for r in reports]
    assert all(c["lost"] and c["duplicated"] and c["late"] for c in counters)
    assert all(c["cut"] and c["partitions"] for c in counters)
    assert sum(c["crashes"] for c in counters) >= 4
    assert sum(c["pauses"] for c in counters) >= 8
    kinds = " ".join(" ".join(r.events) for r in reports)
    for kind in ("one node", "minority", "no quorum", "one way"):
        assert f"({kind})" in kinds
    ended = {status for r in reports for status in r.jobs}
    assert ended == {"COMPLETED", "FAILED", "CANCELED"}


def test_a_seed_reproduces_its_run_exactly() -> None:
    first = chaos_run(11)
    assert chaos_run(11).digest() == first.digest()
    assert chaos_run(12).digest() != first.digest()


def test_a_seed_reproduces_in_another_process_with_other_hash_seeds() -> None:
    code = "from modelmine.sim.scenarios import chaos_run; print(repr(chaos_run(5).digest()))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            timeout=120,
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert outputs.pop().strip() == repr(chaos_run(5).digest())


def test_a_broken_invariant_names_the_seed_and_how_to_replay_it() -> None:
    world = World(6, seed=42, validators=4, submitters=1)
    world.start()
    world.run_until(5.0)
    block, _ = world.replicas[0].store[0]
    keys = {n.node_id: n.key for n in world.validator_nodes}
    fork = Block.create(
        keys[block.header.proposer],
        chain_id=world.chain_id,
        height=1,
        round=block.header.round,
        time=block.header.time + 1,
        prev_hash=block.header.prev_hash,
        state_root=block.header.state_root,
        records=(),
        last_commit=None,
    )
    votes = [
        Vote.create(k, world.chain_id, VoteType.PRECOMMIT, 1, 0, fork.hash) for k in keys.values()
    ]
    commit = Commit(1, 0, fork.hash, tuple(sorted((v.validator, v.signature) for v in votes)))
    with pytest.raises(
        InvariantViolation, match=r"seed 42: validators \d and 2 committed different"
    ) as caught:
        world.check_decision(2, fork, commit)
    assert "python -m modelmine.sim chaos --seed 42" in str(caught.value)
