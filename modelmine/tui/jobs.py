"""The jobs dashboard: counts by status, filters, and a table with live progress bars."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label

from modelmine.control_client import ControlError
from modelmine.tui.format import number, percent, progress_bar, short, status_text
from modelmine.tui.messages import OpenJob
from modelmine.tui.widgets import StatCard

if TYPE_CHECKING:
    from modelmine.tui.app import ModelMineApp

STATUSES: Final = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELED")
FLUSH_EVERY: Final = 0.2  # seconds between redraws for progress reports
FILTERS: Final = ("ALL", *STATUSES)
# (key, header, width): fixed widths, because live updates never resize a column.
COLUMNS: Final = (
    ("job", "JOB", 12),
    ("title", "TITLE", 20),
    ("status", "STATUS", 9),
    ("progress", "PROGRESS", 19),
    ("worker", "WORKER", 8),
    ("loss", "LOSS", 7),
    ("accuracy", "ACC", 6),
    ("stake", "STAKE", 5),
    ("created", "CREATED", 14),
)


class JobsView(Vertical):
    """Every job on the ledger, kept current by the ``jobs`` and ``progress:`` topics."""

    BINDINGS = [
        Binding("f", "cycle_filter", "Filter"),
        Binding("m", "toggle_mine", "Mine"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__(id="jobs-view")
        self.jobs: dict[str, dict[str, Any]] = {}
        self.status_filter = "ALL"
        self.mine = False
        self._dirty: set[str] = set()

    @property
    def tui(self) -> ModelMineApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Horizontal(classes="cards"):
            yield StatCard("Total", id="count-total")
            for status in STATUSES:
                yield StatCard(status.title(), id=f"count-{status.lower()}")
        yield Label("", id="jobs-filter")
        table: DataTable[Any] = DataTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width)
        yield table

    def on_mount(self) -> None:
        self._show_filter()

    # ---- data in ----

    @work(exclusive=True, group="jobs-load")
    async def reload(self) -> None:
        try:
            jobs = await self.tui.link.call("jobs.list")
        except ControlError:
            return  # the outage screen says why
        self.jobs = {j["job_id"]: j for j in jobs}
        self.rebuild()

    def job_changed(self, job: dict[str, Any]) -> None:
        old = self.jobs.get(job["job_id"])
        if old is not None and old.get("status") == job["status"]:
            # A block can report a job at 0% while its worker's reports run ahead.
            job = {**job, "progress": max(job["progress"], old.get("progress", 0))}
        self.jobs[job["job_id"]] = job
        if old is None or old.get("status") != job["status"] or not self._has_row(job["job_id"]):
            self.rebuild()
        else:
            self._update_row(job)

    def progress(self, report: dict[str, Any]) -> None:
        job = self.jobs.get(report.get("job_id", ""))
        if job is None or job["status"] != "RUNNING":
            return
        job["progress"] = report.get("progress", job["progress"])
        job["worker"] = report.get("worker") or job["worker"]
        job["loss"] = report.get("val_loss") or report.get("train_loss") or job["loss"]
        if report.get("val_accuracy") is not None:
            job["accuracy"] = report["val_accuracy"]
        # Any cell update makes the table redraw every visible row: batch the reports of all
        # running jobs into a few redraws a second.
        if not self._dirty:
            self.set_timer(FLUSH_EVERY, self._flush)
        self._dirty.add(job["job_id"])

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for job_id in dirty:
            job = self.jobs.get(job_id)
            if job is not None and self._has_row(job_id):
                self._update_row(job, ("progress", "worker", "loss", "accuracy"))

    # ---- table ----

    def _visible(self, job: dict[str, Any]) -> bool:
        if self.status_filter != "ALL" and job["status"] != self.status_filter:
            return False
        account = self.tui.account
        return not self.mine or (account is not None and job["submitter"] == account.account_id)

    def _has_row(self, job_id: str) -> bool:
        return job_id in self.query_one("#jobs-table", DataTable).rows

    def _cells(self, job: dict[str, Any]) -> dict[str, Any]:
        names = self.tui.names
        worker = job.get("worker")
        return {
            "job": short(job["job_id"], 12),
            "title": job["title"][:20],
            "status": status_text(job["status"]),
            "progress": progress_bar(float(job.get("progress") or 0), job["status"]),
            "worker": names.get(worker, short(worker)) if worker else "-",
            "loss": Text(number(job.get("loss")), justify="right"),
            "accuracy": Text(percent(job.get("accuracy")), justify="right"),
            "stake": Text(f"{job.get('stake', 0):,}", justify="right"),
            "created": self.tui.clock.when(job.get("created"), "%m-%d %H:%M:%S"),
        }

    def _update_row(self, job: dict[str, Any], keys: tuple[str, ...] | None = None) -> None:
        table: DataTable[Any] = self.query_one("#jobs-table", DataTable)
        for key, value in self._cells(job).items():
            if keys is None or key in keys:
                table.update_cell(job["job_id"], key, value)

    def rebuild(self) -> None:
        """Redraw the counts and the table (keeping the cursor on the same job)."""
        counts = dict.fromkeys(STATUSES, 0)
        for job in self.jobs.values():
            counts[job["status"]] = counts.get(job["status"], 0) + 1
        self.query_one("#count-total", StatCard).set_value(len(self.jobs))
        for status in STATUSES:
            self.query_one(f"#count-{status.lower()}", StatCard).set_value(counts[status])
        table: DataTable[Any] = self.query_one("#jobs-table", DataTable)
        # On the first row, stay on the first row (the newest job); else stay on the same job.
        selected = self.selected_job() if table.cursor_row > 0 else None
        table.clear()
        rows = sorted(
            (j for j in self.jobs.values() if self._visible(j)),
            key=lambda j: (j.get("created") or 0, j["job_id"]),
            reverse=True,
        )
        for job in rows:
            table.add_row(*self._cells(job).values(), key=job["job_id"])
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected), animate=False)
        self._show_filter(len(rows))

    def selected_job(self) -> str | None:
        table: DataTable[Any] = self.query_one("#jobs-table", DataTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:  # no cursor row (empty table)
            return None
        return None if key.value is None else str(key.value)

    def _show_filter(self, shown: int | None = None) -> None:
        text = Text("filter ", style="dim")
        for name in FILTERS:
            style = "bold reverse" if name == self.status_filter else ""
            text.append(f" {name.lower()} ", style=style)
        text.append("   ")
        text.append("[x] mine" if self.mine else "[ ] mine", style="bold" if self.mine else "dim")
        if self.mine and self.tui.account is None:
            text.append(" (no active account)", style="yellow")
        if shown is not None:
            text.append(f"   {shown} of {len(self.jobs)} shown · enter: details", style="dim")
        self.query_one("#jobs-filter", Label).update(text)

    # ---- actions ----

    def action_cycle_filter(self) -> None:
        self.status_filter = FILTERS[(FILTERS.index(self.status_filter) + 1) % len(FILTERS)]
        self.rebuild()

    def action_toggle_mine(self) -> None:
        self.mine = not self.mine
        self.rebuild()

    def action_reload(self) -> None:
        self.reload()

    @on(DataTable.RowSelected, "#jobs-table")
    def _open(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.post_message(OpenJob(str(event.row_key.value)))
