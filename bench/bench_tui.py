"""TUI benchmarks: progress latency, first paint, memory and key latency with big tables.

A stand-in node (the real ControlServer with canned answers: 1,000 jobs, 100 nodes) runs in
this process and publishes progress reports stamped with the wall time they leave it. The TUI
runs headless in a child process, over its real trio bridge and websocket; a hook on the app's
display step stamps each repaint. A second child without the TUI gives the baselines: a raw
control client subscribed to the same reports, and a bare Textual app with the same 1,000-row
table.

Run: .venv/bin/python bench/bench_tui.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import trio

JOBS = 1000
NODES = 100
PROGRESS_PER_SECOND = 20
KEY_PRESSES = 40
SIZE = (160, 50)
RUNNING = hashlib.sha256(b"job-0").hexdigest()


def _hex(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def _data() -> dict[str, Any]:
    now = time.time()
    nodes = [_hex(f"node-{i}") for i in range(NODES)]
    statuses = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELED")
    jobs = [
        {
            "job_id": _hex(f"job-{i}"),
            "title": f"job number {i}",
            "status": "RUNNING" if i == 0 else statuses[i % 5],
            "progress": float(i % 100),
            "worker": nodes[i % NODES],
            "submitter": nodes[(i + 1) % NODES],
            "created": now - 10 * i,
            "stake": 100,
            "model": "mlp",
            "dataset": "digits",
            "loss": 0.5,
            "accuracy": 0.9,
        }
        for i in range(JOBS)
    ]
    metrics = {
        "cpu_percent": 12.0,
        "memory_percent": 40.0,
        "load_avg": [0.5, 0.4, 0.3],
        "memory_total": 16 * 1024**3,
        "memory_used": 6 * 1024**3,
        "cpu_count": 8,
        "uptime": 1000,
        "hostname": "h",
        "platform": "Linux",
        "arch": "x86_64",
    }
    peers = [
        {
            "node_id": nodes[i],
            "name": f"node-{i}",
            "status": "ONLINE",
            "address": f"ws://127.0.0.1:{20000 + i}",
            "last_seen": now,
            "connected": True,
            "version": "0.1.0",
            "capacity": {"slots": 1, "busy": 0},
            "metrics": metrics,
        }
        for i in range(1, NODES)
    ]
    status = {
        "node_id": nodes[0],
        "name": "node-0",
        "chain_id": "bench",
        "height": 500,
        "head": _hex("head"),
        "peers": NODES - 1,
        "members": NODES - 1,
        "online": NODES - 1,
        "status": "ONLINE",
        "version": "0.1.0",
        "address": "ws://127.0.0.1:1",
    }
    stats = {
        "active_nodes": NODES,
        "credits_staked": 20000,
        "completed_jobs": 200,
        "average_accuracy": 0.9,
        "jobs": dict.fromkeys(statuses, 200),
        "total_supply": 100000,
        "height": 500,
        "time": now,
        "nodes": [
            {
                "node_id": n,
                "name": f"node-{i}",
                "status": "ONLINE",
                "jobs_handled": i,
                "credits_earned": 10 * i,
                "samples": 1000 * i,
            }
            for i, n in enumerate(nodes)
        ],
    }
    blocks = [
        {
            "height": h,
            "hash": _hex(f"b{h}"),
            "prev_hash": _hex(f"b{h - 1}"),
            "time": now - (500 - h),
            "round": 0,
            "proposer": nodes[h % NODES],
            "records": 1,
            "state_root": _hex(f"s{h}"),
            "records_root": _hex(f"r{h}"),
        }
        for h in range(500, 400, -1)
    ]
    detail = dict(jobs[0])
    detail.update(
        workers=[jobs[0]["worker"]],
        metrics={},
        model_sha256=None,
        block=None,
        contributions=[],
        error=None,
        spec={"title": "job number 0", "model": {"kind": "mlp"}, "dataset": {"name": "digits"}},
        samples=0,
        steps=0,
        checkpoints=0,
        created_height=1,
        ended=None,
        latest=None,
        history=[],
        events=[],
    )
    return {
        "status": status,
        "peers": peers,
        "stats": stats,
        "jobs": jobs,
        "blocks": blocks,
        "detail": detail,
    }


class StandInNode:
    """The real control server with canned answers, on trio in a thread of this process."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.data = _data()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    def __enter__(self) -> StandInNode:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the stand-in node did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None and self._scope is not None:
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)

    def _answer(self, value: Callable[[dict[str, Any]], Any]) -> Any:
        async def handler(params: dict[str, Any]) -> Any:
            return value(params)

        return handler

    async def _main(self) -> None:
        from modelmine.control import ControlServer, new_token

        d = self.data
        server = ControlServer(new_token())
        answers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "status": lambda p: d["status"],
            "peers": lambda p: d["peers"],
            "stats": lambda p: d["stats"],
            "jobs.list": lambda p: d["jobs"],
            "jobs.get": lambda p: d["detail"],
            "ledger.blocks": lambda p: d["blocks"],
            "ledger.block": lambda p: dict(d["blocks"][0], records=[], commit={"signatures": []}),
            "ledger.account": lambda p: {"account": p["account"], "balance": 0},
        }
        for method, value in answers.items():
            server.register(method, self._answer(value))
        for topic in ("peers", "blocks", "jobs", "progress:"):
            server.register_topic(topic)
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(server.run, data_dir=self.data_dir))
                self._ready.set()
                step = 0
                while True:
                    step += 1
                    server.publish(
                        f"progress:{RUNNING}",
                        {
                            "job_id": RUNNING,
                            "worker": d["jobs"][0]["worker"],
                            "step": step,
                            "total_steps": 10**9,
                            "epoch": step // 100,
                            "train_loss": 1.0 / step,
                            "val_loss": 1.2 / step,
                            "val_accuracy": 0.9,
                            "samples_per_second": 1000.0,
                            "time": time.time(),  # leaves the node now
                            "progress": 0.0,
                        },
                    )
                    await trio.sleep(1 / PROGRESS_PER_SECOND)


