"""Jobs on a network of node processes on loopback: latency, training speed, throughput.

A bootstrap server and 4 validator processes (``modelmine node``, all taking jobs, one slot
each) on free 127.0.0.1 ports in a temp dir, started with the integration tests' harness
(tests/integration/cluster.py), with OPENBLAS_NUM_THREADS=1 for every process. Accounts register through the control
API; jobs are signed here (``make_job_submit``) and sent with ``jobs.submit``, then
``ledger.wait`` until the submission is final. Every timestamp compared below comes from the
same machine's clock (block times are the proposer's ``time.time()``, progress points the
worker's), so they can be subtracted.

1. Latency, one job at a time (SEQUENTIAL tiny jobs, each submitted only after the previous
   one completed, so nothing queues). submit -> RUNNING: the block time of the ``claimed``
   event minus the wall time at which this client sent ``jobs.submit``. Last step -> final
   record: the block time of the ``completed`` event minus the ``time`` of the last progress
   point in the worker's ``history``. Both p50 and p90 (nearest rank). A block time is when
   its proposer made the proposal, so both figures leave out the vote rounds that follow;
   the time at which this client saw the job RUNNING / COMPLETED (polling every POLL s) is
   printed on stderr as an upper bound.

2. Training speed in a node. The same spec (digits MLP, hidden [256], SPEED_EPOCHS epochs:
   ~10-20 s on one core) is trained with ``modelmine train SPEC.toml --json`` in a
   subprocess while the network idles, and submitted to the network, alternately (local,
   node, local, node, local with SPEED_ROUNDS = 2), because the load of a shared machine
   drifts. Local speed: steps / the ``seconds`` it reports (training only; wall time on
   stderr). Node speed, from the worker's progress history: (last step - first step) /
   (last time - first time), which includes every pause the node makes between training
   chunks (checkpoint, blob store, ledger wait). Ratio = mean node / mean local, goal >= 0.9.
   Diagnostics, same runs:
   - the history split at the checkpoint steps (the ``checkpoint`` events' ``step``): the
     rate inside chunks, and the pauses at checkpoints (time in an interval that starts at a
     checkpoint step beyond what its steps take at the in-chunk rate);
   - steps per CPU-second, which the machine's load hardly moves: the worker process's CPU
     time outside its main thread (the training thread; also dataset loading) sampled with
     psutil from submit to completion, against the ``modelmine train`` child's CPU time
     (getrusage) less that of a 1-epoch run (start-up); and the CPU time of the worker's main
     thread, the event loop, as a share of the wall time.

3. Throughput. THROUGHPUT_JOBS tiny jobs from 4 accounts at once (each account can have only
   one record in flight per block, so each submits its share one after another, through the
   4 nodes in turn). Jobs per minute = jobs / (block time of the last completion - wall time of
   the first submit) * 60; also up to 90% of the jobs, and the slowest job's submit ->
   completed, so that one stuck job shows (the three slowest are described on stderr).

The machine may be small and shared: every process, and this client, share its cores.

Run: ``.venv/bin/python bench/bench_jobs.py [--keep DIR]`` (DIR keeps the nodes' logs)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import trio
from nacl.signing import SigningKey

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelmine.control_client import RpcError, open_control_client
from modelmine.ledger import make_job_submit, make_register
from tests.integration.cluster import (
    Cluster,
    call,
    child_env,
    peer_statuses,
    try_call,
    wait_for,
)

NODES = 4
SEQUENTIAL = 10
THROUGHPUT_JOBS = 40
SPEED_EPOCHS = 2500
SPEED_ROUNDS = 2  # node runs, between SPEED_ROUNDS + 1 local runs
POLL = 0.1
STAKE = 10  # the 1000-credit grant covers 100 jobs per account

TINY: dict[str, Any] = {
    "title": "tiny",
    "model": {"kind": "logistic"},
    "dataset": {"name": "iris"},
    "hyperparameters": {"epochs": 5},
    "stake": STAKE,
}


def speed_toml(epochs: int) -> str:
    return f"""title = "bench speed"
stake = {STAKE}

[model]
kind = "mlp"
hidden = [256]

[dataset]
name = "digits"

