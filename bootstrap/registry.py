"""The bootstrap server's table of live peers (sans-IO).

Nodes announce signed peer records; the registry keeps the newest record per node until it
expires without a refresh, and answers with a random sample of the others. It is bounded: at
capacity, the entry closest to expiry makes room.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final

from modelmine import wire
from modelmine.p2p.overlay import PEER_DOMAIN, PeerRecord
from modelmine.signing import parse, verify

DEFAULT_TTL: Final = 90.0
DEFAULT_CAPACITY: Final = 10_000
SAMPLE_SIZE: Final = 16


@dataclass
class _Entry:
    raw: bytes
    record: PeerRecord
    expires: float


@dataclass
class Registry:
    chain_id: str
    ttl: float = DEFAULT_TTL
    capacity: int = DEFAULT_CAPACITY
    rng: random.Random = field(default_factory=random.Random)
    _entries: dict[bytes, _Entry] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._entries)

    def announce(self, raw: bytes, now: float, *, announcer: bytes) -> PeerRecord:
        """Store ``announcer``'s own signed peer record. Raises WireError when invalid."""
        statement = parse(raw)
        if statement.domain != PEER_DOMAIN:
            raise wire.WireError(f"expected a peer record, got {statement.domain!r}")
        if statement.signer != announcer:
            raise wire.WireError("announced record is not the connecting node's")
        verify(statement, self.chain_id)
        record = PeerRecord.from_statement(statement)
        if not record.address:
            raise wire.WireError("peer record has no address to announce")
        current = self._entries.get(record.node_id)
        if current is not None and current.record.time > record.time:
            raise wire.WireError("peer record is older than the one announced before")
        if current is None and len(self._entries) >= self.capacity:
            self.expire(now)
            if len(self._entries) >= self.capacity:
                oldest = min(self._entries, key=lambda k: self._entries[k].expires)
                del self._entries[oldest]
        self._entries[record.node_id] = _Entry(raw, record, now + self.ttl)
        return record

    def sample(self, exclude: bytes, now: float, k: int = SAMPLE_SIZE) -> list[bytes]:
        live = sorted(
            (
                node_id
                for node_id, e in self._entries.items()
                if e.expires > now and node_id != exclude
            )
        )
        chosen = self.rng.sample(live, min(k, len(live)))
        return [self._entries[node_id].raw for node_id in chosen]

    def expire(self, now: float) -> int:
        dead = [node_id for node_id, e in self._entries.items() if e.expires <= now]
        for node_id in dead:
            del self._entries[node_id]
        return len(dead)
