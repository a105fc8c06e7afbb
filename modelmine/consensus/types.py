"""Blocks, votes, proposals and commits: their wire form and their verification.

Everything here is a frozen value. ``to_wire``/``from_wire`` use the canonical codec, and
``from_wire`` checks structure strictly, raising :class:`~modelmine.wire.WireError`. Meaning is
checked separately by :func:`verify_commit` and :func:`verify_block`, which raise
:class:`ConsensusError` with a reason a person can act on.

A block is identified by the SHA-256 of its canonical header bytes. The header commits to the
records (``records_root``), the application state after the previous block (``state_root``),
the previous block (``prev_hash``) and the previous block's commit (``last_commit_hash``), so
the block hash pins down every byte of the block. Votes and proposals are signed statements
(domains ``vote`` and ``proposal``); the proposer also signs the block hash (domain ``block``).
A commit is a list of (validator, signature) pairs: each signature is that validator's
precommit vote for the block, so anyone can re-check it from the block alone.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from nacl.signing import SigningKey

from modelmine import signing, wire
from modelmine.consensus.merkle import merkle_root
from modelmine.consensus.validators import ValidatorSet

__all__ = [
    "BLOCK_DOMAIN",
    "MAX_FUTURE_MS",
    "NO_HASH",
    "PROPOSAL_DOMAIN",
    "VOTE_DOMAIN",
    "Block",
    "Commit",
    "ConsensusError",
    "Header",
    "Proposal",
    "ValidatorSet",
    "Vote",
    "VoteType",
    "block_hash",
    "commit_hash",
    "merkle_root",
    "verify_block",
    "verify_commit",
]

VOTE_DOMAIN: Final = "vote"
PROPOSAL_DOMAIN: Final = "proposal"
BLOCK_DOMAIN: Final = "block"
HASH_SIZE: Final = 32
KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
NO_HASH: Final = bytes(HASH_SIZE)  # prev_hash of block 1, last_commit_hash of a block without one
MAX_HEIGHT: Final = 2**62
MAX_ROUND: Final = 2**31
MAX_TIME_MS: Final = 2**62
MAX_CHAIN_ID: Final = 64
MAX_BLOCK_RECORDS: Final = 10_000  # structural bound; the genesis limit is checked in verify_block
MAX_COMMIT_SIGNATURES: Final = 1024
MAX_FUTURE_MS: Final = 10_000  # how far ahead of local time a block's time may be


class ConsensusError(ValueError):
    """A block, vote, proposal or commit that is well formed but not acceptable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class VoteType(enum.StrEnum):
    PREVOTE = "prevote"
    PRECOMMIT = "precommit"


def _short(value: bytes | None) -> str:
    return "nil" if value is None else value.hex()[:8]


@functools.lru_cache(maxsize=1 << 15)
def _signature_ok(domain: str, chain_id: str, signer: bytes, body: bytes, sig: bytes) -> bool:
    # A pure function of its arguments, so a bounded cache is safe: a vote that arrives
    # again, or reappears inside a commit, is not re-verified.
    try:
        signing.check(domain, signer, body, sig, chain_id)
    except signing.SignatureError:
        return False
    return True


def _statement_raw(domain: str, signer: bytes, body: bytes, sig: bytes) -> bytes:
    return signing.statement_bytes(domain, signer, body, sig)


def _parse_statement(data: bytes, domain: str) -> tuple[signing.Signed, dict[str, Any]]:
    statement = signing.parse(data)
    if statement.domain != domain:
        raise wire.WireError(f"expected a {domain} statement, got {statement.domain!r}")
    return statement, statement.payload()


def _check_canonical(parsed: bytes, statement: signing.Signed) -> None:
    # The signature is checked over the re-encoded payload, so only canonical bodies can pass.
    if parsed != statement.body:
        raise wire.WireError(f"{statement.domain}: payload is not in canonical form")


def _no_extra(msg: dict[str, Any], names: Sequence[str], what: str) -> None:
    extra = sorted(set(msg) - set(names))
    if extra:
        raise wire.WireError(f"{what}: unknown field {extra[0]!r}")


def _optional_hash(msg: dict[str, Any], name: str, what: str) -> bytes | None:
    if name in msg and msg[name] is None:
        return None
    return wire.bytes_field(msg, name, HASH_SIZE, what)


# ---- header and block ----

_HEADER_FIELDS: Final = (
    "chain_id",
    "height",
    "round",
    "time",
    "prev_hash",
    "records_root",
    "state_root",
    "proposer",
    "last_commit_hash",
)


