"""Records that come before the block that makes them valid are kept, bounded, and offered
again (modelmine/consensus/early.py)."""

from __future__ import annotations

import pytest

from modelmine.consensus.early import EarlyRecords


def test_a_record_is_offered_again_once_the_state_makes_it_valid() -> None:
    early = EarlyRecords(capacity=4, ttl=30.0)
    valid: set[bytes] = set()

    def check(raw: bytes) -> str | None:
        return None if raw in valid else "job unknown"

    early.keep(b"claim", 0.0)
    assert early.take_valid(check, 1.0) == []  # still invalid: kept
    assert len(early) == 1
    valid.add(b"claim")  # the block with the job arrives
    assert early.take_valid(check, 2.0) == [b"claim"]
    assert len(early) == 0 and early.take_valid(check, 3.0) == []


def test_records_expire_and_the_oldest_go_first_when_full() -> None:
    early = EarlyRecords(capacity=3, ttl=10.0)
    for i in range(5):
        early.keep(bytes([i]), float(i))
    assert len(early) == 3  # 0 and 1 were pushed out
    everything_valid = lambda raw: None  # noqa: E731
    assert early.take_valid(everything_valid, 12.5) == [bytes([3]), bytes([4])]  # 2 expired
    early.keep(b"x", 0.0)
    early.keep(b"x", 5.0)  # kept again: one entry, the later deadline
    assert len(early) == 1 and early.take_valid(everything_valid, 12.0) == [b"x"]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        EarlyRecords(capacity=0, ttl=1.0)
    with pytest.raises(ValueError):
        EarlyRecords(capacity=1, ttl=0.0)
