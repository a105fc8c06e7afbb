"""Records that arrived before the block they depend on.

Gossip is faster than consensus at the edges: a node that applies a block a few milliseconds
before its peers may send a record that only that block makes valid (the claim of a job the
block submitted, the next nonce of an account). A peer that has not applied the block yet
finds the record invalid. Dropping it would leave the record with its sender alone, and the
network waiting for the sender's turn to propose. So such records are kept here, a bounded
number for a bounded time, and offered again after each block. Sans-IO: the caller passes
the clock and the check.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from modelmine import wire


class EarlyRecords:
    def __init__(self, capacity: int, ttl: float) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError("EarlyRecords needs a positive capacity and time to live")
        self.capacity = capacity
        self.ttl = ttl
        self._records: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def keep(self, raw: bytes, now: float) -> None:
        """Keep ``raw`` until ``now + ttl``; the oldest goes when the capacity is reached."""
        digest = wire.sha256(raw)
        self._records.pop(digest, None)
        self._records[digest] = (raw, now + self.ttl)
        if len(self._records) > self.capacity:
            self._records.popitem(last=False)

    def take_valid(self, check: Callable[[bytes], str | None], now: float) -> list[bytes]:
        """The kept records that ``check`` now finds valid (None), oldest first; they and the
        expired ones are forgotten, the rest stay."""
        ready: list[bytes] = []
        for digest, (raw, until) in list(self._records.items()):
            if until <= now:
                del self._records[digest]
            elif check(raw) is None:
                del self._records[digest]
                ready.append(raw)
        return ready
