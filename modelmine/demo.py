"""``make demo``: a local network trains a real job end to end, then everything stops.

1. Start a devnet: a bootstrap server and 4 validator nodes, each a real process on loopback.
2. Wait until every node sees the others ONLINE and the ledger makes blocks.
3. Create an account (encrypted keystore) and register it on the ledger (1,000 credits).
4. Submit the digits MLP example through node 1 and follow its live progress.
5. Print the validation accuracy, the worker, the block of the result and the balances
   before and after; then stop every process.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from modelmine.cli import main as cli
from modelmine.control_client import ControlUnavailable, open_control_client
from modelmine.devnet import Devnet, stop_all

NODES = 4
FORM_TIMEOUT = 60.0
SPEC = Path(__file__).resolve().parent.parent / "examples" / "digits-mlp.toml"


def _free_base_port() -> int:
    """A base port whose node and control ports are free, so the demo never collides."""
    for base in range(17700, 30000, 200):
        try:
            for offset in (0, *range(1, NODES + 1), *range(101, 101 + NODES)):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise SystemExit("demo: no free ports on 127.0.0.1")


async def _call(data_dir: Path, method: str, **params: Any) -> Any:
    try:
        async with open_control_client(data_dir, connect_timeout=2.0) as client:
            return await client.call(method, **params)
    except ControlUnavailable:
        return None


async def _run_cli(*argv: str) -> int:
    print(f"\n$ modelmine {' '.join(argv)}", flush=True)
    code: int = await trio.to_thread.run_sync(cli, list(argv))
    if code != 0:
        raise SystemExit(f"demo: `modelmine {' '.join(argv)}` failed with exit code {code}")
    return code


async def _wait_for_block_after(node: Path, height: int) -> None:
    """Until the node commits a block above ``height`` (pushed by the node, no polling)."""
    with trio.move_on_after(45):
        async with open_control_client(node) as client, client.subscribe("blocks") as blocks:
            if (await client.call("status"))["height"] > height:
                return
            async for block in blocks:
                if block.get("height", 0) > height:
                    return


async def _balances(node: Path, ids: dict[str, str]) -> dict[str, int]:
    out = {}
    for label, account in ids.items():
        info = await _call(node, "ledger.account", account=account)
        out[label] = info["balance"] if info else 0
    return out


async def _main(root: Path) -> int:
    devnet = Devnet(root, NODES, _free_base_port())
    children = devnet.children()
    # node-1 plays your own machine: it submits the job but takes no jobs (MAINTENANCE), so
    # another machine of the network trains it.
    children[1].argv.append("--maintenance")
    node1 = root / "node-1"
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
        with trio.fail_after(FORM_TIMEOUT):
            while True:
                views = [
                    await _call(root / f"node-{i}", "peers") or [] for i in range(1, NODES + 1)
                ]
                up = [sum(1 for p in v if p["status"] in ("ONLINE", "MAINTENANCE")) for v in views]
                print(f"[demo] {time.monotonic() - start:5.1f}s  peers up per node: {up}")
                if all(n == NODES - 1 for n in up):
                    break
                await trio.sleep(1.0)
        print(f"[demo] the network formed after {time.monotonic() - start:.1f}s")
        await _run_cli("peers", "--data-dir", str(node1))

        os.environ.setdefault("MODELMINE_PASSWORD", "demo-password")
        await _run_cli("account", "create", "demo", "--data-dir", str(node1))
        await _run_cli("account", "register", "demo", "--data-dir", str(node1))
        accounts = await _call(node1, "ledger.accounts")
        demo_id = next(a["account"] for a in accounts if a["name"] == "demo")
        node_ids = {
            f"node-{i}": v.node_id.hex() for i, v in enumerate(devnet.genesis.validators, 1)
        }
        watched = {"demo account": demo_id, **node_ids}
        before = await _balances(node1, watched)

        await _run_cli(
            "submit", str(SPEC), "--account", "demo", "--follow", "--data-dir", str(node1)
        )
        jobs = await _call(node1, "jobs.list")
        job = await _call(node1, "jobs.get", job_id=jobs[0]["job_id"])
        block = await _call(node1, "ledger.block", height=job["block"])
        print("\n[demo] waiting for the next block, which pays the validators their 20% ...")
        await _wait_for_block_after(node1, job["block"])
        after = await _balances(node1, watched)
        worker = next((n for n, i in node_ids.items() if i == job["worker"]), job["worker"][:8])

        print("\n[demo] result")
        print(f"  job               {job['job_id']}")
        print(f"  status            {job['status']}")
        print(f"  val accuracy      {job['metrics'].get('val_accuracy', float('nan')):.4f}")
        print(f"  trained by        {worker} ({job['worker'][:8]})")
        print(f"  recorded in block {job['block']}  hash {block['hash']}")
        print(f"  model sha256      {job['model_sha256']}")
        print("\n[demo] balances (credits)")
        print(f"  {'account':<14}{'before':>8}{'after':>8}{'change':>8}")
        for label in watched:
            print(
                f"  {label:<14}{before[label]:>8}{after[label]:>8}{after[label] - before[label]:>+8}"
            )
        print("  (stake 100: 80 to the worker, 20 to the validators who signed the result's block)")
        return 0 if job["status"] == "COMPLETED" else 1
    except trio.TooSlowError:
        print(f"[demo] the network did not form within {FORM_TIMEOUT:.0f}s; logs are in {root}")
        return 1
    finally:
        with trio.CancelScope(shield=True):
            await stop_all(children)
        print(f"[demo] stopped every process after {time.monotonic() - start:.1f}s")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="modelmine-demo-") as tmp:
        return trio.run(_main, Path(tmp) / "devnet")


if __name__ == "__main__":
    sys.exit(main())
