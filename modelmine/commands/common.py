"""Shared pieces of the CLI: the data dir, passwords, tables and JSON output."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import platformdirs

from modelmine.cli import CommandError


def default_data_dir() -> Path:
    home = os.environ.get("MODELMINE_HOME")
    if home:
        return Path(home).expanduser()
    return Path(platformdirs.user_data_dir("modelmine", appauthor=False))


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the node's data directory (default: $MODELMINE_HOME or the user data dir)",
    )


def add_client_args(parser: argparse.ArgumentParser) -> None:
    add_data_dir(parser)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def data_dir(args: argparse.Namespace) -> Path:
    value: Path | None = getattr(args, "data_dir", None)
    return (value or default_data_dir()).expanduser()


def add_password_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-file",
        type=Path,
        help="read the password from this file (else $MODELMINE_PASSWORD, else a prompt)",
    )


def read_password(args: argparse.Namespace, *, confirm: bool = False) -> str:
    path: Path | None = getattr(args, "password_file", None)
    if path is not None:
        try:
            return path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise CommandError(f"cannot read password file {path}: {exc.strerror}") from None
    env = os.environ.get("MODELMINE_PASSWORD")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise CommandError("no password: use --password-file, MODELMINE_PASSWORD or a terminal")
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Repeat password: ") != password:
        raise CommandError("the passwords do not match")
    return password


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def print_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    formatters: dict[str, Callable[[Any], str]] | None = None,
    empty: str = "(none)",
) -> None:
    """A plain aligned table: ``columns`` are (key, header) pairs."""
    if not rows:
        print(empty)
        return
    fmt = formatters or {}
    cells = [[fmt.get(k, _cell)(row.get(k)) for k, _ in columns] for row in rows]
    widths = [
        max(len(header), *(len(r[i]) for r in cells)) for i, (_, header) in enumerate(columns)
    ]
    print("  ".join(h.ljust(w) for (_, h), w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def ago(unix_seconds: float | None, now: float) -> str:
    if not unix_seconds:
        return "never"
    delta = max(0.0, now - unix_seconds)
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    return f"{delta / 3600:.1f}h ago"
