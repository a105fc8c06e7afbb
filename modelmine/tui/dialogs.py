"""Modal screens: confirm, prompt for a path, help, and the node-outage screen."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

HELP = """\
[b]Views[/b]
  1  Jobs       counts, filters, live progress        f filter by status · m only mine · enter details
  2  Submit     the job form, checked as you type     ctrl+s submit · ctrl+o load a spec file (TOML)
  3  Nodes      every node and its machine metrics    refreshed with heartbeats; OFFLINE is red ✕
  4  Ledger     blocks, records, signatures           arrows pick a block · o older · v verify chain
  5  Network    stats, jobs over time, credits        jobs by status sampled while the TUI runs
  6  Accounts   local accounts and balances           n new · u unlock · g register the active one

[b]Job detail[/b] (enter on a job)
  c  cancel the job (its submitter only)    f  fetch the trained model    esc  back

[b]Everywhere[/b]
  ?  this help    r  refresh the view    tab / shift+tab  next / previous field    q  quit
  esc  leave a text field, so that the one-key commands above work again

The TUI talks to one local node (--data-dir). When the node stops, a notice covers the
screen and the TUI reconnects by itself. It logs to <data-dir>/tui.log.
"""


class Confirm(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__(classes="dialog")
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Static(self.question, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class Prompt(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, question: str, value: str = "", *, must_exist: bool = False) -> None:
        super().__init__(classes="dialog")
        self.question = question
        self.value = value
        self.must_exist = must_exist

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Static(self.question, classes="dialog-text")
            yield Input(self.value, id="prompt-input")
            yield Static("", id="prompt-error", classes="field-error")
            yield Static("enter: ok · esc: cancel", classes="dim")

    @on(Input.Submitted, "#prompt-input")
    def _submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if not value:
            return
        if self.must_exist and not Path(value).expanduser().is_file():
            self.query_one("#prompt-error", Static).update(f"no file at {value}")
            return
        self.dismiss(value)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static("ModelMine TUI — keys", id="help-title")
            yield Static(Text.from_markup(HELP), id="help-text")
            yield Static("esc or ? closes this help", classes="dim")


class OutageScreen(ModalScreen[None]):
    """Covers everything while there is no node to talk to; the app dismisses it on reconnect."""

    BINDINGS = [
        Binding("q", "app.quit", "Quit"),
        Binding("question_mark", "app.help", "Help"),
    ]

    def __init__(self, data_dir: Path) -> None:
        super().__init__(id="outage")
        self.data_dir = data_dir

    def compose(self) -> ComposeResult:
        with Vertical(id="outage-box"):
            yield Static("The node is not reachable", id="outage-title")
            yield Static("", id="outage-reason")
            yield Static(
                f"The TUI shows the node of {self.data_dir}.\n"
                f"Start it with:  modelmine node --data-dir {self.data_dir}\n"
                "(or `modelmine devnet` for a local test network).",
                id="outage-hint",
            )
            yield Static("", id="outage-retry")
            yield Static("q quits · the TUI reconnects by itself", classes="dim")

    def show(self, reason: str, retry_in: float, attempt: int) -> None:
        self.query_one("#outage-reason", Static).update(Text(reason, style="bold"))
        self.query_one("#outage-retry", Static).update(
            f"Trying again in {retry_in:g} s … (attempt {attempt})"
        )
