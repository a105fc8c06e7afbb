"""A small in-process stand-in of a node for the TUI's snapshot and form tests: fixed JSON,
a fixed clock, a keystore with fixed keys. Real-node behaviour is tested in test_live.py."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from textual.message import Message

from modelmine.control_client import ControlUnavailable, RpcError
from modelmine.identity import AccountInfo, KeystoreError, NoSuchAccount, WrongPassword
from modelmine.tui.app import ModelMineApp, make_app
from modelmine.tui.format import Clock
from modelmine.tui.messages import NodeConnected, NodeLost

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
CHAIN = "modelmine-snap"


def hexid(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


NODES = [hexid(f"node-{i}") for i in range(1, 5)]
NAMES = {NODES[i]: f"node-{i + 1}" for i in range(4)}
ALICE_KEY = SigningKey(hashlib.sha256(b"alice").digest())
BOB_KEY = SigningKey(hashlib.sha256(b"bob").digest())
ALICE = bytes(ALICE_KEY.verify_key).hex()
BOB = bytes(BOB_KEY.verify_key).hex()
JOB_DONE = hexid("job-done")
JOB_RUNNING = hexid("job-running")


def _history(steps: int, total: int) -> list[dict[str, Any]]:
    points = []
    for i in range(1, steps + 1):
        step = i * total // 40
        points.append(
            {
                "job_id": JOB_RUNNING,
                "worker": NODES[1],
                "step": step,
                "total_steps": total,
                "epoch": step // 22,
                "train_loss": round(2.3 / (1 + 0.25 * i), 4),
                "val_loss": round(2.3 / (1 + 0.2 * i) + 0.05, 4),
                "val_accuracy": round(min(0.98, 0.1 + 0.05 * i), 4),
                "samples_per_second": 41000.0,
                "time": NOW - 60 + i,
                "progress": round(100 * step / total, 1),
            }
        )
    return points


def _job(job_id: str, title: str, status: str, **extra: Any) -> dict[str, Any]:
    job = {
        "job_id": job_id,
        "title": title,
        "status": status,
        "progress": 0.0,
        "worker": None,
        "submitter": ALICE,
        "created": NOW - 3600,
        "stake": 100,
        "model": "mlp",
        "dataset": "digits",
        "loss": None,
        "accuracy": None,
    }
    job.update(extra)
    return job


JOBS = [
    _job(
        JOB_RUNNING,
        "digits wide",
        "RUNNING",
        progress=45.0,
        worker=NODES[1],
        loss=0.4021,
        accuracy=0.912,
        created=NOW - 120,
    ),
    _job(
        JOB_DONE,
        "digits mlp",
        "COMPLETED",
        progress=100.0,
        worker=NODES[2],
        loss=0.1400,
        accuracy=0.9822,
        created=NOW - 900,
    ),
    _job(
        hexid("job-pending"),
        "iris softmax",
        "PENDING",
        submitter=BOB,
        created=NOW - 60,
        model="logistic",
        dataset="iris",
        stake=50,
    ),
    _job(
        hexid("job-failed"),
        "spirals deep",
        "FAILED",
        worker=NODES[3],
        created=NOW - 1800,
        dataset="spirals",
        progress=12.5,
    ),
    _job(
        hexid("job-canceled"),
        "wine mlp",
        "CANCELED",
        submitter=BOB,
        created=NOW - 2400,
        dataset="wine",
        stake=200,
    ),
]


def _job_detail(summary: dict[str, Any]) -> dict[str, Any]:
    job = dict(summary)
    done = job["status"] == "COMPLETED"
    running = job["status"] == "RUNNING"
    history = _history(40 if done else 18, 660) if done or running else []
    for point in history:
        point["job_id"] = job["job_id"]
    job.update(
        workers=[job["worker"]] if job["worker"] else [],
        metrics={"val_accuracy": 0.9822, "val_loss": 0.14, "train_loss": 0.0269, "seconds": 0.48}
        if done
        else {},
        model_sha256=hexid("model") if done else None,
        block=7 if done else None,
        contributions=[{"node_id": NODES[2], "samples": 40410, "credits": 80}] if done else [],
        error=None,
        spec={
            "title": job["title"],
            "model": {"kind": "mlp", "hidden": [256]},
            "dataset": {"name": job["dataset"]},
            "hyperparameters": {
                "epochs": 30,
                "batch_size": 64,
                "optimizer": "adam",
                "learning_rate": 0.001,
            },
        },
        samples=40410 if done else 0,
        steps=660 if done else 0,
        checkpoints=1 if done or running else 0,
        created_height=2,
        ended=NOW - 880 if done else None,
        latest=history[-1] if history else None,
        history=history,
        events=[
            {"kind": "submitted", "height": 2, "time": NOW - 900, "by": ALICE},
            {"kind": "claimed", "height": 3, "time": NOW - 899, "by": job["worker"] or NODES[1]},
            {
                "kind": "checkpoint",
                "height": 4,
                "time": NOW - 895,
                "by": job["worker"] or NODES[1],
                "step": 330,
                "samples": 20000,
            },
        ]
        + (
            [
                {
                    "kind": "completed",
                    "height": 7,
                    "time": NOW - 880,
                    "by": NODES[2],
                    "samples": 40410,
                }
            ]
            if done
            else []
        ),
    )
    return job


def _peer(i: int, status: str, **extra: Any) -> dict[str, Any]:
    peer = {
        "node_id": NODES[i],
        "name": f"node-{i + 1}",
        "status": status,
        "address": f"ws://127.0.0.1:{29701 + i}",
        "last_seen": NOW - 1 - i,
        "connected": status != "OFFLINE",
        "version": "0.1.0",
        "capacity": {"slots": 1, "busy": 1 if status == "BUSY" else 0},
        "metrics": {
            "cpu_percent": 12.5 * (i + 1),
            "memory_percent": 20.0 + i,
            "load_avg": [0.5 * i, 0.4, 0.3],
            "memory_total": 16 * 1024**3,
            "memory_used": 4 * 1024**3,
            "cpu_count": 8,
            "uptime": 3600,
            "hostname": f"host{i}",
            "platform": "Linux",
            "arch": "x86_64",
        },
    }
    peer.update(extra)
    return peer


PEERS = [
    _peer(1, "BUSY"),
    _peer(2, "ONLINE"),
    _peer(3, "OFFLINE", last_seen=NOW - 300),
]
STATUS = {
    "node_id": NODES[0],
    "name": "node-1",
    "chain_id": CHAIN,
    "height": 9,
    "head": hexid("block-9"),
    "peers": 2,
    "members": 3,
    "online": 2,
    "status": "MAINTENANCE",
    "version": "0.1.0",
    "address": "ws://127.0.0.1:29701",
}
STATS = {
    "active_nodes": 3,
    "credits_staked": 150,
    "completed_jobs": 1,
    "average_accuracy": 0.9822,
    "jobs": {"PENDING": 1, "RUNNING": 1, "COMPLETED": 3, "FAILED": 1, "CANCELED": 2},
    "total_supply": 2000,
    "height": 9,
    "time": NOW,
    "nodes": [
        {
            "node_id": NODES[0],
            "name": "node-1",
            "status": "ONLINE",
            "jobs_handled": 0,
            "credits_earned": 0,
            "samples": 0,
        },
        {
            "node_id": NODES[1],
            "name": "node-2",
            "status": "BUSY",
            "jobs_handled": 2,
            "credits_earned": 130,
            "samples": 60000,
        },
        {
            "node_id": NODES[2],
            "name": "node-3",
            "status": "ONLINE",
            "jobs_handled": 1,
            "credits_earned": 80,
            "samples": 40410,
        },
        {
            "node_id": NODES[3],
            "name": "node-4",
            "status": "OFFLINE",
            "jobs_handled": 1,
            "credits_earned": 10,
            "samples": 5000,
        },
    ],
}


def _block(height: int) -> dict[str, Any]:
    return {
        "height": height,
        "hash": hexid(f"block-{height}"),
        "prev_hash": hexid(f"block-{height - 1}"),
        "time": NOW - 1000 + 10 * height,
        "round": 0,
        "proposer": NODES[height % 3],
        "records": 1 if height != 7 else 2,
        "state_root": hexid(f"state-{height}"),
        "records_root": hexid(f"records-{height}"),
    }


BLOCKS = [_block(h) for h in range(9, 0, -1)]


def _block_detail(height: int) -> dict[str, Any]:
    block = _block(height)
    records = [
        {
            "id": hexid(f"record-{height}"),
            "kind": "job.complete" if height == 7 else "job.checkpoint",
            "signer": NODES[2],
            "signature": hexid(f"sig-{height}") * 2,
            "payload": {"job_id": JOB_DONE, "model_sha256": hexid("model"), "step": 330},
        }
    ]
    if height == 7:
        records.append(
            {
                "id": hexid("record-7b"),
                "kind": "transfer",
                "signer": ALICE,
                "signature": hexid("sig-7b") * 2,
                "payload": {"to": BOB, "amount": 25, "nonce": 3},
            }
        )
    block["records"] = records
    block["commit"] = {
        "height": height,
        "round": 0,
        "block_hash": block["hash"],
        "signatures": [
            {"validator": NODES[i], "signature": hexid(f"commit-{height}-{i}") * 2}
            for i in range(3)
        ],
    }
    return block


ACCOUNTS = {
    ALICE: {
        "account": ALICE,
        "balance": 850,
        "next_nonce": 4,
        "registered": True,
        "name": "alice",
        "earned": 0,
        "fees": 0,
    },
    BOB: {
        "account": BOB,
        "balance": 0,
        "next_nonce": 0,
        "registered": False,
        "name": None,
        "earned": 0,
        "fees": 0,
    },
}


class FakeLink:
    """A NodeLink answering from the tables above; ``calls`` records every call made."""

    def __init__(self, *, up: bool = True) -> None:
        self.up = up
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.post: Callable[[Message], object] = lambda m: None

    def start(self, post: Callable[[Message], object]) -> None:
        self.post = post
        if self.up:
            post(NodeConnected(dict(STATUS)))
        else:
            post(
                NodeLost(
                    "no node is running for data dir /data/node-1 (no control.json; "
                    "start one with: modelmine node --data-dir /data/node-1)",
                    1.0,
                    3,
                )
            )

    async def stop(self) -> None:
        return None

    async def call(self, method: str, /, **params: Any) -> Any:
        return await self.request(method, params)

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        call_timeout: float | None = None,
    ) -> Any:
        params = dict(params or {})
        self.calls.append((method, params))
        if not self.up:
            raise ControlUnavailable("no node")
        if method == "status":
            return dict(STATUS)
        if method == "peers":
            return [dict(p) for p in PEERS]
        if method == "stats":
            return dict(STATS)
        if method == "jobs.list":
            return [dict(j) for j in JOBS]
        if method == "jobs.get":
            for job in JOBS:
                if job["job_id"] == params["job_id"]:
                    return _job_detail(job)
            raise RpcError(-32010, "no such job")
        if method == "ledger.blocks":
            return [dict(b) for b in BLOCKS]
        if method == "ledger.block":
            return _block_detail(int(params["height"]))
        if method == "ledger.account":
            return dict(ACCOUNTS.get(params["account"], ACCOUNTS[BOB]))
        raise RpcError(-32601, f"the fake node has no {method}")


class FakeKeys:
    """A keystore of two fixed accounts; the password is the name twice."""

    def __init__(self) -> None:
        self.keys = {"alice": ALICE_KEY, "bob": BOB_KEY}

    def list(self) -> list[AccountInfo]:
        return [AccountInfo(n, bytes(k.verify_key)) for n, k in sorted(self.keys.items())]

    def create(self, name: str, password: str) -> AccountInfo:
        if name in self.keys:
            raise KeystoreError(f"an account named {name!r} already exists")
        if len(password) < 8:
            raise KeystoreError("password too short: use at least 8 characters")
        self.keys[name] = SigningKey(hashlib.sha256(name.encode()).digest())
        return AccountInfo(name, bytes(self.keys[name].verify_key))

    def unlock(self, name: str, password: str) -> SigningKey:
        if name not in self.keys:
            raise NoSuchAccount(f"no account named {name!r}")
        if password != name * 2:
            raise WrongPassword(f"wrong password for account {name!r}")
        return self.keys[name]


def fake_app(link: FakeLink | None = None, **options: Any) -> ModelMineApp:
    """The real app on the fake node, with a pinned clock, UTC times and no blinking."""
    return make_app(
        Path("/data/node-1"),
        link=link or FakeLink(),
        keys=FakeKeys(),
        clock=Clock(now=lambda: NOW, tz=datetime.UTC),
        verifier=lambda: (True, "chain verified: 9 blocks, 10 records, 27 signatures in 0.01 s"),
        machine_metrics=lambda: dict(PEERS[0]["metrics"], cpu_percent=7.0),
        status_every=3600.0,
        stats_every=3600.0,
        blink=False,
        **options,
    )