@dataclass(frozen=True)
class Header:
    chain_id: str
    height: int
    round: int
    time: int  # milliseconds since the Unix epoch, strictly increasing along the chain
    prev_hash: bytes
    records_root: bytes
    state_root: bytes
    proposer: bytes
    last_commit_hash: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "height": self.height,
            "round": self.round,
            "time": self.time,
            "prev_hash": self.prev_hash,
            "records_root": self.records_root,
            "state_root": self.state_root,
            "proposer": self.proposer,
            "last_commit_hash": self.last_commit_hash,
        }

    @classmethod
    def from_dict(cls, value: Any) -> Header:
        what = "header"
        msg = wire.expect_map(value, what)
        _no_extra(msg, _HEADER_FIELDS, what)
        return cls(
            chain_id=wire.str_field(msg, "chain_id", MAX_CHAIN_ID, what),
            height=wire.int_field(msg, "height", 1, MAX_HEIGHT, what),
            round=wire.int_field(msg, "round", 0, MAX_ROUND, what),
            time=wire.int_field(msg, "time", 0, MAX_TIME_MS, what),
            prev_hash=wire.bytes_field(msg, "prev_hash", HASH_SIZE, what),
            records_root=wire.bytes_field(msg, "records_root", HASH_SIZE, what),
            state_root=wire.bytes_field(msg, "state_root", HASH_SIZE, what),
            proposer=wire.bytes_field(msg, "proposer", KEY_SIZE, what),
            last_commit_hash=wire.bytes_field(msg, "last_commit_hash", HASH_SIZE, what),
        )

    def to_wire(self) -> bytes:
        return wire.encode(self.to_dict())

    @classmethod
    def from_wire(cls, data: bytes) -> Header:
        return cls.from_dict(wire.decode(data))

    @functools.cached_property
    def hash(self) -> bytes:
        return wire.sha256(self.to_wire())


def block_hash(header: Header) -> bytes:
    """SHA-256 of the canonical header bytes: the identity of a block."""
    return header.hash


@dataclass(frozen=True)
class Block:
    header: Header
    records: tuple[bytes, ...]
    signature: bytes  # the proposer's signature of the block hash (domain "block")
    last_commit: Commit | None  # the commit of the previous block; None only at height 1

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    @classmethod
    def create(
        cls,
        key: SigningKey,
        *,
        chain_id: str,
        height: int,
        round: int,
        time: int,
        prev_hash: bytes,
        state_root: bytes,
        records: Sequence[bytes],
        last_commit: Commit | None,
    ) -> Block:
        """A block signed by ``key`` as proposer, with roots computed from its contents."""
        header = Header(
            chain_id=chain_id,
            height=height,
            round=round,
            time=time,
            prev_hash=prev_hash,
            records_root=merkle_root(records),
            state_root=state_root,
            proposer=bytes(key.verify_key),
            last_commit_hash=commit_hash(last_commit),
        )
        signature = signing.sign(key, BLOCK_DOMAIN, chain_id, {"block_hash": header.hash}).signature
        return cls(header, tuple(records), signature, last_commit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "header": self.header.to_dict(),
            "records": list(self.records),
            "signature": self.signature,
            "last_commit": None if self.last_commit is None else self.last_commit.to_dict(),
        }

    @classmethod
    def from_dict(cls, value: Any) -> Block:
        what = "block"
        msg = wire.expect_map(value, what)
        header = Header.from_dict(wire.field(msg, "header", dict, what))
        records = wire.field(msg, "records", list, what)
        if len(records) > MAX_BLOCK_RECORDS:
            raise wire.WireError(f"block.records: more than {MAX_BLOCK_RECORDS} records")
        for i, record in enumerate(records):
            if not isinstance(record, bytes):
                raise wire.WireError(f"block.records[{i}]: expected bytes")
        _no_extra(msg, ("header", "records", "signature", "last_commit"), what)
        raw_commit = wire.field(msg, "last_commit", (dict, type(None)), what)
        last_commit = None if raw_commit is None else Commit.from_dict(raw_commit)
        return cls(
            header=header,
            records=tuple(records),
            signature=wire.bytes_field(msg, "signature", SIGNATURE_SIZE, what),
            last_commit=last_commit,
        )

    def to_wire(self) -> bytes:
        return wire.encode(self.to_dict())

    @classmethod
    def from_wire(cls, data: bytes) -> Block:
        return cls.from_dict(wire.decode(data))


