"""Runs of the simulator that tests and ``python -m modelmine.sim`` share.

Each function is fully determined by its arguments (the seed above all) and returns a frozen
report; an invariant that breaks raises :class:`~modelmine.sim.world.InvariantViolation`
naming the seed and the command that replays it.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from modelmine.p2p.membership import Status
from modelmine.p2p.overlay import Deliver, MembersChanged, Verdict
from modelmine.signing import Signed
from modelmine.sim.overlay_net import Faults, OverlayNet, SimNode
from modelmine.sim.world import InvariantViolation, World

PARTITION_KINDS: Final = ("one node", "minority", "no quorum", "one way")


# ---- the chaos run: every fault, every invariant ----


@dataclass(frozen=True)
class ChaosReport:
    seed: int
    faults: Faults
    events: tuple[str, ...]  # what the chaos did, in order
    jobs: dict[str, int]  # final status -> count
    blocks: int
    settled_at: float  # virtual time when every job had ended and the network converged
    counters: dict[str, int]
    heights: tuple[tuple[float, int], ...] = ()  # (time, highest committed height) at each event

    def digest(self) -> tuple[Any, ...]:
        """What two runs of one seed must agree on exactly."""
        return (self.seed, self.events, sorted(self.jobs.items()), self.blocks, self.settled_at)


def chaos_run(
    seed: int,
    *,
    nodes: int = 8,
    validators: int = 4,
    chaos_until: float = 30.0,
    submit_until: float = 45.0,
    settle_within: float = 240.0,
    kinds: Sequence[str] = ("partition", "crash", "pause"),
    faults: Faults | None = None,
) -> ChaosReport:
    """A small network under a seed's loss, duplication and reordering, with random
    partitions of every kind, crashes and restarts, and pauses until ``chaos_until``; then
    everything heals and restarts, submissions stop at ``submit_until``, and the run goes on
    until every job has ended and membership and ledger heads agree (or raises)."""
    rng = random.Random(seed ^ 0xC4A05)
    if faults is None:
        faults = Faults(
            loss=rng.uniform(0.0, 0.1),
            duplicate=rng.uniform(0.0, 0.05),
            late=rng.uniform(0.0, 0.1),
        )
    world = World(
        nodes,
        seed=seed,
        validators=validators,
        submitters=2,
        faults=faults,
        job_seconds=(5.0, 15.0),
        watchers=1,
    )
    events: list[str] = []

    def note(what: str) -> None:
        events.append(f"{world.now:7.2f} {what}")

    schedule_chaos(world, rng, chaos_until, kinds, note)
    world.start()
    world.run_until(chaos_until)
    world.heal()
    for node in world.nodes:
        if not node.up:
            world.restart(node)
    note("healed; every node up")
    world.run_until(submit_until)
    world.stop_submitting()

    def settled() -> bool:
        return not world.unfinished_jobs() and world.converged()[0]

    if not world.run_until_true(settled, submit_until + settle_within, step=1.0):
        world.check_end()  # raises with the reason
        raise world.fail("did not settle")
    world.check_end()
    jobs: dict[str, int] = {}
    for status in world.all_jobs.values():
        jobs[status] = jobs.get(status, 0) + 1
    counters = dict(vars(world.counters))
    counters.update(
        {k: v for k, v in vars(world.stats).items() if isinstance(v, int)},
    )
    return ChaosReport(
        seed, faults, tuple(events), jobs, world.stats.blocks, round(world.now, 3), counters
    )


FAULTS: Final = (
    "loss",
    "duplication",
    "reordering",
    "partition: one node",
    "partition: minority",
    "partition: no quorum",
    "partition: one way",
    "crash and restart",
    "pause",
)


def fault_run(fault: str, seed: int = 7, *, nodes: int = 8, validators: int = 4) -> ChaosReport:
    """One kind of fault on its own, from 10 s to 40 s of a small network's life (loss,
    duplication and reordering throughout), then the same end checks as a chaos run."""
    link = Faults()
    if fault == "loss":
        link = Faults(loss=0.2)
    elif fault == "duplication":
        link = Faults(duplicate=0.3)
    elif fault == "reordering":
        link = Faults(late=0.3, late_delay=1.0)
    elif fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
    world = World(
        nodes, seed=seed, validators=validators, submitters=2, faults=link, job_seconds=(5.0, 15.0)
    )
    events: list[str] = []

    heights: list[tuple[float, int]] = []

    def note(what: str) -> None:
        events.append(f"{world.now:7.2f} {what}")
        heights.append((world.now, max(r.height for r in world.replicas.values())))

    order = list(range(nodes))
    random.Random(seed).shuffle(order)
    validator = world.validator_nodes[0]
    if fault.startswith("partition"):
        kind = fault.split(": ")[1]
        if kind == "one node":
            groups = [[validator.index], [i for i in order if i != validator.index]]
        elif kind == "minority":
            groups = [order[:3], order[3:]]
        elif kind == "no quorum":
            ours = [v.index for v in world.validator_nodes]
            workers = [i for i in order if i not in ours]
            half, other = ours[: validators // 2], ours[validators // 2 :]
            groups = [half + workers[: len(workers) // 2], other + workers[len(workers) // 2 :]]
        else:
            groups = [order[: nodes // 2], order[nodes // 2 :]]
        world.at(10.0, _partition, world, "one way" if kind == "one way" else kind, groups, note)
        world.at(40.0, _heal, world, note)
    elif fault == "crash and restart":
        worker = world.nodes[validators + 2]
        for victim, down, up in ((validator, 10.0, 30.0), (worker, 15.0, 38.0)):
            world.at(down, _crash, world, victim, note)
            world.at(up, _restart, world, victim, note)
    elif fault == "pause":
        for k in range(12):
            victim = world.nodes[order[k % nodes]]
            world.at(10.0 + 2.5 * k, _pause, world, victim, 2.0, note)
    world.start()
    world.run_until(50.0)
    world.stop_submitting()

    def settled() -> bool:
        return not world.unfinished_jobs() and world.converged()[0]

    if not world.run_until_true(settled, 300.0, step=1.0):
        world.check_end()
        raise world.fail(f"{fault}: did not settle")
    world.check_end()
    jobs: dict[str, int] = {}
    for status in world.all_jobs.values():
        jobs[status] = jobs.get(status, 0) + 1
    counters = dict(vars(world.counters))
    counters.update({k: v for k, v in vars(world.stats).items() if isinstance(v, int)})
    return ChaosReport(
        seed,
        link,
        tuple(events),
        jobs,
        world.stats.blocks,
        round(world.now, 3),
        counters,
        tuple(heights),
    )


def schedule_chaos(
    world: World, rng: random.Random, until: float, kinds: Sequence[str], note: Any
) -> None:
    """Plan partitions, crashes and pauses at random times before ``until``."""
    n = len(world.nodes)
    validators = [node.index for node in world.validator_nodes]
    if "partition" in kinds:
        t = rng.uniform(2.0, 6.0)
        while t < until - 2.0:
            kind = rng.choice(PARTITION_KINDS)
            order = list(range(n))
            rng.shuffle(order)
            if kind == "one node":
                groups = [order[:1], order[1:]]
            elif kind == "minority":
                cut = rng.randint(2, max(2, (n - 1) // 2))
                groups = [order[:cut], order[cut:]]
            elif kind == "no quorum":
                # Split the validators so that neither side holds two thirds of them.
                side = set(rng.sample(validators, len(validators) // 2))
                rest = [i for i in order if i not in validators]
                half = rng.sample(rest, len(rest) // 2)
                groups = [
                    sorted(side | set(half)),
                    [i for i in range(n) if i not in side and i not in half],
                ]
            else:
                groups = [order[: n // 2], order[n // 2 :]]
            world.at(t, _partition, world, kind, groups, note)
            t = min(until - 1.0, t + rng.uniform(2.0, 10.0))
            world.at(t, _heal, world, note)
            t += rng.uniform(1.0, 6.0)
    if "crash" in kinds:
        for _ in range(rng.randint(1, 3)):
            victim = world.nodes[rng.randrange(n)]
            down = rng.uniform(1.0, until - 3.0)
            back = min(until - 0.5, down + rng.uniform(2.0, 25.0))
            world.at(down, _crash, world, victim, note)
            world.at(back, _restart, world, victim, note)
    if "pause" in kinds:
        for _ in range(rng.randint(2, 6)):
            victim = world.nodes[rng.randrange(n)]
            when = rng.uniform(1.0, until - 3.0)
            world.at(when, _pause, world, victim, rng.uniform(0.5, 3.0), note)


def _partition(world: World, kind: str, groups: list[list[int]], note: Any) -> None:
    if kind == "one way":
        world.cut_one_way(groups[0], groups[1])
    else:
        world.partition(groups)
    note(f"partition ({kind}): {sorted(groups[0])} | rest")


def _heal(world: World, note: Any) -> None:
    world.heal()
    note("heal")


def _crash(world: World, node: SimNode, note: Any) -> None:
    if node.up:
        world.crash(node)
        note(f"crash node {node.index}")


def _restart(world: World, node: SimNode, note: Any) -> None:
    if not node.up:
        world.restart(node)
        note(f"restart node {node.index}")


def _pause(world: World, node: SimNode, seconds: float, note: Any) -> None:
    world.pause(node, seconds)
    note(f"pause node {node.index} for {seconds:.1f} s")


# ---- scale ----


@dataclass(frozen=True)
class ScaleReport:
    nodes: int
    seconds: float
    wall: float  # seconds of wall time for the run (setup included)
    frames_per_node_period: float  # frames handled per node per probe period
    frame_kinds: dict[str, float]  # the same, by frame type
    blocks: int
    jobs: dict[str, int]
    jobs_submitted: int
    progress_sent: int
    progress_received: int
    progress_elsewhere: int
    heads_announced: int
    consensus_height: int
    suspect_views: int  # (node, member) pairs not ONLINE/BUSY at the end among live nodes


def scale_run(nodes: int = 1000, seconds: float = 600.0, seed: int = 1) -> ScaleReport:
    """``nodes`` nodes (7 validators) for ``seconds`` virtual seconds: membership, a job every
    5 s, progress to followers, consensus; invariants checked throughout."""
    started = time.perf_counter()
    world = World(nodes, seed=seed, validators=7, submitters=10)
    world.start()
    warm = min(30.0, seconds / 4)
    world.run_until(warm)
    before = _frame_counts(world)
    world.run_until(seconds)
    after = _frame_counts(world)
    wall = time.perf_counter() - started
    span = (seconds - warm) / world.swim.probe_interval
    kinds = {k: (after.get(k, 0) - before.get(k, 0)) / nodes / span for k in after}
    jobs: dict[str, int] = {}
    for status in world.all_jobs.values():
        jobs[status] = jobs.get(status, 0) + 1
    bad = sum(
        1
        for node in world.nodes
        if node.up
        for m in node.overlay.members
        if m.status in (Status.SUSPECT, Status.OFFLINE)
    )
    return ScaleReport(
        nodes=nodes,
        seconds=seconds,
        wall=round(wall, 1),
        frames_per_node_period=round(sum(kinds.values()), 3),
        frame_kinds={k: round(v, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]) if v},
        blocks=world.stats.blocks,
        jobs=jobs,
        jobs_submitted=world.stats.jobs_submitted,
        progress_sent=world.stats.progress_sent,
        progress_received=world.stats.progress_received,
        progress_elsewhere=world.stats.progress_elsewhere,
        heads_announced=world.stats.heads_announced,
        consensus_height=max(r.height for r in world.replicas.values()),
        suspect_views=bad,
    )


def _frame_counts(net: OverlayNet) -> dict[str, int]:
    total: dict[str, int] = {}
    for node in net.nodes:
        for kind, count in node.overlay.frame_kinds.items():
            total[kind] = total.get(kind, 0) + count
    return total


# ---- growth of per-node work with N ----


@dataclass(frozen=True)
class GrowthPoint:
    nodes: int
    frames_mean: float  # frames handled per node per probe period, mean over all nodes
    frames_max: float  # ... the busiest node (a validator: it also runs consensus)
    frames_max_worker: float  # ... the busiest node that is not a validator
    frame_kinds: dict[str, float]  # mean, by frame type
    piggybacked: float  # membership statements carried on probes, per node and period


def growth(
    sizes: Sequence[int] = (100, 300, 1000), seconds: float = 120.0, seed: int = 1
) -> list[GrowthPoint]:
    """Messages handled per node per probe period in a formed network, with a job every 5 s,
    a head announcement every 5 s, progress to followers and the validators' consensus."""
    out = []
    for n in sizes:
        world = World(n, seed=seed, validators=7, submitters=min(10, n - 7))
        world.start()
        world.run_until(30.0)
        before = _frame_counts(world)
        per_node = [node.overlay.statistics().frames for node in world.nodes]
        carried = sum(node.overlay.members.piggybacked for node in world.nodes)
        world.run_until(30.0 + seconds)
        after = _frame_counts(world)
        periods = seconds / world.swim.probe_interval
        handled = [
            (node.overlay.statistics().frames - b) / periods
            for node, b in zip(world.nodes, per_node)
        ]
        kinds = {k: (after.get(k, 0) - before.get(k, 0)) / n / periods for k in after}
        carried = sum(node.overlay.members.piggybacked for node in world.nodes) - carried
        out.append(
            GrowthPoint(
                n,
                round(statistics.mean(handled), 3),
                round(max(handled), 3),
                round(max(handled[7:]), 3),
                {
                    k: round(v, 3)
                    for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])
                    if v > 0.001
                },
                round(carried / n / periods, 3),
            )
        )
    return out


