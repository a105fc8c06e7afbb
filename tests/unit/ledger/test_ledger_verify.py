"""Chain verification: a good chain passes; any change to a stored block, record, signature
or state fails and names the first bad height."""

from __future__ import annotations

import dataclasses
import random
import shutil
import sqlite3
from pathlib import Path

import pytest
from ledger_kit import ALICE, BOB, CAROL, NODE1, VALIDATORS, World, make_genesis, pub

from modelmine import wire
from modelmine.consensus.merkle import merkle_root
from modelmine.consensus.types import Block, Commit
from modelmine.ledger import (
    LedgerStore,
    StoreError,
    make_commit,
    make_transfer,
    verify_chain,
)

BLOCKS = 9


def _chain(tmp_path: Path) -> tuple[World, Path]:
    """A stored chain of BLOCKS blocks with every kind of record; returns the data dir."""
    w = World().with_accounts()  # 1
    job_id = w.running_job(NODE1)  # 2, 3
    w.block(w.transfer(ALICE, BOB, 10), w.checkpoint(NODE1, job_id, 400))  # 4
    w.block(w.register(CAROL, "carol"), w.transfer(BOB, CAROL, 3))  # 5
    w.block(w.complete(NODE1, job_id, 800))  # 6
    other = w.submit(BOB)
    w.block(other)  # 7
    w.block(w.cancel(BOB, w.state.jobs()[0].id))  # 8
    w.idle(1000)  # 9
    assert len(w.blocks) == BLOCKS
    data_dir = tmp_path / "node"
    with LedgerStore.open(data_dir, w.genesis) as store:
        w.save(store)
    return w, data_dir


def _column(data_dir: Path, height: int, column: str) -> bytes:
    with sqlite3.connect(data_dir / "ledger.sqlite") as db:
        value: bytes = db.execute(
            f"SELECT {column} FROM blocks WHERE height = ?", (height,)
        ).fetchone()[0]
    return value


def _set_column(data_dir: Path, height: int, column: str, value: bytes) -> None:
    db = sqlite3.connect(data_dir / "ledger.sqlite")
    db.execute(f"UPDATE blocks SET {column} = ? WHERE height = ?", (value, height))
    db.commit()
    db.close()


def test_a_good_chain_verifies_and_reports_what_it_checked(tmp_path: Path) -> None:
    w, data_dir = _chain(tmp_path)
    report = verify_chain(data_dir, w.genesis)
    assert report.ok, report.reason
    assert (report.height, report.bad_height, report.reason) == (BLOCKS, None, "")
    records = sum(len(b.records) for b, _ in w.blocks)
    assert report.records == records
    # Per block: the proposer's signature and its own commit of 4; each last_commit repeats
    # the previous block's commit, so it adds nothing new.
    assert report.signatures == BLOCKS * (1 + 4) + records
    assert report.state_root == w.state.state_root()
    assert str(report).startswith(f"ok: {BLOCKS} blocks")


def test_verify_opens_the_database_read_only(tmp_path: Path) -> None:
    w, data_dir = _chain(tmp_path)
    before = (data_dir / "ledger.sqlite").read_bytes()
    assert verify_chain(data_dir / "ledger.sqlite", w.genesis).ok
    assert (data_dir / "ledger.sqlite").read_bytes() == before


def test_verify_refuses_another_network_or_a_missing_database(tmp_path: Path) -> None:
    _, data_dir = _chain(tmp_path)
    with pytest.raises(StoreError, match="holds the ledger of network"):
        verify_chain(data_dir, make_genesis(grant=7))
    with pytest.raises(StoreError, match="no ledger database"):
        verify_chain(tmp_path / "nothing", make_genesis())