# ---- votes, proposals, commits ----


@dataclass(frozen=True)
class Vote:
    type: VoteType
    height: int
    round: int
    block_hash: bytes | None  # None is a vote for nil
    validator: bytes
    signature: bytes

    def payload(self) -> dict[str, Any]:
        return _vote_payload(self.type, self.height, self.round, self.block_hash)

    @functools.cached_property
    def body(self) -> bytes:
        """The signed bytes: the canonical payload."""
        return wire.encode(self.payload())

    @classmethod
    def create(
        cls,
        key: SigningKey,
        chain_id: str,
        type: VoteType,
        height: int,
        round: int,
        block_hash: bytes | None,
    ) -> Vote:
        payload = _vote_payload(type, height, round, block_hash)
        statement = signing.sign(key, VOTE_DOMAIN, chain_id, payload)
        return cls(type, height, round, block_hash, statement.signer, statement.signature)

    def to_wire(self) -> bytes:
        """The signed statement bytes, which relays forward unchanged."""
        return self._raw

    @functools.cached_property
    def _raw(self) -> bytes:
        return _statement_raw(VOTE_DOMAIN, self.validator, self.body, self.signature)

    @classmethod
    def from_wire(cls, data: bytes) -> Vote:
        what = "vote"
        statement, p = _parse_statement(data, VOTE_DOMAIN)
        _no_extra(p, ("type", "height", "round", "block_hash"), what)
        kind = wire.str_field(p, "type", 16, what)
        if kind not in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            raise wire.WireError(f"{what}.type: must be prevote or precommit, got {kind!r}")
        vote = cls(
            type=VoteType(kind),
            height=wire.int_field(p, "height", 1, MAX_HEIGHT, what),
            round=wire.int_field(p, "round", 0, MAX_ROUND, what),
            block_hash=_optional_hash(p, "block_hash", what),
            validator=statement.signer,
            signature=statement.signature,
        )
        _check_canonical(vote.body, statement)
        return vote

    def verify(self, validators: ValidatorSet, chain_id: str) -> None:
        """Raise ConsensusError unless a validator of the set signed this vote on this chain."""
        if self.validator not in validators:
            raise ConsensusError(f"vote from {_short(self.validator)}, who is not a validator")
        if not _signature_ok(VOTE_DOMAIN, chain_id, self.validator, self.body, self.signature):
            raise ConsensusError(
                f"bad signature on {self.type} from {_short(self.validator)} "
                f"at height {self.height} round {self.round}"
            )


def _vote_payload(
    type: VoteType, height: int, round: int, block_hash: bytes | None
) -> dict[str, Any]:
    return {"type": str(type), "height": height, "round": round, "block_hash": block_hash}


@dataclass(frozen=True)
class Proposal:
    height: int
    round: int
    pol_round: int  # -1, or the earlier round in which the block got a quorum of prevotes
    block: Block
    signature: bytes
    proposer: bytes  # the signer: the proposer of (height, round), not necessarily the block's

    def payload(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "round": self.round,
            "pol_round": self.pol_round,
            "block_hash": self.block.hash,
        }

    @functools.cached_property
    def body(self) -> bytes:
        return wire.encode(self.payload())

    @classmethod
    def create(
        cls, key: SigningKey, chain_id: str, round: int, pol_round: int, block: Block
    ) -> Proposal:
        proposal = cls(block.height, round, pol_round, block, bytes(64), bytes(key.verify_key))
        statement = signing.sign(key, PROPOSAL_DOMAIN, chain_id, proposal.payload())
        return cls(block.height, round, pol_round, block, statement.signature, statement.signer)

    def to_wire(self) -> bytes:
        return self._wire

    @functools.cached_property
    def _wire(self) -> bytes:
        raw = _statement_raw(PROPOSAL_DOMAIN, self.proposer, self.body, self.signature)
        return wire.encode({"statement": raw, "block": self.block.to_dict()})

    @classmethod
    def from_wire(cls, data: bytes) -> Proposal:
        what = "proposal"
        msg = wire.expect_map(wire.decode(data), what)
        statement, p = _parse_statement(wire.field(msg, "statement", bytes, what), PROPOSAL_DOMAIN)
        _no_extra(msg, ("statement", "block"), what)
        _no_extra(p, ("height", "round", "pol_round", "block_hash"), what)
        block = Block.from_dict(wire.field(msg, "block", dict, what))
        height = wire.int_field(p, "height", 1, MAX_HEIGHT, what)
        round = wire.int_field(p, "round", 0, MAX_ROUND, what)
        pol_round = wire.int_field(p, "pol_round", -1, MAX_ROUND, what)
        if wire.bytes_field(p, "block_hash", HASH_SIZE, what) != block.hash:
            raise wire.WireError("proposal: signed block hash does not match the block")
        if block.height != height:
            raise wire.WireError("proposal: block height differs from the proposal's")
        if pol_round >= round or block.header.round > round:
            raise wire.WireError("proposal: pol_round and block round must precede the round")
        proposal = cls(height, round, pol_round, block, statement.signature, statement.signer)
        _check_canonical(proposal.body, statement)
        return proposal

    def verify(self, validators: ValidatorSet, chain_id: str) -> None:
        """Raise ConsensusError unless the proposer of (height, round) signed this proposal."""
        if self.block.height != self.height:
            raise ConsensusError(
                f"proposal for height {self.height} carries block {self.block.height}"
            )
        if not -1 <= self.pol_round < self.round or self.block.header.round > self.round:
            raise ConsensusError(
                f"proposal of round {self.round} with pol_round {self.pol_round} and a block "
                f"of round {self.block.header.round}"
            )
        expected = validators.proposer(self.height, self.round)
        if self.proposer != expected:
            raise ConsensusError(
                f"proposal for height {self.height} round {self.round} signed by "
                f"{_short(self.proposer)}, but the proposer is {_short(expected)}"
            )
        if not _signature_ok(PROPOSAL_DOMAIN, chain_id, self.proposer, self.body, self.signature):
            raise ConsensusError(f"bad signature on the proposal from {_short(self.proposer)}")