[hyperparameters]
epochs = {epochs}

[resources]
max_seconds = 600
"""


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---- the network ----


async def ready(c: Cluster) -> float:
    async def linked() -> bool:
        for i in range(1, NODES + 1):
            s = await try_call(c.data_dir(i), "status")
            peers = await peer_statuses(c.data_dir(i))
            if (
                not s
                or s["peers"] < 2
                or sum(p["status"] == "ONLINE" for p in peers.values()) < NODES - 1
            ):
                return False
        return True

    return await wait_for(linked, 60, "the network to form", poll=POLL, check=c.check_alive)


async def _final(client: Any, record_id: str) -> None:
    done = await client.request(
        "ledger.wait", {"record_id": record_id, "timeout": 60}, call_timeout=70
    )
    if done["height"] is None:
        raise RuntimeError(f"record {record_id[:12]} not final in 60 s")


@dataclass
class Account:
    key: SigningKey
    nonce: int = 0  # the next one

    @property
    def hex(self) -> str:
        return bytes(self.key.verify_key).hex()


async def register(c: Cluster, i: int, name: str) -> Account:
    account = Account(SigningKey.generate())
    async with open_control_client(c.data_dir(i)) as client:
        status = await client.call("status")
        state = await client.call("ledger.account", account=account.hex)
        raw = make_register(account.key, status["chain_id"], name, state["next_nonce"])
        sent = await client.call("ledger.submit", record=raw.hex())
        await _final(client, sent["record_id"])
        account.nonce = (await client.call("ledger.account", account=account.hex))["next_nonce"]
    return account


async def submit_job(
    c: Cluster, i: int, account: Account, spec: dict[str, Any]
) -> tuple[str, float]:
    """Submit through node i and wait until final there: (job id, wall time of the send).

    The nonce is counted here: a node that has not yet committed the account's previous
    record refuses the next one as skipping ahead, and it is sent again shortly after."""
    async with open_control_client(c.data_dir(i)) as client:
        status = await client.call("status")
        raw = make_job_submit(account.key, status["chain_id"], spec, account.nonce, 0)
        for attempt in range(100):
            sent_at = time.time()
            try:
                sent = await client.call("jobs.submit", record=raw.hex())
                break
            except RpcError as exc:
                if attempt == 99 or "skips ahead" not in str(exc):
                    raise
                await trio.sleep(0.02)
        await _final(client, sent["job_id"])
        account.nonce += 1
        return str(sent["job_id"]), sent_at


async def job(c: Cluster, i: int, job_id: str) -> dict[str, Any]:
    result: dict[str, Any] = await call(c.data_dir(i), "jobs.get", job_id=job_id)
    return result


async def worker_view(c: Cluster, job_id: str) -> dict[str, Any]:
    """The job as its (last) worker sees it: the only node holding its full progress history."""
    j = await job(c, 1, job_id)
    return await job(c, c.index_of(j["worker"]), job_id) if j["worker"] else j


def event_time(j: dict[str, Any], kind: str) -> float:
    times = [e["time"] for e in j["events"] if e["kind"] == kind]
    if not times:
        raise RuntimeError(f"job {j['job_id'][:12]} has no {kind!r} event: {j['events']}")
    return float(times[0] if kind == "claimed" else times[-1])


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# ---- 1. latency ----


@dataclass
class Latency:
    to_running: list[float] = field(default_factory=list)
    to_record: list[float] = field(default_factory=list)
    seen_running: list[float] = field(default_factory=list)
    seen_completed: list[float] = field(default_factory=list)


async def latency(c: Cluster, key: Account) -> Latency:
    out = Latency()
    for k in range(SEQUENTIAL):
        via = 1 + k % NODES
        job_id, sent_at = await submit_job(c, via, key, {**TINY, "title": f"seq {k}"})
        seen_running: float | None = None
        start = time.monotonic()
        while True:
            j = await job(c, via, job_id)
            now = time.time()
            if j["status"] in ("RUNNING", "COMPLETED") and seen_running is None:
                seen_running = now
            if j["status"] == "COMPLETED":
                break
            if j["status"] in ("FAILED", "CANCELED"):
                raise RuntimeError(f"job {job_id[:12]} ended {j['status']}: {j.get('error')}")
            if time.monotonic() - start > 90:
                raise RuntimeError(f"job {job_id[:12]} not completed in 90 s: {j['status']}")
            c.check_alive()
            await trio.sleep(POLL)
        assert seen_running is not None
        w = await worker_view(c, job_id)
        history = [p for p in w["history"] if p["worker"] == w["worker"]]
        if not history:
            raise RuntimeError(f"no progress history on the worker of job {job_id[:12]}")
        claimed, completed = event_time(w, "claimed"), event_time(w, "completed")
        out.to_running.append(claimed - sent_at)
        out.to_record.append(completed - history[-1]["time"])
        out.seen_running.append(seen_running - sent_at)
        out.seen_completed.append(now - history[-1]["time"])
        _say(
            f"  seq {k}: submit->claim block {claimed - sent_at:.2f} s (seen RUNNING "
            f"{seen_running - sent_at:.2f} s), last step->complete block "
            f"{completed - history[-1]['time']:.2f} s (seen {now - history[-1]['time']:.2f} s), "
            f"worker node-{c.index_of(w['worker'])}"
        )
    return out


# ---- 2. training speed ----


@dataclass
class Local:
    steps: int
    seconds: float  # training time that `modelmine train` reports
    wall: float
    cpu: float  # user + system seconds of the whole process

    @property
    def rate(self) -> float:
        return self.steps / self.seconds


def train_locally(spec_path: Path) -> Local:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "modelmine", "train", str(spec_path), "--json"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=300,
    )
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"modelmine train failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Local(int(result["steps"]), float(result["seconds"]), wall, cpu)


@dataclass
class NodeSpeed:
    steps: int  # from the first to the last progress point
    last_step: int  # the job's steps: it started from step 0
    span: float  # seconds from the first to the last progress point
    rate: float  # steps over span
    chunk_rate: float  # steps per second inside training chunks
    pauses: list[float]  # seconds lost at each checkpoint
    claim_to_complete: float  # block times
    points: int


def analyse(j: dict[str, Any]) -> NodeSpeed:
    history = [p for p in j["history"] if p["worker"] == j["worker"]]
    if len(history) < 3:
        raise RuntimeError(f"too little progress history: {len(history)} points")
    if len(history) >= 600:
        _say("  warning: the worker's history (600 points) may have dropped its start")
    checkpoints = {e["step"] for e in j["events"] if e["kind"] == "checkpoint"}
    steady_steps, steady_time = 0, 0.0
    boundary: list[tuple[int, float]] = []
    for a, b in itertools.pairwise(history):
        ds, dt = b["step"] - a["step"], b["time"] - a["time"]
        if a["step"] in checkpoints:
            boundary.append((ds, dt))
        else:
            steady_steps += ds
            steady_time += dt
    chunk_rate = steady_steps / steady_time if steady_time > 0 else float("nan")
    pauses = [max(0.0, dt - ds / chunk_rate) for ds, dt in boundary]
    steps = history[-1]["step"] - history[0]["step"]
    span = history[-1]["time"] - history[0]["time"]
    return NodeSpeed(
        steps=steps,
        last_step=history[-1]["step"],
        span=span,
        rate=steps / span,
        chunk_rate=chunk_rate,
        pauses=pauses,
        claim_to_complete=event_time(j, "completed") - event_time(j, "claimed"),
        points=len(history),
    )


def cpu_of(pid: int) -> tuple[float, float]:
    """(user + system seconds of the whole process, of its main thread: the event loop)."""
    p = psutil.Process(pid)
    total = sum(p.cpu_times()[:2])
    main = sum(t.user_time + t.system_time for t in p.threads() if t.id == pid)
    return total, main


@dataclass
class NodeRun:
    speed: NodeSpeed
    worker: int
    window: float  # wall seconds between the CPU samples (submit .. completion seen)
    train_cpu: float  # CPU seconds of the worker's other threads: training (and any helpers)
    loop_cpu: float  # CPU seconds of the worker's main thread


async def node_run(c: Cluster, account: Account, spec: dict[str, Any]) -> NodeRun:
    pids = {i: p.process.pid for i, p in enumerate(c.nodes, 1) if p.process is not None}
    start_cpu = {i: cpu_of(pid) for i, pid in pids.items()}
    start = time.monotonic()
    job_id, _ = await submit_job(c, 1, account, spec)
    worker = 0

    async def done() -> bool:
        nonlocal worker
        j = await job(c, 1, job_id)
        if j["status"] in ("FAILED", "CANCELED"):
            raise RuntimeError(f"speed job ended {j['status']}: {j.get('error')}")
        if j["worker"] and not worker:
            worker = c.index_of(j["worker"])
        return bool(j["status"] == "COMPLETED")

    await wait_for(done, 240, "the speed job to complete", poll=POLL, check=c.check_alive)
    window = time.monotonic() - start
    total, main = cpu_of(pids[worker])
    w = await job(c, worker, job_id)
    if len(w["workers"]) != 1:
        raise RuntimeError(f"the speed job moved between workers: {w['workers']}")
    run = NodeRun(
        analyse(w),
        worker,
        window,
        (total - main) - (start_cpu[worker][0] - start_cpu[worker][1]),
        main - start_cpu[worker][1],
    )
    n = run.speed
    _say(
        f"  node-{worker}: {n.steps} steps in {n.span:.2f} s ({n.rate:,.0f} steps/s; "
        f"{n.chunk_rate:,.0f} steps/s inside chunks; {len(n.pauses)} checkpoint pauses "
        f"{', '.join(f'{p:.2f}' for p in n.pauses)} s; claim->complete blocks "
        f"{n.claim_to_complete:.2f} s; {n.points} points); CPU in {window:.1f} s: "
        f"training threads {run.train_cpu:.2f} s, event loop {run.loop_cpu:.2f} s"
    )
    return run


@dataclass
class Speed:
    local: list[Local]
    startup: Local  # a 1-epoch run: what a `modelmine train` costs besides training
    nodes: list[NodeRun]

    @property
    def local_rate(self) -> float:
        return statistics.mean(x.rate for x in self.local)

    @property
    def node_rate(self) -> float:
        return statistics.mean(n.speed.rate for n in self.nodes)

    @property
    def chunk_rate(self) -> float:
        return statistics.mean(n.speed.chunk_rate for n in self.nodes)

    @property
    def local_steps_per_cpu(self) -> float:
        steps = sum(x.steps for x in self.local)
        return steps / sum(x.cpu - self.startup.cpu for x in self.local)

    @property
    def node_steps_per_cpu(self) -> float:
        steps = sum(n.speed.last_step for n in self.nodes)
        return steps / sum(n.train_cpu for n in self.nodes)


async def speed(c: Cluster, account: Account, root: Path) -> Speed:
    """Local, node, local, node, local: the machine's load drifts, so alternate."""
    spec_path = root / "speed.toml"
    spec_path.write_text(speed_toml(SPEED_EPOCHS))
    spec = tomllib.loads(spec_path.read_text())
    short = root / "startup.toml"
    short.write_text(speed_toml(1))
    startup = await trio.to_thread.run_sync(train_locally, short)
    _say(f"  local 1 epoch: wall {startup.wall:.2f} s, CPU {startup.cpu:.2f} s")
    local: list[Local] = []
    nodes: list[NodeRun] = []
    for n in range(2 * SPEED_ROUNDS + 1):
        if n % 2:
            nodes.append(await node_run(c, account, spec))
            continue
        x = await trio.to_thread.run_sync(train_locally, spec_path)
        local.append(x)
        _say(
            f"  local: {x.steps} steps in {x.seconds:.2f} s ({x.rate:,.0f} steps/s), "
            f"wall {x.wall:.2f} s, CPU {x.cpu:.2f} s"
        )
    return Speed(local, startup, nodes)