# ---- the children (separate processes, so RSS is the UI's alone) ----


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _until(predicate: Callable[[], bool], limit: float) -> None:
    """Poll ``predicate`` every millisecond (the figures measured are a few ms and up)."""
    deadline = time.perf_counter() + limit
    while not predicate():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out after {limit} s")
        await asyncio.sleep(0.001)


def _repainted(table: Any, row: int, pressed: float, displays: list[float]) -> bool:
    """The cursor left ``row`` and the screen was drawn since ``pressed``."""
    return bool(table.cursor_row != row and displays[-1] > pressed)


def _rss_mib() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def child_tui(data_dir: Path, seconds: float) -> dict[str, Any]:
    from textual import events
    from textual.widgets import DataTable

    from modelmine.tui.app import make_app
    from modelmine.tui.job_detail import JobDetailScreen
    from modelmine.tui.messages import OpenJob, ProgressReported

    started = time.perf_counter()
    app = make_app(data_dir, blink=False, keys=_NoKeys())
    displays: list[float] = []
    sent: dict[int, float] = {}
    latencies: list[float] = []
    shown_step = 0

    def on_display(screen: Any, renderable: Any) -> None:
        nonlocal shown_step
        if renderable is None:
            return
        displays.append(time.perf_counter())
        if isinstance(app.screen, JobDetailScreen) and app.screen.last_step > shown_step:
            wall = time.time()
            for step in [s for s in sent if s <= app.screen.last_step]:
                latencies.append(wall - sent.pop(step))
            shown_step = app.screen.last_step

    original = app._display

    def display(screen: Any, renderable: Any) -> None:
        original(screen, renderable)
        on_display(screen, renderable)

    app._display = display  # type: ignore[method-assign]

    def hook(message: Any) -> None:
        if isinstance(message, ProgressReported) and measuring:
            sent.setdefault(int(message.report["step"]), float(message.report["time"]))

    measuring = False

    async def main() -> dict[str, Any]:
        nonlocal measuring
        async with app.run_test(size=SIZE, message_hook=hook) as pilot:
            jobs = app.query_one("#jobs-table", DataTable)
            await _until(lambda: jobs.row_count == JOBS, 30)
            loaded = time.perf_counter()
            await _until(lambda: bool(displays) and displays[-1] >= loaded, 10)
            first_paint = displays[-1] - started
            await pilot.press("3")
            nodes = app.query_one("#nodes-table", DataTable)
            await _until(lambda: nodes.row_count == NODES, 30)
            await pilot.press("1")
            await pilot.pause()
            rss = _rss_mib()

            keys = []
            for _ in range(KEY_PRESSES):
                row = jobs.cursor_row
                pressed = time.perf_counter()
                app._driver.send_message(events.Key("down", None))  # type: ignore[union-attr]
                await _until(partial(_repainted, jobs, row, pressed, displays), 5)
                keys.append(displays[-1] - pressed)
                await pilot.pause()

            app.post_message(OpenJob(RUNNING))
            await _until(lambda: isinstance(app.screen, JobDetailScreen), 10)
            await pilot.pause()
            measuring = True
            await asyncio.sleep(seconds)
            measuring = False
        return {
            "first_paint_s": first_paint,
            "rss_mib": rss,
            "key_p50_ms": 1000 * statistics.median(keys),
            "key_p95_ms": 1000 * _percentile(keys, 0.95),
            "progress_p50_ms": 1000 * statistics.median(latencies),
            "progress_p95_ms": 1000 * _percentile(latencies, 0.95),
            "progress_events": len(latencies),
        }

    return asyncio.run(main())


