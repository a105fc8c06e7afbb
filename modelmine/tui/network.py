"""Network stats: four cards, jobs by status over time, and credits earned per node."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Final

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical

from modelmine.control_client import ControlError
from modelmine.tui.charts import BarChart, LineChart
from modelmine.tui.format import percent
from modelmine.tui.widgets import StatCard

if TYPE_CHECKING:
    from modelmine.tui.app import ModelMineApp

HISTORY: Final = 720  # samples kept for the chart (an hour at one every 5 s)
SERIES: Final = (
    ("PENDING", "yellow"),
    ("RUNNING", "cyan"),
    ("COMPLETED", "green"),
    ("FAILED", "red"),
    ("CANCELED", "magenta"),
)


class NetworkView(Vertical):
    BINDINGS = [Binding("r", "reload", "Refresh")]

    def __init__(self) -> None:
        super().__init__(id="network-view")
        self.history: deque[tuple[float, dict[str, int]]] = deque(maxlen=HISTORY)
        self.stats: dict[str, Any] = {}

    @property
    def tui(self) -> ModelMineApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Horizontal(classes="cards"):
            yield StatCard("Active nodes", id="stat-nodes")
            yield StatCard("Credits staked", id="stat-staked")
            yield StatCard("Completed jobs", id="stat-completed")
            yield StatCard("Average accuracy", id="stat-accuracy")
            yield StatCard("Total supply", id="stat-supply")
        with Horizontal(id="network-charts"):
            yield LineChart(
                "jobs by status (sampled since the TUI started)",
                [(name.lower(), color) for name, color in SERIES],
                y_min=0,
                id="jobs-chart",
            )
            yield BarChart("credits earned per node", id="credits-chart")

    @work(exclusive=True, group="network-load")
    async def reload(self) -> None:
        try:
            stats = await self.tui.link.call("stats")
        except ControlError:
            return
        self.show(stats)

    def show(self, stats: dict[str, Any]) -> None:
        self.stats = stats
        self.tui.remember_names(stats.get("nodes") or [])
        self.query_one("#stat-nodes", StatCard).set_value(stats.get("active_nodes", 0))
        self.query_one("#stat-staked", StatCard).set_value(stats.get("credits_staked", 0))
        self.query_one("#stat-completed", StatCard).set_value(stats.get("completed_jobs", 0))
        self.query_one("#stat-accuracy", StatCard).set_value(
            percent(stats.get("average_accuracy")) if stats.get("completed_jobs") else "-"
        )
        self.query_one("#stat-supply", StatCard).set_value(stats.get("total_supply", 0))
        when = float(stats.get("time") or self.tui.clock.now())
        counts = {k: int(v) for k, v in (stats.get("jobs") or {}).items()}
        if len(self.history) > 1 and self.history[-1][1] == self.history[-2][1] == counts:
            # A flat stretch needs only its two ends: move the last point forward.
            self.history.pop()
        self.history.append((when, counts))
        chart = self.query_one("#jobs-chart", LineChart)
        start = self.history[0][0]
        for name, _ in SERIES:
            chart.replace(
                name.lower(), [(t - start, float(c.get(name, 0))) for t, c in self.history]
            )
        chart.x_labels = (
            self.tui.clock.when(start, "%H:%M:%S"),
            self.tui.clock.when(self.history[-1][0], "%H:%M:%S"),
        )
        nodes = sorted(stats.get("nodes") or [], key=lambda n: -int(n.get("credits_earned", 0)))
        self.query_one("#credits-chart", BarChart).set_bars(
            [
                (str(n.get("name") or n["node_id"][:8]), int(n.get("credits_earned", 0)))
                for n in nodes
            ]
        )

    def action_reload(self) -> None:
        self.reload()
