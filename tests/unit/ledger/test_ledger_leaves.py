"""State leaves: the fast account and job leaves are exactly the documented ones, SHA-256
of the canonical msgpack of ``to_value()`` (a job's without its spec), for any entry; and the
leaves join in id order whatever the updates."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelmine import wire
from modelmine.ledger.entries import Account, Claim, Job, JobStatus
from modelmine.ledger.state import _account_leaf, _leaf, _Leaves

_INTS = st.integers(min_value=0, max_value=2**63 - 1)

_ACCOUNTS = st.builds(
    Account,
    id=st.binary(min_size=32, max_size=32),
    balance=_INTS,
    nonce=_INTS,
    name=st.none() | st.text(max_size=40),
    registered_height=_INTS,
    earned=_INTS,
    fees=_INTS,
)


@settings(max_examples=300, deadline=None)
@given(_ACCOUNTS)
def test_account_leaf_is_the_hash_of_the_canonical_plain_form(account: Account) -> None:
    expected = wire.sha256(wire.encode(account.to_value()))
    assert _account_leaf(account) == expected
    assert _leaf(account) == expected


def test_account_leaf_refuses_integers_encode_refuses() -> None:
    huge = Account(bytes(32), balance=2**64)
    with pytest.raises(wire.WireError, match="64-bit"):
        wire.encode(huge.to_value())
    with pytest.raises(wire.WireError, match="64-bit"):
        _account_leaf(huge)


def test_job_leaf_leaves_the_spec_out() -> None:
    job = Job(
        id=b"\x01" * 32,
        submitter=b"\x02" * 32,
        spec={"title": "t", "model": {"kind": "mlp"}},
        stake=10,
        locked=10,
        status=JobStatus.RUNNING,
        planned_samples=100,
        submitted_ms=5,
        created_height=2,
        created_ms=6,
        worker=b"\x03" * 32,
        work=((b"\x03" * 32, 40),),
        metrics=(("val_accuracy", 0.5),),
    )
    value = job.to_value()
    del value["spec"]
    assert _leaf(job) == wire.sha256(wire.encode(value))
    assert _leaf(job) == _leaf(dataclasses.replace(job, spec={"title": "other"}))


_KEYS = st.binary(min_size=32, max_size=32)
_SHARES = st.lists(st.tuples(_KEYS, _INTS), max_size=3).map(tuple)

_JOBS = st.builds(
    Job,
    id=_KEYS,
    submitter=_KEYS,
    spec=st.just({"title": "t"}),
    stake=_INTS,
    locked=_INTS,
    status=st.sampled_from(JobStatus),
    planned_samples=_INTS,
    submitted_ms=_INTS,
    created_height=_INTS,
    created_ms=_INTS,
    worker=st.none() | _KEYS,
    claims=st.lists(st.builds(Claim, _KEYS, _INTS, _INTS), max_size=3).map(tuple),
    last_activity_ms=_INTS,
    samples=_INTS,
    steps=_INTS,
    checkpoints=_INTS,
    checkpoint_sha256=st.none() | _KEYS,
    work=_SHARES,
    paid=_SHARES,
    fees=_SHARES,
    # In any order, even with a name twice: the leaf is the plain form's, whatever it is.
    metrics=st.lists(st.tuples(st.text(max_size=8), st.floats()), max_size=4).map(tuple),
    model_sha256=st.none() | _KEYS,
    error=st.text(max_size=20),
    ended_height=_INTS,
    ended_ms=_INTS,
)


@settings(max_examples=300, deadline=None)
@given(_JOBS)
def test_job_leaf_is_the_hash_of_the_canonical_plain_form_without_spec(job: Job) -> None:
    value = job.to_value()
    del value["spec"]
    assert _leaf(job) == wire.sha256(wire.encode(value))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.binary(min_size=1, max_size=2), st.binary(min_size=32, max_size=32)),
        max_size=6,
    )
)
def test_leaves_join_in_id_order_whatever_the_updates(updates: list[dict[bytes, bytes]]) -> None:
    leaves = _Leaves()
    expected: dict[bytes, bytes] = {}
    for update in updates:
        leaves.update(update)
        expected.update(update)
        assert leaves.joined() == b"".join(expected[k] for k in sorted(expected))
        assert list(leaves.by_id) == sorted(expected)
        assert len(leaves) == len(expected)