# ---- 3. throughput ----


@dataclass
class Throughput:
    jobs: int
    seconds: float
    submit_seconds: float
    workers: dict[int, int]
    ninety: float  # seconds from the first submit until 90% of the jobs completed
    slowest: float  # the longest submit -> completed of one job


async def throughput(c: Cluster, keys: list[Account]) -> Throughput:
    per = THROUGHPUT_JOBS // len(keys)
    sent: dict[str, float] = {}

    async def account(n: int, key: Account) -> None:
        for k in range(per):
            job_id, at = await submit_job(
                c, 1 + (n + k) % NODES, key, {**TINY, "title": f"tp {n}.{k}"}
            )
            sent[job_id] = at

    async with trio.open_nursery() as nursery:
        for n, key in enumerate(keys):
            nursery.start_soon(account, n, key)
    first = min(sent.values())
    submit_seconds = max(sent.values()) - first

    async def all_done() -> bool:
        jobs = await try_call(c.data_dir(1), "jobs.list")
        states = {j["job_id"]: j["status"] for j in jobs or []}
        bad = [j for j in sent if states.get(j) in ("FAILED", "CANCELED")]
        if bad:
            raise RuntimeError(f"{len(bad)} throughput jobs failed or were canceled")
        return all(states.get(j) == "COMPLETED" for j in sent)

    await wait_for(all_done, 150, f"{len(sent)} jobs to complete", poll=POLL, check=c.check_alive)
    ended: dict[str, float] = {}
    workers: dict[int, int] = {}
    views: dict[str, dict[str, Any]] = {}
    for job_id in sent:
        j = views[job_id] = await job(c, 1, job_id)
        ended[job_id] = float(j["ended"])
        w = c.index_of(j["worker"])
        workers[w] = workers.get(w, 0) + 1
    slowest = sorted(sent, key=lambda j: ended[j] - sent[j])[-3:]
    for job_id in reversed(slowest):
        j = views[job_id]
        _say(
            f"  slow: job {job_id[:12]} submit->complete {ended[job_id] - sent[job_id]:.2f} s "
            f"(submit->claim {event_time(j, 'claimed') - sent[job_id]:.2f} s, "
            f"claim->complete {event_time(j, 'completed') - event_time(j, 'claimed'):.2f} s), "
            f"worker node-{c.index_of(j['worker'])}"
        )
    done_at = sorted(e - first for e in ended.values())
    return Throughput(
        len(sent),
        max(ended.values()) - first,
        submit_seconds,
        workers,
        pct(done_at, 0.9),
        max(ended[j] - sent[j] for j in sent),
    )