class _NoKeys:
    """No local accounts (the benchmark measures tables, not the keystore)."""

    def list(self) -> list[Any]:
        return []

    def create(self, name: str, password: str) -> Any:
        raise NotImplementedError

    def unlock(self, name: str, password: str) -> Any:
        raise NotImplementedError


def child_bare(data_dir: Path, seconds: float) -> dict[str, Any]:
    """The same work without the TUI: a raw control client, and a bare Textual table."""
    from textual import events
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable, Footer

    from modelmine.control_client import open_control_client

    latencies: list[float] = []

    async def subscriber() -> None:
        async with (
            open_control_client(data_dir) as client,
            client.subscribe(f"progress:{RUNNING}") as reports,
        ):
            with trio.move_on_after(seconds):
                async for report in reports:
                    latencies.append(time.time() - float(report["time"]))

    trio.run(subscriber)
    rows = [
        (
            j["job_id"][:12],
            j["title"],
            j["status"],
            f"{j['progress']:.1f}%",
            j["worker"][:8],
            "0.5000",
            "90.0%",
            "100",
            "01-01 00:00:00",
        )
        for j in _data()["jobs"]
    ]
    displays: list[float] = []
    started = time.perf_counter()

    class Bare(App[None]):
        def compose(self) -> ComposeResult:
            yield DataTable(cursor_type="row")
            yield Footer()

        def on_mount(self) -> None:
            table = self.query_one(DataTable)
            table.add_columns(
                "JOB", "TITLE", "STATUS", "PROGRESS", "WORKER", "LOSS", "ACC", "STAKE", "CREATED"
            )
            table.add_rows(rows)

    app = Bare()
    original = app._display

    def display(screen: Any, renderable: Any) -> None:
        original(screen, renderable)
        if renderable is not None:
            displays.append(time.perf_counter())

    app._display = display  # type: ignore[method-assign]

    async def main() -> dict[str, Any]:
        async with app.run_test(size=SIZE) as pilot:
            table = app.query_one(DataTable)
            await _until(lambda: table.row_count == JOBS and bool(displays), 30)
            first_paint = displays[-1] - started
            await pilot.pause()
            rss = _rss_mib()
            keys = []
            for _ in range(KEY_PRESSES):
                row = table.cursor_row
                pressed = time.perf_counter()
                app._driver.send_message(events.Key("down", None))  # type: ignore[union-attr]
                await _until(partial(_repainted, table, row, pressed, displays), 5)
                keys.append(displays[-1] - pressed)
                await pilot.pause()
        return {
            "first_paint_s": first_paint,
            "rss_mib": rss,
            "key_p50_ms": 1000 * statistics.median(keys),
            "progress_p50_ms": 1000 * statistics.median(latencies),
            "progress_p95_ms": 1000 * _percentile(latencies, 0.95),
        }

    return asyncio.run(main())


def _child(kind: str, data_dir: Path, seconds: float) -> dict[str, Any]:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(data_dir), "--seconds", str(seconds)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(seconds: float = 10.0) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp, StandInNode(Path(tmp)):
        bare = _child("bare", Path(tmp), seconds)
        tui = _child("tui", Path(tmp), seconds)

    def row(
        name: str, value: float, unit: str, baseline: float | None, goal: str
    ) -> dict[str, Any]:
        return {
            "name": name,
            "value": value,
            "unit": unit,
            "baseline": baseline,
            "ratio": value / baseline if baseline else None,
            "goal": goal,
        }

    return [
        row(
            "progress event -> shown p50",
            tui["progress_p50_ms"],
            "ms",
            bare["progress_p50_ms"],
            "report (baseline: raw control client)",
        ),
        row(
            "progress event -> shown p95",
            tui["progress_p95_ms"],
            "ms",
            bare["progress_p95_ms"],
            "<= 250 ms",
        ),
        row(
            f"first paint, {JOBS} jobs",
            tui["first_paint_s"],
            "s",
            bare["first_paint_s"],
            "report (baseline: bare Textual table)",
        ),
        row(
            f"RSS with {JOBS} jobs, {NODES} nodes",
            tui["rss_mib"],
            "MiB",
            bare["rss_mib"],
            "<= 150 MiB",
        ),
        row(
            "key -> repaint p50 (1,000 rows)",
            tui["key_p50_ms"],
            "ms",
            bare["key_p50_ms"],
            "report (baseline: bare Textual table)",
        ),
        row("key -> repaint p95 (1,000 rows)", tui["key_p95_ms"], "ms", None, "report"),
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=2, metavar=("KIND", "DATA_DIR"))
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.child:
        kind, data_dir = args.child
        work = child_tui if kind == "tui" else child_bare
        print(json.dumps(work(Path(data_dir), args.seconds)))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.report import print_rows

    print_rows(run(args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