@dataclass(frozen=True)
class Commit:
    height: int
    round: int
    block_hash: bytes
    signatures: tuple[tuple[bytes, bytes], ...]  # (validator, precommit signature), by id

    def votes(self) -> Iterator[Vote]:
        """The precommit votes that the signatures stand for."""
        for validator, signature in self.signatures:
            yield Vote(
                VoteType.PRECOMMIT,
                self.height,
                self.round,
                self.block_hash,
                validator,
                signature,
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "round": self.round,
            "block_hash": self.block_hash,
            "signatures": [[v, s] for v, s in self.signatures],
        }

    @classmethod
    def from_dict(cls, value: Any) -> Commit:
        what = "commit"
        msg = wire.expect_map(value, what)
        raw = wire.field(msg, "signatures", list, what)
        if not 0 < len(raw) <= MAX_COMMIT_SIGNATURES:
            raise wire.WireError(f"commit.signatures: must hold 1..{MAX_COMMIT_SIGNATURES}")
        signatures: list[tuple[bytes, bytes]] = []
        for i, pair in enumerate(raw):
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not isinstance(pair[0], bytes)
                or len(pair[0]) != KEY_SIZE
                or not isinstance(pair[1], bytes)
                or len(pair[1]) != SIGNATURE_SIZE
            ):
                raise wire.WireError(f"commit.signatures[{i}]: expected [32-byte id, 64-byte sig]")
            if signatures and pair[0] <= signatures[-1][0]:
                raise wire.WireError("commit.signatures: validators must be sorted and distinct")
            signatures.append((pair[0], pair[1]))
        return cls(
            height=wire.int_field(msg, "height", 1, MAX_HEIGHT, what),
            round=wire.int_field(msg, "round", 0, MAX_ROUND, what),
            block_hash=wire.bytes_field(msg, "block_hash", HASH_SIZE, what),
            signatures=tuple(signatures),
        )

    def to_wire(self) -> bytes:
        return wire.encode(self.to_dict())

    @classmethod
    def from_wire(cls, data: bytes) -> Commit:
        return cls.from_dict(wire.decode(data))


def commit_hash(commit: Commit | None) -> bytes:
    """SHA-256 of the canonical commit bytes; NO_HASH for no commit."""
    return NO_HASH if commit is None else wire.sha256(commit.to_wire())


# ---- verification ----


