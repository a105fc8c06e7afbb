"""``make demo``: a local network, end to end, then everything stops.

It starts a devnet (bootstrap server + 4 validator nodes as real processes on loopback), waits
until every node sees every other ONLINE with live metrics, shows the network as a user would
see it through the CLI, and stops every process.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from pathlib import Path

import trio

from modelmine.control_client import ControlUnavailable, open_control_client
from modelmine.devnet import Devnet, stop_all

NODES = 4
TIMEOUT = 60.0


def _free_base_port() -> int:
    """A base port whose next 110 ports are free, so the demo never collides with a devnet."""
    for base in range(17700, 30000, 200):
        try:
            for offset in (0, *range(1, NODES + 1), *range(101, 101 + NODES)):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise SystemExit("demo: no free ports on 127.0.0.1")


async def _peers(data_dir: Path) -> list[dict[str, object]]:
    try:
        async with open_control_client(data_dir, connect_timeout=2.0) as client:
            result: list[dict[str, object]] = await client.call("peers")
            return result
    except ControlUnavailable:
        return []


async def _main(root: Path) -> int:
    devnet = Devnet(root, NODES, _free_base_port())
    children = devnet.children()
    start = time.monotonic()
    try:
        for child in children:
            child.log_file = child.log_path.open("ab")
            child.process = await trio.lowlevel.open_process(
                child.argv, stdout=child.log_file, stderr=child.log_file
            )
        print(
            f"[demo] started a bootstrap server and {NODES} nodes (chain {devnet.genesis.chain_id})"
        )
        with trio.fail_after(TIMEOUT):
            while True:
                views = [await _peers(root / f"node-{i}") for i in range(1, NODES + 1)]
                online = [sum(1 for p in v if p["status"] == "ONLINE") for v in views]
                print(f"[demo] {time.monotonic() - start:5.1f}s  peers ONLINE per node: {online}")
                if all(n == NODES - 1 for n in online):
                    break
                await trio.sleep(1.0)
        print(f"[demo] full membership after {time.monotonic() - start:.1f}s\n")
        from modelmine.cli import main as cli

        await trio.to_thread.run_sync(cli, ["status", "--data-dir", str(root / "node-1")])
        print()
        await trio.to_thread.run_sync(cli, ["peers", "--data-dir", str(root / "node-1")])
        print()
        return 0
    except trio.TooSlowError:
        print(f"[demo] the network did not form within {TIMEOUT:.0f}s; logs are in {root}")
        return 1
    finally:
        with trio.CancelScope(shield=True):
            await stop_all(children)
        print("[demo] stopped every process")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="modelmine-demo-") as tmp:
        return trio.run(_main, Path(tmp) / "devnet")


if __name__ == "__main__":
    sys.exit(main())
