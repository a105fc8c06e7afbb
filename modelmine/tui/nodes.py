"""Every node: status, cpu, memory, load, capacity, jobs handled, credits earned, last seen."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Label

from modelmine.control_client import ControlError
from modelmine.tui.format import load as load_text
from modelmine.tui.format import short, size, status_text

if TYPE_CHECKING:
    from modelmine.tui.app import ModelMineApp

# (key, header, width): fixed widths, because heartbeat updates never resize a column.
COLUMNS: Final = (
    ("name", "NODE", 16),
    ("id", "ID", 8),
    ("status", "STATUS", 11),
    ("cpu", "CPU", 4),
    ("memory", "MEMORY", 15),
    ("load", "LOAD 1/5/15m", 14),
    ("capacity", "BUSY/SLOTS", 10),
    ("jobs", "JOBS", 4),
    ("credits", "CREDITS", 7),
    ("seen", "LAST SEEN", 9),
)


def _right(value: str, style: str = "") -> Text:
    return Text(value, style=style, justify="right")


class NodesView(Vertical):
    """Peers (their heartbeats' metrics) joined with what the ledger says each node earned."""

    BINDINGS = [Binding("r", "reload", "Refresh")]

    def __init__(self) -> None:
        super().__init__(id="nodes-view")
        self.peers: dict[str, dict[str, Any]] = {}
        self.earnings: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []

    @property
    def tui(self) -> ModelMineApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Label("", id="nodes-summary")
        table: DataTable[Any] = DataTable(id="nodes-table", cursor_type="row", zebra_stripes=True)
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width)
        yield table

    @work(exclusive=True, group="nodes-load")
    async def reload(self) -> None:
        try:
            peers = await self.tui.link.call("peers")
            stats = await self.tui.link.call("stats")
        except ControlError:
            return
        self.peers = {p["node_id"]: p for p in peers}
        self.earnings = {n["node_id"]: n for n in stats.get("nodes", [])}
        self.tui.remember_names([*stats.get("nodes", []), *peers])
        self.redraw()

    def peer_changed(self, peer: dict[str, Any]) -> None:
        self.peers[peer["node_id"]] = peer
        self.redraw()

    def _rows(self) -> dict[str, dict[str, Any]]:
        """node id -> what we know of it (this node comes from ``status``)."""
        rows: dict[str, dict[str, Any]] = {}
        status = self.tui.node_status or {}
        for node_id, e in self.earnings.items():
            rows[node_id] = {"node_id": node_id, "name": e.get("name"), "status": e.get("status")}
        for node_id, p in self.peers.items():
            rows[node_id] = {**rows.get(node_id, {}), **p}
        if status.get("node_id"):
            me = rows.setdefault(status["node_id"], {"node_id": status["node_id"]})
            me.update(
                name=status.get("name"),
                status=status.get("status"),
                metrics=self.tui.machine_metrics(),
                self=True,
            )
        return rows

    def _cells(self, row: dict[str, Any]) -> dict[str, Any]:
        status = row.get("status") or "?"
        dim = "dim" if status == "OFFLINE" else ""
        metrics = row.get("metrics") or {}
        capacity = row.get("capacity") or {}
        earned = self.earnings.get(row["node_id"], {})
        name = str(row.get("name") or "?") + (" (here)" if row.get("self") else "")
        cpu = metrics.get("cpu_percent")
        memory = metrics.get("memory_percent")
        if capacity:
            busy = f"{capacity.get('busy', 0)}/{capacity.get('slots', 0)}"
        else:
            busy = "-"
        if memory is not None:
            mem_text = f"{memory:.0f}% of {size(metrics.get('memory_total'))}"
        else:
            mem_text = "-"
        seen = "now" if row.get("self") else self.tui.clock.ago(row.get("last_seen"))
        return {
            "name": Text(name, style="dim strike" if dim else "bold"),
            "id": Text(short(row["node_id"]), style="dim"),
            "status": status_text(status),
            "cpu": _right("-" if cpu is None else f"{cpu:.0f}%", dim),
            "memory": _right(mem_text, dim),
            "load": _right(load_text(metrics.get("load_avg")), dim),
            "capacity": _right(busy, dim),
            "jobs": _right(f"{earned.get('jobs_handled', 0):,}", dim),
            "credits": _right(f"{earned.get('credits_earned', 0):,}", dim),
            "seen": Text(seen, style="red" if status == "OFFLINE" else dim),
        }

    def redraw(self) -> None:
        rows = self._rows()
        order = sorted(rows, key=lambda k: (str(rows[k].get("name") or ""), k))
        table: DataTable[Any] = self.query_one("#nodes-table", DataTable)
        if order != self.order:
            table.clear()
            for node_id in order:
                table.add_row(*self._cells(rows[node_id]).values(), key=node_id)
            self.order = order
        else:
            for node_id in order:
                for key, value in self._cells(rows[node_id]).items():
                    table.update_cell(node_id, key, value)
        counts: dict[str, int] = {}
        for row in rows.values():
            counts[row.get("status") or "?"] = counts.get(row.get("status") or "?", 0) + 1
        summary = Text(f"{len(rows)} nodes  ", style="bold")
        for status, n in sorted(counts.items()):
            summary.append_text(status_text(status))
            summary.append(f" {n}   ")
        summary.append("metrics from heartbeats; OFFLINE nodes are red ✕ and dimmed", style="dim")
        self.query_one("#nodes-summary", Label).update(summary)

    def action_reload(self) -> None:
        self.reload()
