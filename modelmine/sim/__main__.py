"""``python -m modelmine.sim``: run the simulator from a shell.

    python -m modelmine.sim campaign              # the full-size campaign (a few minutes)
    python -m modelmine.sim chaos --seed 17       # replay one chaos run exactly
    python -m modelmine.sim chaos --seeds 200     # seeds 0..199
    python -m modelmine.sim scale --nodes 1000 --minutes 10
    python -m modelmine.sim growth --sizes 100,300,1000
    python -m modelmine.sim broadcast --nodes 1000 --loss 0.2
    python -m modelmine.sim detect --nodes 1000
    python -m modelmine.sim pause --nodes 1000

Every run is determined by its seed. A run that breaks an invariant prints the seed and the
command that replays it, and the command exits with status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from modelmine.sim import scenarios
from modelmine.sim.world import InvariantViolation


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelmine.sim", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    chaos = sub.add_parser("chaos", help="small networks under every fault, invariants checked")
    chaos.add_argument("--seed", type=int, help="replay this one seed")
    chaos.add_argument("--seeds", type=int, default=20, help="run seeds 0..N-1 (default 20)")
    chaos.add_argument("--first", type=int, default=0, help="first seed of --seeds")
    chaos.add_argument("--verbose", action="store_true", help="print what the chaos did")
    scale = sub.add_parser("scale", help="a large network with jobs and consensus")
    scale.add_argument("--nodes", type=int, default=1000)
    scale.add_argument("--minutes", type=float, default=10.0)
    scale.add_argument("--seed", type=int, default=1)
    grow = sub.add_parser("growth", help="messages per node per period as N grows")
    grow.add_argument("--sizes", default="100,300,1000")
    grow.add_argument("--seconds", type=float, default=120.0)
    cast = sub.add_parser("broadcast", help="gossip reach and copies under loss")
    cast.add_argument("--nodes", type=int, default=1000)
    cast.add_argument("--loss", type=float, default=0.2)
    cast.add_argument("--count", type=int, default=20)
    detect = sub.add_parser("detect", help="time for everyone to see a crashed node OFFLINE")
    detect.add_argument("--nodes", type=int, default=1000)
    detect.add_argument("--seed", type=int, default=3)
    pause = sub.add_parser("pause", help="nodes pausing 2 s at a time: no false OFFLINE")
    pause.add_argument("--nodes", type=int, default=1000)
    pause.add_argument("--seconds", type=float, default=120.0)
    sub.add_parser("campaign", help="everything above at full size")
    args = parser.parse_args(argv)
    # The real cores log what an operator would want to know (a validator refusing to sign
    # twice, say); in a simulation of thousands of nodes that is noise unless asked for.
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format="%(message)s")
    try:
        if args.command == "chaos":
            return _chaos(args.seed, args.first, args.seeds, args.verbose)
        if args.command == "scale":
            _scale(args.nodes, args.minutes * 60, args.seed)
        elif args.command == "growth":
            _growth([int(x) for x in args.sizes.split(",")], args.seconds)
        elif args.command == "broadcast":
            _broadcast(args.nodes, args.loss, args.count)
        elif args.command == "detect":
            _detect(args.nodes, args.seed)
        elif args.command == "pause":
            _pause(args.nodes, args.seconds)
        else:
            return _campaign()
    except InvariantViolation as exc:
        print(f"INVARIANT BROKEN: {exc}", file=sys.stderr)
        return 1
    return 0


def _chaos(seed: int | None, first: int, count: int, verbose: bool) -> int:
    seeds = [seed] if seed is not None else list(range(first, first + count))
    failed = []
    started = time.perf_counter()
    for s in seeds:
        try:
            report = scenarios.chaos_run(s)
        except InvariantViolation as exc:
            print(f"seed {s}: FAILED: {exc}")
            failed.append(s)
            continue
        print(
            f"seed {s}: ok, {sum(report.jobs.values())} jobs {dict(sorted(report.jobs.items()))}, "
            f"{report.blocks} blocks, settled at {report.settled_at:.0f} s virtual"
        )
        if verbose:
            print(f"  faults: {report.faults}")
            for event in report.events:
                print(f"  {event}")
    took = time.perf_counter() - started
    print(f"{len(seeds) - len(failed)}/{len(seeds)} seeds passed in {took:.1f} s wall")
    for s in failed:
        print(f"replay: python -m modelmine.sim chaos --seed {s} --verbose")
    return 1 if failed else 0


def _scale(nodes: int, seconds: float, seed: int) -> scenarios.ScaleReport:
    print(
        f"scale: {nodes} nodes, {seconds / 60:.0f} virtual minutes, 7 validators, a job every 5 s"
    )
    r = scenarios.scale_run(nodes, seconds, seed)
    print(f"  wall time {r.wall:.1f} s for {seconds:.0f} virtual seconds")
    print(
        f"  frames handled per node per probe period: {r.frames_per_node_period:.2f} {r.frame_kinds}"
    )
    print(f"  blocks {r.blocks}, jobs submitted {r.jobs_submitted}, on the chain {r.jobs}")
    print(
        f"  progress: {r.progress_sent} sent, {r.progress_received} received by followers, "
        f"{r.progress_elsewhere} anywhere else"
    )
    print(
        f"  head announcements {r.heads_announced}; members not shown alive at the end: {r.suspect_views}"
    )
    return r


def _growth(sizes: list[int], seconds: float) -> list[scenarios.GrowthPoint]:
    print(f"growth: frames handled per node per probe period, steady state over {seconds:.0f} s")
    points = scenarios.growth(sizes, seconds)
    for p in points:
        print(
            f"  N={p.nodes:5d}: mean {p.frames_mean:5.2f}, busiest worker {p.frames_max_worker:5.2f}, "
            f"busiest validator {p.frames_max:5.2f}; membership statements piggybacked "
            f"{p.piggybacked:.2f}; {p.frame_kinds}"
        )
    return points


def _broadcast(nodes: int, loss: float, count: int) -> scenarios.BroadcastReport:
    r = scenarios.broadcast_under_loss(nodes, loss, count)
    print(f"broadcast: {nodes} nodes, {loss:.0%} loss on every message, {count} broadcasts")
    print(f"  missed deliveries: {r.missed} of {count * (nodes - 1)}")
    print(
        f"  payload copies per node per broadcast: mean {r.copies_mean}, p99 {r.copies_p99}, max {r.copies_max}"
    )
    print(f"  delivery latency: mean {r.latency_mean} s, p99 {r.latency_p99} s")
    return r


def _detect(nodes: int, seed: int) -> scenarios.DetectionReport:
    r = scenarios.detection(nodes, seed)
    print(f"detect: {nodes} nodes, node {r.crashed} crashed")
    print(
        f"  first suspected after {r.first_suspect} s; OFFLINE at every live node after {r.all_offline} s"
    )
    print(f"  live nodes marked OFFLINE meanwhile: {r.false_offline}")
    return r


def _pause(nodes: int, seconds: float) -> scenarios.PauseReport:
    r = scenarios.pauses(nodes, seconds)
    print(
        f"pause: {nodes} nodes, a random node stops for 2 s every 0.5 s for {seconds:.0f} s ({r.pauses} pauses)"
    )
    print(
        f"  live nodes marked OFFLINE: {r.false_offline}; marked SUSPECT (then refuted): {r.false_suspect}"
    )
    return r


def _campaign() -> int:
    started = time.perf_counter()
    scale = _scale(1000, 600.0, 1)
    growth = _growth([100, 300, 1000], 120.0)
    cast = _broadcast(1000, 0.2, 20)
    detect = _detect(1000, 3)
    pause = _pause(1000, 120.0)
    failed = _chaos(None, 0, 200, False)
    print(f"campaign done in {time.perf_counter() - started:.0f} s wall")
    checks = {
        "1,000 nodes x 10 virtual minutes under 120 s wall": scale.wall < 120,
        "per-node messages grow at most logarithmically": _logarithmic(growth),
        "broadcast reaches every live node under 20% loss": cast.missed == 0,
        "at most 2 payload copies per node per broadcast (mean)": cast.copies_mean <= 2,
        "crashed node OFFLINE everywhere within 60 s": detect.all_offline <= 60,
        "no false OFFLINE under 2 s pauses": pause.false_offline == 0,
        "200 chaos seeds hold every invariant": failed == 0,
    }
    for what, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    return 0 if all(checks.values()) else 1


def _logarithmic(points: Sequence[scenarios.GrowthPoint]) -> bool:
    """From the smallest N, per-node messages grow no faster than log N does."""
    import math

    base = points[0]
    bound = [math.log(p.nodes) / math.log(base.nodes) for p in points]
    return all(
        p.frames_mean / base.frames_mean <= b and p.frames_max_worker / base.frames_max_worker <= b
        for p, b in zip(points[1:], bound[1:])
    )


if __name__ == "__main__":
    sys.exit(main())
