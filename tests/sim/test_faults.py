"""Each fault on its own, against a whole small network (membership, gossip, consensus, the
ledger and jobs): every invariant holds while it lasts, and afterwards every job ends exactly
once, and membership and ledger heads agree with who is up."""

from __future__ import annotations

import pytest

from modelmine.sim.scenarios import fault_run


def test_loss() -> None:
    report = fault_run("loss")  # 20% of every message, the whole run
    assert report.counters["lost"] > 1000
    assert sum(report.jobs.values()) >= 5


def test_duplication() -> None:
    report = fault_run("duplication")
    assert report.counters["duplicated"] > 1000
    assert sum(report.jobs.values()) >= 5


def test_reordering() -> None:
    report = fault_run("reordering")  # 30% of messages held back by up to 1 s
    assert report.counters["late"] > 1000
    assert sum(report.jobs.values()) >= 5


@pytest.mark.parametrize("kind", ["one node", "minority", "one way"])
def test_partition_the_majority_side_goes_on(kind: str) -> None:
    report = fault_run(f"partition: {kind}")
    assert report.counters["cut"] > 100
    (_, height_at_cut), (_, height_at_heal) = report.heights
    assert height_at_heal > height_at_cut + 3, "the side with a quorum kept committing"


def test_partition_without_a_quorum_stops_and_resumes() -> None:
    report = fault_run("partition: no quorum")  # two validators on each side
    (_, height_at_cut), (_, height_at_heal) = report.heights
    assert height_at_heal <= height_at_cut + 1, "nothing is final without two thirds"
    assert report.blocks > height_at_heal  # and it went on after the heal


def test_crash_and_restart_of_a_validator_and_a_worker() -> None:
    report = fault_run("crash and restart")
    assert report.counters["crashes"] == 2 and report.counters["restarts"] == 2
    assert sum(report.jobs.values()) >= 5


def test_pauses() -> None:
    report = fault_run("pause")  # twelve 2 s stop-the-world pauses, validators included
    assert report.counters["pauses"] == 12
    assert sum(report.jobs.values()) >= 5
