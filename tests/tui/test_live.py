"""The TUI against real node processes (a 2-node network; node-1, which the TUI talks to, takes
no jobs, so node-2 trains): accounts, submitting through the form, the dashboard, job detail
and ledger following a job to COMPLETED, canceling a long job, and the node going away and
coming back while the TUI is open."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from textual.message import Message
from textual.widgets import DataTable

from modelmine.identity import Keystore
from modelmine.ledger import make_register
from modelmine.tui.app import ModelMineApp, make_app
from modelmine.tui.dialogs import Confirm, OutageScreen
from modelmine.tui.job_detail import JobDetailScreen
from modelmine.tui.messages import JobSubmitted, NodeConnected, NodeLost, ProgressReported
from tests.integration.cluster import Cluster, submit, try_call, wait_for
from tests.tui.helpers import cell, content, fill, settle, type_text
from tests.tui.helpers import wait_for as wait_until

pytestmark = pytest.mark.slow

PASSWORD = "correct horse"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("tui") / "net", 2, node_args={1: ["--maintenance"]})
    c.start()
    try:
        trio.run(_ready, c)
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


async def _ready(c: Cluster) -> None:
    async def linked() -> bool:
        for i in (1, 2):
            peers = await try_call(c.data_dir(i), "peers")
            if not peers or not any(p["status"] in ("ONLINE", "MAINTENANCE") for p in peers):
                return False
        return True

    await wait_for(linked, 45, "the two nodes to see each other")


def _app(c: Cluster) -> ModelMineApp:
    return make_app(c.data_dir(1), blink=False, status_every=0.5, stats_every=1.0)


async def _connected(pilot: Any, app: ModelMineApp) -> None:
    await wait_until(pilot, lambda: app.connected and app.node_status, 20, "the TUI to connect")


async def _unlock(pilot: Any, app: ModelMineApp, name: str, password: str) -> None:
    table = app.query_one("#accounts-table", DataTable)
    await wait_until(pilot, lambda: name in table.rows, 10, f"account {name} in the list")
    table.move_cursor(row=table.get_row_index(name))
    await fill(pilot, "#unlock-password", password)
    await pilot.press("enter")


async def _submit_through_form(
    pilot: Any, app: ModelMineApp, seen: list[Message], title: str, layers: str, epochs: str
) -> str:
    await pilot.press("2")
    await fill(pilot, "#f-title", title)
    await fill(pilot, "#f-layers", layers)
    await fill(pilot, "#f-epochs", epochs)
    await pilot.press("ctrl+s")
    submitted = await wait_until(
        pilot,
        lambda: next((m for m in seen if isinstance(m, JobSubmitted)), None),
        60,
        f"job {title!r} to be on the ledger",
    )
    seen.remove(submitted)
    assert content(app.query_one("#submit-notice")).startswith("submitted job")
    return str(submitted.job_id)


async def _open_job(pilot: Any, app: ModelMineApp, job_id: str) -> JobDetailScreen:
    await pilot.press("escape")
    await pilot.press("1")
    table = app.query_one("#jobs-table", DataTable)
    await wait_until(pilot, lambda: job_id in table.rows, 10, "the job in the dashboard")
    table.move_cursor(row=table.get_row_index(job_id))
    await pilot.press("enter")
    await wait_until(pilot, lambda: isinstance(app.screen, JobDetailScreen), 5, "job detail")
    screen = app.screen
    assert isinstance(screen, JobDetailScreen)
    return screen


def test_account_submit_follow_to_completed_and_find_the_block(net: Cluster) -> None:
    seen: list[Message] = []

    async def scenario() -> None:
        app = _app(net)
        async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
            await _connected(pilot, app)
            notice = app.query_one("#account-notice")

            # Create an account: the passwords must match.
            await pilot.press("6", "n")
            await type_text(pilot, "alice")
            await fill(pilot, "#new-password", PASSWORD)
            await fill(pilot, "#new-repeat", "something else")
            await pilot.press("enter")
            assert content(notice) == "the passwords do not match"
            await fill(pilot, "#new-repeat", PASSWORD)
            await pilot.press("enter")
            await wait_until(pilot, lambda: "created alice" in content(notice), 20, "created")

            # Unlock it: a wrong password is said inline, the right one makes it active.
            await _unlock(pilot, app, "alice", "not the password")
            await wait_until(pilot, lambda: "wrong password" in content(notice), 20, "refused")
            assert app.account is None
            await _unlock(pilot, app, "alice", PASSWORD)
            await wait_until(pilot, lambda: app.account is not None, 20, "alice unlocked")

            # Register it on the ledger: the grant shows as its balance.
            await pilot.press("g")
            await wait_until(pilot, lambda: "registered alice" in content(notice), 60, "grant")
            await wait_until(pilot, lambda: app.balance == 1000, 10, "the grant in the header")
            assert "alice 1,000 cr" in content(app.query_one("#header"))

            # Submit a job through the form, signed by alice.
            job_id = await _submit_through_form(pilot, app, seen, "tui digits", "64", "30")
            await wait_until(pilot, lambda: app.balance == 900, 10, "the stake taken")

            # The dashboard follows it to COMPLETED with a full bar.
            await pilot.press("escape", "1")
            table = app.query_one("#jobs-table", DataTable)
            await wait_until(
                pilot,
                lambda: job_id in table.rows and cell(table, job_id, "status") == "COMPLETED",
                60,
                "COMPLETED in the dashboard",
            )
            assert "100.0%" in cell(table, job_id, "progress")
            assert cell(table, job_id, "worker") == "node-2"
            assert float(cell(table, job_id, "accuracy").rstrip("%")) > 80
            counts = content(app.query_one("#count-completed"))
            assert counts.split()[-1] == "1"
            progress = [
                m for m in seen if isinstance(m, ProgressReported) and m.report["job_id"] == job_id
            ]
            assert progress, "no live progress report reached the TUI"

            # The detail view: final metrics, model hash, the block of the result, credits.
            detail = await _open_job(pilot, app, job_id)
            await wait_until(pilot, lambda: detail.job.get("block"), 10, "the job's block")
            summary = content(detail.query_one("#job-summary"))
            assert "COMPLETED" in summary
            assert f"model sha256 {detail.job['model_sha256']}" in summary
            block = int(detail.job["block"])
            assert f"ledger block {block}" in summary
            events = detail.query_one("#job-events", DataTable)
            kinds = [str(events.get_row_at(i)[2]) for i in range(events.row_count)]
            assert kinds[0] == "completed" and "claimed" in kinds and "submitted" in kinds
            contributions = detail.query_one("#job-contributions", DataTable)
            assert contributions.row_count == 1
            assert str(contributions.get_row_at(0)[0]).startswith("node-2")
            assert detail.query_one("#loss-chart").series[0].points  # type: ignore[attr-defined]

            # The ledger view has that block, with the job.complete record in it.
            await pilot.press("escape", "4")
            blocks = app.query_one("#blocks-table", DataTable)
            await wait_until(pilot, lambda: str(block) in blocks.rows, 10, f"block {block}")
            blocks.move_cursor(row=blocks.get_row_index(str(block)))
            records = app.query_one("#block-records", DataTable)
            await wait_until(
                pilot,
                lambda: any(
                    str(records.get_row_at(i)[1]) == "job.complete"
                    for i in range(records.row_count)
                ),
                10,
                "the job.complete record",
            )
            assert app.query_one("#block-signatures", DataTable).row_count >= 2

            # And the whole chain verifies (in a worker thread, on the running node's data).
            await pilot.press("v")
            result = app.query_one("#verify-result")
            await wait_until(
                pilot, lambda: "chain verified:" in content(result), 30, "the chain verified"
            )

    asyncio.run(scenario())


def test_cancel_a_long_job_from_its_detail(net: Cluster) -> None:
    seen: list[Message] = []
    keys = Keystore(net.data_dir(1))
    keys.create("carol", PASSWORD)
    key = keys.unlock("carol", PASSWORD)

    async def register() -> None:
        signer = bytes(key.verify_key)
        await submit(net.data_dir(1), lambda c, n: make_register(key, c, "carol", n), signer)

    trio.run(register)

    async def scenario() -> None:
        app = _app(net)
        async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
            await _connected(pilot, app)
            await pilot.press("6")
            await _unlock(pilot, app, "carol", PASSWORD)
            await wait_until(pilot, lambda: app.account is not None, 20, "carol unlocked")
            job_id = await _submit_through_form(pilot, app, seen, "long digits", "256", "4000")
            detail = await _open_job(pilot, app, job_id)

            # Live: the worker's reports move the bar and draw the curves.
            await wait_until(
                pilot,
                lambda: detail.job.get("status") == "RUNNING" and detail.last_step > 0,
                60,
                "the job to run with progress",
            )
            chart = detail.query_one("#loss-chart")
            points = len(chart.series[0].points)  # type: ignore[attr-defined]
            await wait_until(
                pilot,
                lambda: len(chart.series[0].points) > points,  # type: ignore[attr-defined]
                20,
                "the loss curve to grow",
            )

            await pilot.press("c")
            await wait_until(pilot, lambda: isinstance(app.screen, Confirm), 5, "confirm")
            await pilot.press("y")
            await wait_until(
                pilot, lambda: detail.job.get("status") == "CANCELED", 60, "CANCELED in detail"
            )
            assert "canceled in block" in content(detail.query_one("#job-notice"))
            events = detail.query_one("#job-events", DataTable)
            assert str(events.get_row_at(0)[2]) == "canceled"

            await pilot.press("escape")
            table = app.query_one("#jobs-table", DataTable)
            await wait_until(
                pilot,
                lambda: cell(table, job_id, "status") == "CANCELED",
                10,
                "CANCELED in the dashboard",
            )

    asyncio.run(scenario())


def test_node_stops_and_starts_while_the_tui_is_open(net: Cluster) -> None:
    seen: list[Message] = []

    async def scenario() -> None:
        app = _app(net)
        async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
            await _connected(pilot, app)
            height = int(app.node_status["height"])  # type: ignore[index]

            net.nodes[0].stop()
            await wait_until(
                pilot, lambda: isinstance(app.screen, OutageScreen), 20, "the outage screen"
            )
            assert not app.connected
            lost = [m for m in seen if isinstance(m, NodeLost)]
            assert lost
            reason = content(app.screen.query_one("#outage-reason"))
            assert "node" in reason
            assert "offline" in content(app.query_one("#header"))

            net.nodes[0].start()
            await wait_until(
                pilot,
                lambda: app.connected and not isinstance(app.screen, OutageScreen),
                60,
                "the TUI to reconnect by itself",
            )
            assert sum(isinstance(m, NodeConnected) for m in seen) == 2
            await wait_until(
                pilot,
                lambda: int(app.node_status["height"]) >= height,  # type: ignore[index]
                20,
                "the node's status again",
            )
            await settle(pilot)
            assert app.query_one("#jobs-table", DataTable).row_count >= 2

    asyncio.run(scenario())