# ---- all ----


@dataclass
class Results:
    latency: Latency
    speed: Speed
    throughput: Throughput
    form_seconds: float


async def _bench(root: Path) -> Results:
    c = Cluster(root / "net", NODES, chain_id="bench-jobs")
    try:
        c.start()
        with trio.fail_after(420):
            form = await ready(c)
            _say(f"network formed in {form:.1f} s")
            keys: list[Account] = []

            async def new_account(n: int) -> None:
                keys.append(await register(c, 1 + n % NODES, f"bench{n}"))

            async with trio.open_nursery() as nursery:
                for n in range(NODES + 1):
                    nursery.start_soon(new_account, n)
            _say(f"1. {SEQUENTIAL} tiny jobs one at a time")
            lat = await latency(c, keys[0])
            _say("2. training speed: modelmine train vs. a node")
            spd = await speed(c, keys[0], root)
            _say(f"3. {THROUGHPUT_JOBS} tiny jobs from {NODES} accounts at once")
            tp = await throughput(c, keys[1:])
            _say(
                f"  {tp.jobs} jobs in {tp.seconds:.1f} s (submits spread over "
                f"{tp.submit_seconds:.1f} s); per worker: "
                + ", ".join(f"node-{w}: {n}" for w, n in sorted(tp.workers.items()))
            )
            for needle in ("not final within", "not sent:", "Traceback", "ERROR"):
                if n := c.count_in_logs(needle):
                    _say(f"  note: {n} log lines with {needle!r}")
        return Results(lat, spd, tp, form)
    except BaseException:
        _say(c.logs())
        raise
    finally:
        c.stop()


