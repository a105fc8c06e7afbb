"""Re-check a whole stored chain from the genesis: ``modelmine ledger verify``.

:func:`verify_chain` opens a node's ledger database read-only (a stopped node's, a copy, or a
running node's: it reads one consistent snapshot) and checks, block by block,
everything a node that trusts no one would: the stored hash and header match the block, the
height and prev-hash link, strictly increasing time, the records root, the proposer and its
signature, the previous block's commit (last_commit) and the block's own stored commit
(each more than 2/3 of the voting power, every signature verified), the state root in the
header against the state recomputed by re-applying every record to a fresh
:class:`~modelmine.ledger.state.LedgerState`, and at the end the stored state against the
recomputed one. It reports the first height where anything is wrong, and why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from modelmine import wire
from modelmine.consensus.types import ConsensusError, Header, verify_block, verify_commit
from modelmine.consensus.validators import ValidatorSet
from modelmine.genesis import Genesis
from modelmine.ledger.state import LedgerError, LedgerState
from modelmine.ledger.store import LedgerStore, StoreError


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    height: int  # the last block found good (the head when ok)
    bad_height: int | None  # the first bad block, None when ok
    reason: str  # what is wrong at bad_height; "" when ok
    records: int
    signatures: int  # distinct signatures verified
    seconds: float
    state_root: bytes  # after block ``height``

    def __str__(self) -> str:
        if self.ok:
            return (
                f"ok: {self.height} blocks, {self.records} records, {self.signatures} "
                f"signatures verified in {self.seconds:.2f} s; state root {self.state_root.hex()}"
            )
        return f"bad block {self.bad_height}: {self.reason}"


class _Bad(Exception):
    def __init__(self, height: int, reason: str) -> None:
        super().__init__(reason)
        self.height = height
        self.reason = reason


def verify_chain(path: str | Path, genesis: Genesis) -> VerifyReport:
    """Verify the chain stored at ``path`` (a data dir or a ledger.sqlite file).

    Raises StoreError when there is no ledger of this genesis to verify at all.
    """
    started = time.perf_counter()
    validators = ValidatorSet.from_genesis(genesis)
    state = LedgerState(genesis, parse_cache=0)  # every record is applied once
    counts = {"records": 0, "signatures": 0}
    good = 0
    with LedgerStore.open(path, genesis, read_only=True) as store, store.snapshot():
        try:
            good = _verify_blocks(store, genesis, validators, state, counts)
            _verify_stored_state(store, state)
        except _Bad as bad:
            return VerifyReport(
                ok=False,
                height=bad.height - 1,
                bad_height=bad.height,
                reason=bad.reason,
                records=counts["records"],
                signatures=counts["signatures"],
                seconds=time.perf_counter() - started,
                state_root=state.state_root(),
            )
    return VerifyReport(
        ok=True,
        height=good,
        bad_height=None,
        reason="",
        records=counts["records"],
        signatures=counts["signatures"],
        seconds=time.perf_counter() - started,
        state_root=state.state_root(),
    )


def _verify_blocks(
    store: LedgerStore,
    genesis: Genesis,
    validators: ValidatorSet,
    state: LedgerState,
    counts: dict[str, int],
) -> int:
    prev: Header | None = None
    prev_commit: frozenset[tuple[bytes, bytes]] = frozenset()
    chain_id = genesis.chain_id
    for row in store.iter_blocks():
        height = 1 if prev is None else prev.height + 1
        if row.height != height:
            raise _Bad(height, f"block {height} is missing (the next stored is {row.height})")
        try:
            block = row.block()
            commit = row.commit()
        except wire.WireError as exc:
            raise _Bad(height, f"stored block {height} cannot be decoded: {exc}") from None
        if block.height != height:
            raise _Bad(height, f"the block stored at height {height} says {block.height}")
        if block.hash != row.hash or wire.sha256(row.header_wire) != row.hash:
            raise _Bad(height, f"stored header or hash of block {height} differs from its block")
        try:
            verify_block(
                block,
                prev,
                validators,
                chain_id,
                state_root=state.state_root(),
                max_records=genesis.consensus.max_block_records,
            )
        except ConsensusError as exc:
            raise _Bad(height, exc.reason) from None
        if commit.height != height:
            raise _Bad(height, f"the commit stored with block {height} is for {commit.height}")
        try:
            verify_commit(commit, validators, chain_id, block.hash)
        except ConsensusError as exc:
            raise _Bad(height, f"commit of block {height}: {exc.reason}") from None
        try:
            state.apply_block(block, commit)
        except LedgerError as exc:
            raise _Bad(height, str(exc)) from None
        # Signatures the consensus layer verified once, though they may appear twice (the
        # commit of block h is usually the last_commit of block h+1 as well).
        last = set() if block.last_commit is None else set(block.last_commit.signatures)
        own = frozenset(commit.signatures)
        counts["signatures"] += 1 + len(last - prev_commit) + len(own)
        counts["records"] += len(block.records)
        counts["signatures"] += len(block.records)
        prev, prev_commit = block.header, own
    return 0 if prev is None else prev.height


def _verify_stored_state(store: LedgerStore, state: LedgerState) -> None:
    head = state.height
    try:
        stored = store.load_state()
    except StoreError as exc:
        raise _Bad(head, f"stored ledger state: {exc}") from None
    if stored.state_root() != state.state_root():
        raise _Bad(
            head,
            f"the stored ledger state after block {head} differs from the state "
            "recomputed from the blocks",
        )
