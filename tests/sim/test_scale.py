"""Membership and gossip at scale, in virtual time.

``python -m modelmine.sim campaign`` runs the same measurements at full size (growth at 100,
300 and 1,000 nodes, a 1,000-node network for 10 virtual minutes, broadcasts to 1,000 nodes
under 20% loss) and prints the figures; here the sizes keep ``make test`` short.
"""

from __future__ import annotations

import math

from modelmine.sim import scenarios


def test_per_node_messages_grow_at_most_logarithmically_with_n() -> None:
    small, large = scenarios.growth((100, 300), seconds=60.0)
    bound = math.log(large.nodes) / math.log(small.nodes)
    assert large.frames_mean / small.frames_mean <= bound, (small, large)
    assert large.frames_max_worker / small.frames_max_worker <= bound, (small, large)
    assert large.frames_max / small.frames_max <= bound, (small, large)  # validators
    assert large.piggybacked / small.piggybacked <= bound, (small, large)
    # Flooding heartbeats would give each node ~N/5 heartbeat frames per period.
    assert large.frames_mean < 6


def test_a_broadcast_reaches_every_node_under_20_percent_loss_with_few_copies() -> None:
    report = scenarios.broadcast_under_loss(300, loss=0.2, broadcasts=10)
    assert report.missed == 0, report
    assert report.copies_mean <= 2, report
    assert report.latency_p99 < 10, report


def test_a_crashed_node_is_offline_everywhere_within_a_minute_at_1000_nodes() -> None:
    report = scenarios.detection(1000)
    assert report.all_offline <= 60, report
    assert report.false_offline == 0, report


def test_small_networks_keep_fast_detection() -> None:
    report = scenarios.detection(10)
    assert report.all_offline <= 15, report  # the heartbeat-only design needed 30 s


def test_two_second_pauses_never_make_anyone_offline() -> None:
    report = scenarios.pauses(300, seconds=60.0, pause=2.0, every=0.5)
    assert report.pauses == 120
    assert report.false_offline == 0, report


def test_a_longer_pause_is_suspected_refuted_and_forgotten() -> None:
    # A 5 s stop is 2.5 times what the issue asks to ride out. The detector notices, the
    # paused nodes refute; the refutation races a suspicion timeout of 4 x log10(300) s, so
    # one view in a few thousand may flip to OFFLINE first (memberlist behaves the same),
    # and the paused node's next heartbeat brings it back everywhere.
    report = scenarios.pauses(300, seconds=30.0, pause=5.0, every=2.0, seed=7)
    assert report.false_suspect > 1000, report
    assert report.false_offline <= 3, report
    assert report.wrong_at_end == 0, report


def test_a_thousand_nodes_with_jobs_progress_and_consensus() -> None:
    report = scenarios.scale_run(1000, seconds=120.0)  # invariants checked throughout
    assert report.consensus_height >= 20
    assert report.jobs.get("COMPLETED", 0) + report.jobs.get("FAILED", 0) >= 5
    assert report.progress_received > 0 and report.progress_elsewhere == 0
    # Progress went to followers only: a few per job, nothing like a broadcast.
    assert report.progress_received < 5 * report.progress_sent
    assert report.frames_per_node_period < 6
    assert report.suspect_views == 0
