"""Small widgets shared by the views: the header line, stat cards and an inline message line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.widgets import Static

from modelmine.tui.format import credits, short

if TYPE_CHECKING:
    from modelmine.tui.app import ModelMineApp


class NodeHeader(Static):
    """Node name and id, chain, height, peers, the active account and the connection."""

    def on_mount(self) -> None:
        app: ModelMineApp = self.app  # type: ignore[assignment]
        self.watch(app, "node_status", self._update, init=False)
        self.watch(app, "connected", self._update, init=False)
        self.watch(app, "account_label", self._update, init=False)
        self._update()

    def _update(self, _: Any = None) -> None:
        app: ModelMineApp = self.app  # type: ignore[assignment]
        s = app.node_status or {}
        text = Text()
        text.append(" ◆ ModelMine ", style="bold reverse")
        if s:
            text.append(f" {s.get('name', '?')} ", style="bold")
            text.append(short(s.get("node_id")), style="dim")
            text.append(" · chain ")
            text.append(str(s.get("chain_id", "?")), style="bold")
            text.append(" · height ")
            text.append(str(s.get("height", "?")), style="bold")
            text.append(" · peers ")
            text.append(f"{s.get('peers', 0)}", style="bold")
            text.append(f" ({s.get('online', 0)}/{s.get('members', 0)} online)", style="dim")
        text.append(" · ")
        text.append(app.account_label, style="bold" if app.account else "dim")
        if app.connected:
            text.append(" · ● live", style="bold green")
        else:
            text.append(" · ○ offline", style="bold red")
        self.update(text)


class StatCard(Static):
    """A label over a big value."""

    def __init__(self, label: str, value: str = "-", *, id: str | None = None) -> None:
        super().__init__(id=id, classes="card")
        self.label = label
        self.value = value

    def on_mount(self) -> None:
        self.set_value(self.value)

    def set_value(self, value: str | int) -> None:
        self.value = credits(value) if isinstance(value, int) else value
        text = Text(self.label + "\n", style="dim")
        text.append(self.value, style="bold")
        self.update(text)


class Notice(Static):
    """One line saying what just happened: ``ok``, ``error`` or ``info``."""

    def say(self, text: str, kind: str = "info") -> None:
        self.set_classes(f"notice -{kind}")
        self.update(Text(text))

    def clear(self) -> None:
        self.set_classes("notice")
        self.update("")
