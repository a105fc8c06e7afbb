"""Blocks, votes, commits and their verification: every rejection names its reason."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import msgpack
import pytest
from nacl.signing import SigningKey

from modelmine import signing, wire
from modelmine.consensus.merkle import EMPTY_ROOT, leaf_hash, merkle_root
from modelmine.consensus.signstate import Lock, SignState, SignStep
from modelmine.consensus.types import (
    NO_HASH,
    Block,
    Commit,
    ConsensusError,
    Header,
    Proposal,
    ValidatorSet,
    Vote,
    VoteType,
    block_hash,
    verify_block,
    verify_commit,
)
from modelmine.genesis import Validator

CHAIN = "test-chain"
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
VALIDATORS = ValidatorSet(Validator(bytes(k.verify_key), 10, f"v{i}") for i, k in enumerate(KEYS))
BY_ID = {bytes(k.verify_key): k for k in KEYS}
STATE = bytes([7]) * 32


def proposer_key(height: int, round: int = 0) -> SigningKey:
    return BY_ID[VALIDATORS.proposer(height, round)]


def commit_for(block: Block, signers: list[SigningKey], chain_id: str = CHAIN) -> Commit:
    votes = [
        Vote.create(k, chain_id, VoteType.PRECOMMIT, block.height, 0, block.hash) for k in signers
    ]
    return Commit(
        block.height, 0, block.hash, tuple(sorted((v.validator, v.signature) for v in votes))
    )


def make_block(
    prev: Block | None,
    last_commit: Commit | None,
    *,
    key: SigningKey | None = None,
    time_ms: int | None = None,
    records: tuple[bytes, ...] = (b"r1", b"r2"),
    round: int = 0,
) -> Block:
    height = 1 if prev is None else prev.height + 1
    return Block.create(
        key or proposer_key(height, round),
        chain_id=CHAIN,
        height=height,
        round=round,
        time=time_ms if time_ms is not None else 1_000 * height,
        prev_hash=NO_HASH if prev is None else prev.hash,
        state_root=STATE,
        records=records,
        last_commit=last_commit,
    )


@pytest.fixture
def chain() -> tuple[Block, Commit, Block, Commit]:
    b1 = make_block(None, None)
    c1 = commit_for(b1, KEYS[:3])
    b2 = make_block(b1, c1)
    c2 = commit_for(b2, KEYS[1:])
    return b1, c1, b2, c2


def rejected(block: Block, prev: Header | None, match: str, **kwargs: Any) -> ConsensusError:
    with pytest.raises(ConsensusError, match=match) as info:
        verify_block(block, prev, VALIDATORS, CHAIN, **kwargs)
    return info.value


# ---- merkle ----


def test_merkle_root_matches_the_rfc6962_reference_vectors() -> None:
    # Inputs and roots from certificate-transparency's merkle tree tests (RFC 6962 2.1).
    leaves = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        bytes(range(0x50, 0x58)),
        bytes(range(0x60, 0x70)),
    ]
    roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
    assert merkle_root([]) == EMPTY_ROOT
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    for n, root in enumerate(roots, start=1):
        assert merkle_root(leaves[:n]).hex() == root


def test_merkle_root_never_duplicates_an_odd_leaf_or_confuses_leaves_with_nodes() -> None:
    a, b, c = b"a", b"b", b"c"
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])
    # An inner node's bytes offered as a single record do not reproduce the root.
    assert merkle_root([leaf_hash(a) + leaf_hash(b)]) != merkle_root([a, b])


# ---- wire forms ----


def test_every_type_round_trips_through_the_canonical_codec(
    chain: tuple[Block, Commit, Block, Commit],
) -> None:
    _, c1, b2, _ = chain
    assert Header.from_wire(b2.header.to_wire()) == b2.header
    assert Block.from_wire(b2.to_wire()) == b2
    assert Commit.from_wire(c1.to_wire()) == c1
    vote = Vote.create(KEYS[0], CHAIN, VoteType.PREVOTE, 2, 3, None)
    assert Vote.from_wire(vote.to_wire()) == vote
    proposal = Proposal.create(proposer_key(2, 1), CHAIN, 1, 0, b2)
    assert Proposal.from_wire(proposal.to_wire()) == proposal
    assert block_hash(b2.header) == wire.sha256(b2.header.to_wire())


def test_strict_decoding_names_the_bad_field(chain: tuple[Block, Commit, Block, Commit]) -> None:
    _, c1, b2, _ = chain
    header = b2.header.to_dict()
    del header["state_root"]
    with pytest.raises(wire.WireError, match="header: missing field 'state_root'"):
        Header.from_dict(header)
    with pytest.raises(wire.WireError, match="header: unknown field 'extra'"):
        Header.from_dict(b2.header.to_dict() | {"extra": 1})
    header = b2.header.to_dict() | {"height": True}
    with pytest.raises(wire.WireError, match=r"header\.height"):
        Header.from_dict(header)
    header = b2.header.to_dict() | {"prev_hash": b"short"}
    with pytest.raises(wire.WireError, match=r"header\.prev_hash: expected 32 bytes"):
        Header.from_dict(header)
    block = b2.to_dict()
    del block["signature"]
    with pytest.raises(wire.WireError, match="block: missing field 'signature'"):
        Block.from_dict(block)
    unsorted = c1.to_dict() | {"signatures": [list(p) for p in reversed(c1.signatures)]}
    with pytest.raises(wire.WireError, match="sorted and distinct"):
        Commit.from_dict(unsorted)
    with pytest.raises(wire.WireError, match="must hold"):
        Commit.from_dict(c1.to_dict() | {"signatures": []})


def test_a_vote_is_not_a_proposal_and_a_proposal_must_carry_its_signed_block(
    chain: tuple[Block, Commit, Block, Commit],
) -> None:
    b1, _, b2, _ = chain
    vote = Vote.create(KEYS[0], CHAIN, VoteType.PREVOTE, 1, 0, b1.hash)
    with pytest.raises(wire.WireError, match="expected a proposal statement"):
        Proposal.from_wire(wire.encode({"statement": vote.to_wire(), "block": b1.to_dict()}))
    proposal = Proposal.create(proposer_key(1), CHAIN, 0, -1, b1)
    swapped = wire.decode(proposal.to_wire()) | {"block": b2.to_dict()}
    with pytest.raises(wire.WireError, match="does not match the block"):
        Proposal.from_wire(wire.encode(swapped))


def test_a_non_canonical_vote_payload_is_refused() -> None:
    # Same fields, but a key order no canonical encoder produces.
    body = msgpack.packb(
        {"type": "prevote", "round": 0, "height": 1, "block_hash": None}, use_bin_type=True
    )
    signature = KEYS[0].sign(signing.signing_input("vote", CHAIN, body)).signature
    raw = wire.encode(["vote", bytes(KEYS[0].verify_key), body, signature])
    with pytest.raises(wire.WireError, match="canonical"):
        Vote.from_wire(raw)


# ---- votes and commits ----


def test_a_vote_verifies_only_on_its_chain_and_from_a_validator() -> None:
    vote = Vote.create(KEYS[0], CHAIN, VoteType.PRECOMMIT, 5, 0, bytes(32))
    vote.verify(VALIDATORS, CHAIN)
    with pytest.raises(ConsensusError, match="bad signature on precommit"):
        vote.verify(VALIDATORS, "other-chain")
    outsider = Vote.create(SigningKey(bytes(32)), CHAIN, VoteType.PREVOTE, 5, 0, None)
    with pytest.raises(ConsensusError, match="not a validator"):
        outsider.verify(VALIDATORS, CHAIN)
    forged = dataclasses.replace(vote, block_hash=bytes([1]) * 32)
    with pytest.raises(ConsensusError, match="bad signature"):
        forged.verify(VALIDATORS, CHAIN)


def test_verify_commit_accepts_more_than_two_thirds(
    chain: tuple[Block, Commit, Block, Commit],
) -> None:
    b1, c1, _, _ = chain
    verify_commit(c1, VALIDATORS, CHAIN, b1.hash)
    verify_commit(commit_for(b1, KEYS), VALIDATORS, CHAIN, b1.hash)


def test_verify_commit_rejects_each_defect_with_a_reason(
    chain: tuple[Block, Commit, Block, Commit],
) -> None:
    b1, c1, b2, _ = chain
    with pytest.raises(ConsensusError, match=r"power 20 of 40; more than 2/3 \(27\)"):
        verify_commit(commit_for(b1, KEYS[:2]), VALIDATORS, CHAIN, b1.hash)
    with pytest.raises(ConsensusError, match="commit is for block"):
        verify_commit(c1, VALIDATORS, CHAIN, b2.hash)
    with pytest.raises(ConsensusError, match="bad signature on precommit"):
        verify_commit(commit_for(b1, KEYS[:3], "other-chain"), VALIDATORS, CHAIN, b1.hash)
    outsider = commit_for(b1, [*KEYS[:3], SigningKey(bytes(32))])
    with pytest.raises(ConsensusError, match="not a validator"):
        verify_commit(outsider, VALIDATORS, CHAIN, b1.hash)
    (v0, s0), *rest = c1.signatures
    garbled = dataclasses.replace(c1, signatures=((v0, bytes(64)), *rest))
    with pytest.raises(ConsensusError, match="bad signature"):
        verify_commit(garbled, VALIDATORS, CHAIN, b1.hash)
    doubled = dataclasses.replace(c1, signatures=((v0, s0), (v0, s0), (v0, s0)))
    with pytest.raises(ConsensusError, match="sorted by distinct validator"):
        verify_commit(doubled, VALIDATORS, CHAIN, b1.hash)


def test_exactly_two_thirds_is_not_a_quorum() -> None:
    three = ValidatorSet(list(VALIDATORS)[:3])
    assert three.quorum == 21
    assert not three.has_quorum(20) and three.has_quorum(21)
    assert not three.has_one_third(10) and three.has_one_third(11)


# ---- blocks ----


def test_a_valid_chain_verifies(chain: tuple[Block, Commit, Block, Commit]) -> None:
    b1, _, b2, _ = chain
    verify_block(b1, None, VALIDATORS, CHAIN, now_ms=5_000, state_root=STATE, max_records=2)
    verify_block(b2, b1.header, VALIDATORS, CHAIN, now_ms=5_000, state_root=STATE)


def test_blocks_with_broken_links_are_rejected(chain: tuple[Block, Commit, Block, Commit]) -> None:
    b1, _, b2, _ = chain
    rejected(b2, None, "block height 2 does not follow 0")
    other = make_block(None, None, records=(b"other",))
    rejected(b2, other.header, "prev_hash .* is not the hash")
    with pytest.raises(ConsensusError, match="block is for chain 'test-chain', not 'elsewhere'"):
        verify_block(b2, b1.header, VALIDATORS, "elsewhere")


def test_a_tampered_header_or_signature_is_rejected(
    chain: tuple[Block, Commit, Block, Commit],
) -> None:
    b1, _, b2, _ = chain
    tampered = dataclasses.replace(b2, header=dataclasses.replace(b2.header, state_root=bytes(32)))
    rejected(tampered, b1.header, "signature does not cover this header")
    rejected(dataclasses.replace(b2, signature=bytes(64)), b1.header, "signature does not cover")
    rejected(
        dataclasses.replace(b2, records=(b"r1", b"evil")), b1.header, "records_root does not match"
    )


def test_a_block_from_the_wrong_proposer_is_rejected(
    chain: tuple[Block, Commit, Block, Commit],
) -> None:
    b1, c1, _, _ = chain
    wrong = next(k for k in KEYS if k is not proposer_key(2))
    rejected(make_block(b1, c1, key=wrong), b1.header, "but the proposer is")


def test_time_must_move_forward_and_not_run_ahead(
    chain: tuple[Block, Commit, Block, Commit],
) -> None:
    b1, c1, _, _ = chain
    rejected(make_block(b1, c1, time_ms=b1.header.time), b1.header, "is not after")
    rejected(make_block(b1, c1, time_ms=b1.header.time - 1), b1.header, "is not after")
    late = make_block(b1, c1, time_ms=60_000)
    rejected(late, b1.header, "more than 10000 ms ahead", now_ms=49_999)
    verify_block(late, b1.header, VALIDATORS, CHAIN, now_ms=50_000)


def test_the_last_commit_must_be_present_sufficient_and_for_the_previous_block(
    chain: tuple[Block, Commit, Block, Commit],
) -> None:
    b1, c1, b2, _ = chain
    rejected(make_block(b1, None), b1.header, "lacks the commit of block 1")
    rejected(make_block(b1, commit_for(b1, KEYS[:2])), b1.header, "more than 2/3")
    other = make_block(None, None, records=())
    rejected(make_block(b1, commit_for(other, KEYS)), b1.header, "last commit: commit is for")
    rejected(make_block(b1, commit_for(b1, KEYS[:3], "elsewhere")), b1.header, "bad signature")
    rejected(make_block(None, c1), None, "block 1 carries a last commit")
    # A different valid commit swapped in after signing breaks last_commit_hash.
    swapped = dataclasses.replace(b2, last_commit=commit_for(b1, KEYS))
    rejected(swapped, b1.header, "last_commit_hash does not match")


def test_state_root_and_record_limit_are_checked_when_given(
    chain: tuple[Block, Commit, Block, Commit],
) -> None:
    b1, _, b2, _ = chain
    rejected(b2, b1.header, "state_root .* differs", state_root=bytes(32))
    rejected(b2, b1.header, "has 2 records; at most 1", max_records=1)


# ---- validator set ----


def test_proposers_rotate_in_proportion_to_power() -> None:
    weighted = ValidatorSet(
        Validator(bytes([i + 1]) * 32, power, "") for i, power in enumerate([1, 2, 3, 4])
    )
    picks = [weighted.proposer(h, 0) for h in range(1, 21)]
    for v in weighted:
        assert picks.count(v.node_id) == 2 * v.power
    # A failed round hands the turn to the proposer next in line.
    assert weighted.proposer(5, 1) == weighted.proposer(6, 0)
    fresh = ValidatorSet(weighted)
    assert [fresh.proposer(h, 2) for h in range(40, 0, -1)] == [
        weighted.proposer(h, 2) for h in range(40, 0, -1)
    ]


def test_proposer_lookup_far_along_the_chain_is_fast() -> None:
    start = time.perf_counter()
    VALIDATORS.proposer(10**12, 7)
    assert time.perf_counter() - start < 0.1


# ---- sign state ----


def test_sign_state_refuses_anything_conflicting_or_older(
    chain: tuple[Block, Commit, Block, Commit],
) -> None:
    a, b = bytes([1]) * 32, bytes([2]) * 32
    state = SignState().signed(3, 1, SignStep.PREVOTE, a)
    assert state.refusal(3, 1, SignStep.PREVOTE, a) is None  # identical: same bytes again
    assert "refusing" in (state.refusal(3, 1, SignStep.PREVOTE, b) or "")
    assert "refusing" in (state.refusal(3, 1, SignStep.PREVOTE, None) or "")
    assert "older" in (state.refusal(3, 1, SignStep.PROPOSE, a) or "")
    assert "older" in (state.refusal(3, 0, SignStep.PRECOMMIT, a) or "")
    assert "older" in (state.refusal(2, 9, SignStep.PRECOMMIT, a) or "")
    assert state.refusal(3, 1, SignStep.PRECOMMIT, b) is None
    assert state.refusal(3, 2, SignStep.PROPOSE, b) is None
    block = chain[0]
    prevotes = [Vote.create(k, CHAIN, VoteType.PREVOTE, 1, 1, block.hash) for k in KEYS[:3]]
    lock = Lock(1, block, tuple(sorted((v.validator, v.signature) for v in prevotes)))
    locked = SignState().signed(1, 1, SignStep.PRECOMMIT, block.hash).locked(lock)
    assert SignState.from_wire(locked.to_wire()) == locked
    assert sorted(lock.prevotes(), key=lambda v: v.validator) == sorted(
        prevotes, key=lambda v: v.validator
    )
    assert locked.signed(1, 2, SignStep.PREVOTE, None).lock == lock
    assert locked.signed(2, 0, SignStep.PREVOTE, None).lock is None
