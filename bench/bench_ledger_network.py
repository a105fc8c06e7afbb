"""The ledger on a network of node processes on loopback: finality under load, and sync.

1. Finality under load. A bootstrap server and 4 validator processes (``modelmine node``) on
   free 127.0.0.1 ports in a temp dir, started with the integration tests' harness
   (tests/integration/cluster.py). ACCOUNTS
   accounts register (through different nodes); then for LOAD_SECONDS each account runs a
   closed loop: sign a transfer with its next nonce, ``ledger.submit`` it through the next node
   in round-robin order, ``ledger.wait`` on that node until it is in a committed block, repeat.
   Reported: transfers finalized per second inside the window, and the latency from the first
   submit attempt to the ``ledger.wait`` answer (p50, p99), plus blocks/s and records/block
   seen by node-1 in the window. No baseline applies (a closed loop's throughput is its
   concurrency over its latency); the figures are for tracking.

   A node checks a record against its committed state, so a submit to a node that has not yet
   committed the account's previous transfer is refused ("skips ahead"); the client retries it
   on the same node every RETRY_DELAY s and the latency counts from the first attempt (the
   number of retries is printed on stderr). The control server runs at most 16 calls at once
   per connection, so the client opens enough connections per node that it never queues them.

   Why 16 accounts and not more: the validators' own gossip under load comes close to the
   overlay's per-peer frame rate limit (200 frames/s, burst 400; each frame over it costs the
   sending peer 5 points, -100 bans it for 600 s). With 16 accounts a link carries ~190
   frames/s on average (~8 per block of consensus messages, ~1 per record); with 64 accounts
   the validators ban each other within seconds and the chain halts. Bans happen at 8-16
   accounts too, in some runs. A run in which any validator banned another is void (its
   figures would be of a halted network): it stops as soon as a ban shows in a node log and
   the load runs again on a fresh network, at most LOAD_ATTEMPTS times. Rows count the
   voided runs and the frame-rate penalties of the reported run; both should be 0.

2. Sync. A 4-validator genesis (its time SYNC_BLOCKS + 1000 s in the past) and a chain of
   SYNC_BLOCKS blocks with real proposer signatures and real 4-signature commits, built with
   ``ChainBuilder`` into node-1's ``ledger.sqlite`` and copied to the other validators (USERS
   accounts register, then TRANSFERS_PER_BLOCK transfers per block). The 4 validators start on
   it; then a fresh non-validator node (new data dir, same genesis, ``--bootstrap``) starts,
   and the time from its process start until its ``status`` height reaches SYNC_BLOCKS gives
   blocks/s; so does the time from its first synced block to the last, without start-up.
   Baseline, same run: ``verify_chain`` of the same database in a fresh process (wall time, no
   network, no writes), which re-checks what a syncing node checks (hashes, links, signatures,
   state roots); the ratio is how much of local verification speed sync reaches. The
   observer's CPU time is printed on stderr.

Logs of every process are kept in the temp dir while it runs (``--keep DIR`` keeps them) and
their tails are printed if something fails. Every process is stopped at the end (SIGTERM,
then SIGKILL after 10 s), even on error. All processes and this client share the machine's
cores, so the figures move with its size and with whatever else runs on it.

Run: ``.venv/bin/python bench/bench_ledger_network.py [--load-seconds 30] [--accounts 16]
[--blocks 5000] [--only load|sync] [--keep DIR]``; exit status 1 if the load run was void.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import trio
from nacl.signing import SigningKey

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelmine.control_client import (
    ControlClient,
    ControlUnavailable,
    RpcError,
    open_control_client,
)
from modelmine.devnet import write_network
from modelmine.genesis import GENESIS_FILE, Genesis
from modelmine.ledger import (
    DB_FILE,
    ChainBuilder,
    LedgerStore,
    make_register,
    make_transfer,
    verify_chain,
)
from tests.integration.cluster import Cluster, try_call, wait_for

VALIDATORS = 4
ACCOUNTS = 16
ACCOUNTS_PER_CONNECTION = 8
LOAD_ATTEMPTS = 2
LOAD_SECONDS = 30.0
RETRY_DELAY = 0.02
SYNC_BLOCKS = 5000
USERS = 200
TRANSFERS_PER_BLOCK = 10
POLL = 0.2
RATE_LOG = "exceeded the frame rate limit"  # the overlay's warning when it penalizes a peer
BAN_LOG = ": banned: "  # the host's warning when it drops a banned peer
PENALTY_GOAL = "= 0 (-5 each; -100 bans a peer)"


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    n = len(sorted_values)
    return sorted_values[min(n - 1, max(0, math.ceil(q * n) - 1))]


# ---- 1. finality under load ----


class PeersBanned(RuntimeError):
    """Validators banned each other during the load: its figures would be of a halted or
    partitioned network."""

    def __init__(self, bans: int, penalties: int, failure: str) -> None:
        super().__init__(
            f"validators banned each other ({bans} bans after {penalties} penalties"
            f" '{RATE_LOG}'); the load run is void ({failure})"
        )
        self.bans = bans
        self.penalties = penalties


@dataclass
class LoadResult:
    finalized: int
    seconds: float
    latencies: list[float]
    retries: int
    lost: int
    blocks: int
    records_in_blocks: int
    penalties: int = 0  # frame-rate-limit penalties the validators gave each other


async def _final(client: ControlClient, record: bytes) -> tuple[int | None, int]:
    """Submit ``record`` (retrying while the node lags) and wait for it; (height, retries)."""
    retries = 0
    give_up = time.monotonic() + 30
    while True:
        try:
            sent = await client.call("ledger.submit", record=record.hex())
            break
        except RpcError as exc:
            if "skips ahead" not in exc.message or time.monotonic() > give_up:
                raise
            retries += 1
            await trio.sleep(RETRY_DELAY)
    done = await client.request(
        "ledger.wait", {"record_id": sent["record_id"], "timeout": 60}, call_timeout=70
    )
    return done["height"], retries


async def _load(net: Cluster, dirs: list[Path], accounts: int, seconds: float) -> LoadResult:
    chain_id = (await try_call(dirs[0], "status"))["chain_id"]
    rng = random.Random(11)
    keys = [SigningKey(rng.randbytes(32)) for _ in range(accounts)]
    ids = [bytes(k.verify_key) for k in keys]
    nonces = [1] * accounts  # the last nonce used
    latencies: list[float] = []
    finals: list[float] = []
    counters = {"retries": 0, "lost": 0, "rr": 0}
    # A node serves at most 16 calls at once per connection (the control server's
    # max_in_flight; more wait), and every account has one call in flight: each connection
    # serves at most ACCOUNTS_PER_CONNECTION accounts, so the node's limit never queues them.
    per_node = math.ceil(accounts / ACCOUNTS_PER_CONNECTION)
    async with contextlib.AsyncExitStack() as stack:
        pools = [
            [await stack.enter_async_context(open_control_client(d)) for _ in range(per_node)]
            for d in dirs
        ]
        clients = [await stack.enter_async_context(open_control_client(d)) for d in dirs]
        c1 = clients[0]

        def client_for(i: int, node: int) -> ControlClient:
            return pools[node % len(pools)][i % per_node]

        # Every account registers through a different node; all become final.
        async def register(i: int) -> None:
            raw = make_register(keys[i], chain_id, f"bench{i}", 1)
            height, _ = await _final(client_for(i, i), raw)
            if height is None:
                raise RuntimeError(f"registration of account {i} not final in 60 s")

        async with trio.open_nursery() as nursery:
            for i in range(accounts):
                nursery.start_soon(register, i)

        # Every node has committed every registration before the load starts.
        target = max([int((await c.call("status"))["height"]) for c in clients])

        async def caught_up() -> bool:
            heights = [int((await c.call("status"))["height"]) for c in clients]
            return min(heights) >= target

        await wait_for(
            caught_up,
            30,
            "every node to commit the registrations",
            poll=POLL,
            check=net.check_alive,
        )

        start_status = await c1.call("status")
        start = time.monotonic()
        end = start + seconds

        async def account(i: int) -> None:
            arng = random.Random(i)
            while time.monotonic() < end:
                to = ids[(i + arng.randrange(1, accounts)) % accounts]
                raw = make_transfer(keys[i], chain_id, to, 1, nonces[i] + 1)
                client = client_for(i, counters["rr"])
                counters["rr"] += 1
                t0 = time.monotonic()
                height, retries = await _final(client, raw)
                t1 = time.monotonic()
                counters["retries"] += retries
                if height is None:
                    counters["lost"] += 1
                    got = await client.call("ledger.account", account=ids[i].hex())
                    nonces[i] = got["next_nonce"] - 1
                    continue
                nonces[i] += 1
                latencies.append(t1 - t0)
                finals.append(t1)

        async with trio.open_nursery() as nursery:
            for i in range(accounts):
                nursery.start_soon(account, i)
            # Ends when the last in-flight transfer is final; those after `end` count
            # for latency, not for throughput.
            await trio.sleep(seconds)
            end_status = await c1.call("status")
    records_in_blocks = 0
    before = end_status["height"] + 1
    async with open_control_client(dirs[0]) as client:
        while before - 1 > start_status["height"]:
            page = await client.call("ledger.blocks", limit=1000, before=before)
            for b in page:
                if b["height"] > start_status["height"]:
                    records_in_blocks += b["records"]
            before = page[-1]["height"]
    return LoadResult(
        finalized=sum(1 for t in finals if t <= end),
        seconds=seconds,
        latencies=sorted(latencies),
        retries=counters["retries"],
        lost=counters["lost"],
        blocks=end_status["height"] - start_status["height"],
        records_in_blocks=records_in_blocks,
    )


async def _watch_bans(c: Cluster) -> None:
    """Fail fast once a validator bans another: the chain halts, calls would only time out."""
    while True:
        if c.count_in_logs(BAN_LOG):
            raise RuntimeError("a validator banned another")
        await trio.sleep(0.5)


async def _finality_bench(root: Path, accounts: int, seconds: float) -> LoadResult:
    rng = random.Random(3)
    keys = [SigningKey(rng.randbytes(32)) for _ in range(VALIDATORS)]
    genesis = write_network(root, VALIDATORS, chain_id="bench-load", keys=keys)
    c = Cluster(root, VALIDATORS, existing=genesis)
    dirs = [c.data_dir(i) for i in range(1, VALIDATORS + 1)]
    try:
        c.start()
        with trio.fail_after(seconds + 150):

            async def linked() -> bool:
                statuses = [await try_call(d, "status") for d in dirs]
                return all(s and s["peers"] >= VALIDATORS - 1 for s in statuses)

            took = await wait_for(
                linked, 60, "the validators to link up", poll=POLL, check=c.check_alive
            )
            print(f"  load: validators linked after {took:.1f} s", file=sys.stderr)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_bans, c)
                result = await _load(c, dirs, accounts, seconds)
                nursery.cancel_scope.cancel()
            c.check_alive()
            result.penalties = c.count_in_logs(RATE_LOG)
            if c.count_in_logs(BAN_LOG):
                raise RuntimeError("banned")  # the figures are of a partitioned network
            return result
    except Exception as exc:
        print(c.logs(), file=sys.stderr)
        bans = c.count_in_logs(BAN_LOG)
        if bans:
            raise PeersBanned(bans, c.count_in_logs(RATE_LOG), repr(exc)) from exc
        raise
    finally:
        c.stop()


# ---- 2. sync ----


def build_chain(root: Path, blocks: int) -> Genesis:
    """A 4-validator network whose genesis lies in the past, and ``blocks`` blocks of it in
    node-1's ledger database (copied to the other validators)."""
    rng = random.Random(5)
    keys = [SigningKey(rng.randbytes(32)) for _ in range(VALIDATORS)]
    genesis = write_network(
        root,
        VALIDATORS,
        chain_id="bench-sync",
        grant=1_000_000,
        keys=keys,
        genesis_time=int(time.time()) - blocks - 1000,
    )
    chain = genesis.chain_id
    users = [SigningKey(rng.randbytes(32)) for _ in range(USERS)]
    pubs = [bytes(u.verify_key) for u in users]
    last = [0] * USERS
    builder = ChainBuilder(genesis, keys)
    state = builder.state
    with LedgerStore.open(root / "node-1" / DB_FILE, genesis) as store:
        for first in range(0, USERS, 50):
            regs = []
            for i in range(first, min(USERS, first + 50)):
                last[i] = 1
                regs.append(make_register(users[i], chain, f"user{i}", 1))
            store.append(*builder.build(regs), state)
        while state.height < blocks:
            records = []
            for _ in range(TRANSFERS_PER_BLOCK):
                a, b = rng.sample(range(USERS), 2)
                last[a] += 1
                records.append(make_transfer(users[a], chain, pubs[b], 1, last[a]))
            store.append(*builder.build(records), state)
    for i in range(2, VALIDATORS + 1):
        shutil.copyfile(root / "node-1" / DB_FILE, root / f"node-{i}" / DB_FILE)
    return genesis