def verify_commit(
    commit: Commit, validators: ValidatorSet, chain_id: str, block_hash: bytes
) -> None:
    """Raise ConsensusError unless more than 2/3 of the power precommitted ``block_hash``."""
    if commit.block_hash != block_hash:
        raise ConsensusError(
            f"commit is for block {_short(commit.block_hash)}, not {_short(block_hash)}"
        )
    # Each signature is checked as ``vote.verify`` checks the precommit in ``commit.votes()``;
    # they all sign the same payload, so it is encoded once.
    body = wire.encode(
        _vote_payload(VoteType.PRECOMMIT, commit.height, commit.round, commit.block_hash)
    )
    power = 0
    previous = b""
    for validator, signature in commit.signatures:
        if validator <= previous:
            raise ConsensusError("commit signatures are not sorted by distinct validator")
        previous = validator
        if validator not in validators:
            raise ConsensusError(f"vote from {_short(validator)}, who is not a validator")
        if not _signature_ok(VOTE_DOMAIN, chain_id, validator, body, signature):
            raise ConsensusError(
                f"bad signature on {VoteType.PRECOMMIT} from {_short(validator)} "
                f"at height {commit.height} round {commit.round}"
            )
        power += validators.power_of(validator)
    if not validators.has_quorum(power):
        raise ConsensusError(
            f"commit for height {commit.height} carries power {power} of "
            f"{validators.total_power}; more than 2/3 ({validators.quorum}) is needed"
        )


def verify_block(
    block: Block,
    prev: Header | None,
    validators: ValidatorSet,
    chain_id: str,
    now_ms: int | None = None,
    *,
    state_root: bytes | None = None,
    max_records: int | None = None,
    max_future_ms: int = MAX_FUTURE_MS,
) -> None:
    """Raise ConsensusError unless ``block`` validly follows ``prev`` (None: genesis).

    Checks the chain id, height, hash link, time (after ``prev`` and, given ``now_ms``, at
    most ``max_future_ms`` ahead), records root, proposer and its signature, and the last
    commit. ``state_root`` (the application's root after ``prev``) and ``max_records`` are
    checked when given. The records themselves are the application's to judge.
    """
    h = block.header
    if h.chain_id != chain_id:
        raise ConsensusError(f"block is for chain {h.chain_id!r}, not {chain_id!r}")
    expected_height = 1 if prev is None else prev.height + 1
    if h.height != expected_height:
        raise ConsensusError(f"block height {h.height} does not follow {expected_height - 1}")
    expected_prev = NO_HASH if prev is None else prev.hash
    if h.prev_hash != expected_prev:
        raise ConsensusError(
            f"block {h.height} prev_hash {_short(h.prev_hash)} is not the hash "
            f"{_short(expected_prev)} of block {h.height - 1}"
        )
    if prev is not None and h.time <= prev.time:
        raise ConsensusError(
            f"block {h.height} time {h.time} ms is not after the previous block's {prev.time} ms"
        )
    if now_ms is not None and h.time > now_ms + max_future_ms:
        raise ConsensusError(
            f"block {h.height} time {h.time} ms is more than {max_future_ms} ms "
            f"ahead of local time {now_ms} ms"
        )
    if max_records is not None and len(block.records) > max_records:
        raise ConsensusError(
            f"block {h.height} has {len(block.records)} records; at most {max_records} allowed"
        )
    if merkle_root(block.records) != h.records_root:
        raise ConsensusError(f"block {h.height} records_root does not match its records")
    if commit_hash(block.last_commit) != h.last_commit_hash:
        raise ConsensusError(f"block {h.height} last_commit_hash does not match its last commit")
    expected_proposer = validators.proposer(h.height, h.round)
    if h.proposer != expected_proposer:
        raise ConsensusError(
            f"block {h.height} round {h.round} proposed by {_short(h.proposer)}, "
            f"but the proposer is {_short(expected_proposer)}"
        )
    body = wire.encode({"block_hash": h.hash})
    if not _signature_ok(BLOCK_DOMAIN, chain_id, h.proposer, body, block.signature):
        raise ConsensusError(
            f"block {h.height}: the proposer's signature does not cover this header"
        )
    if prev is None:
        if block.last_commit is not None:
            raise ConsensusError("block 1 carries a last commit, but there is no block 0 to commit")
    else:
        if block.last_commit is None:
            raise ConsensusError(f"block {h.height} lacks the commit of block {prev.height}")
        if block.last_commit.height != prev.height:
            raise ConsensusError(
                f"block {h.height} last commit is for height {block.last_commit.height}, "
                f"not {prev.height}"
            )
        try:
            verify_commit(block.last_commit, validators, chain_id, prev.hash)
        except ConsensusError as exc:
            raise ConsensusError(f"block {h.height} last commit: {exc.reason}") from None
    if state_root is not None and h.state_root != state_root:
        raise ConsensusError(
            f"block {h.height} state_root {_short(h.state_root)} differs from the state "
            f"{_short(state_root)} after block {h.height - 1}"
        )
