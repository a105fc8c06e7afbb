"""Ledger records: the signed statements that change credits and jobs.

A record is a signed statement (:mod:`modelmine.signing`) whose domain is its kind. Every
payload carries the signer's ``nonce``, which must be exactly one more than the signer's last
on the ledger, so a record can be applied once and only in order. :func:`parse_record` checks
structure, canonical encoding and the signature, and returns a typed frozen record; what a
record *means* against the state is judged by :class:`~modelmine.ledger.state.LedgerState`.

Builders (``make_*``) sign records for clients and return the exact bytes to submit. The id
of a record is SHA-256 of those bytes; the id of a job is the id of its ``job.submit`` record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from nacl.signing import SigningKey

from modelmine import signing, wire
from modelmine.trainer import JobSpec, SpecError

REGISTER: Final = "account.register"
TRANSFER: Final = "transfer"
JOB_SUBMIT: Final = "job.submit"
JOB_CLAIM: Final = "job.claim"
JOB_CHECKPOINT: Final = "job.checkpoint"
JOB_COMPLETE: Final = "job.complete"
JOB_FAIL: Final = "job.fail"
JOB_CANCEL: Final = "job.cancel"
KINDS: Final = frozenset(
    {REGISTER, TRANSFER, JOB_SUBMIT, JOB_CLAIM, JOB_CHECKPOINT, JOB_COMPLETE, JOB_FAIL, JOB_CANCEL}
)

MAX_RECORD_SIZE: Final = 64 * 1024
MAX_NONCE: Final = 2**62
MAX_NAME: Final = 32
MAX_AMOUNT: Final = 10**12
MAX_MEMO: Final = 128
MAX_STAKE: Final = 10**9
MAX_TIME_MS: Final = 2**62
MAX_COUNT: Final = 2**53  # steps and samples
MAX_METRICS: Final = 16
MAX_METRIC_NAME: Final = 64
MAX_REASON: Final = 256
HASH_SIZE: Final = 32
KEY_SIZE: Final = 32


_TRANSFER_FIELDS: Final = frozenset({"to", "amount", "nonce"})


class RecordError(ValueError):
    """Bytes that are not a valid record: malformed, non-canonical, or badly signed."""


def record_id(raw: bytes) -> bytes:
    """SHA-256 of the record bytes: a record's id, and for ``job.submit`` the job id."""
    return wire.sha256(raw)


def short(value: bytes) -> str:
    """The 8-hex-digit short form of an id, as shown to people."""
    return value.hex()[:8]


# ---- typed records ----


@dataclass(frozen=True)
class Register:
    kind: ClassVar[str] = REGISTER
    signer: bytes  # the account being registered
    nonce: int
    id: bytes
    name: str


@dataclass(frozen=True)
class Transfer:
    kind: ClassVar[str] = TRANSFER
    signer: bytes
    nonce: int
    id: bytes
    to: bytes
    amount: int
    memo: str


@dataclass(frozen=True)
class JobSubmit:
    kind: ClassVar[str] = JOB_SUBMIT
    signer: bytes
    nonce: int
    id: bytes  # also the job id
    spec: dict[str, Any]  # as submitted; valid for JobSpec.from_dict
    job: JobSpec  # the parsed spec
    stake: int
    time_ms: int  # the submitter's clock


@dataclass(frozen=True)
class JobClaim:
    kind: ClassVar[str] = JOB_CLAIM
    signer: bytes  # the node taking the job
    nonce: int
    id: bytes
    job_id: bytes


@dataclass(frozen=True)
class JobCheckpoint:
    kind: ClassVar[str] = JOB_CHECKPOINT
    signer: bytes
    nonce: int
    id: bytes
    job_id: bytes
    step: int
    samples: int  # total samples processed in the job so far, by all workers
    checkpoint_sha256: bytes


@dataclass(frozen=True)
class JobComplete:
    kind: ClassVar[str] = JOB_COMPLETE
    signer: bytes
    nonce: int
    id: bytes
    job_id: bytes
    metrics: dict[str, float]
    model_sha256: bytes
    samples: int  # final total
    steps: int


@dataclass(frozen=True)
class JobFail:
    kind: ClassVar[str] = JOB_FAIL
    signer: bytes
    nonce: int
    id: bytes
    job_id: bytes
    reason: str


@dataclass(frozen=True)
class JobCancel:
    kind: ClassVar[str] = JOB_CANCEL
    signer: bytes
    nonce: int
    id: bytes
    job_id: bytes


Record = (
    Register | Transfer | JobSubmit | JobClaim | JobCheckpoint | JobComplete | JobFail | JobCancel
)


# ---- parsing ----


def parse_record(raw: bytes, chain_id: str) -> Record:
    """Decode and verify ``raw`` for ``chain_id``; raises RecordError saying what is wrong."""
    return parse_record_with_id(raw, chain_id, None)


def parse_record_with_id(raw: bytes, chain_id: str, rid: bytes | None) -> Record:
    """:func:`parse_record`, given :func:`record_id` of ``raw`` if the caller has it already."""
    try:
        return _parse(raw, chain_id, rid)
    except RecordError:
        raise
    except wire.WireError as exc:  # includes signing.SignatureError
        raise RecordError(str(exc)) from None


