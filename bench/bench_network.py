"""Network benchmarks: broadcast over 30 in-process nodes on real loopback sockets, and an
idle node process's memory and CPU.

Run: .venv/bin/python bench/bench_network.py [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import trio
from nacl.signing import SigningKey

from modelmine.genesis import make_genesis
from modelmine.p2p.host import Host
from modelmine.p2p.overlay import Deliver, Overlay, Verdict
from modelmine.signing import Signed, sign

NODES = 30
BROADCASTS = 40


def _accept(statement: Signed, now: float) -> Verdict:
    return Verdict.ACCEPT


async def _broadcast_bench() -> dict[str, float]:
    rng = random.Random(7)
    keys = [SigningKey(rng.randbytes(32)) for _ in range(NODES)]
    genesis = make_genesis([(bytes(keys[0].verify_key), "n0")], chain_id="bench-net")
    arrivals: dict[bytes, dict[int, float]] = {}
    everyone: dict[bytes, trio.Event] = {}
    hosts: list[Host] = []

    def on_deliver(index: int) -> Any:
        def record(d: Deliver) -> None:
            if d.topic == "bench":
                seen = arrivals.setdefault(d.statement.message_id, {})
                seen[index] = trio.current_time()
                if len(seen) == NODES:
                    everyone.setdefault(d.statement.message_id, trio.Event()).set()

        return record

    async with trio.open_nursery() as nursery:
        for i, key in enumerate(keys):
            overlay = Overlay(key, genesis.chain_id, rng=random.Random(i))
            overlay.register_topic("bench", _accept)
            host = Host(key, genesis.network_id, overlay, name=f"n{i}", on_deliver=on_deliver(i))
            await nursery.start(host.run)
            hosts.append(host)
        for host in hosts[1:]:
            host.overlay.add_known(hosts[0].node_id, hosts[0].address)
            other = rng.choice(hosts)
            if other is not host:
                host.overlay.add_known(other.node_id, other.address)
        await trio.sleep(5)  # dialing and peer exchange settle the overlay
        if min(h.statistics().links for h in hosts) < 2:
            raise SystemExit("overlay did not form")
        before = [h.overlay.statistics() for h in hosts]
        latencies: list[float] = []
        for b in range(BROADCASTS):
            origin = hosts[rng.randrange(NODES)]
            statement = sign(
                origin.identity, "bench", genesis.chain_id, {"n": b, "pad": bytes(512)}
            )
            done = everyone.setdefault(statement.message_id, trio.Event())
            start = trio.current_time()
            origin.publish("bench", statement)
            with trio.fail_after(10):
                await done.wait()
            latencies.append(max(arrivals[statement.message_id].values()) - start)
            await trio.sleep(0.05)
        after = [h.overlay.statistics() for h in hosts]
        copies = sum(
            (a.delivered + a.duplicates) - (b.delivered + b.duplicates)
            for a, b in zip(after, before, strict=True)
        )
        degree = statistics.mean(h.statistics().links for h in hosts)
        nursery.cancel_scope.cancel()
    latencies.sort()
    return {
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "copies_per_node": copies / (BROADCASTS * (NODES - 1)),
        "mean_degree": degree,
    }


def _idle_node(seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelmine", "node", "--data-dir", str(Path(tmp) / "n")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            time.sleep(5)  # start-up is not idling
            p = psutil.Process(proc.pid)
            cpu0 = sum(p.cpu_times()[:2])
            time.sleep(seconds)
            cpu = sum(p.cpu_times()[:2]) - cpu0
            rss = p.memory_info().rss
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return {"rss_mib": rss / 2**20, "cpu_percent": 100 * cpu / seconds}


def run(idle_seconds: float = 60.0) -> list[dict[str, Any]]:
    b = trio.run(_broadcast_bench)
    idle = _idle_node(idle_seconds)
    return [
        {
            "name": f"broadcast to {NODES} nodes p50",
            "value": b["p50_ms"],
            "unit": "ms",
            "baseline": None,
            "ratio": None,
            "goal": "report",
        },
        {
            "name": f"broadcast to {NODES} nodes p99",
            "value": b["p99_ms"],
            "unit": "ms",
            "baseline": None,
            "ratio": None,
            "goal": "report",
        },
        {
            "name": "payload copies received per node",
            "value": b["copies_per_node"],
            "unit": "copies",
            "baseline": b["mean_degree"],
            "ratio": b["copies_per_node"] / b["mean_degree"],
            "goal": "flooding: = mean degree (baseline)",
        },
        {
            "name": "idle node RSS",
            "value": idle["rss_mib"],
            "unit": "MiB",
            "baseline": 80.0,
            "ratio": idle["rss_mib"] / 80.0,
            "goal": "<= 80 MiB",
        },
        {
            "name": f"idle node CPU over {idle_seconds:.0f} s",
            "value": idle["cpu_percent"],
            "unit": "% of a core",
            "baseline": 2.0,
            "ratio": idle["cpu_percent"] / 2.0,
            "goal": "<= 2%",
        },
    ]


def main() -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    from bench.report import print_rows

    print_rows(run(args.idle_seconds))


if __name__ == "__main__":
    main()
