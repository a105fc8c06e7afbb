"""State leaves: the fast account leaf is exactly the documented one, SHA-256 of the
canonical msgpack of ``to_value()``, for any account."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelmine import wire
from modelmine.ledger.entries import Account, Job, JobStatus
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