def _parse(raw: bytes, chain_id: str, rid: bytes | None) -> Record:
    if not isinstance(raw, bytes):
        raise RecordError(f"record: expected bytes, got {type(raw).__name__}")
    kind, signer, body, signature = signing.split(raw, max_size=MAX_RECORD_SIZE)
    if kind not in KINDS:
        raise RecordError(f"unknown record kind {kind!r}")
    # One byte string per record: otherwise a relay could re-encode a signed record into
    # another one with a different id but the same meaning.
    if signing.statement_bytes(kind, signer, body, signature) != raw:
        raise RecordError(f"{kind}: record is not in canonical form")
    # The body needs no such check: it is signed, so only its signer could write it another
    # way, and both ways would carry the same nonce, of which only one can ever apply.
    signing.check(kind, signer, body, signature, chain_id)
    payload = wire.decode(body)
    if type(payload) is not dict:
        wire.expect_map(payload, f"{kind} payload")
    if rid is None:
        rid = record_id(raw)
    if kind == TRANSFER:
        # The most common record. Without a memo and with every field right (the checks of
        # the general path below, written out), it is built at once; anything else takes the
        # general path, which names what is wrong.
        to, amount, nonce = payload.get("to"), payload.get("amount"), payload.get("nonce")
        if (
            payload.keys() == _TRANSFER_FIELDS
            and type(nonce) is int
            and 1 <= nonce <= MAX_NONCE
            and type(to) is bytes
            and len(to) == KEY_SIZE
            and type(amount) is int
            and 1 <= amount <= MAX_AMOUNT
        ):
            return Transfer(signer, nonce, rid, to, amount, "")
    p = _Payload(payload, kind)
    if kind == REGISTER:
        p.exact({"account", "name", "nonce"})
        if p.key("account") != signer:
            raise RecordError(f"{kind}.account: must be the signer's key")
        return Register(signer, p.nonce(), rid, p.name())
    if kind == TRANSFER:
        p.exact(_TRANSFER_FIELDS, optional={"memo"})
        memo = p.text("memo", 0, MAX_MEMO) if "memo" in payload else ""
        return Transfer(
            signer, p.nonce(), rid, p.key("to"), p.integer("amount", 1, MAX_AMOUNT), memo
        )
    if kind == JOB_SUBMIT:
        p.exact({"spec", "stake", "nonce", "time_ms"})
        spec_dict = wire.field(payload, "spec", dict, kind)
        try:
            spec = JobSpec.from_dict(spec_dict)
        except SpecError as exc:
            raise RecordError(f"{kind}.spec: {'; '.join(exc.errors)}") from None
        except (TypeError, ValueError, RecursionError) as exc:
            # Never expected, but a record must be refused, not crash every node alike.
            raise RecordError(f"{kind}.spec: cannot be read: {exc}") from None
        stake = p.integer("stake", 1, MAX_STAKE)
        if stake != spec.stake:
            raise RecordError(f"{kind}.stake: {stake} differs from the spec's stake {spec.stake}")
        return JobSubmit(
            signer, p.nonce(), rid, spec_dict, spec, stake, p.integer("time_ms", 0, MAX_TIME_MS)
        )
    if kind == JOB_CLAIM:
        p.exact({"job_id", "nonce"})
        return JobClaim(signer, p.nonce(), rid, p.hash("job_id"))
    if kind == JOB_CHECKPOINT:
        p.exact({"job_id", "step", "samples", "checkpoint_sha256", "nonce"})
        return JobCheckpoint(
            signer,
            p.nonce(),
            rid,
            p.hash("job_id"),
            p.integer("step", 0, MAX_COUNT),
            p.integer("samples", 0, MAX_COUNT),
            p.hash("checkpoint_sha256"),
        )
    if kind == JOB_COMPLETE:
        p.exact({"job_id", "metrics", "model_sha256", "samples", "steps", "nonce"})
        return JobComplete(
            signer,
            p.nonce(),
            rid,
            p.hash("job_id"),
            p.metrics(),
            p.hash("model_sha256"),
            p.integer("samples", 1, MAX_COUNT),
            p.integer("steps", 0, MAX_COUNT),
        )
    if kind == JOB_FAIL:
        p.exact({"job_id", "reason", "nonce"})
        return JobFail(signer, p.nonce(), rid, p.hash("job_id"), p.text("reason", 1, MAX_REASON))
    p.exact({"job_id", "nonce"})  # JOB_CANCEL, the last of KINDS
    return JobCancel(signer, p.nonce(), rid, p.hash("job_id"))


