"""Real node processes on loopback: start, query, kill -9, restart.

The one process harness of the repository: the integration tests, the TUI's live tests, the
network benchmarks (bench/bench_jobs.py, bench/bench_ledger_network.py) and
tools/kill_campaign.py all start their bootstrap server and nodes with :class:`Cluster` and
talk to them with :func:`call`, :func:`try_call` and :func:`wait_for`. Nothing here needs
pytest.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio_websocket
from nacl.signing import SigningKey
from trio_websocket import WebSocketConnection

from modelmine.control_client import ControlUnavailable, open_control_client
from modelmine.devnet import write_network
from modelmine.genesis import GENESIS_FILE, Genesis
from modelmine.p2p.handshake import Handshake, Session
from modelmine.p2p.transport import _close_websocket

STOP_TIMEOUT = 10.0  # seconds from SIGTERM to SIGKILL
LOG_TAIL = 4000  # characters of each log that Cluster.logs() shows
_PY = (sys.executable, "-m", "modelmine", "--log-level", "INFO")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    """The environment of every process started here: one BLAS thread, unbuffered output."""
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
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(),
            )

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM, without waiting: :meth:`reap` waits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        """Wait for the process to exit until ``deadline`` (monotonic), then SIGKILL it."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        self.terminate()
        self.reap(time.monotonic() + STOP_TIMEOUT)

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
    """A bootstrap server and ``n`` validator nodes of one genesis, laid out under ``root``:
    ``root/genesis.json``, ``root/bootstrap.log`` and ``root/node-i/`` (key, genesis copy,
    databases, ``node.log``). Nothing runs before :meth:`start`."""

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
    # The chain id of the genesis written for a new network.
    chain_id: str = "test-net"
    # A network the caller has already written to ``root`` (genesis.json and node-i/ with
    # each validator's key, as ``write_network`` lays it out), for a custom genesis or a
    # prebuilt chain; by default a new one of ``n`` validators is written.
    existing: InitVar[Genesis | None] = None

    def __post_init__(self, existing: Genesis | None) -> None:
        if existing is None:
            existing = write_network(self.root, self.n, chain_id=self.chain_id)
        if len(existing.validators) != self.n:
            raise ValueError(f"the genesis has {len(existing.validators)} validators, not {self.n}")
        self.genesis = existing
        boot_port = free_port()
        self.bootstrap_url = f"ws://{self.host('bootstrap')}:{boot_port}"
        self.bootstrap = Proc(
            "bootstrap",
            [
                *self.prefix.get("bootstrap", []),
                *_PY,
                "bootstrap",
                "--listen",
                f"{self.host('bootstrap')}:{boot_port}",
                "--genesis",
                str(self.root / GENESIS_FILE),
            ],
            self.root / "bootstrap.log",
        )
        self.ports = [free_port() for _ in range(self.n)]
        self.nodes = [
            self._node(
                f"node-{i}",
                self.data_dir(i),
                f"{self.host(f'node-{i}')}:{self.ports[i - 1]}",
                self.prefix.get(f"node-{i}", []),
                self.node_args.get(i, []),
            )
            for i in range(1, self.n + 1)
        ]

    def _node(
        self, name: str, directory: Path, listen: str, prefix: list[str], args: list[str]
    ) -> Proc:
        argv = [
            *prefix,
            *_PY,
            "node",
            "--data-dir",
            str(directory),
            "--name",
            name,
            "--listen",
            listen,
            "--bootstrap",
            self.bootstrap_url,
            "--genesis",
            str(self.root / GENESIS_FILE),
            *args,
        ]
        return Proc(name, argv, directory / "node.log")

    def add_observer(self, name: str, args: list[str] | tuple[str, ...] = ()) -> Proc:
        """A node that is not a validator, in ``root/name``: it follows the chain and syncs
        it. Not started yet; :meth:`stop` stops it."""
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        proc = self._node(name, directory, f"127.0.0.1:{free_port()}", [], list(args))
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

    @property
    def procs(self) -> list[Proc]:
        return [self.bootstrap, *self.nodes, *self.extra]

    def check_alive(self) -> None:
        """Raise if a started process has exited (one that was stopped or killed on purpose
        counts too: call this only while all of them should run)."""
        dead = [p for p in self.procs if p.process is not None and p.process.poll() is not None]
        if dead:
            names = ", ".join(f"{p.name} (exit {p.process.returncode})" for p in dead if p.process)
            raise RuntimeError(f"process exited: {names}")

    def stop(self) -> None:
        """SIGTERM to every process at once; SIGKILL to any still running STOP_TIMEOUT s later."""
        procs = [*self.nodes, *self.extra, self.bootstrap]
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in procs:
            proc.reap(deadline)

    def logs(self, tail: int = LOG_TAIL) -> str:
        """The last ``tail`` characters of every process's log, each under its name."""
        return "\n".join(
            f"==== {p.name} ({p.log_path})\n{p.log()[-tail:] or '(no log)'}" for p in self.procs
        )

    def count_in_logs(self, needle: str) -> int:
        """How often ``needle`` stands in the logs of all the processes."""
        return sum(p.log().count(needle) for p in self.procs)


