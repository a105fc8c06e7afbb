"""Control API methods for the ledger: submit records, read accounts, blocks and records.

Bytes travel as hex in JSON. Records are built and signed by the client (the CLI or TUI
unlocks the account key locally); the node only checks, gossips and reports on them.
"""

from __future__ import annotations

from typing import Any, Final

from modelmine import wire
from modelmine.consensus.service import ChainService
from modelmine.consensus.types import Block, Commit
from modelmine.control import ControlServer, InvalidParams, RpcError
from modelmine.ledger import LedgerState, LedgerStore, RecordError, parse_record, record_id
from modelmine.signing import parse

INVALID_RECORD: Final = -32010
NOT_FOUND: Final = -32011
MAX_WAIT: Final = 300.0


def hex_param(params: dict[str, Any], name: str, size: int | None = None) -> bytes:
    value = params.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or (size is not None and len(raw) != size):
        want = f"{size * 2} hex digits" if size else "hex"
        raise InvalidParams(f"{name}: expected {want}")
    return raw


def int_param(
    params: dict[str, Any], name: str, lo: int, hi: int, default: int | None = None
) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidParams(f"{name}: must be an integer {lo}..{hi}")
    return value


def block_summary(block: Block) -> dict[str, Any]:
    h = block.header
    return {
        "height": h.height,
        "hash": block.hash.hex(),
        "prev_hash": h.prev_hash.hex(),
        "time": h.time / 1000,
        "round": h.round,
        "proposer": h.proposer.hex(),
        "records": len(block.records),
        "state_root": h.state_root.hex(),
        "records_root": h.records_root.hex(),
    }


def record_json(raw: bytes, chain_id: str) -> dict[str, Any]:
    statement = parse(raw)
    out: dict[str, Any] = {
        "id": record_id(raw).hex(),
        "kind": statement.domain,
        "signer": statement.signer.hex(),
        "signature": statement.signature.hex(),
    }
    try:
        out["payload"] = _jsonable(statement.payload())
    except wire.WireError as exc:
        out["error"] = str(exc)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


class LedgerApi:
    def __init__(
        self, chain: ChainService, state: LedgerState, store: LedgerStore, chain_id: str
    ) -> None:
        self.chain = chain
        self.state = state
        self.store = store
        self.chain_id = chain_id

    def register(self, control: ControlServer) -> None:
        control.register("ledger.submit", self._submit)
        control.register("ledger.wait", self._wait)
        control.register("ledger.account", self._account)
        control.register("ledger.accounts", self._accounts)
        control.register("ledger.blocks", self._blocks)
        control.register("ledger.block", self._block)
        control.register("ledger.stats", self._stats)
        control.register_topic("blocks")

    async def _submit(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = hex_param(params, "record")
        try:
            parse_record(raw, self.chain_id)
        except (RecordError, wire.WireError) as exc:
            raise RpcError(INVALID_RECORD, f"invalid record: {exc}") from None
        reason = self.chain.submit(raw)
        if reason is not None:
            raise RpcError(INVALID_RECORD, reason)
        return {"record_id": record_id(raw).hex()}

    async def _wait(self, params: dict[str, Any]) -> dict[str, Any]:
        rid = hex_param(params, "record_id", 32)
        within = params.get("timeout", 60)
        if not isinstance(within, int | float) or not 0 < within <= MAX_WAIT:
            raise InvalidParams(f"timeout: must be a number of seconds in (0, {MAX_WAIT:.0f}]")
        height = await self.chain.wait_included(rid, float(within))
        return {"record_id": rid.hex(), "height": height}

    def account_json(self, key: bytes) -> dict[str, Any]:
        account = self.state.account(key)
        return {
            "account": key.hex(),
            "balance": self.state.balance(key),
            "next_nonce": self.state.next_nonce(key),
            "registered": bool(account and account.registered),
            "name": account.name if account else None,
            "earned": account.earned if account else 0,
            "fees": account.fees if account else 0,
        }

    async def _account(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.account_json(hex_param(params, "account", 32))

    async def _accounts(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [self.account_json(a.id) for a in self.state.accounts()]

    async def _blocks(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        limit = int_param(params, "limit", 1, 1000, 20)
        head, _ = self.store.head()
        before = int_param(params, "before", 1, 2**62, head + 1)
        last = min(head, before - 1)
        first = max(1, last - limit + 1)
        if last < 1:
            return []
        blocks = [s.block() for s in self.store.blocks(first, last)]
        return [block_summary(b) for b in reversed(blocks)]

    async def _block(self, params: dict[str, Any]) -> dict[str, Any]:
        height = int_param(params, "height", 1, 2**62)
        block = self.store.block(height)
        commit = self.store.commit(height)
        if block is None or commit is None:
            raise RpcError(
                NOT_FOUND, f"no block at height {height} (head is {self.store.head()[0]})"
            )
        out = block_summary(block)
        out["records"] = [record_json(r, self.chain_id) for r in block.records]
        out["signature"] = block.signature.hex()
        out["commit"] = commit_json(commit)
        out["last_commit"] = commit_json(block.last_commit) if block.last_commit else None
        return out

    async def _stats(self, params: dict[str, Any]) -> dict[str, Any]:
        s = self.state.stats()
        return {
            "height": s.height,
            "accounts": s.accounts,
            "pending_jobs": s.pending_jobs,
            "running_jobs": s.running_jobs,
            "completed_jobs": s.completed_jobs,
            "failed_jobs": s.failed_jobs,
            "canceled_jobs": s.canceled_jobs,
            "credits_staked": s.credits_staked,
            "average_accuracy": s.average_accuracy,
            "total_supply": s.total_supply,
        }


def commit_json(commit: Commit) -> dict[str, Any]:
    return {
        "height": commit.height,
        "round": commit.round,
        "block_hash": commit.block_hash.hex(),
        "signatures": [{"validator": v.hex(), "signature": s.hex()} for v, s in commit.signatures],
    }
