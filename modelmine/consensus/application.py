"""What consensus needs from the application, and a tiny key-value application for tests.

Consensus orders opaque records; the application says which records are valid, which to
include, and what state a block leads to. Calls are made only between blocks: between a
``Decide`` and the driver's ``apply_block`` the state does not change, so every answer about
"the current state" is about the state after the last applied block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

from nacl.signing import SigningKey

from modelmine import signing, wire
from modelmine.consensus.types import Block, Commit

KV_DOMAIN: Final = "kv-set"
MAX_KEY: Final = 64
MAX_VALUE: Final = 256


class Application(Protocol):
    def state_root(self) -> bytes:
        """SHA-256 commitment to the state after the last applied block."""
        ...

    def check_record(self, record: bytes) -> str | None:
        """None if ``record`` is valid against the current state, else the reason."""
        ...

    def select_records(
        self, pending: Sequence[bytes], max_records: int, *, block_time_ms: int | None = None
    ) -> list[bytes]:
        """At most ``max_records`` of ``pending``, in order, that all apply one after another
        in a block of time ``block_time_ms`` (None: the earliest time the next block can have)."""
        ...

    def validate_block_records(self, records: Sequence[bytes], block_time_ms: int) -> str | None:
        """None if ``records`` would all apply in order on the current state, else the reason."""
        ...

    def apply_block(self, block: Block, commit: Commit) -> bytes:
        """Apply a committed block; returns the new state root."""
        ...


def kv_record(key: SigningKey, chain_id: str, name: str, value: str, nonce: int) -> bytes:
    """A signed "set ``name`` to ``value``" statement; ``nonce`` counts the signer's records."""
    return signing.sign(key, KV_DOMAIN, chain_id, {"key": name, "value": value, "nonce": nonce}).raw


class KVApp:
    """A deterministic key-value store whose records are signed set statements.

    A record is valid if its signature verifies on this chain and its nonce is exactly one
    more than the signer's last, so a replayed or reordered record is refused.
    """

    def __init__(self, chain_id: str) -> None:
        self.chain_id = chain_id
        self.height = 0
        self.values: dict[str, str] = {}
        self.nonces: dict[bytes, int] = {}
        self._root = self._compute_root()

    def state_root(self) -> bytes:
        return self._root

    def check_record(self, record: bytes) -> str | None:
        return self._check(record, self.nonces)[0]

    def select_records(
        self, pending: Sequence[bytes], max_records: int, *, block_time_ms: int | None = None
    ) -> list[bytes]:
        nonces = dict(self.nonces)
        chosen: list[bytes] = []
        for record in pending:
            if len(chosen) >= max_records:
                break
            reason, parsed = self._check(record, nonces)
            if reason is None and parsed is not None:
                nonces[parsed[0]] = parsed[3]
                chosen.append(record)
        return chosen

    def validate_block_records(self, records: Sequence[bytes], block_time_ms: int) -> str | None:
        nonces = dict(self.nonces)
        for i, record in enumerate(records):
            reason, parsed = self._check(record, nonces)
            if reason is not None or parsed is None:
                return f"record {i}: {reason}"
            nonces[parsed[0]] = parsed[3]
        return None

    def apply_block(self, block: Block, commit: Commit) -> bytes:
        if block.height != self.height + 1:
            raise ValueError(f"block {block.height} applied on state at height {self.height}")
        reason = self.validate_block_records(block.records, block.header.time)
        if reason is not None:
            raise ValueError(f"block {block.height} holds an invalid record: {reason}")
        for record in block.records:
            _, parsed = self._check(record, self.nonces)
            if parsed is not None:
                signer, name, value, nonce = parsed
                self.values[name] = value
                self.nonces[signer] = nonce
        self.height = block.height
        self._root = self._compute_root()
        return self._root

    def _check(
        self, record: bytes, nonces: dict[bytes, int]
    ) -> tuple[str | None, tuple[bytes, str, str, int] | None]:
        try:
            statement = signing.parse_verified(
                record, self.chain_id, domains=frozenset({KV_DOMAIN})
            )
            p = statement.payload()
            name = wire.str_field(p, "key", MAX_KEY, "kv record")
            value = wire.str_field(p, "value", MAX_VALUE, "kv record")
            nonce = wire.int_field(p, "nonce", 1, 2**62, "kv record")
        except wire.WireError as exc:
            return str(exc), None
        expected = nonces.get(statement.signer, 0) + 1
        if nonce != expected:
            return f"nonce {nonce} of {statement.signer.hex()[:8]}, expected {expected}", None
        return None, (statement.signer, name, value, nonce)

    def _compute_root(self) -> bytes:
        state: dict[str, Any] = {
            "height": self.height,
            "values": self.values,
            "nonces": sorted([signer, n] for signer, n in self.nonces.items()),
        }
        return wire.sha256(wire.encode(state))
