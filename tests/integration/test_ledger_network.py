"""The ledger across 4 validator processes: finality, agreement, kill -9, catch-up, sync."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from nacl.signing import SigningKey

from modelmine.ledger import make_register, make_transfer
from tests.integration.cluster import Cluster, submit, try_call, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "net", 4)
    c.start()
    try:
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


async def heads(dirs: list[Path]) -> list[tuple[int, str] | None]:
    out = []
    for d in dirs:
        status = await try_call(d, "status")
        out.append((status["height"], status["head"]) if status else None)
    return out


async def test_ledger_finality_agreement_faults_and_sync(cluster: Cluster) -> None:
    c = cluster
    dirs = [c.data_dir(i) for i in range(1, 5)]
    keys = [SigningKey.generate() for _ in range(4)]
    ids = [bytes(k.verify_key) for k in keys]
    with trio.fail_after(240):

        async def all_linked() -> bool:
            statuses = [await try_call(d, "status") for d in dirs]
            return all(s and s["peers"] >= 2 for s in statuses)

        await wait_for(all_linked, 40, "validators to link up")

        # Registrations and transfers submitted through different nodes all become final.
        for i, key in enumerate(keys):
            await submit(
                dirs[i],
                lambda chain, n, key=key, i=i: make_register(key, chain, f"user{i}", n),
                ids[i],
            )
        for i, key in enumerate(keys):
            to = ids[(i + 1) % 4]
            await submit(
                dirs[(i + 2) % 4],
                lambda chain, n, key=key, to=to, i=i: make_transfer(key, chain, to, 10 + i, n),
                ids[i],
            )

        async def same_head(ds: list[Path]) -> bool:
            h = await heads(ds)
            return None not in h and len(set(h)) == 1

        await wait_for(lambda: same_head(dirs), 20, "every node to reach the same head")
        for i in range(4):
            account = await try_call(dirs[3], "ledger.account", account=ids[i].hex())
            expected = 1000 - (10 + i) + (10 + (i - 1) % 4)
            assert account["balance"] == expected

        # kill -9 one validator: the other three (3 of 4 power > 2/3) keep committing.
        c.nodes[3].kill9()
        before = (await try_call(dirs[0], "status"))["height"]
        height = await submit(
            dirs[0], lambda chain, n: make_transfer(keys[0], chain, ids[1], 1, n), ids[0]
        )
        assert height > before

        # Restarted, it catches up to the same head.
        c.nodes[3].start()
        await wait_for(lambda: same_head(dirs), 60, "the restarted validator to catch up")

        # A fresh node that is not a validator syncs the whole chain ...
        observer = c.add_observer("observer")
        observer.start()
        obs_dir = c.root / "observer"
        await wait_for(lambda: same_head([dirs[0], obs_dir]), 60, "a fresh node to sync")
        observer.stop()

    # ... and the chain it holds verifies from genesis.
    result = subprocess.run(
        [sys.executable, "-m", "modelmine", "ledger", "verify", "--data-dir", str(obs_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok:")