@pytest.mark.parametrize("height", [1, 4, 6, BLOCKS])
def test_any_changed_byte_of_a_stored_block_names_its_height(tmp_path: Path, height: int) -> None:
    w, node_dir = _chain(tmp_path)
    data_dir = tmp_path / "copy"
    shutil.copytree(node_dir, data_dir)
    original = _column(data_dir, height, "block")
    rng = random.Random(height)
    for position in rng.sample(range(len(original)), 25):
        tampered = bytearray(original)
        tampered[position] ^= 1 << rng.randrange(8)
        _set_column(data_dir, height, "block", bytes(tampered))
        report = verify_chain(data_dir, w.genesis)
        assert not report.ok
        assert report.bad_height == height, (position, report.reason)
        assert report.height == height - 1
    assert verify_chain(node_dir, w.genesis).ok  # the original is untouched
    _set_column(data_dir, height, "block", original)
    assert verify_chain(data_dir, w.genesis).ok


def _stored_block(data_dir: Path, height: int) -> Block:
    return Block.from_wire(_column(data_dir, height, "block"))


def _store_block(data_dir: Path, block: Block, commit: Commit | None = None) -> None:
    db = sqlite3.connect(data_dir / "ledger.sqlite")
    db.execute(
        "UPDATE blocks SET block = ?, header = ?, hash = ?, time_ms = ? WHERE height = ?",
        (block.to_wire(), block.header.to_wire(), block.hash, block.header.time, block.height),
    )
    if commit is not None:
        db.execute(
            "UPDATE blocks SET commit_wire = ? WHERE height = ?", (commit.to_wire(), block.height)
        )
    db.commit()
    db.close()


def test_a_replaced_record_is_caught_by_the_records_root(tmp_path: Path) -> None:
    w, data_dir = _chain(tmp_path)
    block = _stored_block(data_dir, 4)
    forged = make_transfer(ALICE, w.genesis.chain_id, pub(BOB), 999, 3)  # validly signed
    tampered = Block(block.header, (forged, *block.records[1:]), block.signature, block.last_commit)
    _set_column(data_dir, 4, "block", tampered.to_wire())
    report = verify_chain(data_dir, w.genesis)
    assert (report.bad_height, report.reason) == (
        4,
        "block 4 records_root does not match its records",
    )


def test_a_consistently_rewritten_block_fails_on_the_proposer_signature(tmp_path: Path) -> None:
    w, data_dir = _chain(tmp_path)
    block = _stored_block(data_dir, 5)
    # Records root, header and hash all recomputed; but nobody can sign as the proposer.
    records = (block.records[0], make_transfer(BOB, w.genesis.chain_id, pub(CAROL), 500, 2))
    header = dataclasses.replace(block.header, records_root=merkle_root(records))
    _store_block(data_dir, Block(header, records, block.signature, block.last_commit))
    report = verify_chain(data_dir, w.genesis)
    assert report.bad_height == 5
    assert "the proposer's signature does not cover this header" in report.reason


def test_a_changed_commit_signature_names_the_block(tmp_path: Path) -> None:
    w, data_dir = _chain(tmp_path)
    commit = Commit.from_wire(_column(data_dir, 3, "commit_wire"))
    (validator, signature), *rest = commit.signatures
    bad = bytes([signature[0] ^ 1]) + signature[1:]
    tampered = Commit(commit.height, commit.round, commit.block_hash, ((validator, bad), *rest))
    _set_column(data_dir, 3, "commit_wire", tampered.to_wire())
    report = verify_chain(data_dir, w.genesis)
    assert report.bad_height == 3
    assert report.reason.startswith("commit of block 3: bad signature on precommit")


def test_a_commit_without_a_quorum_names_the_block(tmp_path: Path) -> None:
    w, data_dir = _chain(tmp_path)
    commit = Commit.from_wire(_column(data_dir, BLOCKS, "commit_wire"))
    thin = Commit(commit.height, commit.round, commit.block_hash, commit.signatures[:2])
    _set_column(data_dir, BLOCKS, "commit_wire", thin.to_wire())
    report = verify_chain(data_dir, w.genesis)
    assert report.bad_height == BLOCKS
    assert "more than 2/3" in report.reason


