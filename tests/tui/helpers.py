"""Driving the TUI in tests: the screen as text, waiting for what a user would see, typing."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static

from modelmine.tui.app import ModelMineApp

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("MODELMINE_UPDATE_SNAPSHOTS") == "1"


def screen_text(app: ModelMineApp) -> str:
    """What the terminal shows, as plain text (trailing spaces trimmed)."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system=None,
        record=True,
        legacy_windows=False,
    )
    screen = app.screen
    console.print(screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    lines = console.export_text().splitlines()
    return "\n".join(line.rstrip() for line in lines).rstrip("\n") + "\n"


def check_snapshot(name: str, text: str) -> None:
    """Compare with tests/tui/snapshots/<name>.txt; MODELMINE_UPDATE_SNAPSHOTS=1 rewrites it."""
    path = SNAPSHOTS / f"{name}.txt"
    if UPDATE:
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"no snapshot {path}; run with MODELMINE_UPDATE_SNAPSHOTS=1"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "\n".join(
            f"{n:>3} - {a}\n    + {b}"
            for n, (a, b) in enumerate(
                zip(expected.splitlines(), text.splitlines(), strict=False), 1
            )
            if a != b
        )
        raise AssertionError(f"screen {name} differs from {path}:\n{diff}\n\n{text}")


def content(widget: Widget) -> str:
    """The plain text a Static shows."""
    assert isinstance(widget, Static)
    return str(widget.content)


def cell(table: DataTable[Any], row: str, column: str) -> str:
    return str(table.get_cell(row, column))


async def settle(pilot: Pilot[Any]) -> None:
    """Let messages, workers and the repaint finish."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def wait_for(pilot: Pilot[Any], predicate: Callable[[], Any], limit: float, what: str) -> Any:
    """Poll ``predicate`` between repaints until it is truthy; fail naming ``what``."""
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {limit} s waiting for {what}; screen:\n" + screen_text(pilot.app)  # type: ignore[arg-type]
            )
        await asyncio.sleep(0.05)
        await pilot.pause()


async def fill(pilot: Pilot[Any], selector: str, text: str) -> None:
    """Go to a text field, clear it and type ``text``, as a person would."""
    pilot.app.query_one(selector, Input).focus()
    await pilot.press("end", "shift+home", "backspace")
    await type_text(pilot, text)


async def type_text(pilot: Pilot[Any], text: str) -> None:
    """Type like a person: one key per character."""
    await pilot.press(*text)
