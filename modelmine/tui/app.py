"""The ModelMine terminal UI: one app, six views in tabs, a job detail screen, help, outage.

:func:`make_app` builds it for ``modelmine tui`` and for the tests (which give it a fake link,
keystore and clock). The link reports the node as messages (:mod:`modelmine.tui.messages`);
the app's handlers pass each one to the views that show it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.reactive import reactive
from textual.widgets import DataTable, Footer, Input, TabbedContent, TabPane

from modelmine.control_client import ControlError
from modelmine.tui import ops
from modelmine.tui.accounts import AccountsView, Keys
from modelmine.tui.bridge import NodeLink, TrioBridge
from modelmine.tui.dialogs import HelpScreen, OutageScreen
from modelmine.tui.format import Clock
from modelmine.tui.job_detail import JobDetailScreen
from modelmine.tui.jobs import JobsView
from modelmine.tui.ledger import LedgerView, verify_local_chain
from modelmine.tui.messages import (
    AccountChanged,
    BlockCommitted,
    EventsDropped,
    JobChanged,
    JobSubmitted,
    NodeConnected,
    NodeLost,
    OpenJob,
    PeerChanged,
    ProgressReported,
    StatusUpdated,
)
from modelmine.tui.network import NetworkView
from modelmine.tui.nodes import NodesView
from modelmine.tui.submit import SubmitView
from modelmine.tui.widgets import NodeHeader

logger = logging.getLogger(__name__)

VIEWS = ("jobs", "submit", "nodes", "ledger", "network", "accounts")
# The widget that takes the focus when a view is shown.
VIEW_FOCUS = {
    "jobs": "#jobs-table",
    "submit": "#f-title",
    "nodes": "#nodes-table",
    "ledger": "#blocks-table",
    "network": None,
    "accounts": "#accounts-table",
}


@dataclass
class TuiConfig:
    """What the app needs; tests replace the link, keystore, clock and chain verifier."""

    data_dir: Path
    link: NodeLink | None = None
    keys: Keys | None = None
    clock: Clock = field(default_factory=Clock)
    verifier: Callable[[], tuple[bool, str]] | None = None
    # This machine's metrics, shown for the local node: the control API is loopback-only, so
    # the node runs here, and its heartbeats (which it does not report to itself) carry the
    # same machine-wide figures.
    machine_metrics: Callable[[], dict[str, Any]] | None = None
    status_every: float = 2.0
    stats_every: float = 5.0
    blink: bool = True


class ModelMineApp(App[None]):
    CSS_PATH = "modelmine.tcss"
    TITLE = "ModelMine"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("1", "show('jobs')", "Jobs"),
        Binding("2", "show('submit')", "Submit"),
        Binding("3", "show('nodes')", "Nodes"),
        Binding("4", "show('ledger')", "Ledger"),
        Binding("5", "show('network')", "Network"),
        Binding("6", "show('accounts')", "Accounts"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "leave_field", "Leave field"),
    ]

    node_status: reactive[dict[str, Any] | None] = reactive(None, always_update=True)
    connected: reactive[bool] = reactive(False)
    account_label: reactive[str] = reactive("no account")

    def __init__(self, config: TuiConfig) -> None:
        super().__init__()
        self.config = config
        self.data_dir = config.data_dir
        self.link: NodeLink = config.link or TrioBridge(config.data_dir)
        if config.keys is None:
            from modelmine.identity import Keystore

            self.keys: Keys = Keystore(config.data_dir)
        else:
            self.keys = config.keys
        self.clock = config.clock
        if config.machine_metrics is None:
            from modelmine.metrics import MetricsSampler

            self.machine_metrics: Callable[[], dict[str, Any]] = MetricsSampler().sample
        else:
            self.machine_metrics = config.machine_metrics
        self.account: ops.ActiveAccount | None = None
        self.balance: int | None = None
        self.names: dict[str, str] = {}
        self._outage: OutageScreen | None = None
        self._lost: NodeLost | None = None
        self._stats_due = False

    def compose(self) -> ComposeResult:
        yield NodeHeader(id="header")
        with TabbedContent(initial="jobs", id="tabs"):
            with TabPane("1 Jobs", id="jobs"):
                yield JobsView()
            with TabPane("2 Submit", id="submit"):
                yield SubmitView()
            with TabPane("3 Nodes", id="nodes"):
                yield NodesView()
            with TabPane("4 Ledger", id="ledger"):
                yield LedgerView()
            with TabPane("5 Network", id="network"):
                yield NetworkView()
            with TabPane("6 Accounts", id="accounts"):
                yield AccountsView()
        yield Footer()

    def on_mount(self) -> None:
        if not self.config.blink:
            for field_input in self.query(Input):
                field_input.cursor_blink = False
        self.query_one("#jobs-table", DataTable).focus()
        self.link.start(self.post_message)
        self.set_interval(self.config.status_every, self._tick_status)
        self.set_interval(self.config.stats_every, self._tick_stats)

    async def on_unmount(self) -> None:
        await self.link.stop()

    # ---- shared state ----

    @property
    def jobs_view(self) -> JobsView:
        return self.query_one(JobsView)

    def _details(self) -> list[JobDetailScreen]:
        return [s for s in self.screen_stack if isinstance(s, JobDetailScreen)]

    def set_account(self, account: ops.ActiveAccount | None, balance: int | None) -> None:
        self.account = account
        self.balance = balance
        self._show_account()
        self.post_message(
            AccountChanged(
                account.name if account else None, account.account_id if account else None, balance
            )
        )

    def set_balance(self, balance: int | None) -> None:
        self.balance = balance
        self._show_account()
        self.query_one(SubmitView).account_changed()

    def _show_account(self) -> None:
        if self.account is None:
            self.account_label = "no account"
        else:
            shown = "?" if self.balance is None else f"{self.balance:,}"
            self.account_label = f"{self.account.name} {shown} cr"

    def remember_names(self, nodes: list[dict[str, Any]], key: str = "node_id") -> None:
        """Learn who is who (nodes and local accounts); redraw what shows ids if any is new."""
        new = False
        for node in nodes:
            node_id, name = node.get(key), node.get("name")
            if node_id and name and self.names.get(node_id) != name:
                self.names[node_id] = str(name)
                new = True
        if new and self.is_running:
            self.query_one(JobsView).rebuild()
            self.query_one(LedgerView).rebuild()

    def verify_chain(self) -> tuple[bool, str]:
        if self.config.verifier is not None:
            return self.config.verifier()
        return verify_local_chain(self.data_dir)

    def reload_all(self) -> None:
        self.query_one(JobsView).reload()
        self.query_one(NodesView).reload()
        self.query_one(LedgerView).reload()
        self.query_one(NetworkView).reload()
        self.query_one(AccountsView).reload()
        for detail in self._details():
            detail.reload()

    # ---- the node's messages ----

    @on(NodeConnected)
    def _connected(self, message: NodeConnected) -> None:
        if not self.is_running:
            return  # shutting down: the views are going away
        self.connected = True
        self._lost = None
        self._status(message.status)
        while self._outage is not None and self._outage in self.screen_stack:
            self.pop_screen()
        self._outage = None
        self.reload_all()

    @on(NodeLost)
    def _node_lost(self, message: NodeLost) -> None:
        if not self.is_running:
            return  # shutting down: the views are going away
        self.connected = False
        self._lost = message
        if self._outage is None:
            self._outage = OutageScreen(self.data_dir)
            self.push_screen(self._outage)
            self.call_after_refresh(self._show_outage)
        else:
            self._show_outage()

    def _show_outage(self) -> None:
        if self._outage is not None and self._lost is not None and self._outage.is_mounted:
            self._outage.show(self._lost.reason, self._lost.retry_in, self._lost.attempt)

    @on(StatusUpdated)
    def _status_updated(self, message: StatusUpdated) -> None:
        if not self.is_running:
            return  # shutting down: the views are going away
        self._status(message.status)

    def _status(self, status: dict[str, Any]) -> None:
        self.node_status = status
        self.remember_names([status])

    @on(PeerChanged)
    def _peer_changed(self, message: PeerChanged) -> None:
        if not self.is_running:
            return  # shutting down: the views are going away
        self.remember_names([message.peer])
        self.query_one(NodesView).peer_changed(message.peer)

    @on(BlockCommitted)
    def _block(self, message: BlockCommitted) -> None:
        if not self.is_running:
            return  # shutting down: the views are going away
        status = self.node_status
        height = message.block.get("height", 0)
        if status is not None and height > status.get("height", 0):
            self.node_status = {**status, "height": height, "head": message.block.get("hash")}
        self.query_one(LedgerView).block_committed(message.block)
        if self.account is not None:
            self._refresh_balance()

    @on(JobChanged)
    def _job_changed(self, message: JobChanged) -> None:
        if not self.is_running:
            return  # shutting down: the views are going away
        self.query_one(JobsView).job_changed(message.job)
        for detail in self._details():
            detail.job_changed(message.job)
        if not self._stats_due:
            # One stats read for a burst of job changes, so the chart shows each step.
            self._stats_due = True
            self.set_timer(0.5, self._stats_now)

    def _stats_now(self) -> None:
        self._stats_due = False
        self._tick_stats()

    @on(ProgressReported)
    def _progress(self, message: ProgressReported) -> None:
        if not self.is_running:
            return  # shutting down: the views are going away
        self.query_one(JobsView).progress(message.report)
        for detail in self._details():
            detail.progress(message.report)

    @on(EventsDropped)
    def _dropped(self, message: EventsDropped) -> None:
        if not self.is_running:
            return  # shutting down: the views are going away
        logger.info("the node dropped %d %s events; reloading", message.count, message.topic)
        self.reload_all()

    # ---- views' messages ----

    @on(OpenJob)
    def _open_job(self, message: OpenJob) -> None:
        self.push_screen(JobDetailScreen(message.job_id))

    @on(JobSubmitted)
    def _submitted(self, message: JobSubmitted) -> None:
        self.query_one(JobsView).reload()
        self._refresh_balance()

    @on(AccountChanged)
    def _account_changed(self, message: AccountChanged) -> None:
        self.query_one(SubmitView).account_changed()
        jobs = self.query_one(JobsView)
        if jobs.mine:
            jobs.rebuild()

    # ---- polling (heartbeats and stats are not pushed) ----

    @work(exclusive=True, group="status")
    async def _tick_status(self) -> None:
        if not (self.connected and self.is_running):
            return
        try:
            status = await self.link.call("status")
        except ControlError:
            return
        if not self.is_running:
            return  # the app closed while we waited
        self.post_message(StatusUpdated(status))
        tabs = self.query_one(TabbedContent)
        if tabs.active == "nodes":
            self.query_one(NodesView).reload()

    def _tick_stats(self) -> None:
        if self.connected and self.is_running:
            self.query_one(NetworkView).reload()

    @work(exclusive=True, group="balance")
    async def _refresh_balance(self) -> None:
        account = self.account
        if account is None:
            return
        try:
            info = await ops.account_info(self.link, account.account_id)
        except ControlError:
            return
        if self.account is account and self.is_running:
            self.set_balance(info["balance"])

    # ---- actions ----

    def action_show(self, view: str) -> None:
        while isinstance(self.screen, JobDetailScreen):
            self.pop_screen()
        tabs = self.query_one(TabbedContent)
        tabs.active = view
        target = VIEW_FOCUS.get(view)
        if target is not None:
            self.query_one(target).focus()
        if view == "nodes":
            self.query_one(NodesView).reload()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "leave_field":
            return isinstance(self.focused, Input)
        return True

    def action_leave_field(self) -> None:
        if isinstance(self.focused, Input):
            tabs = self.query_one(TabbedContent)
            target = VIEW_FOCUS.get(str(tabs.active))
            if target == "#f-title":
                target = "#do-submit"  # stay in the form, so its keys (ctrl+s, ctrl+o) work
            if target is not None:
                self.query_one(target).focus()
            else:
                self.screen.set_focus(None)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "network" and self.connected:
            self.query_one(NetworkView).reload()


def make_app(data_dir: Path, **options: Any) -> ModelMineApp:
    """The app for the node of ``data_dir``; ``options`` are :class:`TuiConfig` fields."""
    return ModelMineApp(TuiConfig(data_dir=data_dir, **options))
