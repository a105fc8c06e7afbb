"""Tendermint under a Byzantine validator and a hostile network, in virtual time.

Each seed is one full run of :func:`chaos_run`; a failure names the seed, and
``chaos_run(seed)`` replays that run exactly. ``MODELMINE_CONSENSUS_SEEDS`` runs more seeds.
"""

from __future__ import annotations

import os

import pytest

from modelmine.consensus.types import Block, Commit, Vote, VoteType
from modelmine.sim.consensus_net import AgreementViolation, ConsensusNet, Faults, chaos_run

SEEDS = int(os.environ.get("MODELMINE_CONSENSUS_SEEDS", "200"))


@pytest.mark.parametrize("seed", range(SEEDS))
def test_honest_nodes_agree_and_recover_after_the_heal(seed: int) -> None:
    report = chaos_run(seed)  # raises AgreementViolation, naming the seed, on any breach
    assert report.recovery is not None, (
        f"seed {seed}: honest heights went from {report.heights_at_heal} to "
        f"{report.heights_at_end} in the 10 s after the heal; replay with chaos_run({seed})"
    )


def test_the_adversary_and_the_network_really_misbehave() -> None:
    reports = [chaos_run(seed) for seed in range(5)]
    stats = [r.stats for r in reports]
    assert all(s.byzantine_messages > 0 and s.evidence > 0 for s in stats)
    assert sum(s.byzantine_invalid_blocks for s in stats) > 0  # and none was committed
    assert sum(s.rejected for s in stats) > 0  # forged sync offers were refused
    assert all(s.lost and s.duplicated and s.late and s.cut for s in stats)
    assert sum(s.crashes for s in stats) > 0
    assert sum(s.invalid_records_submitted for s in stats) > 0
    assert sum(r.new_blocks_after_heal for r in reports) >= 10


def test_a_run_is_reproduced_by_its_seed() -> None:
    assert chaos_run(11) == chaos_run(11)
    assert chaos_run(11) != chaos_run(12)


def test_a_calm_network_commits_every_record_promptly() -> None:
    net = ConsensusNet(4, seed=5, faults=Faults(delay=(0.005, 0.02)))
    net.start()
    for n in range(20):
        net.at(0.1 * n, net.submit_random)
    net.run_until(5.0)
    heights = {node.height for node in net.nodes}
    assert len(heights) == 1 and heights.pop() >= 5
    assert net.stats.records_committed + net.stats.invalid_records_submitted == 20
    assert net.stats.evidence == 0 and net.stats.rejected == 0


def test_the_agreement_check_catches_a_fork() -> None:
    net = ConsensusNet(4, seed=3)
    net.start()
    net.at(0.1, net.submit_random)
    net.run_until(2.0)
    (block, _), *_ = net.nodes[0].store
    fork = Block.create(
        next(n.key for n in net.nodes if bytes(n.key.verify_key) == block.header.proposer),
        chain_id=net.chain_id,
        height=1,
        round=block.header.round,
        time=block.header.time + 1,
        prev_hash=block.header.prev_hash,
        state_root=block.header.state_root,
        records=(),
        last_commit=None,
    )
    votes = [
        Vote.create(n.key, net.chain_id, VoteType.PRECOMMIT, 1, 0, fork.hash) for n in net.nodes
    ]
    commit = Commit(1, 0, fork.hash, tuple(sorted((v.validator, v.signature) for v in votes)))
    with pytest.raises(
        AgreementViolation, match=r"seed 3: nodes \d and 2 committed different blocks at height 1"
    ):
        net.check_decision(2, fork, commit)