class _Payload:
    """Checked access to one record payload; errors name the kind and the field."""

    def __init__(self, payload: dict[str, Any], kind: str) -> None:
        self.p = payload
        self.kind = kind

    def exact(self, required: AbstractSet[str], optional: AbstractSet[str] = frozenset()) -> None:
        if self.p.keys() == required:
            return
        missing = sorted(required - self.p.keys())
        if missing:
            raise RecordError(f"{self.kind}: missing field '{missing[0]}'")
        unknown = sorted(self.p.keys() - required - optional)
        if unknown:
            raise RecordError(f"{self.kind}: unknown field '{unknown[0]}'")

    def nonce(self) -> int:
        return self.integer("nonce", 1, MAX_NONCE)

    def integer(self, name: str, lo: int, hi: int) -> int:
        return wire.int_field(self.p, name, lo, hi, self.kind)

    def key(self, name: str) -> bytes:
        return wire.bytes_field(self.p, name, KEY_SIZE, self.kind)

    def hash(self, name: str) -> bytes:
        return wire.bytes_field(self.p, name, HASH_SIZE, self.kind)

    def text(self, name: str, min_len: int, max_len: int) -> str:
        value = wire.str_field(self.p, name, max_len, self.kind)
        if len(value) < min_len:
            raise RecordError(f"{self.kind}.{name}: must be at least {min_len} characters")
        return value

    def name(self) -> str:
        value = self.text("name", 1, MAX_NAME)
        if not value.isprintable() or value != value.strip():
            raise RecordError(
                f"{self.kind}.name: must be printable, without leading or trailing spaces"
            )
        return value

    def metrics(self) -> dict[str, float]:
        raw = wire.field(self.p, "metrics", dict, self.kind)
        if len(raw) > MAX_METRICS:
            raise RecordError(f"{self.kind}.metrics: more than {MAX_METRICS} entries")
        out: dict[str, float] = {}
        for name, value in raw.items():
            if not 0 < len(name) <= MAX_METRIC_NAME:
                raise RecordError(f"{self.kind}.metrics: names must be 1..{MAX_METRIC_NAME} long")
            if not isinstance(value, float) or not math.isfinite(value):
                raise RecordError(f"{self.kind}.metrics.{name}: must be a finite float")
            out[name] = value
        return out


# ---- builders for clients ----


def _sign(key: SigningKey, kind: str, chain_id: str, payload: dict[str, Any]) -> bytes:
    raw = signing.sign(key, kind, chain_id, payload).raw
    if len(raw) > MAX_RECORD_SIZE:
        raise RecordError(f"{kind}: record of {len(raw)} bytes exceeds {MAX_RECORD_SIZE}")
    return raw


def make_register(key: SigningKey, chain_id: str, name: str, nonce: int) -> bytes:
    payload = {"account": bytes(key.verify_key), "name": name, "nonce": nonce}
    return _sign(key, REGISTER, chain_id, payload)


def make_transfer(
    key: SigningKey, chain_id: str, to: bytes, amount: int, nonce: int, memo: str = ""
) -> bytes:
    payload: dict[str, Any] = {"to": to, "amount": amount, "nonce": nonce}
    if memo:
        payload["memo"] = memo
    return _sign(key, TRANSFER, chain_id, payload)


def make_job_submit(
    key: SigningKey, chain_id: str, spec: Mapping[str, Any] | JobSpec, nonce: int, time_ms: int
) -> bytes:
    """Sign a job in its canonical form (every default explicit); raises SpecError if invalid.

    The stake is the spec's. The job id is :func:`record_id` of the returned bytes.
    """
    job = spec if isinstance(spec, JobSpec) else JobSpec.from_dict(dict(spec))
    payload = {"spec": job.to_dict(), "stake": job.stake, "nonce": nonce, "time_ms": time_ms}
    return _sign(key, JOB_SUBMIT, chain_id, payload)


def make_job_claim(key: SigningKey, chain_id: str, job_id: bytes, nonce: int) -> bytes:
    return _sign(key, JOB_CLAIM, chain_id, {"job_id": job_id, "nonce": nonce})


def make_job_checkpoint(
    key: SigningKey,
    chain_id: str,
    job_id: bytes,
    step: int,
    samples: int,
    checkpoint_sha256: bytes,
    nonce: int,
) -> bytes:
    payload = {
        "job_id": job_id,
        "step": step,
        "samples": samples,
        "checkpoint_sha256": checkpoint_sha256,
        "nonce": nonce,
    }
    return _sign(key, JOB_CHECKPOINT, chain_id, payload)


def make_job_complete(
    key: SigningKey,
    chain_id: str,
    job_id: bytes,
    metrics: Mapping[str, float],
    model_sha256: bytes,
    samples: int,
    steps: int,
    nonce: int,
) -> bytes:
    """Metric values are sent as floats (an int such as ``steps`` becomes a float)."""
    payload = {
        "job_id": job_id,
        "metrics": {name: float(value) for name, value in metrics.items()},
        "model_sha256": model_sha256,
        "samples": samples,
        "steps": steps,
        "nonce": nonce,
    }
    return _sign(key, JOB_COMPLETE, chain_id, payload)


def make_job_fail(key: SigningKey, chain_id: str, job_id: bytes, reason: str, nonce: int) -> bytes:
    return _sign(key, JOB_FAIL, chain_id, {"job_id": job_id, "reason": reason, "nonce": nonce})


def make_job_cancel(key: SigningKey, chain_id: str, job_id: bytes, nonce: int) -> bytes:
    return _sign(key, JOB_CANCEL, chain_id, {"job_id": job_id, "nonce": nonce})
