"""Real blocks with real commits from a set of validator keys, without a network.

For tests, benchmarks and tools: each :meth:`ChainBuilder.build` makes the next block exactly
as consensus would (proposer by rotation, proposer signature, last commit, state root of the
previous block), has the validators precommit it, and applies it to the builder's state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nacl.signing import SigningKey

from modelmine.consensus.types import NO_HASH, Block, Commit, Header, Vote, VoteType
from modelmine.genesis import Genesis
from modelmine.ledger.state import LedgerError, LedgerState

BLOCK_INTERVAL_MS = 1000


def make_commit(
    keys: Iterable[SigningKey], chain_id: str, height: int, round: int, block_hash: bytes
) -> Commit:
    """The commit formed by the precommits of ``keys`` for ``block_hash``."""
    signatures = sorted(
        (
            bytes(key.verify_key),
            Vote.create(key, chain_id, VoteType.PRECOMMIT, height, round, block_hash).signature,
        )
        for key in keys
    )
    return Commit(height, round, block_hash, tuple(signatures))


class ChainBuilder:
    """Builds and applies blocks on ``state`` (a fresh one by default)."""

    def __init__(
        self,
        genesis: Genesis,
        keys: Sequence[SigningKey],
        *,
        state: LedgerState | None = None,
        prev: Header | None = None,
        last_commit: Commit | None = None,
    ) -> None:
        self.genesis = genesis
        self.state = state if state is not None else LedgerState(genesis)
        self.keys = {bytes(k.verify_key): k for k in keys}
        if not self.keys:
            raise ValueError("a chain needs at least one validator key")
        unknown = [k.hex()[:8] for k in self.keys if genesis.validator(k) is None]
        if unknown:
            raise ValueError(f"keys {', '.join(unknown)} are not validators of the genesis")
        if (prev is None) != (self.state.height == 0) or (
            prev is not None and prev.height != self.state.height
        ):
            raise ValueError("prev header and state height do not fit together")
        self.prev = prev
        self.last_commit = last_commit

    def build(
        self,
        records: Sequence[bytes] = (),
        *,
        time_ms: int | None = None,
        signers: Iterable[bytes] | None = None,
    ) -> tuple[Block, Commit]:
        """The next block holding ``records`` and its commit, applied to the state.

        ``signers`` (node ids, default: every key held) precommit the block. The round is the
        first whose proposer's key is held. Raises LedgerError if a record does not apply.
        """
        height = self.state.height + 1
        if time_ms is None:
            time_ms = (
                self.genesis.genesis_time * 1000
                if self.prev is None
                else self.prev.time + BLOCK_INTERVAL_MS
            )
        reason = self.state.validate_block_records(records, time_ms)
        if reason is not None:
            raise LedgerError(f"block {height}: {reason}")
        round = 0
        while self.state.validators.proposer(height, round) not in self.keys:
            round += 1
        proposer = self.keys[self.state.validators.proposer(height, round)]
        block = Block.create(
            proposer,
            chain_id=self.genesis.chain_id,
            height=height,
            round=round,
            time=time_ms,
            prev_hash=NO_HASH if self.prev is None else self.prev.hash,
            state_root=self.state.state_root(),
            records=list(records),
            last_commit=self.last_commit,
        )
        chosen = self.keys.values() if signers is None else [self.keys[s] for s in signers]
        commit = make_commit(chosen, self.genesis.chain_id, height, round, block.hash)
        self.state.apply_block(block, commit)
        self.prev, self.last_commit = block.header, commit
        return block, commit
