"""`modelmine devnet` as a user runs it: it lays out the network, starts it, and stops it
cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import trio

from tests.integration.cluster import free_port, peer_statuses, wait_for

pytestmark = pytest.mark.slow


async def test_devnet_starts_a_network_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    root = tmp_path / "dn"
    base = free_port()
    while any(_busy(base + k) for k in (0, 1, 2, 101, 102)):
        base = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelmine",
            "devnet",
            "--nodes",
            "2",
            "--base-port",
            str(base),
            "--data-dir",
            str(root),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    try:
        with trio.fail_after(60):

            async def both_online() -> bool:
                a = await peer_statuses(root / "node-1")
                return any(p["status"] == "ONLINE" for p in a.values())

            await wait_for(both_online, 50, "devnet nodes to see each other")
        genesis = json.loads((root / "genesis.json").read_text())
        assert len(genesis["validators"]) == 2
        info = json.loads((root / "node-1" / "control.json").read_text())
        assert info["url"] == f"ws://127.0.0.1:{base + 101}"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) == 3  # bootstrap + 2 nodes
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "devnet stopped" in out
    assert f"ws://127.0.0.1:{base + 1}" in out and "data dir" in out
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert not (root / "node-1" / "control.json").exists()


def _busy(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False
