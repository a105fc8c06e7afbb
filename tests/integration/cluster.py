"""Real node processes on loopback for integration tests: start, query, kill -9, restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio_websocket
from nacl.signing import SigningKey

from modelmine.control_client import ControlUnavailable, open_control_client
from modelmine.devnet import write_network
from modelmine.genesis import Genesis
from modelmine.p2p.handshake import Handshake, Session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Proc:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_env()
        )
        log.close()

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class Cluster:
    root: Path
    n: int
    node_args: dict[int, list[str]] = field(default_factory=dict)
    genesis: Genesis = field(init=False)
    bootstrap: Proc = field(init=False)
    nodes: list[Proc] = field(init=False)
    ports: list[int] = field(init=False)
    bootstrap_url: str = field(init=False)
    extra: list[Proc] = field(default_factory=list)
    # Processes on other hosts, by name ("bootstrap", "node-1", ...): the address each one
    # listens on (default 127.0.0.1) and a command prefix that runs it there (such as
    # ``ip netns exec NAME``).
    hosts: dict[str, str] = field(default_factory=dict)
    prefix: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.genesis = write_network(self.root, self.n, chain_id="test-net")
        boot_port = free_port()
        self.bootstrap_url = f"ws://{self.host('bootstrap')}:{boot_port}"
        py = [sys.executable, "-m", "modelmine", "--log-level", "INFO"]
        self.bootstrap = Proc(
            "bootstrap",
            [
                *self.prefix.get("bootstrap", []),
                *py,
                "bootstrap",
                "--listen",
                f"{self.host('bootstrap')}:{boot_port}",
                "--genesis",
                str(self.root / "genesis.json"),
            ],
            self.root / "bootstrap.log",
        )
        self.ports = [free_port() for _ in range(self.n)]
        self.nodes = [
            Proc(
                f"node-{i}",
                [
                    *self.prefix.get(f"node-{i}", []),
                    *py,
                    "node",
                    "--data-dir",
                    str(self.data_dir(i)),
                    "--name",
                    f"node-{i}",
                    "--listen",
                    f"{self.host(f'node-{i}')}:{self.ports[i - 1]}",
                    "--bootstrap",
                    self.bootstrap_url,
                    "--genesis",
                    str(self.root / "genesis.json"),
                    *self.node_args.get(i, []),
                ],
                self.data_dir(i) / "node.log",
            )
            for i in range(1, self.n + 1)
        ]

    def add_observer(self, name: str) -> Proc:
        """A node that is not a validator: it follows the chain and syncs it."""
        py = [sys.executable, "-m", "modelmine", "--log-level", "INFO"]
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        proc = Proc(
            name,
            [
                *py,
                "node",
                "--data-dir",
                str(directory),
                "--name",
                name,
                "--listen",
                f"127.0.0.1:{free_port()}",
                "--bootstrap",
                self.bootstrap_url,
                "--genesis",
                str(self.root / "genesis.json"),
            ],
            directory / "node.log",
        )
        self.extra.append(proc)
        return proc

    def host(self, name: str) -> str:
        return self.hosts.get(name, "127.0.0.1")

    def index_of(self, node_id_hex: str) -> int:
        return 1 + [v.node_id.hex() for v in self.genesis.validators].index(node_id_hex)

    def data_dir(self, i: int) -> Path:
        return self.root / f"node-{i}"

    def node_id(self, i: int) -> str:
        return self.genesis.validators[i - 1].node_id.hex()

    def start(self) -> None:
        self.bootstrap.start()
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for proc in [*self.nodes, *self.extra, self.bootstrap]:
            proc.stop()

    def logs(self) -> str:
        procs = [self.bootstrap, *self.nodes, *self.extra]
        return "\n".join(f"==== {p.name}\n{p.log()[-4000:]}" for p in procs)


async def call(data_dir: Path, method: str, **params: Any) -> Any:
    async with open_control_client(data_dir) as client:
        return await client.call(method, **params)


async def try_call(data_dir: Path, method: str, **params: Any) -> Any:
    try:
        return await call(data_dir, method, **params)
    except (ControlUnavailable, OSError):
        return None


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], limit: float, what: str, poll: float = 0.5
) -> float:
    """Poll ``predicate`` until true; returns the seconds it took, or fails naming ``what``."""
    start = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - start
        if time.monotonic() - start > limit:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        await trio.sleep(poll)


async def peer_statuses(data_dir: Path) -> dict[str, dict[str, Any]]:
    peers = await try_call(data_dir, "peers")
    return {p["node_id"]: p for p in peers or []}


async def submit(data_dir: Path, make: Callable[[str, int], bytes], signer: bytes) -> int:
    """Submit a record built with the signer's next nonce through this node; its height."""
    async with open_control_client(data_dir) as client:
        status = await client.call("status")
        account = await client.call("ledger.account", account=signer.hex())
        raw = make(status["chain_id"], account["next_nonce"])
        sent = await client.call("ledger.submit", record=raw.hex())
        done = await client.request(
            "ledger.wait", {"record_id": sent["record_id"], "timeout": 60}, call_timeout=70
        )
        height = done["height"]
        assert height is not None, f"record {sent['record_id'][:12]} not final in 60 s"
        return int(height)


@dataclass
class RawPeer:
    """A peer speaking the real handshake on a raw websocket, free to misbehave after it."""

    ws: trio_websocket.WebSocketConnection
    session: Session
    key: SigningKey

    async def send_plain(self, plaintext: bytes) -> None:
        await self.ws.send_message(self.session.sender.seal(plaintext))


@asynccontextmanager
async def raw_peer(c: Cluster, i: int, network_id: bytes | None = None) -> AsyncIterator[RawPeer]:
    key = SigningKey.generate()
    url = f"ws://127.0.0.1:{c.ports[i - 1]}"
    async with trio_websocket.open_websocket_url(url) as ws:
        hs = Handshake.initiator(key, network_id or c.genesis.network_id, None)
        await ws.send_message(hs.start())
        reply = hs.receive(await ws.get_message())
        assert reply is not None
        await ws.send_message(reply)
        yield RawPeer(ws, hs.result, key)
