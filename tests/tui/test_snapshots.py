"""Every screen of the TUI, rendered at 120x40 against the fake node and compared as text with
tests/tui/snapshots/ (MODELMINE_UPDATE_SNAPSHOTS=1 rewrites them after a deliberate change)."""

from __future__ import annotations

import asyncio

import pytest

from modelmine.tui import ops
from tests.tui.fake import ALICE_KEY, FakeLink, fake_app
from tests.tui.helpers import check_snapshot, screen_text, settle

SCREENS = [
    ("jobs", []),
    ("jobs-mine-completed", ["m", "f", "f", "f"]),
    ("submit", ["2"]),
    ("nodes", ["3"]),
    ("ledger", ["4"]),
    ("ledger-block-7-verified", ["4", "down", "down", "v"]),
    ("network", ["5"]),
    ("accounts", ["6"]),
    ("job-detail-running", ["down", "enter"]),
    ("job-detail-completed", ["down", "down", "enter"]),
    ("help", ["question_mark"]),
]


async def _render(keys: list[str], *, up: bool = True, unlocked: bool = True) -> str:
    app = fake_app(FakeLink(up=up))
    app.animation_level = "none"
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        if unlocked:
            app.set_account(ops.ActiveAccount("alice", ALICE_KEY), 850)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        return screen_text(app)


@pytest.mark.parametrize(("name", "keys"), SCREENS, ids=[name for name, _ in SCREENS])
def test_screen(name: str, keys: list[str]) -> None:
    check_snapshot(name, asyncio.run(_render(keys)))


def test_outage_screen() -> None:
    check_snapshot("outage", asyncio.run(_render([], up=False, unlocked=False)))
