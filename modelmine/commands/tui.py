"""``modelmine tui``: the terminal UI of the local node (Textual; see docs/tui.md)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from modelmine.cli import CommandError
from modelmine.commands.common import add_data_dir, data_dir

LOG_FILE = "tui.log"


def register(sub: Any) -> None:
    p = sub.add_parser("tui", help="terminal UI: accounts, submit, jobs, nodes, ledger, stats")
    add_data_dir(p)
    p.set_defaults(func=cmd_tui)


def log_to_file(path: Path) -> None:
    """Send every log record to ``path``: the terminal belongs to the UI."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
    logging.captureWarnings(True)  # a warning printed to stderr would tear the screen


def cmd_tui(args: argparse.Namespace) -> int:
    directory = data_dir(args)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        log_to_file(directory / LOG_FILE)
    except OSError as exc:
        raise CommandError(f"cannot use data dir {directory}: {exc.strerror or exc}") from None
    from modelmine.tui.app import make_app

    logging.getLogger(__name__).info("modelmine tui started for %s", directory)
    make_app(directory).run()
    return 0
