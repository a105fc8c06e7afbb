"""The node's ledger database: blocks, their commits and the ledger state, in one SQLite file.

``<data-dir>/ledger.sqlite``, in WAL mode with ``synchronous=FULL``. :meth:`LedgerStore.append`
writes a block, its commit and every state entry the block changed in ONE transaction, so a
node killed at any instant reopens with a head block and a state that belong together.
FULL rather than NORMAL because the same file keeps the validator's sign state (``meta``),
which must be on disk before the vote it guards is sent, even across a power loss; blocks
come at most a few per second, so an fsync each is cheap.

Schema (version 1)::

    blocks(height INTEGER PRIMARY KEY, hash BLOB UNIQUE, time_ms, header BLOB, block BLOB,
           commit_wire BLOB)               -- canonical header, block and commit bytes
    accounts(id BLOB PRIMARY KEY, registered INTEGER, data BLOB)
    jobs(id BLOB PRIMARY KEY, status TEXT, submitter BLOB, created_height INTEGER, data BLOB)
    ledger(key TEXT PRIMARY KEY, value BLOB)  -- "network", "schema", "state"
    meta(key TEXT PRIMARY KEY, value BLOB)    -- for the node: sign state and the like

``data`` is the canonical msgpack of an entry's plain form (``to_value``); "state" holds
height, time_ms, granted, fee_due and the state root. A store is not thread-safe: use it from
one thread at a time (``trio.to_thread`` calls, one after another, are fine).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from modelmine import wire
from modelmine.consensus.signstate import SignState
from modelmine.consensus.types import NO_HASH, Block, Commit, Header
from modelmine.genesis import Genesis
from modelmine.ledger.entries import Account, Job
from modelmine.ledger.records import short
from modelmine.ledger.state import LedgerState, StateChanges

DB_FILE: Final = "ledger.sqlite"
SCHEMA_VERSION: Final = 1
MAX_BATCH: Final = 1000
SIGN_STATE_KEY: Final = "sign_state"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    time_ms INTEGER NOT NULL,
    header BLOB NOT NULL,
    block BLOB NOT NULL,
    commit_wire BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    id BLOB PRIMARY KEY,
    registered INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id BLOB PRIMARY KEY,
    status TEXT NOT NULL,
    submitter BLOB NOT NULL,
    created_height INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status);
CREATE TABLE IF NOT EXISTS ledger (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class StoreError(Exception):
    """A ledger database that cannot be used as asked; the text says why."""


def db_path(path: str | Path) -> Path:
    """The database file: ``path`` itself if it is a file or ends in ``.sqlite``, else
    ``path/ledger.sqlite`` (``path`` is a data directory)."""
    p = Path(path)
    return p if p.suffix == ".sqlite" or p.is_file() else p / DB_FILE


@dataclass(frozen=True)
class StoredBlock:
    """One row of ``blocks``, as stored: the bytes a peer is sent when syncing."""

    height: int
    hash: bytes
    header_wire: bytes
    block_wire: bytes
    commit_wire: bytes

    def block(self) -> Block:
        return Block.from_wire(self.block_wire)

    def commit(self) -> Commit:
        return Commit.from_wire(self.commit_wire)


class LedgerStore:
    """Open with :meth:`open`; close with :meth:`close` or ``with``."""

    def __init__(self, conn: sqlite3.Connection, path: Path, genesis: Genesis) -> None:
        self._conn = conn
        self.path = path
        self.genesis = genesis

    @classmethod
    def open(cls, path: str | Path, genesis: Genesis, *, read_only: bool = False) -> LedgerStore:
        """Open (creating unless ``read_only``) the database at ``path`` (see :func:`db_path`)
        for the network of ``genesis``."""
        file = db_path(path)
        if read_only and not file.exists():
            raise StoreError(f"no ledger database at {file}")
        try:
            if read_only:
                uri = f"{file.resolve().as_uri()}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                file.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the ledger database {file}: {exc}") from None
        store = cls(conn, file, genesis)
        try:
            if not read_only:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            store._check_or_init(read_only)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open the ledger database {file}: {exc}") from None
        except StoreError:
            conn.close()
            raise
        return store

    def _check_or_init(self, read_only: bool) -> None:
        network = self.genesis.network_id
        if not read_only:
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._conn.execute(
                    "INSERT OR IGNORE INTO ledger VALUES ('network', ?), ('schema', ?)",
                    (network, wire.encode(SCHEMA_VERSION)),
                )
        stored = self._ledger_value("network")
        if stored is None:
            raise StoreError(f"{self.path} is not a ModelMine ledger database")
        if stored != network:
            raise StoreError(
                f"{self.path} holds the ledger of network {short(stored)}, "
                f"not of this genesis ({short(network)})"
            )
        schema = self._ledger_value("schema")
        if schema is None or wire.decode(schema) != SCHEMA_VERSION:
            raise StoreError(f"{self.path}: unsupported schema version")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read inside sees the database as of its start, even while another process
        writes. Nests: inside a snapshot or transaction it adds nothing."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            self._conn.execute("ROLLBACK")

    # ---- blocks ----

    def head(self) -> tuple[int, bytes]:
        """(height, hash) of the last stored block; (0, NO_HASH) before the first."""
        row = self._conn.execute(
            "SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1"
        ).fetchone()
        return (0, NO_HASH) if row is None else (int(row[0]), bytes(row[1]))

    def stored(self, height: int) -> StoredBlock | None:
        rows = self._rows(height, height)
        return rows[0] if rows else None

    def block(self, height: int) -> Block | None:
        row = self.stored(height)
        return None if row is None else row.block()

    def header(self, height: int) -> Header | None:
        row = self.stored(height)
        return None if row is None else Header.from_wire(row.header_wire)

    def commit(self, height: int) -> Commit | None:
        """This node's commit of the block at ``height``."""
        row = self.stored(height)
        return None if row is None else row.commit()

    def blocks(self, first: int, last: int) -> list[StoredBlock]:
        """Stored blocks ``first..last`` (inclusive), at most MAX_BATCH of them."""
        return self._rows(first, min(last, first + MAX_BATCH - 1))

    def iter_blocks(self, first: int = 1, batch: int = 256) -> Iterator[StoredBlock]:
        """Every stored block from ``first`` on, in height order, read in batches."""
        while True:
            rows = self._rows(first, first + batch - 1)
            yield from rows
            if len(rows) < batch:
                return
            first += batch

    def _rows(self, first: int, last: int) -> list[StoredBlock]:
        cursor = self._conn.execute(
            "SELECT height, hash, header, block, commit_wire FROM blocks "
            "WHERE height BETWEEN ? AND ? ORDER BY height",
            (first, last),
        )
        return [
            StoredBlock(int(h), bytes(hh), bytes(hd), bytes(b), bytes(c))
            for h, hh, hd, b, c in cursor
        ]

    # ---- state ----

    def load_state(self) -> LedgerState:
        """The state after the head block, checked against its stored root."""
        with self.snapshot():
            return self._load_state()

    def _load_state(self) -> LedgerState:
        raw = self._ledger_value("state")
        if raw is None:
            if self.head()[0] != 0:
                raise StoreError(f"{self.path}: blocks are stored but no ledger state")
            return LedgerState(self.genesis)
        try:
            meta = wire.expect_map(wire.decode(raw), "ledger state")
            fee_due = wire.field(meta, "fee_due", list, "ledger state")
            accounts = [
                Account.from_value(wire.decode(bytes(d)))
                for (d,) in self._conn.execute("SELECT data FROM accounts")
            ]
            jobs = [
                Job.from_value(wire.decode(bytes(d)))
                for (d,) in self._conn.execute("SELECT data FROM jobs")
            ]
            state = LedgerState.restore(
                self.genesis,
                height=wire.int_field(meta, "height", 0, 2**62, "ledger state"),
                time_ms=wire.int_field(meta, "time_ms", 0, 2**62, "ledger state"),
                granted=wire.int_field(meta, "granted", 0, 2**63, "ledger state"),
                fee_due=[bytes(j) for j in fee_due],
                accounts=accounts,
                jobs=jobs,
            )
            root = wire.bytes_field(meta, "root", 32, "ledger state")
        except wire.WireError as exc:
            raise StoreError(f"{self.path}: damaged ledger state: {exc}") from None
        if state.state_root() != root:
            raise StoreError(f"{self.path}: the stored state does not match its root {short(root)}")
        head = self.head()[0]
        if state.height != head:
            raise StoreError(f"{self.path}: state is at height {state.height}, blocks at {head}")
        return state

    def append(self, block: Block, commit: Commit, state: LedgerState) -> None:
        """Store ``block``, its ``commit`` and ``state`` (the state after the block), as one
        transaction. The block must follow the head; the state must be at its height."""
        height, head_hash = self.head()
        if block.height != height + 1:
            raise StoreError(f"block {block.height} does not follow the stored head {height}")
        if block.header.prev_hash != head_hash:
            raise StoreError(f"block {block.height} does not link to stored block {height}")
        if commit.height != block.height or commit.block_hash != block.hash:
            raise StoreError(f"the commit given with block {block.height} is for another block")
        if state.height != block.height:
            raise StoreError(f"state is at height {state.height}, not {block.height}")
        changes = state.unsaved()
        meta = {
            "height": changes.height,
            "time_ms": changes.time_ms,
            "granted": changes.granted,
            "fee_due": list(changes.fee_due),
            "root": changes.root,
        }
        try:
            self._write(block, commit, changes, meta)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot store block {block.height}: {exc}") from None
        state.mark_saved(changes)

    def _write(
        self, block: Block, commit: Commit, changes: StateChanges, meta: dict[str, Any]
    ) -> None:
        with self._transaction():
            self._conn.execute(
                "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?)",
                (
                    block.height,
                    block.hash,
                    block.header.time,
                    block.header.to_wire(),
                    block.to_wire(),
                    commit.to_wire(),
                ),
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO accounts VALUES (?, ?, ?)",
                [(a.id, int(a.registered), wire.encode(a.to_value())) for a in changes.accounts],
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?)",
                [
                    (j.id, str(j.status), j.submitter, j.created_height, wire.encode(j.to_value()))
                    for j in changes.jobs
                ],
            )
            self._conn.execute(
                "INSERT OR REPLACE INTO ledger VALUES ('state', ?)", (wire.encode(meta),)
            )

    # ---- node metadata ----

    def get_meta(self, key: str) -> bytes | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put_meta(self, key: str, value: bytes) -> None:
        """Store ``value`` durably (fsynced) before returning."""
        with self._transaction():
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def sign_state(self) -> SignState | None:
        raw = self.get_meta(SIGN_STATE_KEY)
        if raw is None:
            return None
        try:
            return SignState.from_wire(raw)
        except (wire.WireError, ValueError) as exc:
            raise StoreError(f"{self.path}: damaged sign state: {exc}") from None

    def put_sign_state(self, state: SignState) -> None:
        self.put_meta(SIGN_STATE_KEY, state.to_wire())

    # ---- internals ----

    def _ledger_value(self, key: str) -> bytes | None:
        row = self._conn.execute("SELECT value FROM ledger WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")
