"""Local accounts: list with balances, create, unlock one as the active account, register it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from nacl.signing import SigningKey
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, Static

from modelmine.control_client import ControlError
from modelmine.identity import AccountInfo, IdentityError, WrongPassword
from modelmine.tui import ops
from modelmine.tui.format import credits
from modelmine.tui.widgets import Notice

if TYPE_CHECKING:
    from modelmine.tui.app import ModelMineApp


class Keys(Protocol):
    """The local keystore (:class:`modelmine.identity.Keystore`)."""

    def list(self) -> list[AccountInfo]: ...

    def create(self, name: str, password: str) -> AccountInfo: ...

    def unlock(self, name: str, password: str) -> SigningKey: ...


class AccountsView(Vertical):
    BINDINGS = [
        Binding("n", "new", "New account"),
        Binding("u", "unlock", "Unlock"),
        Binding("g", "register", "Register"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__(id="accounts-view")
        self.accounts: list[AccountInfo] = []
        self.ledger: dict[str, dict[str, Any]] = {}

    @property
    def tui(self) -> ModelMineApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="accounts-table", cursor_type="row")
        table.add_column(" ", key="active")
        table.add_column("NAME", key="name")
        table.add_column("ACCOUNT ID", key="id")
        table.add_column("BALANCE", key="balance")
        table.add_column("REGISTERED", key="registered")
        table.add_column("EARNED", key="earned")
        table.border_title = "accounts in this data dir"
        yield table
        with Horizontal(id="account-forms"):
            with Vertical(classes="panel", id="create-panel") as create:
                create.border_title = "new account (n)"
                yield Input(placeholder="name: letters, digits, . _ -", id="new-name", compact=True)
                yield Input(
                    placeholder="password (8+ characters)",
                    password=True,
                    id="new-password",
                    compact=True,
                )
                yield Input(
                    placeholder="password again", password=True, id="new-repeat", compact=True
                )
                yield Button("Create", id="create", compact=True)
            with Vertical(classes="panel", id="unlock-panel") as unlock:
                unlock.border_title = "unlock (u) and register (g)"
                yield Label("", id="unlock-target")
                yield Input(
                    placeholder="password", password=True, id="unlock-password", compact=True
                )
                with Horizontal(classes="buttons"):
                    yield Button("Unlock", id="unlock", compact=True)
                    yield Button("Register on the ledger", id="register", compact=True)
                    yield Button("Lock", id="lock", compact=True)
        yield Notice(id="account-notice", classes="notice")
        yield Static(
            "Keys are kept encrypted in <data-dir>/accounts; records are signed here, never by the node.",
            classes="dim",
        )

    def on_mount(self) -> None:
        self._show_target()

    # ---- data ----

    @work(exclusive=True, group="accounts-load")
    async def reload(self) -> None:
        try:
            self.accounts = await asyncio.to_thread(self.tui.keys.list)
        except IdentityError as exc:
            self.query_one("#account-notice", Notice).say(str(exc), "error")
            self.accounts = []
        self.tui.remember_names(
            [{"node_id": a.account_id.hex(), "name": a.name} for a in self.accounts]
        )
        ledger: dict[str, dict[str, Any]] = {}
        for info in self.accounts:
            try:
                ledger[info.account_id.hex()] = await ops.account_info(
                    self.tui.link, info.account_id.hex()
                )
            except ControlError:
                break
        self.ledger = ledger
        self.redraw()
        active = self.tui.account
        if active is not None and active.account_id in ledger:
            self.tui.set_balance(ledger[active.account_id]["balance"])

    def redraw(self) -> None:
        table: DataTable[Any] = self.query_one("#accounts-table", DataTable)
        cursor = self.selected_name()
        table.clear()
        active = self.tui.account
        for info in self.accounts:
            account_id = info.account_id.hex()
            row = self.ledger.get(account_id, {})
            is_active = active is not None and active.account_id == account_id
            registered = row.get("registered")
            table.add_row(
                Text("●", style="bold green") if is_active else "",
                Text(info.name, style="bold" if is_active else ""),
                Text(account_id[:16] + "…", style="dim"),
                Text(credits(row.get("balance")), justify="right"),
                "-"
                if registered is None
                else ("yes" if registered else Text("no", style="yellow")),
                Text(credits(row.get("earned")), justify="right"),
                key=info.name,
            )
        if cursor is not None and cursor in table.rows:
            table.move_cursor(row=table.get_row_index(cursor), animate=False)
        if not self.accounts:
            table.border_subtitle = "none yet: create one below"
        else:
            table.border_subtitle = f"{len(self.accounts)} accounts"
        self._show_target()

    def selected_name(self) -> str | None:
        table: DataTable[Any] = self.query_one("#accounts-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return None if key.value is None else str(key.value)

    def _show_target(self) -> None:
        name = self.selected_name()
        text = Text("account ")
        text.append(name or "(select one above)", style="bold")
        active = self.tui.account
        if active is not None:
            text.append(f"   active: {active.name}", style="green")
        self.query_one("#unlock-target", Label).update(text)

    @on(DataTable.RowHighlighted, "#accounts-table")
    def _highlighted(self) -> None:
        self._show_target()

    @on(DataTable.RowSelected, "#accounts-table")
    def _selected(self) -> None:
        self.query_one("#unlock-password", Input).focus()

    # ---- create ----

    def action_new(self) -> None:
        self.query_one("#new-name", Input).focus()

    @on(Button.Pressed, "#create")
    @on(Input.Submitted, "#new-name, #new-password, #new-repeat")
    def _create_pressed(self) -> None:
        notice = self.query_one("#account-notice", Notice)
        name = self.query_one("#new-name", Input).value.strip()
        password = self.query_one("#new-password", Input).value
        repeat = self.query_one("#new-repeat", Input).value
        if not name:
            notice.say("a new account needs a name", "error")
            self.query_one("#new-name", Input).focus()
            return
        if password != repeat:
            notice.say("the passwords do not match", "error")
            self.query_one("#new-repeat", Input).focus()
            return
        self._create(name, password)

    @work(exclusive=True, group="account-action")
    async def _create(self, name: str, password: str) -> None:
        notice = self.query_one("#account-notice", Notice)
        notice.say(f"creating {name} (deriving the key from the password) …")
        try:
            info = await asyncio.to_thread(self.tui.keys.create, name, password)
        except IdentityError as exc:
            notice.say(str(exc), "error")
            return
        for widget_id in ("#new-name", "#new-password", "#new-repeat"):
            self.query_one(widget_id, Input).value = ""
        notice.say(
            f"created {info.name} ({info.account_id.hex()[:8]}); unlock it with its password",
            "ok",
        )
        self.accounts = [a for a in self.accounts if a.name != name] + [info]
        self.accounts.sort(key=lambda a: a.name)
        self.redraw()
        table: DataTable[Any] = self.query_one("#accounts-table", DataTable)
        table.move_cursor(row=table.get_row_index(info.name), animate=False)
        self.query_one("#unlock-password", Input).focus()
        self.reload()

    # ---- unlock, lock, register ----

    def action_unlock(self) -> None:
        self.query_one("#unlock-password", Input).focus()

    @on(Button.Pressed, "#unlock")
    @on(Input.Submitted, "#unlock-password")
    def _unlock_pressed(self) -> None:
        notice = self.query_one("#account-notice", Notice)
        name = self.selected_name()
        if name is None:
            notice.say("no account to unlock: create one first", "error")
            return
        self._unlock(name, self.query_one("#unlock-password", Input).value)

    @work(exclusive=True, group="account-action")
    async def _unlock(self, name: str, password: str) -> None:
        notice = self.query_one("#account-notice", Notice)
        notice.say(f"unlocking {name} …")
        try:
            key = await asyncio.to_thread(self.tui.keys.unlock, name, password)
        except WrongPassword:
            notice.say(f"wrong password for {name}", "error")
            self.query_one("#unlock-password", Input).value = ""
            return
        except IdentityError as exc:
            notice.say(str(exc), "error")
            return
        self.query_one("#unlock-password", Input).value = ""
        account = ops.ActiveAccount(name, key)
        balance = self.ledger.get(account.account_id, {}).get("balance")
        self.tui.set_account(account, balance)
        registered = self.ledger.get(account.account_id, {}).get("registered")
        hint = "" if registered else "; register it (g) to receive its grant"
        notice.say(f"{name} unlocked: it signs what you submit{hint}", "ok")
        self.redraw()
        self.query_one("#accounts-table", DataTable).focus()
        self.reload()

    @on(Button.Pressed, "#lock")
    def _lock(self) -> None:
        self.tui.set_account(None, None)
        self.query_one("#account-notice", Notice).say("locked: no active account")
        self.redraw()

    @on(Button.Pressed, "#register")
    def action_register(self) -> None:
        account = self.tui.account
        if account is None:
            self.query_one("#account-notice", Notice).say(
                "unlock an account first, then register it", "error"
            )
            return
        self._register(account)

    @work(exclusive=True, group="account-action")
    async def _register(self, account: ops.ActiveAccount) -> None:
        notice = self.query_one("#account-notice", Notice)
        notice.say(f"registering {account.name} on the ledger …")
        try:
            result = await ops.register(self.tui.link, account)
        except ops.OpError as exc:
            notice.say(str(exc), "error")
            return
        self.tui.set_balance(result["balance"])
        notice.say(
            f"registered {account.name} in block {result['height']}; "
            f"balance {result['balance']:,} credits",
            "ok",
        )
        self.reload()

    def action_reload(self) -> None:
        self.reload()
