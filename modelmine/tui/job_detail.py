"""One job: live progress, loss and accuracy curves, events, results; cancel and fetch."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, ProgressBar, Static

from modelmine.control_client import ControlError, RpcError
from modelmine.tui import ops
from modelmine.tui.charts import LineChart
from modelmine.tui.dialogs import Confirm, Prompt
from modelmine.tui.format import credits, number, percent, short, status_text
from modelmine.tui.widgets import NodeHeader, Notice

if TYPE_CHECKING:
    from modelmine.tui.app import ModelMineApp


def _points(
    history: list[dict[str, Any]], key: str, scale: float = 1.0
) -> list[tuple[float, float]]:
    return [
        (float(p["step"]), scale * float(p[key]))
        for p in history
        if p.get(key) is not None and p.get("step") is not None
    ]


def _step(x: float) -> str:
    return f"step {x:,.0f}"


class JobDetailScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("c", "cancel_job", "Cancel job"),
        Binding("f", "fetch_model", "Fetch model"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self, job_id: str) -> None:
        super().__init__(id="job-detail")
        self.job_id = job_id
        self.job: dict[str, Any] = {}
        self.last_step = -1

    @property
    def tui(self) -> ModelMineApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield NodeHeader(id="header")
        with Vertical(id="job-body"):
            yield Static("loading job …", id="job-summary")
            with Horizontal(id="job-progress-row"):
                yield ProgressBar(total=100, show_eta=False, id="job-progress")
                yield Static("", id="job-step")
            with Horizontal(id="job-charts"):
                yield LineChart(
                    "loss (log scale)",
                    [("train", "cyan"), ("validation", "magenta")],
                    x_format=_step,
                    log_y=True,
                    id="loss-chart",
                )
                yield LineChart(
                    "validation accuracy %",
                    [("accuracy", "green")],
                    x_format=_step,
                    id="acc-chart",
                )
            with Horizontal(id="job-lower"):
                events: DataTable[Any] = DataTable(id="job-events", cursor_type="row")
                events.add_columns("HEIGHT", "TIME", "EVENT", "BY", "DETAIL")
                events.border_title = "events"
                yield events
                contributions: DataTable[Any] = DataTable(id="job-contributions")
                contributions.add_columns("NODE", "SAMPLES", "CREDITS")
                contributions.border_title = "contributions"
                yield contributions
            yield Notice(id="job-notice", classes="notice")
        yield Footer()

    def on_mount(self) -> None:
        self.reload()

    # ---- data in ----

    @work(exclusive=True, group="job-load")
    async def reload(self) -> None:
        try:
            job = await self.tui.link.call("jobs.get", job_id=self.job_id)
        except RpcError as exc:
            self.query_one("#job-summary", Static).update(Text(exc.message, style="red"))
            return
        except ControlError:
            return
        self.show(job)

    def show(self, job: dict[str, Any]) -> None:
        self.job = job
        history = job.get("history") or []
        self.last_step = max((p.get("step", -1) for p in history), default=-1)
        loss = self.query_one("#loss-chart", LineChart)
        loss.replace("train", _points(history, "train_loss"))
        loss.replace("validation", _points(history, "val_loss"))
        self.query_one("#acc-chart", LineChart).replace(
            "accuracy", _points(history, "val_accuracy", 100.0)
        )
        self._show_progress(job.get("latest") or {}, float(job.get("progress") or 0))
        self._show_summary()
        self._show_events()
        self._show_result()

    def job_changed(self, summary: dict[str, Any]) -> None:
        if summary.get("job_id") == self.job_id and self.is_mounted:
            self.reload()

    def progress(self, report: dict[str, Any]) -> None:
        if not self.job or not self.is_attached:
            return  # not loaded yet (the load brings the history up to now), or closing
        if report.get("job_id") != self.job_id or report.get("step", -1) <= self.last_step:
            return
        if self.job.get("status") not in (None, "PENDING", "RUNNING"):
            return
        self.last_step = report["step"]
        step = float(report["step"])
        loss = self.query_one("#loss-chart", LineChart)
        if report.get("train_loss") is not None:
            loss.extend("train", [(step, report["train_loss"])])
        if report.get("val_loss") is not None:
            loss.extend("validation", [(step, report["val_loss"])])
        if report.get("val_accuracy") is not None:
            self.query_one("#acc-chart", LineChart).extend(
                "accuracy", [(step, 100 * report["val_accuracy"])]
            )
        self._show_progress(report, float(report.get("progress") or 0))

    # ---- drawing ----

    def _show_progress(self, latest: dict[str, Any], progress: float) -> None:
        if self.job.get("status") == "COMPLETED":
            progress = 100.0
        self.query_one("#job-progress", ProgressBar).update(progress=progress)
        if latest:
            step = (
                f"  step {latest.get('step', 0):,}/{latest.get('total_steps', 0):,}"
                f"  epoch {latest.get('epoch', 0)}"
                f"  {latest.get('samples_per_second') or 0:,.0f} samples/s"
            )
        else:
            step = "  no progress reported yet"
        self.query_one("#job-step", Static).update(step)

    def _who(self, node_id: str | None) -> str:
        if not node_id:
            return "-"
        name = self.tui.names.get(node_id)
        return f"{name} ({short(node_id)})" if name else short(node_id, 16)

    def _show_summary(self) -> None:
        j = self.job
        spec = j.get("spec") or {}
        hyper = spec.get("hyperparameters") or {}
        model = spec.get("model") or {}
        text = Text()
        text.append(j.get("title", "?"), style="bold")
        text.append("  ")
        text.append_text(status_text(j.get("status", "?")))
        text.append(f"\njob {j.get('job_id', self.job_id)}", style="dim")
        submitter = j.get("submitter")
        mine = self.tui.account is not None and submitter == self.tui.account.account_id
        text.append(f"\nsubmitter {self._who(submitter)}{' (you)' if mine else ''}")
        text.append(f"   worker {self._who(j.get('worker'))}")
        text.append(f"   stake {credits(j.get('stake'))}")
        hidden = model.get("hidden")
        layers = f" {hidden}" if hidden else ""
        text.append(
            f"\nmodel {j.get('model', '?')}{layers}   dataset {j.get('dataset', '?')}"
            f"   epochs {hyper.get('epochs', '?')}   batch {hyper.get('batch_size', '?')}"
            f"   {hyper.get('optimizer', '?')} lr {hyper.get('learning_rate', '?')}"
            f"   created {self.tui.clock.when(j.get('created'))}"
        )
        text.append_text(self._result_text())
        self.query_one("#job-summary", Static).update(text)

    def _show_events(self) -> None:
        table: DataTable[Any] = self.query_one("#job-events", DataTable)
        table.clear()
        for e in reversed(self.job.get("events") or []):
            detail = []
            if e.get("step") is not None:
                detail.append(f"step {e['step']:,}")
            if e.get("samples") is not None and e.get("step") is None:
                detail.append(f"{e['samples']:,} samples")
            if e.get("reason"):
                detail.append(str(e["reason"]))
            kind = e.get("kind", "?")
            style = {"completed": "green", "failed": "red", "canceled": "magenta"}.get(kind, "")
            style = "yellow" if kind == "failover" else style
            table.add_row(
                str(e.get("height", "")),
                self.tui.clock.when(e.get("time"), "%H:%M:%S"),
                Text(kind, style=style),
                self.tui.names.get(e.get("by", ""), short(e.get("by"))),
                ", ".join(detail),
            )

    def _result_text(self) -> Text:
        j = self.job
        text = Text()
        metrics = j.get("metrics") or {}
        text.append("\nresult ", style="bold")
        if metrics:
            for key in ("val_accuracy", "val_loss", "train_loss", "r2"):
                if key in metrics:
                    value = metrics[key]
                    shown = percent(value, 2) if key == "val_accuracy" else number(value)
                    text.append(f" {key} {shown} ")
            if "seconds" in metrics:
                text.append(f" trained in {metrics['seconds']:.2f} s ")
        elif j.get("status") in ops.ENDED:
            text.append(f" none ({str(j['status']).lower()}) ", style="dim")
        else:
            text.append(" not yet ", style="dim")
        if j.get("block"):
            text.append(" · ledger block ")
            text.append(str(j["block"]), style="bold")
            text.append(f" at {self.tui.clock.when(j.get('ended'), '%H:%M:%S')}")
        text.append(f"\nmodel sha256 {j.get('model_sha256') or '-'}")
        text.append(
            f"   {j.get('samples', 0):,} samples · checkpoints {j.get('checkpoints', 0)}",
            style="dim",
        )
        if j.get("error"):
            text.append(f"\nerror  {j['error']}", style="bold red")
        return text

    def _show_result(self) -> None:
        table: DataTable[Any] = self.query_one("#job-contributions", DataTable)
        table.clear()
        for c in self.job.get("contributions") or []:
            table.add_row(
                self._who(c["node_id"]),
                Text(f"{c['samples']:,}", justify="right"),
                Text(f"{c['credits']:,}", justify="right"),
            )

    # ---- actions ----

    def action_reload(self) -> None:
        self.reload()

    def action_cancel_job(self) -> None:
        notice = self.query_one("#job-notice", Notice)
        account = self.tui.account
        if account is None:
            notice.say("unlock the submitter's account first (Accounts, key 6)", "error")
            return
        if self.job.get("submitter") != account.account_id:
            notice.say(
                f"only the submitter can cancel this job; {account.name} did not submit it", "error"
            )
            return
        if self.job.get("status") in ops.ENDED:
            notice.say(f"the job has already ended: {self.job['status']}", "error")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._cancel(account)

        self.app.push_screen(
            Confirm(f"Cancel job {self.job.get('title', '')!r}? Unearned stake is refunded."),
            answered,
        )

    @work(exclusive=True, group="job-action")
    async def _cancel(self, account: ops.ActiveAccount) -> None:
        notice = self.query_one("#job-notice", Notice)
        notice.say("canceling …")
        try:
            height = await ops.cancel_job(self.tui.link, account, self.job_id)
        except ops.OpError as exc:
            notice.say(str(exc), "error")
            return
        notice.say(f"canceled in block {height}", "ok")
        self.reload()

    def action_fetch_model(self) -> None:
        notice = self.query_one("#job-notice", Notice)
        if not self.job.get("model_sha256"):
            notice.say(f"no model to fetch: the job is {self.job.get('status', '?')}", "error")
            return
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.job.get("title", "model")).strip("-")
        default = Path.cwd() / f"{slug or 'model'}-{self.job_id[:8]}.npz"

        def answered(path: str | None) -> None:
            if path:
                self._fetch(Path(path))

        self.app.push_screen(Prompt("Save the trained model to:", str(default)), answered)

    @work(exclusive=True, group="job-action")
    async def _fetch(self, path: Path) -> None:
        notice = self.query_one("#job-notice", Notice)
        notice.say(f"fetching the model to {path} …")
        try:
            result = await ops.fetch_model(self.tui.link, self.job_id, path)
        except ops.OpError as exc:
            notice.say(str(exc), "error")
            return
        notice.say(
            f"wrote {result['path']} ({result['size']:,} bytes, sha256 "
            f"{result['model_sha256'][:16]}…, verified)",
            "ok",
        )