# ---- broadcast under loss ----


@dataclass(frozen=True)
class BroadcastReport:
    nodes: int
    loss: float
    broadcasts: int
    missed: int  # (node, broadcast) pairs never delivered
    copies_mean: float  # payload copies received per node per broadcast
    copies_p99: int
    copies_max: int
    latency_mean: float
    latency_p99: float


def broadcast_under_loss(
    nodes: int = 1000, loss: float = 0.2, broadcasts: int = 20, seed: int = 2, warmup: int = 3
) -> BroadcastReport:
    """Broadcasts from random nodes once the lazy-push tree has formed (``warmup`` broadcasts
    without loss), each given 10 virtual seconds, on a network that loses ``loss`` of every
    message (gossip, announcements, requests and probes alike)."""
    net = OverlayNet(nodes, seed=seed, formed=True, record=False)
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []
    delivered: dict[bytes, int] = {}

    def on_deliver(node: SimNode, delivery: Deliver) -> None:
        body = delivery.statement.body
        if body in sent_at and delivery.from_peer is not None:
            latencies.append(net.now - sent_at[body])
            delivered[body] = delivered.get(body, 0) + 1

    net.on_deliver = on_deliver  # type: ignore[method-assign]
    for node in net.nodes:
        node.overlay.register_topic("news", _accept)
    net.run_until(10.0)
    for k in range(warmup):
        _broadcast(net, {"warm": k})
        net.run_until(net.now + 3.0)
    net.faults = Faults(loss=loss)
    copies: list[int] = []
    for k in range(broadcasts):
        base = [node.overlay.statistics().payloads for node in net.nodes]
        statement = _broadcast(net, {"k": k}, sent_at)
        net.run_until(net.now + 10.0)
        copies += [
            node.overlay.statistics().payloads - b
            for node, b in zip(net.nodes, base)
            if node.node_id != statement.signer
        ]
    copies.sort()
    latencies.sort()
    missed = sum(nodes - 1 - delivered.get(body, 0) for body in sent_at)
    return BroadcastReport(
        nodes,
        loss,
        broadcasts,
        missed,
        round(statistics.mean(copies), 3),
        copies[int(0.99 * (len(copies) - 1))],
        copies[-1],
        round(statistics.mean(latencies), 3),
        round(latencies[int(0.99 * (len(latencies) - 1))], 3),
    )


