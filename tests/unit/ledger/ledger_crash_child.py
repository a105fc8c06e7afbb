"""Run as a script by test_ledger_store: append blocks to a ledger store until killed."""

from __future__ import annotations

import sys

from ledger_kit import ALICE, BOB, SPEC, VALIDATORS, make_genesis, pub

from modelmine.ledger import (
    ChainBuilder,
    JobStatus,
    LedgerStore,
    make_job_cancel,
    make_job_submit,
    make_register,
    make_transfer,
)


def main(db: str) -> None:
    """Append blocks as fast as possible, forever: balanced transfers (so no balance ever runs
    out, however long it runs), and a job submitted or canceled."""
    genesis = make_genesis()
    chain = genesis.chain_id
    with LedgerStore.open(db, genesis) as store:
        state = store.load_state()
        height = state.height
        builder = ChainBuilder(
            genesis,
            VALIDATORS,
            state=state,
            prev=store.header(height) if height else None,
            last_commit=store.commit(height) if height else None,
        )
        print("ready", flush=True)
        while True:
            nonce = {k: state.next_nonce(pub(k)) for k in (ALICE, BOB)}
            if state.height == 0:
                records = [
                    make_register(ALICE, chain, "alice", 1),
                    make_register(BOB, chain, "b", 1),
                ]
            else:
                records = [
                    make_transfer(ALICE, chain, pub(BOB), 1, nonce[ALICE]),
                    make_transfer(BOB, chain, pub(ALICE), 1, nonce[BOB]),
                ]
                open_jobs = state.jobs(JobStatus.PENDING)
                if open_jobs:
                    records.append(make_job_cancel(ALICE, chain, open_jobs[0].id, nonce[ALICE] + 1))
                else:
                    spec = SPEC | {"title": f"job at {state.height}", "stake": 3}
                    records.append(make_job_submit(ALICE, chain, spec, nonce[ALICE] + 1, 0))
            block, commit = builder.build(records)
            store.append(block, commit, state)


if __name__ == "__main__":
    main(sys.argv[1])
