"""Ledger records this node signs (claims, checkpoints, results), sent one at a time.

A record's nonce must be exactly one more than its signer's last, and the ledger checks records
against committed state, so a node keeps one record in flight and waits for it to be final
before building the next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

import trio

from modelmine.consensus.service import ChainService
from modelmine.ledger import LedgerState, record_id

log = logging.getLogger(__name__)

FINAL_WITHIN: Final = 60.0


class Outbox:
    def __init__(self, chain: ChainService, state: LedgerState, node_id: bytes) -> None:
        self.chain = chain
        self.state = state
        self.node_id = node_id
        self._lock = trio.Lock()

    async def send(self, make: Callable[[int], bytes], what: str) -> int | None:
        """Build with the next nonce, submit, wait until final. The block height, or None if
        the record was refused or did not become final (the reason is logged)."""
        async with self._lock:
            raw = make(self.state.next_nonce(self.node_id))
            reason = self.chain.submit(raw)
            if reason is not None:
                log.info("%s not sent: %s", what, reason)
                return None
            height = await self.chain.wait_included(record_id(raw), FINAL_WITHIN)
            if height is None:
                log.info(
                    "%s was not included: it stopped being valid (e.g. another node's claim "
                    "won) or was not final within %.0f s",
                    what,
                    FINAL_WITHIN,
                )
            return height
