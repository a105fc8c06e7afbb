"""Ledger verification speed: signatures checked per second by ``verify_chain``, against raw
pynacl verification of exactly the same signatures, measured in the same run.

Times are CPU seconds of this process (the machine may be shared). The chain is built without a network (real blocks, real commits of 4 validators): 200
accounts register, then every block carries transfers between random accounts and the
records of a stream of jobs (submit, claim, checkpoints, complete). ``verify_chain`` reads it
from SQLite and re-checks every hash, link, proposer signature, commit signature and record
signature, and recomputes every state root. The baseline calls
``VerifyKey(signer).verify(signed_bytes, signature)`` once for each distinct signature in the
chain. Goal: verification runs at >= 0.7 of the raw signature rate.

Run: ``.venv/bin/python bench/bench_ledger_verify.py [--blocks 300]``
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey, VerifyKey

from modelmine import signing, wire
from modelmine.consensus.types import (
    BLOCK_DOMAIN,
    VOTE_DOMAIN,
    Block,
    Header,
    verify_block,
    verify_commit,
)
from modelmine.consensus.validators import ValidatorSet
from modelmine.genesis import Genesis, Validator
from modelmine.ledger import (
    ChainBuilder,
    LedgerStore,
    make_job_checkpoint,
    make_job_claim,
    make_job_complete,
    make_job_submit,
    make_register,
    make_transfer,
    parse_record,
    record_id,
    verify_chain,
)

GOAL = 0.7
USERS = 200
TRANSFERS_PER_BLOCK = 20
SPEC: dict[str, Any] = {
    "title": "bench",
    "model": {"kind": "mlp", "hidden": [32]},
    "dataset": {"name": "digits"},
    "stake": 10,
}


def bench_genesis(seed: int = 7) -> tuple[Genesis, list[SigningKey], random.Random]:
    """The bench network: 4 validators of equal power; also the rng the chain goes on with."""
    rng = random.Random(seed)
    validators = [SigningKey(rng.randbytes(32)) for _ in range(4)]
    genesis = Genesis(
        chain_id="bench-ledger",
        genesis_time=1_700_000_000,
        validators=tuple(
            Validator(bytes(k.verify_key), 10, f"v{i}") for i, k in enumerate(validators)
        ),
        initial_grant=10_000,
    )
    return genesis, validators, rng


def build_chain(path: Path, blocks: int) -> Genesis:
    """Store a chain of ``blocks`` blocks at ``path``; returns its genesis."""
    genesis, validators, rng = bench_genesis()
    chain = genesis.chain_id
    users = [SigningKey(rng.randbytes(32)) for _ in range(USERS)]
    nodes = [SigningKey(rng.randbytes(32)) for _ in range(8)]
    builder = ChainBuilder(genesis, validators)
    state = builder.state
    with LedgerStore.open(path, genesis) as store:
        for start in range(0, USERS, 50):
            regs = [
                make_register(u, chain, f"user{start + i}", 1)
                for i, u in enumerate(users[start : start + 50])
            ]
            store.append(*builder.build(regs), state)
        job: tuple[bytes, SigningKey, int] | None = None  # id, worker, stage
        while state.height < blocks:
            nonces: dict[bytes, int] = {}

            def nonce(k: SigningKey, nonces: dict[bytes, int] = nonces) -> int:
                pk = bytes(k.verify_key)
                nonces[pk] = nonces.get(pk, state.next_nonce(pk) - 1) + 1
                return nonces[pk]

            records = []
            for _ in range(TRANSFERS_PER_BLOCK):
                a, b = rng.sample(users, 2)
                records.append(
                    make_transfer(a, chain, bytes(b.verify_key), rng.randint(1, 5), nonce(a))
                )
            if job is None:
                submitter = rng.choice(users)
                raw = make_job_submit(submitter, chain, SPEC, nonce(submitter), state.time_ms)
                records.append(raw)
                job = (record_id(raw), rng.choice(nodes), 0)
            else:
                job_id, worker, stage = job
                if stage == 0:
                    records.append(make_job_claim(worker, chain, job_id, nonce(worker)))
                elif stage < 4:
                    records.append(
                        make_job_checkpoint(
                            worker, chain, job_id, stage, stage * 1000, bytes(32), nonce(worker)
                        )
                    )
                else:
                    records.append(
                        make_job_complete(
                            worker,
                            chain,
                            job_id,
                            {"val_accuracy": 0.9},
                            bytes(32),
                            5000,
                            40,
                            nonce(worker),
                        )
                    )
                job = None if stage >= 4 else (job_id, worker, stage + 1)
            store.append(*builder.build(records), state)
    return genesis


def signatures_in(path: Path, genesis: Genesis) -> list[tuple[bytes, bytes, bytes]]:
    """(signer, signed bytes, signature) of every distinct signature in the stored chain."""
    chain = genesis.chain_id
    seen: set[bytes] = set()
    out: list[tuple[bytes, bytes, bytes]] = []

    def add(signer: bytes, message: bytes, signature: bytes) -> None:
        if signature not in seen:
            seen.add(signature)
            out.append((signer, message, signature))

    def commit_votes(block_hash: bytes, height: int, round: int, sigs: Any) -> None:
        body = wire.encode(
            {"type": "precommit", "height": height, "round": round, "block_hash": block_hash}
        )
        for validator, signature in sigs:
            add(validator, signing.signing_input(VOTE_DOMAIN, chain, body), signature)

    with LedgerStore.open(path, genesis, read_only=True) as store:
        for row in store.iter_blocks():
            block: Block = row.block()
            body = wire.encode({"block_hash": block.hash})
            add(
                block.header.proposer,
                signing.signing_input(BLOCK_DOMAIN, chain, body),
                block.signature,
            )
            if block.last_commit is not None:
                c = block.last_commit
                commit_votes(c.block_hash, c.height, c.round, c.signatures)
            commit = row.commit()
            commit_votes(commit.block_hash, commit.height, commit.round, commit.signatures)
            for raw in block.records:
                st = signing.parse(raw)
                add(st.signer, signing.signing_input(st.domain, chain, st.body), st.signature)
    return out


def raw_verify_seconds(sigs: list[tuple[bytes, bytes, bytes]]) -> float:
    """CPU seconds to verify ``sigs`` with pynacl directly."""
    started = time.process_time()
    for signer, message, signature in sigs:
        VerifyKey(signer).verify(message, signature)
    return time.process_time() - started


def signature_checks(path: Path, genesis: Genesis) -> int:
    """The signature checking of ``verify_chain`` alone: decode every block, check it and
    its commit with the consensus types, parse and verify every record; no ledger state."""
    validators = ValidatorSet.from_genesis(genesis)
    prev: Header | None = None
    count = 0
    with LedgerStore.open(path, genesis, read_only=True) as store:
        for row in store.iter_blocks():
            block, commit = row.block(), row.commit()
            verify_block(block, prev, validators, genesis.chain_id)
            verify_commit(commit, validators, genesis.chain_id, block.hash)
            for raw in block.records:
                parse_record(raw, genesis.chain_id)
            count += 1 + len(commit.signatures) + len(block.records)
            prev = block.header
    return count


def trial(path: Path, genesis: Genesis, mode: str) -> dict[str, float]:
    """One measurement in this process: raw, ``mode``, raw again (CPU seconds)."""
    sigs = signatures_in(path, genesis)
    raw_before = raw_verify_seconds(sigs)
    started = time.process_time()
    if mode == "full":
        report = verify_chain(path, genesis)
        if not report.ok:
            raise SystemExit(f"verify failed on the bench chain: {report}")
        counted, records, blocks = report.signatures, report.records, report.height
    else:
        counted, records, blocks = signature_checks(path, genesis), 0, 0
    seconds = time.process_time() - started
    raw_after = raw_verify_seconds(sigs)
    if counted != len(sigs):
        raise SystemExit(f"{mode}: counted {counted} signatures, the chain has {len(sigs)}")
    return {
        "signatures": counted,
        "records": records,
        "blocks": blocks,
        "seconds": seconds,
        "raw_seconds": (raw_before + raw_after) / 2,
    }


def _median_trial(path: Path, mode: str, trials: int) -> dict[str, float]:
    results = []
    for _ in range(trials):
        out = subprocess.run(
            [sys.executable, __file__, "--trial", str(path), "--mode", mode],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results.append(json.loads(out))
    results.sort(key=lambda r: r["raw_seconds"] / r["seconds"])
    median: dict[str, float] = results[len(results) // 2]
    return median


def run(blocks: int = 300, trials: int = 5) -> list[dict[str, Any]]:
    """Build one chain, then measure it in ``trials`` fresh processes per mode (cold caches:
    the consensus layer caches verified signatures per process); median trials reported."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.sqlite"
        build_chain(path, blocks)
        full = _median_trial(path, "full", trials)
        sigs_only = _median_trial(path, "signatures", trials)
    rows = []
    for result, name, goal in (
        (full, f"ledger verify, {full['blocks']} blocks, {full['records']} records", f">= {GOAL}"),
        (sigs_only, "ledger verify, signature checks only (no state)", "report"),
    ):
        rate = result["signatures"] / result["seconds"]
        raw_rate = result["signatures"] / result["raw_seconds"]
        rows.append(
            {
                "name": name,
                "value": rate,
                "unit": "signatures/s",
                "baseline": raw_rate,
                "ratio": rate / raw_rate,
                "goal": goal,
            }
        )
    rows.append(
        {
            "name": "ledger verify, whole chain (CPU)",
            "value": full["seconds"],
            "unit": "s",
            "baseline": None,
            "ratio": None,
            "goal": "report",
        }
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=300)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--trial", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="full", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial is not None:
        print(json.dumps(trial(args.trial, bench_genesis()[0], args.mode)))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.report import print_rows

    print_rows(run(args.blocks, args.trials))


if __name__ == "__main__":
    main()
