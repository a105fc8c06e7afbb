"""The CLI as a user runs it: real processes, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(
    *args: str, password: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("MODELMINE_PASSWORD", None)
    if password is not None:
        env["MODELMINE_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "modelmine", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert text in lines[0]


def test_account_create_list_and_errors(tmp_path: Path) -> None:
    d = str(tmp_path)
    created = run("account", "create", "alice", "--data-dir", d, "--json", password="pw-for-alice")
    assert created.returncode == 0, created.stderr
    account_id = json.loads(created.stdout)["account_id"]
    listed = run("account", "list", "--data-dir", d, "--json")
    assert json.loads(listed.stdout) == [{"name": "alice", "account_id": account_id}]

    pw_file = tmp_path / "pw"
    pw_file.write_text("pw-for-bob\n")
    assert (
        run("account", "create", "bob", "--data-dir", d, "--password-file", str(pw_file)).returncode
        == 0
    )

    one_line_error(
        run("account", "create", "alice", "--data-dir", d, password="pw-for-alice"),
        "already exists",
    )
    one_line_error(run("account", "create", "carol", "--data-dir", d), "no password")
    (tmp_path / "accounts" / "bob.json").write_text("{broken")
    one_line_error(run("account", "list", "--data-dir", d), "corrupt")


@pytest.mark.parametrize("command", ["status", "peers"])
def test_client_commands_without_a_node_give_one_line(tmp_path: Path, command: str) -> None:
    one_line_error(run(command, "--data-dir", str(tmp_path)), "no node is running")


def test_genesis_lays_out_validator_dirs(tmp_path: Path) -> None:
    out = tmp_path / "net"
    result = run("genesis", "--validators", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    doc = json.loads((out / "genesis.json").read_text())
    assert len(doc["validators"]) == 3
    for i in (1, 2, 3):
        assert (out / f"node-{i}" / "node.key").stat().st_mode & 0o777 == 0o600
        assert (out / f"node-{i}" / "genesis.json").exists()
    one_line_error(run("genesis", "--validators", "3", "--out", str(out)), "already exists")
    one_line_error(
        run("node", "--data-dir", str(tmp_path / "x"), "--genesis", str(tmp_path / "nope.json")),
        "no genesis file",
    )
