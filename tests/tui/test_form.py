"""The submit form: every invalid field shows the trainer's message, and nothing is submitted
until the form is valid; a spec file fills it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual.message import Message
from textual.widgets import Input, Select

from modelmine.tui import ops
from modelmine.tui.messages import JobSubmitted
from modelmine.tui.submit import SubmitView
from tests.tui.fake import ALICE_KEY, FakeLink, fake_app
from tests.tui.helpers import content, fill, settle

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# field -> (what the user types, the message shown under it)
BAD = {
    "title": ("", "must be 1..200 characters long, got 0"),
    "layers": ("64, 0", "must be an integer 1..4096, got 0"),
    "dataset_path": ("/nonexistent/data.csv", "no file at /nonexistent/data.csv"),
    "epochs": ("0", "must be 1..10000, got 0"),
    "batch_size": ("lots", 'must be an integer 1..65536, got "lots"'),
    "learning_rate": ("-1", "must be 1e-07..10, got -1"),
    "seed": ("-5", "must be 0..4294967295, got -5"),
    "stake": ("0", "must be 1..1000000, got 0"),
}


def test_each_invalid_field_shows_its_message_and_nothing_is_submitted() -> None:
    seen: list[Message] = []
    link = FakeLink()

    async def scenario() -> None:
        app = fake_app(link)
        async with app.run_test(size=(120, 40), message_hook=seen.append) as pilot:
            await settle(pilot)
            app.set_account(ops.ActiveAccount("alice", ALICE_KEY), 850)
            await pilot.press("2")
            view = app.query_one(SubmitView)
            view.query_one("#f-dataset", Select).value = "file"
            await settle(pilot)
            for field, (typed, _) in BAD.items():
                await fill(pilot, f"#f-{field}", typed)
            await settle(pilot)
            for field, (_, message) in BAD.items():
                assert content(view.query_one(f"#e-{field}")) == message, field
            assert "8 error(s) to fix" in content(view.query_one("#stake-line"))

            await pilot.press("ctrl+s")
            await settle(pilot)
            assert content(view.query_one("#submit-notice")).startswith("not submitted:")
            assert not any(m == "jobs.submit" for m, _ in link.calls)
            assert not any(isinstance(m, JobSubmitted) for m in seen)

            # Fixing every field clears every message.
            view.query_one("#f-dataset", Select).value = "digits"
            for field, typed in {
                "title": "ok now",
                "layers": "64",
                "epochs": "5",
                "batch_size": "32",
                "learning_rate": "0.01",
                "seed": "1",
                "stake": "900",
            }.items():
                await fill(pilot, f"#f-{field}", typed)
            await settle(pilot)
            assert all(content(view.query_one(f"#e-{f}")) == "" for f in BAD)
            # A field the trainer judges against another: a CNN needs image data.
            view.query_one("#f-dataset", Select).value = "iris"
            view.query_one("#f-model", Select).value = "cnn"
            await settle(pilot)
            assert "'cnn' needs image-shaped data" in content(view.query_one("#e-model"))
            view.query_one("#f-dataset", Select).value = "digits"
            await settle(pilot)
            assert content(view.query_one("#e-model")) == ""
            # ... but a stake above the balance (850) is still refused, before any call.
            assert "50 short" in content(view.query_one("#stake-line"))
            await pilot.press("ctrl+s")
            await settle(pilot)
            assert "is more than alice's balance 850" in content(view.query_one("#submit-notice"))
            assert not any(m == "jobs.submit" for m, _ in link.calls)

    asyncio.run(scenario())


def test_loading_a_spec_file_fills_the_form() -> None:
    async def scenario() -> None:
        app = fake_app()
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("2")
            await pilot.press("escape", "ctrl+o")
            await settle(pilot)
            prompt = app.screen.query_one("#prompt-input", Input)
            prompt.value = str(EXAMPLES / "digits-mlp.toml")
            await pilot.press("enter")
            await settle(pilot)
            view = app.query_one(SubmitView)
            values = view.values()
            assert values["title"] == "Digits MLP"
            assert values["layers"] == "256"
            assert values["epochs"] == "40"
            assert values["batch_size"] == "32"
            assert values["learning_rate"] == "0.001"
            # Fields the form does not show are kept, and the whole spec is valid.
            assert view.last is not None and view.last.ok
            assert view.last.spec["hyperparameters"]["weight_decay"] == 0.0001
            assert view.last.spec["resources"]["max_seconds"] == 600
            assert "weight_decay" in content(view.query_one("#spec-source"))

    asyncio.run(scenario())
