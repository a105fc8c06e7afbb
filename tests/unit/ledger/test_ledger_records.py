"""Record parsing and building: typed records back, and a clear RecordError for bad bytes."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_kit import ALICE, BOB, CHAIN, NODE1, SPEC, pub

from modelmine import signing, wire
from modelmine.ledger import records as rec
from modelmine.ledger.records import (
    JobCancel,
    JobCheckpoint,
    JobClaim,
    JobComplete,
    JobFail,
    JobSubmit,
    RecordError,
    Register,
    Transfer,
    parse_record,
    record_id,
)
from modelmine.trainer import JobSpec, SpecError

JOB = b"\x05" * 32
SHA = b"\x06" * 32


def error_of(raw: bytes, chain_id: str = CHAIN) -> str:
    with pytest.raises(RecordError) as info:
        parse_record(raw, chain_id)
    return str(info.value)


def signed(kind: str, payload: dict[str, Any], key: Any = ALICE) -> bytes:
    return signing.sign(key, kind, CHAIN, payload).raw


# ---- every kind round-trips through its builder ----


def test_register_round_trip() -> None:
    raw = rec.make_register(ALICE, CHAIN, "alice", 1)
    r = parse_record(raw, CHAIN)
    assert r == Register(pub(ALICE), 1, record_id(raw), "alice")
    assert r.kind == "account.register"


def test_transfer_round_trip_with_and_without_memo() -> None:
    plain = parse_record(rec.make_transfer(ALICE, CHAIN, pub(BOB), 5, 2), CHAIN)
    assert isinstance(plain, Transfer)
    assert (plain.to, plain.amount, plain.nonce, plain.memo) == (pub(BOB), 5, 2, "")
    memo = parse_record(rec.make_transfer(ALICE, CHAIN, pub(BOB), 5, 2, "rent"), CHAIN)
    assert isinstance(memo, Transfer)
    assert memo.memo == "rent"


def test_job_submit_carries_the_canonical_spec_and_its_stake() -> None:
    raw = rec.make_job_submit(ALICE, CHAIN, SPEC, 3, 1234)
    r = parse_record(raw, CHAIN)
    assert isinstance(r, JobSubmit)
    assert r.id == record_id(raw) == wire.sha256(raw)
    assert r.spec == JobSpec.from_dict(SPEC).to_dict()
    assert r.job == JobSpec.from_dict(SPEC)
    assert (r.stake, r.time_ms, r.nonce) == (100, 1234, 3)


def test_job_worker_records_round_trip() -> None:
    claim = parse_record(rec.make_job_claim(NODE1, CHAIN, JOB, 1), CHAIN)
    assert isinstance(claim, JobClaim)
    assert (claim.signer, claim.job_id) == (pub(NODE1), JOB)
    cp = parse_record(rec.make_job_checkpoint(NODE1, CHAIN, JOB, 7, 448, SHA, 2), CHAIN)
    assert isinstance(cp, JobCheckpoint)
    assert (cp.step, cp.samples, cp.checkpoint_sha256) == (7, 448, SHA)
    metrics = {"val_accuracy": 0.93, "steps": 40}
    done = parse_record(rec.make_job_complete(NODE1, CHAIN, JOB, metrics, SHA, 900, 40, 3), CHAIN)
    assert isinstance(done, JobComplete)
    assert done.metrics == {"val_accuracy": 0.93, "steps": 40.0}
    assert (done.samples, done.steps, done.model_sha256) == (900, 40, SHA)
    fail = parse_record(rec.make_job_fail(NODE1, CHAIN, JOB, "disk full", 4), CHAIN)
    assert isinstance(fail, JobFail)
    assert fail.reason == "disk full"
    cancel = parse_record(rec.make_job_cancel(ALICE, CHAIN, JOB, 9), CHAIN)
    assert isinstance(cancel, JobCancel)
    assert (cancel.signer, cancel.nonce) == (pub(ALICE), 9)


# ---- signatures and bytes ----


def test_wrong_chain_id_is_a_bad_signature() -> None:
    raw = rec.make_transfer(ALICE, "other-chain", pub(BOB), 5, 1)
    assert "bad signature on transfer" in error_of(raw)


def test_tampered_signature_is_rejected() -> None:
    raw = bytearray(rec.make_transfer(ALICE, CHAIN, pub(BOB), 5, 1))
    raw[-1] ^= 0x01  # the signature is the last field
    assert "bad signature" in error_of(bytes(raw))


def test_tampered_body_is_rejected() -> None:
    statement = signing.parse(rec.make_transfer(ALICE, CHAIN, pub(BOB), 5, 1))
    body = wire.encode({"to": pub(BOB), "amount": 500, "nonce": 1})
    forged = wire.encode([statement.domain, statement.signer, body, statement.signature])
    assert "bad signature" in error_of(forged)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "empty message"),
        (b"\xc1", "malformed msgpack"),
        (b"\x93\x01\x02", "malformed msgpack"),  # truncated list
        (wire.encode({"a": 1}), "expected a list of 4 items"),
        (wire.encode(["transfer", b"x", b"", bytes(64)]), "signer must be 32 bytes"),
        (rec.make_register(ALICE, CHAIN, "a", 1)[:-5], "malformed msgpack"),
    ],
)
def test_malformed_bytes_are_rejected_with_the_reason(raw: bytes, expected: str) -> None:
    assert expected in error_of(raw)


def test_unknown_kind_is_rejected() -> None:
    raw = signed("mint", {"amount": 10**6, "nonce": 1})
    assert error_of(raw) == "unknown record kind 'mint'"


def test_a_signers_own_re_encoding_means_the_same_and_shares_the_nonce() -> None:
    # Keys out of order: only the signer can make such a body (it is signed), and it carries
    # the same nonce, so at most one of the two can ever apply (see test_ledger_state).
    body = msgpack.packb({"to": pub(BOB), "amount": 5, "nonce": 1}, use_bin_type=True)
    signature = ALICE.sign(signing.signing_input("transfer", CHAIN, body)).signature
    odd = wire.encode(["transfer", pub(ALICE), body, signature])
    usual = rec.make_transfer(ALICE, CHAIN, pub(BOB), 5, 1)
    a, b = parse_record(odd, CHAIN), parse_record(usual, CHAIN)
    assert a.id != b.id
    assert dataclasses.replace(a, id=b.id) == b


def test_non_canonical_envelope_is_rejected() -> None:
    statement = signing.parse(rec.make_transfer(ALICE, CHAIN, pub(BOB), 5, 1))
    # The signer written as a bin16 instead of a bin8: equal value, other bytes.
    packer = msgpack.Packer(use_bin_type=True)
    head = b"\x94" + packer.pack(statement.domain)
    signer = b"\xc5\x00\x20" + statement.signer
    raw = head + signer + packer.pack(statement.body) + packer.pack(statement.signature)
    assert signing.parse(raw).signer == statement.signer
    assert error_of(raw) == "transfer: record is not in canonical form"


def test_oversized_record_is_rejected() -> None:
    raw = signed("transfer", {"to": pub(BOB), "amount": 1, "nonce": 1, "memo": "x" * 70_000})
    assert "exceeds the limit" in error_of(raw)


def test_builder_refuses_to_sign_an_oversized_record() -> None:
    with pytest.raises(RecordError, match="exceeds"):
        rec.make_transfer(ALICE, CHAIN, pub(BOB), 1, 1, "x" * 70_000)


# ---- fields ----


@pytest.mark.parametrize(
    ("kind", "payload", "expected"),
    [
        ("transfer", {"to": pub(BOB), "amount": 0, "nonce": 1}, "transfer.amount: must be 1.."),
        ("transfer", {"to": pub(BOB), "amount": 10**12 + 1, "nonce": 1}, "transfer.amount"),
        ("transfer", {"to": pub(BOB), "amount": True, "nonce": 1}, "expected int, got bool"),
        ("transfer", {"to": b"short", "amount": 1, "nonce": 1}, "transfer.to: expected 32 bytes"),
        ("transfer", {"to": pub(BOB), "amount": 1}, "missing field 'nonce'"),
        ("transfer", {"to": pub(BOB), "amount": 1, "nonce": 0}, "transfer.nonce: must be 1.."),
        ("transfer", {"to": pub(BOB), "amount": 1, "nonce": 1, "fee": 1}, "unknown field 'fee'"),
        (
            "transfer",
            {"to": pub(BOB), "amount": 1, "nonce": 1, "memo": "m" * 129},
            "transfer.memo: longer than 128",
        ),
        ("account.register", {"account": pub(ALICE), "name": "", "nonce": 1}, "at least 1"),
        ("account.register", {"account": pub(ALICE), "name": "n" * 33, "nonce": 1}, "longer"),
        ("account.register", {"account": pub(ALICE), "name": "a\nb", "nonce": 1}, "printable"),
        ("account.register", {"account": pub(ALICE), "name": " a", "nonce": 1}, "spaces"),
        ("account.register", {"account": pub(BOB), "name": "b", "nonce": 1}, "signer's key"),
        (
            "job.submit",
            {"spec": SPEC, "stake": 99, "nonce": 1, "time_ms": 0},
            "job.submit.stake: 99 differs from the spec's stake 100",
        ),
        (
            "job.submit",
            {"spec": SPEC | {"stake": 5}, "stake": 10**9 + 1, "nonce": 1, "time_ms": 0},
            "job.submit.stake: must be 1..1000000000",
        ),
        ("job.claim", {"job_id": b"x" * 31, "nonce": 1}, "job.claim.job_id: expected 32 bytes"),
        (
            "job.checkpoint",
            {"job_id": JOB, "step": -1, "samples": 0, "checkpoint_sha256": SHA, "nonce": 1},
            "job.checkpoint.step",
        ),
        ("job.fail", {"job_id": JOB, "reason": "", "nonce": 1}, "at least 1"),
        ("job.fail", {"job_id": JOB, "reason": "r" * 257, "nonce": 1}, "longer than 256"),
        ("job.cancel", {"job_id": JOB}, "missing field 'nonce'"),
    ],
)
def test_bad_fields_are_rejected_naming_the_field(
    kind: str, payload: dict[str, Any], expected: str
) -> None:
    assert expected in error_of(signed(kind, payload))


def test_invalid_spec_is_rejected_with_the_spec_error_text() -> None:
    bad = {"title": "", "model": {"kind": "forest"}, "dataset": {"name": "digits"}}
    with pytest.raises(SpecError) as spec_error:
        JobSpec.from_dict(bad)
    raw = signed("job.submit", {"spec": bad, "stake": 100, "nonce": 1, "time_ms": 0})
    message = error_of(raw)
    assert message.startswith("job.submit.spec: ")
    for line in spec_error.value.errors:
        assert line in message


def _complete(metrics: Any, samples: int = 10) -> bytes:
    payload = {
        "job_id": JOB,
        "metrics": metrics,
        "model_sha256": SHA,
        "samples": samples,
        "steps": 1,
        "nonce": 1,
    }
    return signed("job.complete", payload, NODE1)


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        ({"loss": math.nan}, "job.complete.metrics.loss: must be a finite float"),
        ({"loss": math.inf}, "must be a finite float"),
        ({"loss": 1}, "must be a finite float"),
        ({f"m{i}": 0.5 for i in range(17)}, "more than 16 entries"),
        ({"x" * 65: 0.5}, "names must be 1..64 long"),
        ([0.5], "expected dict"),
    ],
)
def test_bad_metrics_are_rejected(metrics: Any, expected: str) -> None:
    assert expected in error_of(_complete(metrics))


def test_completion_needs_at_least_one_sample() -> None:
    assert "job.complete.samples: must be 1.." in error_of(_complete({}, samples=0))


def test_builder_validates_the_spec_before_signing() -> None:
    with pytest.raises(SpecError):
        rec.make_job_submit(ALICE, CHAIN, {"title": "x"}, 1, 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_record_error(raw: bytes) -> None:
    with pytest.raises(RecordError):
        parse_record(raw, CHAIN)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 400), st.integers(0, 7))
def test_any_flipped_bit_is_rejected(position: int, bit: int) -> None:
    raw = bytearray(rec.make_job_checkpoint(NODE1, CHAIN, JOB, 3, 300, SHA, 4))
    raw[position % len(raw)] ^= 1 << bit
    with pytest.raises(RecordError):
        parse_record(bytes(raw), CHAIN)


_SPEC_KEYS = st.sampled_from(
    ["title", "stake", "model", "dataset", "hyperparameters", "kind", "name", "hidden", "epochs"]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_SPEC_KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_SPEC_KEYS, _VALUES, max_size=6), st.integers(1, 10**9))
def test_any_signed_spec_is_accepted_or_refused_with_a_record_error(
    spec: dict[str, Any], stake: int
) -> None:
    raw = signed("job.submit", {"spec": spec, "stake": stake, "nonce": 1, "time_ms": 0})
    try:
        record = parse_record(raw, CHAIN)
    except RecordError as exc:
        assert str(exc).startswith("job.submit")
    else:
        assert isinstance(record, JobSubmit)
