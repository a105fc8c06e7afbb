"""How the views follow the node's events, against the fake node: progress bars, a peer going
OFFLINE, new blocks, a job changing status."""

from __future__ import annotations

import asyncio

from textual.widgets import DataTable

from modelmine.tui.ledger import LedgerView
from modelmine.tui.messages import BlockCommitted, JobChanged, PeerChanged, ProgressReported
from tests.tui.fake import JOB_RUNNING, JOBS, NODES, NOW, PEERS, fake_app, hexid
from tests.tui.helpers import cell, settle


def test_views_follow_events() -> None:
    async def scenario() -> None:
        app = fake_app()
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            jobs = app.query_one("#jobs-table", DataTable)

            # Progress reports move the running job's bar (batched a few times a second).
            app.post_message(
                ProgressReported(
                    {
                        "job_id": JOB_RUNNING,
                        "step": 600,
                        "total_steps": 660,
                        "progress": 90.9,
                        "worker": NODES[1],
                        "train_loss": 0.05,
                        "val_loss": 0.0812,
                        "val_accuracy": 0.975,
                        "time": NOW,
                    }
                )
            )
            await asyncio.sleep(0.3)
            await settle(pilot)
            assert "90.9%" in cell(jobs, JOB_RUNNING, "progress")
            assert cell(jobs, JOB_RUNNING, "loss") == "0.0812"
            assert cell(jobs, JOB_RUNNING, "accuracy") == "97.5%"

            # A block ends the job: its row, and the counts, say so.
            done = dict(JOBS[0], status="COMPLETED", progress=100.0)
            app.post_message(JobChanged(done))
            await settle(pilot)
            assert cell(jobs, JOB_RUNNING, "status") == "COMPLETED"
            assert str(app.query_one("#count-running").content).split()[-1] == "0"

            # A peer goes OFFLINE: the nodes table marks it.
            await pilot.press("3")
            await settle(pilot)
            app.post_message(PeerChanged(dict(PEERS[1], status="OFFLINE")))
            await settle(pilot)
            nodes = app.query_one("#nodes-table", DataTable)
            assert cell(nodes, NODES[2], "status") == "✕ OFFLINE"

            # A new block: the ledger, showing the newest block, moves on to it.
            await pilot.press("4")
            await settle(pilot)
            ledger = app.query_one(LedgerView)
            assert ledger.shown_height == 9
            app.post_message(
                BlockCommitted(
                    {
                        "height": 10,
                        "hash": hexid("block-10"),
                        "time": NOW,
                        "proposer": NODES[0],
                        "records": 0,
                    }
                )
            )
            await settle(pilot)
            assert ledger.shown_height == 10
            assert app.query_one("#blocks-table", DataTable).get_row_at(0)[0].plain == "10"
            assert app.node_status is not None and app.node_status["height"] == 10

    asyncio.run(scenario())
