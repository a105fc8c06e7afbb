"""Shared helpers of the ledger tests: fixed keys, a genesis, and a chain to add blocks to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nacl.signing import SigningKey

from modelmine.consensus.types import Block, Commit
from modelmine.genesis import Genesis, Validator
from modelmine.ledger import ChainBuilder, LedgerState, LedgerStore, record_id
from modelmine.ledger import records as rec

CHAIN = "ledger-test"
GENESIS_TIME = 1_700_000_000
T0 = GENESIS_TIME * 1000  # time of block 1


def key(n: int) -> SigningKey:
    return SigningKey(bytes([n]) * 32)


def pub(k: SigningKey) -> bytes:
    return bytes(k.verify_key)


VALIDATORS = [key(200 + i) for i in range(4)]
ALICE, BOB, CAROL = key(1), key(2), key(3)
NODE1, NODE2, NODE3 = key(11), key(12), key(13)

# iris: 150 examples, 38 for validation, 112 for training; 20 epochs plan 2240 samples.
SPEC: dict[str, Any] = {
    "title": "iris softmax",
    "model": {"kind": "logistic"},
    "dataset": {"name": "iris"},
    "stake": 100,
}
FILE_SPEC: dict[str, Any] = {
    "title": "my csv",
    "model": {"kind": "logistic"},
    "dataset": {"name": "file", "blob": "ab" * 32},
    "stake": 100,
}


def make_genesis(grant: int = 1000, powers: Sequence[int] = (10, 10, 10, 10)) -> Genesis:
    return Genesis(
        chain_id=CHAIN,
        genesis_time=GENESIS_TIME,
        validators=tuple(
            Validator(pub(k), p, f"v{i}") for i, (k, p) in enumerate(zip(VALIDATORS, powers))
        ),
        initial_grant=grant,
    )


class World:
    """A chain of real blocks on a fresh ledger, with record helpers that fill in nonces."""

    def __init__(self, grant: int = 1000, powers: Sequence[int] = (10, 10, 10, 10)) -> None:
        self.genesis = make_genesis(grant, powers)
        self.builder = ChainBuilder(self.genesis, VALIDATORS[: len(powers)])
        self.blocks: list[tuple[Block, Commit]] = []
        self._queued: dict[bytes, int] = {}

    @property
    def state(self) -> LedgerState:
        return self.builder.state

    @property
    def time(self) -> int:
        """The time of the last block."""
        return self.state.time_ms

    def nonce(self, k: SigningKey) -> int:
        """The next nonce of ``k``, counting records made but not yet in a block."""
        n = self._queued.get(pub(k), self.state.next_nonce(pub(k)) - 1) + 1
        self._queued[pub(k)] = n
        return n

    def block(
        self, *records: bytes, time_ms: int | None = None, signers: Sequence[bytes] | None = None
    ) -> Block:
        self._queued.clear()
        block, commit = self.builder.build(records, time_ms=time_ms, signers=signers)
        self.blocks.append((block, commit))
        return block

    def idle(self, ms: int) -> Block:
        """An empty block ``ms`` after the last one."""
        return self.block(time_ms=self.time + ms)

    # -- records with the next nonce --

    def register(self, k: SigningKey, name: str = "someone") -> bytes:
        return rec.make_register(k, CHAIN, name, self.nonce(k))

    def transfer(self, k: SigningKey, to: SigningKey, amount: int, memo: str = "") -> bytes:
        return rec.make_transfer(k, CHAIN, pub(to), amount, self.nonce(k), memo)

    def submit(self, k: SigningKey, spec: dict[str, Any] | None = None) -> bytes:
        return rec.make_job_submit(k, CHAIN, spec or SPEC, self.nonce(k), self.time)

    def claim(self, k: SigningKey, job_id: bytes) -> bytes:
        return rec.make_job_claim(k, CHAIN, job_id, self.nonce(k))

    def checkpoint(self, k: SigningKey, job_id: bytes, samples: int, step: int = 1) -> bytes:
        return rec.make_job_checkpoint(k, CHAIN, job_id, step, samples, bytes(32), self.nonce(k))

    def complete(
        self, k: SigningKey, job_id: bytes, samples: int, metrics: dict[str, float] | None = None
    ) -> bytes:
        metrics = {"val_accuracy": 0.9} if metrics is None else metrics
        return rec.make_job_complete(
            k, CHAIN, job_id, metrics, b"\x07" * 32, samples, 10, self.nonce(k)
        )

    def fail(self, k: SigningKey, job_id: bytes, reason: str = "out of memory") -> bytes:
        return rec.make_job_fail(k, CHAIN, job_id, reason, self.nonce(k))

    def cancel(self, k: SigningKey, job_id: bytes) -> bytes:
        return rec.make_job_cancel(k, CHAIN, job_id, self.nonce(k))

    # -- common openings --

    def with_accounts(self) -> World:
        self.block(self.register(ALICE, "alice"), self.register(BOB, "bob"))
        return self

    def running_job(self, worker: SigningKey = NODE1, spec: dict[str, Any] | None = None) -> bytes:
        """Submit a job as ALICE and have ``worker`` claim it; returns the job id."""
        submit = self.submit(ALICE, spec)
        self.block(submit)
        job_id = record_id(submit)
        self.block(self.claim(worker, job_id))
        return job_id

    def reason(self, record: bytes) -> str | None:
        """Why ``record`` cannot go into the next block (one second after the last)."""
        reason = self.state.validate_block_records([record], self.time + 1000)
        return None if reason is None else reason.removeprefix("record 0: ")

    def save(self, store: LedgerStore) -> None:
        """Append every block of this world to ``store`` (from an empty one)."""
        replay = ChainBuilder(self.genesis, VALIDATORS[: len(self.genesis.validators)])
        for block, commit in self.blocks:
            replay.state.apply_block(block, commit)
            store.append(block, commit, replay.state)
