"""The ledger explorer: blocks, one block's records and signatures, and verifying the chain."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static

from modelmine.control_client import ControlError, RpcError
from modelmine.tui.format import record_detail, short
from modelmine.tui.widgets import Notice

if TYPE_CHECKING:
    from modelmine.tui.app import ModelMineApp

logger = logging.getLogger(__name__)

PAGE: Final = 100
MAX_BLOCKS: Final = 1000


def verify_local_chain(data_dir: Path) -> tuple[bool, str]:
    """Re-check the chain stored in ``data_dir`` from its genesis (blocking: run in a thread)."""
    from modelmine.genesis import GENESIS_FILE, Genesis, GenesisError
    from modelmine.ledger import StoreError, verify_chain

    try:
        genesis = Genesis.load(data_dir / GENESIS_FILE)
        report = verify_chain(data_dir, genesis)
    except (GenesisError, StoreError, OSError) as exc:
        return False, f"cannot verify: {exc}"
    if not report.ok:
        return False, str(report)
    return True, (
        f"chain verified: {report.height} blocks, {report.records} records, "
        f"{report.signatures} signatures in {report.seconds:.2f} s; "
        f"state root {report.state_root.hex()[:16]}…"
    )


class LedgerView(Horizontal):
    BINDINGS = [
        Binding("v", "verify", "Verify chain"),
        Binding("o", "older", "Older blocks"),
        Binding("r", "reload", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__(id="ledger-view")
        self.blocks: dict[int, dict[str, Any]] = {}
        self.shown_height: int | None = None

    @property
    def tui(self) -> ModelMineApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        with Vertical(id="blocks-pane"):
            table: DataTable[Any] = DataTable(
                id="blocks-table", cursor_type="row", zebra_stripes=True
            )
            table.add_column("HEIGHT", key="height")
            table.add_column("TIME", key="time")
            table.add_column("HASH", key="hash")
            table.add_column("PROPOSER", key="proposer")
            table.add_column("RECS", key="records")
            table.border_title = "blocks"
            yield table
            yield Notice(id="verify-result", classes="notice")
        with Vertical(id="block-pane"):
            yield Static("select a block", id="block-summary")
            records: DataTable[Any] = DataTable(id="block-records", cursor_type="row")
            records.add_columns("RECORD", "KIND", "SIGNER", "WHAT")
            records.border_title = "records"
            yield records
            signatures: DataTable[Any] = DataTable(id="block-signatures", cursor_type="row")
            signatures.add_columns("VALIDATOR", "SIGNATURE")
            signatures.border_title = "commit signatures"
            yield signatures

    # ---- data in ----

    @work(exclusive=True, group="ledger-load")
    async def reload(self) -> None:
        try:
            blocks = await self.tui.link.call("ledger.blocks", limit=PAGE)
        except ControlError:
            return
        self.blocks = {b["height"]: b for b in blocks}
        self.rebuild()
        if blocks and self.shown_height is None:
            self.show_block(blocks[0]["height"])

    @work(exclusive=True, group="ledger-older")
    async def load_older(self) -> None:
        if not self.blocks:
            return
        try:
            blocks = await self.tui.link.call("ledger.blocks", limit=PAGE, before=min(self.blocks))
        except ControlError:
            return
        for b in blocks:
            self.blocks[b["height"]] = b
        self.rebuild()

    def block_committed(self, block: dict[str, Any]) -> None:
        table: DataTable[Any] = self.query_one("#blocks-table", DataTable)
        height = block["height"]
        # Showing the newest block (or none yet): follow the head to the new one.
        follow = self.shown_height is None or self.shown_height >= max(self.blocks, default=0)
        self.blocks[height] = block
        if str(height) in table.rows:
            return
        table.add_row(*self._cells(block), key=str(height))
        for old in sorted(self.blocks)[:-MAX_BLOCKS]:
            del self.blocks[old]
            table.remove_row(str(old))
        table.sort("height", key=lambda cell: int(cell.plain), reverse=True)
        if follow:
            table.move_cursor(row=0, animate=False)
            self.show_block(height)
        elif self.shown_height is not None and str(self.shown_height) in table.rows:
            # Keep the cursor on the block whose detail is shown.
            table.move_cursor(row=table.get_row_index(str(self.shown_height)), animate=False)
        table.border_subtitle = f"{len(self.blocks)} shown · o older"

    def _cells(self, b: dict[str, Any]) -> tuple[Any, ...]:
        names = self.tui.names
        return (
            Text(str(b["height"]), justify="right"),
            self.tui.clock.when(b.get("time"), "%H:%M:%S"),
            Text(short(b.get("hash")), style="dim"),
            names.get(b.get("proposer", ""), short(b.get("proposer"))),
            Text(str(b.get("records", 0)), justify="right"),
        )

    def rebuild(self) -> None:
        table: DataTable[Any] = self.query_one("#blocks-table", DataTable)
        cursor = self.selected_height()
        table.clear()
        for height in sorted(self.blocks, reverse=True):
            table.add_row(*self._cells(self.blocks[height]), key=str(height))
        if cursor is not None and str(cursor) in table.rows:
            table.move_cursor(row=table.get_row_index(str(cursor)), animate=False)
        table.border_subtitle = f"{len(self.blocks)} shown · o older"

    def selected_height(self) -> int | None:
        table: DataTable[Any] = self.query_one("#blocks-table", DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return None if key.value is None else int(key.value)

    @on(DataTable.RowHighlighted, "#blocks-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None and int(event.row_key.value) != self.shown_height:
            self.show_block(int(event.row_key.value))

    def show_block(self, height: int) -> None:
        """Show block ``height`` on the right (its height counts as shown at once)."""
        self.shown_height = height
        self._load_block(height)

    @work(exclusive=True, group="ledger-block")
    async def _load_block(self, height: int) -> None:
        try:
            block = await self.tui.link.call("ledger.block", height=height)
        except RpcError as exc:
            self.query_one("#block-summary", Static).update(Text(exc.message, style="red"))
            return
        except ControlError:
            return
        self._show(block)

    def _show(self, block: dict[str, Any]) -> None:
        names = self.tui.names
        proposer = block.get("proposer", "")
        commit = block.get("commit") or {}
        text = Text()
        text.append(f"block {block['height']}", style="bold")
        text.append(f" · {self.tui.clock.when(block.get('time'))} · round {block.get('round', 0)}")
        text.append(f" · proposer {names.get(proposer, short(proposer))}")
        text.append(f"\nhash {block.get('hash')}")
        text.append(f"\nprev {block.get('prev_hash')}")
        text.append(f"\nroot {block.get('state_root')}", style="dim")
        text.append(
            f"\ncommit round {commit.get('round', '?')} · "
            f"{len(commit.get('signatures') or [])} signatures of validators"
        )
        self.query_one("#block-summary", Static).update(text)
        records: DataTable[Any] = self.query_one("#block-records", DataTable)
        records.clear()
        for r in block.get("records") or []:
            records.add_row(
                short(r.get("id")),
                r.get("kind", "?"),
                names.get(r.get("signer", ""), short(r.get("signer"))),
                record_detail(r.get("kind", ""), r.get("payload"), names),
            )
        signatures: DataTable[Any] = self.query_one("#block-signatures", DataTable)
        signatures.clear()
        for s in commit.get("signatures") or []:
            validator = s.get("validator", "")
            label = names.get(validator)
            who = f"{label} {short(validator)}" if label else short(validator, 16)
            signatures.add_row(who, Text(short(s.get("signature"), 40) + "…", style="dim"))

    # ---- actions ----

    def action_reload(self) -> None:
        self.reload()

    def action_older(self) -> None:
        self.load_older()

    def action_verify(self) -> None:
        self.query_one("#verify-result", Notice).say("verifying every block from the genesis …")
        self._verify()

    @work(exclusive=True, group="ledger-verify", thread=True)
    def _verify(self) -> None:
        ok, line = self.tui.verify_chain()
        self.app.call_from_thread(self._verified, ok, line)

    def _verified(self, ok: bool, line: str) -> None:
        mark = "✓ " if ok else "✗ "
        self.query_one("#verify-result", Notice).say(mark + line, "ok" if ok else "error")