def verify_seconds(root: Path) -> tuple[float, int]:
    """Wall seconds of ``verify_chain`` of node-1's database in a fresh process (no caches
    of signatures made while building); and the height it verified."""
    out = subprocess.run(
        [sys.executable, __file__, "--verify-trial", str(root)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    got = json.loads(out)
    return float(got["seconds"]), int(got["height"])


def _verify_trial(root: Path) -> None:
    genesis = Genesis.load(root / GENESIS_FILE)
    started = time.perf_counter()
    report = verify_chain(root / "node-1" / DB_FILE, genesis)
    seconds = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(f"verify failed on the bench chain: {report}")
    print(json.dumps({"seconds": seconds, "height": report.height}))


@dataclass
class SyncResult:
    blocks: int
    total_seconds: float  # observer process start -> height reached
    first_block_seconds: float  # process start -> first block stored
    transfer_seconds: float  # first block seen -> height reached
    first_height: int


async def _sync_bench(root: Path, genesis: Genesis, blocks: int) -> SyncResult:
    c = Cluster(root, VALIDATORS, existing=genesis)
    dirs = [c.data_dir(i) for i in range(1, VALIDATORS + 1)]
    try:
        c.start()
        with trio.fail_after(180):

            async def ready() -> bool:
                statuses = [await try_call(d, "status") for d in dirs]
                return all(
                    s and s["peers"] >= VALIDATORS - 1 and s["height"] >= blocks for s in statuses
                )

            took = await wait_for(
                ready,
                60,
                "the validators to load the chain and link",
                poll=POLL,
                check=c.check_alive,
            )
            print(f"  sync: validators up after {took:.1f} s", file=sys.stderr)
            observer_proc = c.add_observer("observer")
            observer = c.root / "observer"
            started = time.monotonic()
            observer_proc.start()
            proc = observer_proc.process
            assert proc is not None
            first: tuple[float, int] | None = None
            height = 0
            now = started
            while height < blocks:
                try:
                    async with open_control_client(observer, connect_timeout=2.0) as client:
                        while height < blocks:
                            height = int((await client.call("status"))["height"])
                            now = time.monotonic()
                            if height > 0 and first is None:
                                first = (now, height)
                            if height < blocks:
                                await trio.sleep(0.05)
                except (ControlUnavailable, OSError):  # not up yet
                    await trio.sleep(0.05)
                c.check_alive()
                if time.monotonic() - started > 150:
                    raise RuntimeError(f"observer at height {height} of {blocks} after 150 s")
            assert first is not None
            cpu = psutil.Process(proc.pid).cpu_times()
            print(
                f"  sync: the observer used {cpu.user + cpu.system:.1f} s of CPU in"
                f" {now - started:.1f} s",
                file=sys.stderr,
            )
            return SyncResult(
                blocks=blocks,
                total_seconds=now - started,
                first_block_seconds=first[0] - started,
                transfer_seconds=now - first[0],
                first_height=first[1],
            )
    except BaseException:
        print(c.logs(), file=sys.stderr)
        raise
    finally:
        c.stop()


# ---- rows ----


def _row(name: str, value: float, unit: str, baseline: float | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": None if baseline is None else value / baseline,
        "goal": "report" if baseline is None else "report (baseline: local verify_chain)",
    }


def load_rows(root: Path, accounts: int, seconds: float) -> list[dict[str, Any]]:
    """Up to LOAD_ATTEMPTS runs, each on a fresh network, until one has no ban; the number of
    runs voided by bans is a row of its own."""
    label = f"{VALIDATORS} validators, {accounts} accounts closed loop"
    voided: list[PeersBanned] = []
    load: LoadResult | None = None
    for attempt in range(1, LOAD_ATTEMPTS + 1):
        t = time.monotonic()
        try:
            load = trio.run(_finality_bench, root / f"attempt-{attempt}", accounts, seconds)
            break
        except PeersBanned as exc:
            # The node's finding, not the bench's: reported as rows; the sync part runs.
            print(f"  load attempt {attempt}: {exc}", file=sys.stderr)
            voided.append(exc)
    voided_row = _row(f"{label}: runs voided by bans", len(voided), "runs")
    voided_row["goal"] = "= 0"
    if load is None:
        penalties = _row(
            f"{label}: frame-rate penalties", sum(v.penalties for v in voided), "penalties"
        )
        penalties["goal"] = PENALTY_GOAL
        void = {
            "name": f"{label}: VOID, validators banned each other",
            "value": None,
            "unit": "",
            "baseline": None,
            "ratio": None,
            "goal": "no bans",
        }
        return [void, penalties, voided_row]
    print(
        f"  load: {time.monotonic() - t:.0f} s; {load.retries} submits refused by a lagging"
        f" node and retried, {load.lost} transfers not final in 60 s",
        file=sys.stderr,
    )
    lat = load.latencies
    if not lat:
        raise RuntimeError("no transfer became final")
    penalties = _row(f"{label}: frame-rate penalties", load.penalties, "penalties")
    penalties["goal"] = PENALTY_GOAL
    return [
        _row(f"{label}: finalized transfers", load.finalized / load.seconds, "records/s"),
        _row(f"{label}: submit->final p50", 1000 * percentile(lat, 0.50), "ms"),
        _row(f"{label}: submit->final p99", 1000 * percentile(lat, 0.99), "ms"),
        _row(f"{label}: blocks committed", load.blocks / load.seconds, "blocks/s"),
        _row(
            f"{label}: records per block",
            load.records_in_blocks / max(1, load.blocks),
            "records",
        ),
        penalties,
        voided_row,
    ]


def sync_rows(root: Path, blocks: int) -> list[dict[str, Any]]:
    t = time.monotonic()
    genesis = build_chain(root, blocks)
    print(f"  sync: built {blocks} blocks in {time.monotonic() - t:.0f} s", file=sys.stderr)
    verify_s, verified = verify_seconds(root)
    if verified != blocks:
        raise RuntimeError(f"verify_chain saw {verified} blocks, built {blocks}")
    sync = trio.run(_sync_bench, root, genesis, blocks)
    verify_rate = blocks / verify_s
    return [
        _row(
            f"fresh node syncs {blocks} blocks, from process start",
            sync.blocks / sync.total_seconds,
            "blocks/s",
            verify_rate,
        ),
        _row(
            f"fresh node syncs {blocks} blocks, first block to last",
            (sync.blocks - sync.first_height) / sync.transfer_seconds,
            "blocks/s",
            verify_rate,
        ),
        _row("fresh node: process start to first synced block", sync.first_block_seconds, "s"),
    ]


def run(
    load_seconds: float = LOAD_SECONDS,
    accounts: int = ACCOUNTS,
    blocks: int = SYNC_BLOCKS,
    keep: Path | None = None,
    only: str | None = None,
) -> list[dict[str, Any]]:
    """The rows; ``keep``: run in this (new) directory and leave it, logs included;
    ``only``: "load" or "sync" to run one of the two."""
    with tempfile.TemporaryDirectory(prefix="bench-ledger-net-") as tmp_dir:
        root = keep if keep is not None else Path(tmp_dir)
        rows = []
        if only in (None, "load"):
            rows += load_rows(root / "load", accounts, load_seconds)
        if only in (None, "sync"):
            rows += sync_rows(root / "sync", blocks)
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-seconds", type=float, default=LOAD_SECONDS)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--blocks", type=int, default=SYNC_BLOCKS)
    parser.add_argument("--keep", type=Path, help="run in this new dir and keep it (logs)")
    parser.add_argument("--only", choices=("load", "sync"), help="run one part only")
    parser.add_argument("--verify-trial", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.verify_trial is not None:
        _verify_trial(args.verify_trial)
        return
    import logging

    logging.basicConfig(level=logging.ERROR)
    from bench.report import print_rows

    rows = run(args.load_seconds, args.accounts, args.blocks, args.keep, args.only)
    print_rows(rows)
    if any(r["value"] is None for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
