"""The submit form: every field validated as you type by the trainer, stake against balance,
submitted signed by the active account; a spec file (TOML) fills it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Select, Static

from modelmine.tui import ops, specform
from modelmine.tui.dialogs import Prompt
from modelmine.tui.messages import JobSubmitted
from modelmine.tui.widgets import Notice

if TYPE_CHECKING:
    from modelmine.tui.app import ModelMineApp

DEFAULTS: Final = {
    "title": "",
    "description": "",
    "model": "mlp",
    "layers": "128",
    "dataset": "digits",
    "dataset_path": "",
    "epochs": "20",
    "batch_size": "64",
    "learning_rate": "",
    "optimizer": "adam",
    "seed": "0",
    "stake": "100",
}
LABELS: Final = {
    "title": "Title",
    "description": "Description",
    "model": "Model",
    "layers": "Hidden layers",
    "dataset": "Dataset",
    "dataset_path": "Data file",
    "epochs": "Epochs",
    "batch_size": "Batch size",
    "learning_rate": "Learning rate",
    "optimizer": "Optimizer",
    "seed": "Seed",
    "stake": "Stake",
}
PLACEHOLDERS: Final = {
    "title": "a name for people (required)",
    "description": "free text",
    "layers": "units per layer, e.g. 256, 128",
    "dataset_path": "CSV or NPZ file (dataset: file)",
    "epochs": "1..10000",
    "batch_size": "1..65536",
    "learning_rate": "default: 0.001 (adam), 0.01 (others)",
    "seed": "0..4294967295",
    "stake": "credits, 1..1000000",
}
SELECTS: Final = {
    "model": specform.MODEL_KINDS,
    "dataset": specform.DATASETS,
    "optimizer": specform.OPTIMIZERS,
}
LEFT: Final = ("title", "description", "model", "layers", "dataset", "dataset_path")
RIGHT: Final = ("epochs", "batch_size", "learning_rate", "optimizer", "seed", "stake")


class SubmitView(Vertical):
    BINDINGS = [
        Binding("ctrl+s", "submit", "Submit", priority=True),
        Binding("ctrl+o", "load_spec", "Load spec", priority=True),
        Binding("ctrl+r", "reset", "Reset form"),
    ]

    def __init__(self) -> None:
        super().__init__(id="submit-view")
        self.base: dict[str, Any] = {}
        self.base_source: str | None = None
        self.last: specform.FormCheck | None = None
        self.balance: int | None = None
        self.submitting = False
        self._shown: dict[str, str] = {}

    @property
    def tui(self) -> ModelMineApp:
        return self.app  # type: ignore[return-value]

    def _field(self, name: str) -> ComposeResult:
        with Horizontal(classes="field", id=f"row-{name}"):
            yield Label(LABELS[name], classes="field-label")
            widget: Widget
            if name in SELECTS:
                widget = Select(
                    [(v, v) for v in SELECTS[name]],
                    value=DEFAULTS[name],
                    allow_blank=False,
                    compact=True,
                    id=f"f-{name}",
                )
            else:
                widget = Input(
                    DEFAULTS[name],
                    placeholder=PLACEHOLDERS.get(name, ""),
                    compact=True,
                    id=f"f-{name}",
                )
            yield widget
        yield Static("", id=f"e-{name}", classes="field-error")

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="submit-form"):
            with Horizontal(id="submit-columns"):
                with Vertical(classes="form-column"):
                    for name in LEFT:
                        yield from self._field(name)
                with Vertical(classes="form-column"):
                    for name in RIGHT:
                        yield from self._field(name)
            yield Static("", id="spec-source")
            yield Static("", id="form-other", classes="field-error")
            yield Static("", id="stake-line")
            with Horizontal(id="submit-buttons"):
                yield Button("Submit (ctrl+s)", id="do-submit", variant="primary", compact=True)
                yield Button("Load spec… (ctrl+o)", id="do-load", compact=True)
                yield Button("Reset (ctrl+r)", id="do-reset", compact=True)
            yield Notice(id="submit-notice", classes="notice")

    def on_mount(self) -> None:
        self.query_one("#spec-source", Static).display = False
        self.query_one("#form-other", Static).display = False
        self.check()

    # ---- reading and checking the form ----

    def values(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in specform.FIELDS:
            widget = self.query_one(f"#f-{name}")
            if isinstance(widget, Select):
                out[name] = "" if widget.value is Select.BLANK else str(widget.value)
            elif isinstance(widget, Input):
                out[name] = widget.value
        return out

    def set_values(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            widget = self.query_one(f"#f-{name}")
            if isinstance(widget, Select):
                options = SELECTS[name]
                widget.value = value if value in options else DEFAULTS[name]
            elif isinstance(widget, Input):
                widget.value = value

    def check(self) -> specform.FormCheck:
        """Validate the whole form and show every message where it belongs."""
        values = self.values()
        result = specform.check(values, self.base)
        self.last = result
        # Only touch what changed: every update of an auto-sized line costs a layout pass.
        for name in specform.FIELDS:
            message = result.errors.get(name, "")
            if self._shown.get(name) != message:
                self._shown[name] = message
                self.query_one(f"#e-{name}", Static).update(Text(message))
                self.query_one(f"#row-{name}").set_class(bool(message), "-invalid")
        other = "\n".join(result.other)
        if self._shown.get("other") != other:
            self._shown["other"] = other
            widget = self.query_one("#form-other", Static)
            widget.update(Text(other))
            widget.display = bool(other)
        layers = self.query_one("#f-layers", Input)
        layers.disabled = values.get("model") not in ("mlp", "cnn")
        data_file = self.query_one("#f-dataset_path", Input)
        data_file.disabled = values.get("dataset") != "file"
        self._show_stake(result)
        return result

    def _show_stake(self, result: specform.FormCheck | None = None) -> None:
        result = result or self.last
        stake = result.job.stake if result and result.job else None
        if stake is None:
            raw = self.values().get("stake", "").strip()
            stake = int(raw) if raw.isdigit() else None
        account = self.tui.account
        text = Text("stake ", style="dim")
        text.append(f"{stake:,}" if stake is not None else "?", style="bold")
        text.append(" credits", style="dim")
        if account is None:
            text.append("  ·  no active account: unlock one in Accounts (key 6)", style="yellow")
        else:
            balance = self.tui.balance
            text.append(f"  ·  {account.name} has ", style="dim")
            text.append("?" if balance is None else f"{balance:,}", style="bold")
            if balance is not None and stake is not None:
                if stake > balance:
                    text.append(f"  ·  {stake - balance:,} short", style="bold red")
                else:
                    text.append(f"  ·  {balance - stake:,} left after submitting", style="green")
        if result is not None and not result.ok:
            text.append(f"  ·  {result.count} error(s) to fix", style="red")
        elif result is not None:
            text.append("  ·  spec valid", style="green")
        self.query_one("#stake-line", Static).update(text)

    def account_changed(self) -> None:
        self._show_stake()

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self, event: Input.Changed | Select.Changed) -> None:
        if event.control.id and event.control.id.startswith("f-"):
            self.check()

    # ---- actions ----

    @on(Button.Pressed, "#do-submit")
    def action_submit(self) -> None:
        notice = self.query_one("#submit-notice", Notice)
        result = self.check()
        if not result.ok:
            notice.say(f"not submitted: the form has {result.count} error(s)", "error")
            return
        account = self.tui.account
        if account is None:
            notice.say("not submitted: unlock an account first (Accounts, key 6)", "error")
            return
        balance = self.tui.balance
        if balance is not None and result.job is not None and result.job.stake > balance:
            notice.say(
                f"not submitted: the stake {result.job.stake:,} is more than "
                f"{account.name}'s balance {balance:,}",
                "error",
            )
            return
        if self.submitting:
            return
        self._submit(account, result.spec)

    @work(exclusive=True, group="submit")
    async def _submit(self, account: ops.ActiveAccount, spec: dict[str, Any]) -> None:
        notice = self.query_one("#submit-notice", Notice)
        self.submitting = True
        notice.say(f"signing with {account.name} and submitting …")
        try:
            result = await ops.submit_job(self.tui.link, account, spec)
        except ops.OpError as exc:
            notice.say(f"not submitted: {exc}", "error")
            return
        finally:
            self.submitting = False
        notice.say(
            f"submitted job {result['job_id'][:12]} in block {result['height']} "
            f"(stake {result['stake']:,}); it is on the Jobs view (key 1)",
            "ok",
        )
        self.post_message(JobSubmitted(result["job_id"], result["height"]))

    @on(Button.Pressed, "#do-load")
    def action_load_spec(self) -> None:
        def answered(path: str | None) -> None:
            if path:
                self.load_spec(Path(path))

        start = self.base_source or str(Path.cwd()) + "/"
        self.app.push_screen(
            Prompt("Load a job spec (TOML) from:", start, must_exist=True), answered
        )

    def load_spec(self, path: Path) -> None:
        notice = self.query_one("#submit-notice", Notice)
        try:
            spec = specform.load_spec_file(path.expanduser())
        except specform.SpecFileError as exc:
            notice.say(str(exc), "error")
            return
        values, base = specform.spec_to_form(spec)
        self.base = base
        self.base_source = str(path)
        self.set_values(values)
        shown = {p.split(".")[0] for p in specform.PATHS.values()}
        extra = sorted(
            f"{section}.{key}"
            for section, body in base.items()
            if isinstance(body, dict)
            for key in body
            if f"{section}.{key}" not in specform.PATHS.values()
        )
        extra += [k for k, v in base.items() if k not in shown and not isinstance(v, dict)]
        line = Text(f"from {path}", style="dim")
        if extra:
            line.append(f"; also keeps {', '.join(extra)}", style="dim")
        source = self.query_one("#spec-source", Static)
        source.update(line)
        source.display = True
        notice.say(f"loaded {path}", "ok")
        self.call_after_refresh(self.check)

    @on(Button.Pressed, "#do-reset")
    def action_reset(self) -> None:
        self.base = {}
        self.base_source = None
        self.set_values(dict(DEFAULTS))
        self.query_one("#spec-source", Static).display = False
        self.query_one("#submit-notice", Notice).clear()
        self.call_after_refresh(self.check)
