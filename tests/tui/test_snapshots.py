"""Every screen of the TUI, rendered at 120x40 against the fake node and compared as text with
tests/tui/snapshots/ (MODELMINE_UPDATE_SNAPSHOTS=1 rewrites them after a deliberate change).

Screens are visited in a few sessions, one key sequence after the other, as a user would."""

from __future__ import annotations

import asyncio

import pytest

from modelmine.tui import ops
from tests.tui.fake import ALICE_KEY, FakeLink, fake_app
from tests.tui.helpers import check_snapshot, screen_text, settle

SESSIONS = {
    "views": [
        ("jobs", []),
        ("submit", ["2"]),
        ("nodes", ["escape", "3"]),
        ("ledger", ["4"]),
        ("ledger-block-7-verified", ["down", "down", "v"]),
        ("network", ["5"]),
        ("accounts", ["6"]),
        ("jobs-mine-completed", ["1", "m", "f", "f", "f"]),
        ("help", ["question_mark"]),
    ],
    "job-detail": [
        ("job-detail-running", ["down", "enter"]),
        ("job-detail-completed", ["escape", "down", "enter"]),
    ],
}


async def _visit(steps: list[tuple[str, list[str]]], *, up: bool = True) -> dict[str, str]:
    app = fake_app(FakeLink(up=up))
    app.animation_level = "none"
    screens: dict[str, str] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        if up:
            app.set_account(ops.ActiveAccount("alice", ALICE_KEY), 850)
        for name, keys in steps:
            for key in keys:
                await pilot.press(key)
                await settle(pilot)
            screens[name] = screen_text(app)
    return screens


@pytest.mark.parametrize("session", list(SESSIONS))
def test_screens(session: str) -> None:
    for name, text in asyncio.run(_visit(SESSIONS[session])).items():
        check_snapshot(name, text)


def test_outage_screen() -> None:
    screens = asyncio.run(_visit([("outage", [])], up=False))
    check_snapshot("outage", screens["outage"])
