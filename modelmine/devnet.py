"""``modelmine devnet``: a bootstrap server and N validator nodes on loopback, supervised.

Layout of the data dir (the same as ``modelmine genesis`` writes, plus logs)::

    DIR/genesis.json          the network
    DIR/bootstrap/            the bootstrap server's key and log
    DIR/node-1 .. node-N/     each node's key, genesis copy, databases, control.json, node.log

Ports are fixed from ``--base-port`` (bootstrap on it, node i on base+i, control on
base+100+i), so a node that restarts comes back at the address its peers remember. Running
devnet again on an existing DIR restarts the same network.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

import trio

from modelmine.genesis import GENESIS_FILE, Genesis, make_genesis
from modelmine.identity import load_or_create_node_key, save_node_key

if TYPE_CHECKING:
    from nacl.signing import SigningKey

STOP_TIMEOUT: Final = 10.0


def write_network(
    out: Path,
    validators: int,
    *,
    chain_id: str | None = None,
    grant: int = 1000,
    keys: Sequence[SigningKey] | None = None,
    genesis_time: int | None = None,
) -> Genesis:
    """``out/genesis.json`` plus ``out/node-i/`` with each validator's key and the genesis.

    ``keys``: the validators' keys (new ones by default); ``genesis_time``: now by default."""
    if (out / GENESIS_FILE).exists():
        raise FileExistsError(f"{out / GENESIS_FILE} already exists; choose another --out")
    from nacl.signing import SigningKey

    if keys is None:
        keys = [SigningKey.generate() for _ in range(validators)]
    if len(keys) != validators:
        raise ValueError(f"{len(keys)} keys for {validators} validators")
    genesis = make_genesis(
        [(bytes(k.verify_key), f"node-{i}") for i, k in enumerate(keys, 1)],
        chain_id=chain_id,
        initial_grant=grant,
    )
    if genesis_time is not None:
        genesis = dataclasses.replace(genesis, genesis_time=genesis_time)
    genesis.save(out / GENESIS_FILE)
    for i, key in enumerate(keys, 1):
        node_dir = out / f"node-{i}"
        node_dir.mkdir(parents=True, exist_ok=True)
        save_node_key(node_dir, key)
        genesis.save(node_dir / GENESIS_FILE)
    return genesis


@dataclass
class _Child:
    name: str
    argv: list[str]
    log_path: Path
    process: trio.Process | None = None
    log_file: IO[bytes] | None = None


class Devnet:
    def __init__(self, root: Path, nodes: int, base_port: int, *, fresh: bool = False) -> None:
        self.root = root.resolve()
        self.n = nodes
        self.base_port = base_port
        if fresh and self.root.exists():
            shutil.rmtree(self.root)
        if (self.root / GENESIS_FILE).exists():
            self.genesis = Genesis.load(self.root / GENESIS_FILE)
            if len(self.genesis.validators) != nodes:
                raise SystemExit(
                    f"error: {self.root} holds a devnet of {len(self.genesis.validators)} nodes; "
                    f"use --nodes {len(self.genesis.validators)} or --fresh"
                )
        else:
            self.genesis = write_network(self.root, nodes, chain_id=None)
        self.bootstrap_url = f"ws://127.0.0.1:{base_port}"

    def children(self) -> list[_Child]:
        py = [sys.executable, "-m", "modelmine"]
        boot_dir = self.root / "bootstrap"
        boot_dir.mkdir(exist_ok=True)
        load_or_create_node_key(boot_dir)
        out = [
            _Child(
                "bootstrap",
                [
                    *py,
                    "bootstrap",
                    "--listen",
                    f"127.0.0.1:{self.base_port}",
                    "--data-dir",
                    str(boot_dir),
                    "--genesis",
                    str(self.root / GENESIS_FILE),
                ],
                boot_dir / "bootstrap.log",
            )
        ]
        for i in range(1, self.n + 1):
            node_dir = self.root / f"node-{i}"
            out.append(
                _Child(
                    f"node-{i}",
                    [
                        *py,
                        "node",
                        "--data-dir",
                        str(node_dir),
                        "--name",
                        f"node-{i}",
                        "--listen",
                        f"127.0.0.1:{self.base_port + i}",
                        "--control",
                        f"127.0.0.1:{self.base_port + 100 + i}",
                        "--bootstrap",
                        self.bootstrap_url,
                        "--genesis",
                        str(self.root / GENESIS_FILE),
                    ],
                    node_dir / "node.log",
                )
            )
        return out

    def run_forever(self) -> int:
        return trio.run(self._run)

    async def _run(self) -> int:
        children = self.children()
        try:
            for child in children:
                child.log_file = child.log_path.open("ab")
                child.process = await trio.lowlevel.open_process(
                    child.argv, stdout=child.log_file, stderr=child.log_file, stdin=None
                )
            self._print_layout(children)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as nursery:
                    for child in children:
                        nursery.start_soon(self._watch, child)
                    async for _ in signals:
                        print("\nstopping the devnet ...", flush=True)
                        nursery.cancel_scope.cancel()
                        break
        finally:
            with trio.CancelScope(shield=True):
                await stop_all(children)
        print("devnet stopped", flush=True)
        return 0

    async def _watch(self, child: _Child) -> None:
        assert child.process is not None
        code = await child.process.wait()
        print(f"{child.name} exited with code {code}; see {child.log_path}", flush=True)

    def _print_layout(self, children: list[_Child]) -> None:
        print(f"devnet {self.genesis.chain_id}: bootstrap + {self.n} nodes in {self.root}")
        print(f"  bootstrap  {self.bootstrap_url}  log {children[0].log_path}")
        for i in range(1, self.n + 1):
            print(
                f"  node-{i}     ws://127.0.0.1:{self.base_port + i}  "
                f"control ws://127.0.0.1:{self.base_port + 100 + i}  "
                f"data dir {self.root / f'node-{i}'}"
            )
        print(f"try: modelmine peers --data-dir {self.root / 'node-1'}")
        print("press Ctrl-C to stop", flush=True)


async def stop_all(children: list[_Child]) -> None:
    live = [c for c in children if c.process is not None and c.process.returncode is None]
    for child in live:
        assert child.process is not None
        child.process.send_signal(signal.SIGTERM)
    with trio.move_on_after(STOP_TIMEOUT):
        for child in live:
            assert child.process is not None
            await child.process.wait()
    for child in live:
        assert child.process is not None
        if child.process.returncode is None:
            child.process.kill()
            await child.process.wait()
    for child in children:
        if child.log_file is not None:
            child.log_file.close()