def _accept(statement: Signed, now: float) -> Verdict:
    return Verdict.ACCEPT


def _broadcast(
    net: OverlayNet, payload: dict[str, Any], sent_at: dict[bytes, float] | None = None
) -> Signed:
    origin = net.nodes[net.rng.randrange(len(net.nodes))]
    statement = net.keys.sign(origin.node_id, "news", payload)
    if sent_at is not None:
        sent_at[statement.body] = net.now
    net.publish(origin, "news", statement)
    return statement


# ---- failure detection and pauses ----


@dataclass(frozen=True)
class DetectionReport:
    nodes: int
    crashed: int
    first_suspect: float  # seconds from the crash until some node suspected it
    all_offline: float  # ... until every live node showed it OFFLINE (inf if never)
    false_offline: int  # live nodes shown OFFLINE by someone meanwhile


def detection(nodes: int = 1000, seed: int = 3, within: float = 90.0) -> DetectionReport:
    net = OverlayNet(nodes, seed=seed, formed=True, record=False)
    watch = _OfflineWatch(net)
    net.run_until(20.0)
    victim = net.nodes[net.rng.randrange(nodes)]
    net.crash(victim)
    crashed = net.now
    first: list[float] = []

    def everyone_sees_it() -> bool:
        views = [n.overlay.members.get(victim.node_id) for n in net.nodes if n.up]
        if not first and any(m is not None and m.status is not Status.ONLINE for m in views):
            first.append(net.now)
        return all(m is not None and m.status is Status.OFFLINE for m in views)

    done = net.run_until_true(everyone_sees_it, crashed + within, step=0.5)
    return DetectionReport(
        nodes,
        victim.index,
        round((first[0] if first else math.inf) - crashed, 2),
        round(net.now - crashed, 2) if done else math.inf,
        watch.false_offline,
    )