async def call(data_dir: Path, method: str, **params: Any) -> Any:
    async with open_control_client(data_dir) as client:
        return await client.call(method, **params)


async def try_call(data_dir: Path, method: str, **params: Any) -> Any:
    try:
        return await call(data_dir, method, **params)
    except (ControlUnavailable, OSError):
        return None


async def wait_for(
    predicate: Callable[[], Awaitable[bool]],
    limit: float,
    what: str,
    poll: float = 0.5,
    check: Callable[[], None] | None = None,
) -> float:
    """Poll ``predicate`` until true; returns the seconds it took, or fails naming ``what``.

    ``check`` runs between polls and may raise to give up early (``Cluster.check_alive``)."""
    start = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - start
        if check is not None:
            check()
        if time.monotonic() - start > limit:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        await trio.sleep(poll)


async def peer_statuses(data_dir: Path) -> dict[str, dict[str, Any]]:
    peers = await try_call(data_dir, "peers")
    return {p["node_id"]: p for p in peers or []}


async def submit(data_dir: Path, make: Callable[[str, int], bytes], signer: bytes) -> int:
    """Submit a record built with the signer's next nonce through this node; its height."""
    _, height = await submit_final(data_dir, "ledger.submit", "record_id", make, signer)
    return height


async def submit_final(
    data_dir: Path,
    method: str,
    id_key: str,
    make: Callable[[str, int], bytes],
    signer: bytes,
    attempts: int = 3,
) -> tuple[str, int]:
    """Submit a record with the signer's next nonce through this node and wait until it is
    final: (its id, its height). A node a block behind the one that took the signer's last
    record hands out a nonce already used; the record then leaves the pool unincluded, and
    it is signed again with the nonce the node knows by then."""
    async with open_control_client(data_dir) as client:
        for attempt in range(attempts):
            status = await client.call("status")
            account = await client.call("ledger.account", account=signer.hex())
            raw = make(status["chain_id"], account["next_nonce"])
            sent = await client.call(method, record=raw.hex())
            done = await client.request(
                "ledger.wait", {"record_id": sent[id_key], "timeout": 60}, call_timeout=70
            )
            if done["height"] is not None:
                return str(sent[id_key]), int(done["height"])
            await trio.sleep(0.5 * (attempt + 1))
        raise AssertionError(f"no record of {signer.hex()[:8]} final after {attempts} tries")


@dataclass
class RawPeer:
    """A peer speaking the real handshake on a raw websocket, free to misbehave after it."""

    ws: trio_websocket.WebSocketConnection
    session: Session
    key: SigningKey

    async def send_plain(self, plaintext: bytes) -> None:
        await self.ws.send_message(self.session.sender.seal(plaintext))


def only(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Whether ``exc`` is one of ``kinds``, or a group of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return all(only(e, kinds) for e in exc.exceptions)
    return isinstance(exc, kinds)


@asynccontextmanager
async def raw_websocket(url: str, **options: Any) -> AsyncIterator[WebSocketConnection]:
    """A plain websocket client on a TCP stream of our own, closed however the connection
    ends: trio-websocket leaves its stream open when the server refuses the upgrade (a 503)
    or closes first, and the socket then turns up as a ResourceWarning in some later test.
    A refused upgrade raises HandshakeError (possibly in an exception group)."""
    address, _, resource = url.removeprefix("ws://").partition("/")
    host, _, port = address.rpartition(":")
    options.setdefault("max_message_size", 2**23)
    stream = await trio.open_tcp_stream(host, int(port))
    error: Exception | None = None
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, host, "/" + resource, **options
            )
            try:
                yield ws
            except Exception as exc:  # re-raised as itself, not in the nursery's group
                error = exc
            finally:
                await _close_websocket(ws, 1000, "")
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()
    if error is not None:
        raise error


@asynccontextmanager
async def raw_peer(c: Cluster, i: int, network_id: bytes | None = None) -> AsyncIterator[RawPeer]:
    key = SigningKey.generate()
    url = f"ws://127.0.0.1:{c.ports[i - 1]}"
    async with raw_websocket(url) as ws:
        hs = Handshake.initiator(key, network_id or c.genesis.network_id, None)
        await ws.send_message(hs.start())
        reply = hs.receive(await ws.get_message())
        assert reply is not None
        await ws.send_message(reply)
        yield RawPeer(ws, hs.result, key)
