"""The ledger store: blocks, commits and state in one transaction; consistent after kill -9."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ledger_kit import ALICE, BOB, NODE1, World, make_genesis, pub

from modelmine import wire
from modelmine.consensus.signstate import SignState, SignStep
from modelmine.consensus.types import NO_HASH
from modelmine.genesis import Genesis
from modelmine.ledger import (
    JobStatus,
    LedgerState,
    LedgerStore,
    StoreError,
    record_id,
    verify_chain,
)


def _world() -> World:
    w = World().with_accounts()
    job_id = w.running_job(NODE1)
    w.block(w.checkpoint(NODE1, job_id, 600), w.transfer(ALICE, BOB, 7))
    w.block(w.complete(NODE1, job_id, 900))
    w.idle(1000)
    return w


def test_blocks_commits_and_state_survive_a_reopen(tmp_path: Path) -> None:
    w = _world()
    with LedgerStore.open(tmp_path, w.genesis) as store:
        w.save(store)
    with LedgerStore.open(tmp_path / "ledger.sqlite", w.genesis) as store:
        last, _ = w.blocks[-1]
        assert store.head() == (last.height, last.hash)
        for block, commit in w.blocks:
            assert store.block(block.height) == block
            assert store.commit(block.height) == commit
            assert store.header(block.height) == block.header
        batch = store.blocks(2, 4)
        assert [b.height for b in batch] == [2, 3, 4]
        assert batch[0].block() == w.blocks[1][0] and batch[0].commit() == w.blocks[1][1]
        assert store.blocks(last.height + 1, last.height + 9) == []
        assert store.block(last.height + 1) is None and store.commit(99) is None
        state = store.load_state()
    assert state.state_root() == w.state.state_root()
    assert state.height == w.state.height
    assert state.accounts() == w.state.accounts()
    assert state.jobs() == w.state.jobs()
    assert state.stats() == w.state.stats()


def test_a_loaded_state_goes_on_applying_blocks(tmp_path: Path) -> None:
    w = World().with_accounts()
    with LedgerStore.open(tmp_path, w.genesis) as store:
        w.save(store)
        loaded = store.load_state()
        w.block(w.transfer(BOB, ALICE, 3))
        block, commit = w.blocks[-1]
        loaded.apply_block(block, commit)
        store.append(block, commit, loaded)
    with LedgerStore.open(tmp_path, w.genesis) as store:
        again = store.load_state()
    assert again.state_root() == w.state.state_root()
    assert again.balance(pub(ALICE)) == 1003


def test_an_empty_store_starts_at_the_genesis_state(tmp_path: Path) -> None:
    genesis = make_genesis()
    with LedgerStore.open(tmp_path / "node" / "ledger.sqlite", genesis) as store:
        assert store.head() == (0, NO_HASH)
        assert store.load_state().state_root() == LedgerState(genesis).state_root()
        assert list(store.iter_blocks()) == []


def test_a_store_of_another_network_is_refused(tmp_path: Path) -> None:
    LedgerStore.open(tmp_path, make_genesis()).close()
    with pytest.raises(StoreError, match="holds the ledger of network"):
        LedgerStore.open(tmp_path, make_genesis(grant=5))


def test_append_refuses_blocks_that_do_not_follow_the_head(tmp_path: Path) -> None:
    w = _world()
    with LedgerStore.open(tmp_path, w.genesis) as store:
        replay = LedgerState(w.genesis)
        (b1, c1), (b2, c2) = w.blocks[0], w.blocks[1]
        replay.apply_block(b1, c1)
        with pytest.raises(StoreError, match="block 2 does not follow the stored head 0"):
            store.append(b2, c2, replay)
        with pytest.raises(StoreError, match="is for another block"):
            store.append(b1, c2, replay)
        store.append(b1, c1, replay)
        with pytest.raises(StoreError, match="state is at height 1, not 2"):
            store.append(b2, c2, replay)
        other = World()
        other.block(other.register(NODE1, "n"))
        other.block()
        ob2, oc2 = other.blocks[1]
        with pytest.raises(StoreError, match="does not link to stored block 1"):
            store.append(ob2, oc2, other.state)
        assert store.head() == (1, b1.hash)


def test_a_failed_append_writes_nothing(tmp_path: Path) -> None:
    w = World().with_accounts()
    with LedgerStore.open(tmp_path, w.genesis) as store:
        w.save(store)
        before = store.load_state().state_root()
        loaded = store.load_state()
        submit = w.submit(ALICE)
        w.block(submit)
        block, commit = w.blocks[-1]
        loaded.apply_block(block, commit)
        # Make the last write of the transaction fail: the block row before it must go too.
        raw = sqlite3.connect(tmp_path / "ledger.sqlite")
        raw.execute(
            "CREATE TRIGGER no_jobs BEFORE INSERT ON jobs BEGIN SELECT RAISE(ABORT, 'full'); END"
        )
        raw.commit()
        with pytest.raises(StoreError, match="cannot store block 2"):
            store.append(block, commit, loaded)
        assert store.head()[0] == 1
        assert store.load_state().state_root() == before
        raw.execute("DROP TRIGGER no_jobs")
        raw.commit()
        raw.close()
        store.append(block, commit, loaded)  # the changes are still marked unsaved
        reloaded = store.load_state()
    assert reloaded.state_root() == w.state.state_root()
    job = reloaded.job(record_id(submit))
    assert job is not None and job.status is JobStatus.PENDING


def test_a_damaged_state_row_is_detected(tmp_path: Path) -> None:
    w = _world()
    with LedgerStore.open(tmp_path, w.genesis) as store:
        w.save(store)
    raw = sqlite3.connect(tmp_path / "ledger.sqlite")
    data = raw.execute("SELECT data FROM accounts WHERE id = ?", (pub(BOB),)).fetchone()[0]
    value = wire.decode(data)
    value["balance"] += 1
    raw.execute("UPDATE accounts SET data = ? WHERE id = ?", (wire.encode(value), pub(BOB)))
    raw.commit()
    raw.close()
    with LedgerStore.open(tmp_path, w.genesis) as store, pytest.raises(StoreError, match="root"):
        store.load_state()


def test_meta_and_sign_state_are_kept(tmp_path: Path) -> None:
    genesis = make_genesis()
    state = SignState(7, 2, SignStep.PRECOMMIT, b"\x01" * 32)
    with LedgerStore.open(tmp_path, genesis) as store:
        assert store.get_meta("peer-cursor") is None and store.sign_state() is None
        store.put_meta("peer-cursor", b"\x00\x01")
        store.put_sign_state(state)
    with LedgerStore.open(tmp_path, genesis) as store:
        assert store.get_meta("peer-cursor") == b"\x00\x01"
        assert store.sign_state() == state


def test_read_only_stores(tmp_path: Path) -> None:
    genesis = make_genesis()
    with pytest.raises(StoreError, match="no ledger database"):
        LedgerStore.open(tmp_path / "missing", genesis, read_only=True)
    w = _world()
    with LedgerStore.open(tmp_path, w.genesis) as store:
        w.save(store)
    with LedgerStore.open(tmp_path, w.genesis, read_only=True) as store:
        assert store.head()[0] == len(w.blocks)
        w.block()
        block, commit = w.blocks[-1]
        with pytest.raises(StoreError, match="cannot store block"):
            store.append(block, commit, w.state)


# ---- crash consistency with real kills ----


CHILD = Path(__file__).with_name("ledger_crash_child.py")


def _replay(store: LedgerStore, genesis: Genesis) -> LedgerState:
    state = LedgerState(genesis)
    for row in store.iter_blocks():
        state.apply_block(row.block(), row.commit())
    return state


def test_a_node_killed_at_any_instant_reopens_consistent(tmp_path: Path) -> None:
    genesis = make_genesis()
    db = tmp_path / "ledger.sqlite"
    rng = random.Random(1)
    heads: list[int] = []
    for _ in range(10):
        with subprocess.Popen(
            [sys.executable, str(CHILD), str(db)],
            stdout=subprocess.PIPE,
            text=True,
        ) as child:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            try:
                child.wait(timeout=rng.uniform(0.02, 0.3))
            except subprocess.TimeoutExpired:
                child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=10) == -signal.SIGKILL
        with LedgerStore.open(db, genesis) as store:
            height, head_hash = store.head()
            state = store.load_state()  # raises if the state and blocks disagree
            assert state.height == height
            assert _replay(store, genesis).state_root() == state.state_root()
            assert state.total_supply() == state.granted
            if height:
                header = store.header(height)
                assert header is not None and header.hash == head_hash
        heads.append(height)
    assert heads == sorted(heads) and heads[-1] > 20, heads


def test_verify_reads_a_consistent_snapshot_of_a_running_node(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite"
    genesis = make_genesis()
    with subprocess.Popen([sys.executable, str(CHILD), str(db)], stdout=subprocess.PIPE) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        try:
            deadline = time.monotonic() + 10
            while _head(db, genesis) < 20:
                assert time.monotonic() < deadline, "the writer made no progress"
                time.sleep(0.01)
            reports = [verify_chain(db, genesis) for _ in range(3)]
        finally:
            child.kill()
            child.wait(timeout=10)
    assert all(r.ok for r in reports), [r.reason for r in reports]
    assert reports[-1].height >= 20


def _head(db: Path, genesis: Genesis) -> int:
    with LedgerStore.open(db, genesis, read_only=True) as store:
        return store.head()[0]