@dataclass(frozen=True)
class PauseReport:
    nodes: int
    seconds: float
    pauses: int
    false_offline: int  # times a node that was up got marked OFFLINE by another
    false_suspect: int  # times it got marked SUSPECT (refuted later)
    wrong_at_end: int = 0  # (viewer, member) pairs, both up, not shown alive after the run


def pauses(
    nodes: int = 1000, seconds: float = 120.0, pause: float = 2.0, every: float = 0.5, seed: int = 4
) -> PauseReport:
    """Every ``every`` seconds a random node stops for ``pause`` seconds (a stop-the-world
    pause), for ``seconds``; nobody may mark a paused (or any live) node OFFLINE."""
    net = OverlayNet(nodes, seed=seed, formed=True, record=False)
    watch = _OfflineWatch(net)
    rng = random.Random(seed)
    count = 0
    t = 10.0
    while t < 10.0 + seconds:
        net.at(t, net.pause, net.nodes[rng.randrange(nodes)], pause)
        count += 1
        t += every
    net.run_until(10.0 + seconds + 60.0)
    wrong = sum(
        1
        for node in net.nodes
        if node.up
        for m in node.overlay.members
        if m.status in (Status.SUSPECT, Status.OFFLINE)
    )
    return PauseReport(nodes, seconds, count, watch.false_offline, watch.false_suspect, wrong)


@dataclass
class _OfflineWatch:
    """Counts status changes that wrong a node that is up."""

    net: OverlayNet
    false_offline: int = 0
    false_suspect: int = 0
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        net = self.net
        index = {node.node_id: node for node in net.nodes}

        def on_members(node: SimNode, changed: MembersChanged) -> None:
            for change in changed.changes:
                target = index.get(change.node_id)
                if target is None or not target.up:
                    continue
                if change.new is Status.OFFLINE:
                    self.false_offline += 1
                    if len(self.seen) < 10:
                        self.seen.append(
                            f"{net.now:.1f}: {node.index} marked {target.index} OFFLINE"
                        )
                elif change.new is Status.SUSPECT:
                    self.false_suspect += 1

        net.on_members = on_members  # type: ignore[method-assign]


__all__ = [
    "BroadcastReport",
    "ChaosReport",
    "DetectionReport",
    "GrowthPoint",
    "InvariantViolation",
    "PauseReport",
    "ScaleReport",
    "broadcast_under_loss",
    "chaos_run",
    "detection",
    "growth",
    "pauses",
    "scale_run",
]
