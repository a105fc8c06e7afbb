"""Known peers, remembered across restarts (SQLite in the data dir).

A node that restarts while every bootstrap server is down still finds the network through the
peers it remembers here. Writes are few (a peer learned, a ban); callers batch them and run
them in a worker thread.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PEERS_FILE: Final = "peers.sqlite"
MAX_REMEMBERED: Final = 4096

_SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (
    node_id BLOB PRIMARY KEY,
    address TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    banned_until REAL NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class StoredPeer:
    node_id: bytes
    address: str
    name: str
    updated: float
    banned_until: float


class PeerStore:
    def __init__(self, data_dir: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data_dir / PEERS_FILE, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def load(self) -> list[StoredPeer]:
        with self._lock:
            rows = self._db.execute(
                "SELECT node_id, address, name, updated, banned_until FROM peers "
                "ORDER BY updated DESC LIMIT ?",
                (MAX_REMEMBERED,),
            ).fetchall()
        return [StoredPeer(bytes(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    def remember(self, peers: list[tuple[bytes, str, str]], now: float) -> None:
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO peers (node_id, address, name, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(node_id) DO UPDATE SET address=excluded.address, "
                "name=excluded.name, updated=excluded.updated",
                [(node_id, address, name, now) for node_id, address, name in peers],
            )
            self._db.execute(
                "DELETE FROM peers WHERE node_id NOT IN "
                "(SELECT node_id FROM peers ORDER BY updated DESC LIMIT ?)",
                (MAX_REMEMBERED,),
            )

    def ban(self, node_id: bytes, until: float) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE peers SET banned_until=? WHERE node_id=?", (until, node_id))

    def close(self) -> None:
        with self._lock:
            self._db.close()