def run(keep: Path | None = None) -> list[dict[str, Any]]:
    """Measure; ``keep``: run in this (new) directory and leave the nodes' logs there."""
    if keep is not None:
        keep.mkdir(parents=True)
        r = trio.run(_bench, keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
            r = trio.run(_bench, Path(tmp))
    lat, spd, tp = r.latency, r.speed, r.throughput
    pauses = [p for n in spd.nodes for p in n.speed.pauses]
    span = sum(n.speed.span for n in spd.nodes)
    loop_cpu = sum(n.loop_cpu for n in spd.nodes)
    window = sum(n.window for n in spd.nodes)
    return [
        {
            "name": f"submit -> RUNNING (claim block) p50, {SEQUENTIAL} jobs",
            "value": pct(lat.to_running, 0.5),
            "unit": "s",
            "baseline": None,
            "ratio": None,
            "goal": "report",
        },
        {
            "name": "submit -> RUNNING p90",
            "value": pct(lat.to_running, 0.9),
            "unit": "s",
            "baseline": None,
            "ratio": None,
            "goal": "report",
        },
        {
            "name": "last step -> final record (complete block) p50",
            "value": pct(lat.to_record, 0.5),
            "unit": "s",
            "baseline": None,
            "ratio": None,
            "goal": "report",
        },
        {
            "name": "last step -> final record p90",
            "value": pct(lat.to_record, 0.9),
            "unit": "s",
            "baseline": None,
            "ratio": None,
            "goal": "report",
        },
        {
            "name": f"node training speed vs modelmine train ({len(spd.nodes)} runs each side)",
            "value": spd.node_rate,
            "unit": "steps/s",
            "baseline": spd.local_rate,
            "ratio": spd.node_rate / spd.local_rate,
            "goal": ">= 0.9",
        },
        {
            "name": "node speed inside chunks (no checkpoint pauses) vs local",
            "value": spd.chunk_rate,
            "unit": "steps/s",
            "baseline": spd.local_rate,
            "ratio": spd.chunk_rate / spd.local_rate,
            "goal": "report",
        },
        {
            "name": f"checkpoint pauses ({len(pauses)}), s of the node's training span",
            "value": sum(pauses),
            "unit": "s",
            "baseline": span,
            "ratio": sum(pauses) / span,
            "goal": "report",
        },
        {
            "name": "node steps per CPU-second of its training threads vs local",
            "value": spd.node_steps_per_cpu,
            "unit": "steps/CPU-s",
            "baseline": spd.local_steps_per_cpu,
            "ratio": spd.node_steps_per_cpu / spd.local_steps_per_cpu,
            "goal": "report",
        },
        {
            "name": "worker's event loop CPU while it trains",
            "value": 100 * loop_cpu / window,
            "unit": "% of a core",
            "baseline": None,
            "ratio": None,
            "goal": "report",
        },
        {
            "name": f"tiny jobs completed per minute, {tp.jobs} jobs on {NODES} nodes",
            "value": 60 * tp.jobs / tp.seconds,
            "unit": "jobs/min",
            "baseline": None,
            "ratio": None,
            "goal": "report",
        },
        {
            "name": "  the same, up to 90% of the jobs completed",
            "value": 60 * math.ceil(0.9 * tp.jobs) / tp.ninety,
            "unit": "jobs/min",
            "baseline": None,
            "ratio": None,
            "goal": "report",
        },
        {
            "name": "  slowest job, submit -> completed",
            "value": tp.slowest,
            "unit": "s",
            "baseline": None,
            "ratio": None,
            "goal": "report",
        },
    ]


def main() -> None:
    import logging

    global SEQUENTIAL, THROUGHPUT_JOBS, SPEED_EPOCHS, SPEED_ROUNDS
    logging.basicConfig(level=logging.ERROR)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=SEQUENTIAL)
    parser.add_argument("--jobs", type=int, default=THROUGHPUT_JOBS)
    parser.add_argument("--epochs", type=int, default=SPEED_EPOCHS, help="of the speed spec")
    parser.add_argument("--keep", type=Path, help="run in this new directory and keep it")
    parser.add_argument("--rounds", type=int, default=SPEED_ROUNDS, help="node runs of the spec")
    args = parser.parse_args()
    SEQUENTIAL, THROUGHPUT_JOBS = args.sequential, args.jobs
    SPEED_EPOCHS, SPEED_ROUNDS = args.epochs, args.rounds
    from bench.report import print_rows

    print_rows(run(args.keep))


if __name__ == "__main__":
    main()