def test_a_changed_header_column_names_the_block(tmp_path: Path) -> None:
    w, data_dir = _chain(tmp_path)
    header = bytearray(_column(data_dir, 2, "header"))
    header[-1] ^= 1
    _set_column(data_dir, 2, "header", bytes(header))
    report = verify_chain(data_dir, w.genesis)
    assert report.bad_height == 2 and "stored header or hash" in report.reason


def test_a_missing_block_is_named(tmp_path: Path) -> None:
    w, data_dir = _chain(tmp_path)
    with sqlite3.connect(data_dir / "ledger.sqlite") as db:
        db.execute("DELETE FROM blocks WHERE height = 6")
    report = verify_chain(data_dir, w.genesis)
    assert (report.bad_height, report.reason) == (6, "block 6 is missing (the next stored is 7)")


def test_a_changed_stored_state_is_caught_after_the_last_block(tmp_path: Path) -> None:
    w, data_dir = _chain(tmp_path)
    with sqlite3.connect(data_dir / "ledger.sqlite") as db:
        data = db.execute("SELECT data FROM accounts WHERE id = ?", (pub(BOB),)).fetchone()[0]
        value = wire.decode(data)
        value["balance"] += 100
        db.execute("UPDATE accounts SET data = ? WHERE id = ?", (wire.encode(value), pub(BOB)))
    report = verify_chain(data_dir, w.genesis)
    assert report.bad_height == BLOCKS
    assert "stored ledger state" in report.reason


def _signed_block(w: World, prev: Block, records: list[bytes], state_root: bytes) -> Block:
    height = prev.height + 1
    proposer_id = w.state.validators.proposer(height, 0)
    proposer = next(k for k in VALIDATORS if pub(k) == proposer_id)
    last_commit = make_commit(VALIDATORS, w.genesis.chain_id, prev.height, 0, prev.hash)
    return Block.create(
        proposer,
        chain_id=w.genesis.chain_id,
        height=height,
        round=0,
        time=prev.header.time + 1000,
        prev_hash=prev.hash,
        state_root=state_root,
        records=records,
        last_commit=last_commit,
    )


def _append_raw(data_dir: Path, w: World, block: Block) -> None:
    commit = make_commit(VALIDATORS, w.genesis.chain_id, block.height, 0, block.hash)
    with sqlite3.connect(data_dir / "ledger.sqlite") as db:
        db.execute(
            "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?)",
            (
                block.height,
                block.hash,
                block.header.time,
                block.header.to_wire(),
                block.to_wire(),
                commit.to_wire(),
            ),
        )


def test_a_signed_and_committed_block_with_an_invalid_record_is_caught(tmp_path: Path) -> None:
    # Validators that sign a block breaking the ledger rules cannot make it valid.
    w, data_dir = _chain(tmp_path)
    prev, _ = w.blocks[-1]
    overdraw = make_transfer(CAROL, w.genesis.chain_id, pub(ALICE), 10**6, 2)
    _append_raw(data_dir, w, _signed_block(w, prev, [overdraw], w.state.state_root()))
    report = verify_chain(data_dir, w.genesis)
    assert report.bad_height == BLOCKS + 1
    assert "insufficient balance" in report.reason


def test_a_signed_block_with_a_wrong_state_root_is_caught(tmp_path: Path) -> None:
    w, data_dir = _chain(tmp_path)
    prev, _ = w.blocks[-1]
    _append_raw(data_dir, w, _signed_block(w, prev, [], b"\x01" * 32))
    report = verify_chain(data_dir, w.genesis)
    assert report.bad_height == BLOCKS + 1
    assert "state_root 01010101 differs from the state" in report.reason


def test_a_copy_of_a_data_dir_verifies_like_the_original(tmp_path: Path) -> None:
    w, data_dir = _chain(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy)
    report = verify_chain(copy, w.genesis)
    assert report.ok and report.state_root == w.state.state_root()
