"""Jobs across real node processes: submit through one node, trained by another, results and
credits on the ledger, cancel, many jobs at once, bad input, and failover after kill -9."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from nacl.signing import SigningKey

from modelmine import wire
from modelmine.control_client import RpcError, open_control_client
from modelmine.jobs.progress import PROGRESS_DOMAIN, progress_topic
from modelmine.ledger import make_job_cancel, make_job_complete, make_job_submit, make_register
from modelmine.signing import sign
from tests.integration.cluster import (
    Cluster,
    raw_peer,
    submit,
    submit_final,
    try_call,
    wait_for,
)

pytestmark = pytest.mark.slow

DIGITS = {
    "title": "digits",
    "model": {"kind": "mlp", "hidden": [64]},
    "dataset": {"name": "digits"},
    "hyperparameters": {"epochs": 30},
}
LONG = {
    "title": "long",
    "model": {"kind": "mlp", "hidden": [256]},
    "dataset": {"name": "digits"},
    "hyperparameters": {"epochs": 4000},
}
TINY = {
    "title": "tiny",
    "model": {"kind": "logistic"},
    "dataset": {"name": "iris"},
    "hyperparameters": {"epochs": 5},
}


def start(root: Path) -> Cluster:
    # node-1 takes no jobs, so whatever is submitted through it is trained elsewhere.
    c = Cluster(root, 4, node_args={1: ["--maintenance"]})
    c.start()
    return c


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start(tmp_path_factory.mktemp("jobs") / "net")
    try:
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()


async def ready(c: Cluster) -> None:
    async def linked() -> bool:
        for i in range(1, c.n + 1):
            s = await try_call(c.data_dir(i), "status")
            peers = await try_call(c.data_dir(i), "peers")
            if (
                not s
                or s["peers"] < 2
                or sum(p["status"] in ("ONLINE", "MAINTENANCE") for p in peers or []) < c.n - 1
            ):
                return False
        return True

    await wait_for(linked, 45, "the network to form")


async def register(c: Cluster, key: SigningKey, name: str) -> None:
    await submit(
        c.data_dir(1), lambda chain, n: make_register(key, chain, name, n), bytes(key.verify_key)
    )


async def submit_job(c: Cluster, i: int, key: SigningKey, spec: dict[str, Any]) -> str:
    job_id, _ = await submit_final(
        c.data_dir(i),
        "jobs.submit",
        "job_id",
        lambda chain, nonce: make_job_submit(key, chain, spec, nonce, 0),
        bytes(key.verify_key),
    )
    return job_id


async def job(c: Cluster, i: int, job_id: str) -> dict[str, Any] | None:
    result: dict[str, Any] | None = await try_call(c.data_dir(i), "jobs.get", job_id=job_id)
    return result


async def ended_everywhere(c: Cluster, job_id: str, status: str, nodes: list[int]) -> bool:
    for i in nodes:
        j = await job(c, i, job_id)
        if j is None or j["status"] != status:
            return False
    return True


async def check_conserved(c: Cluster) -> None:
    """Balances plus locked credits equal the grants of the registered accounts, and the
    balances listed add up to what the ledger reports."""
    accounts = await try_call(c.data_dir(1), "ledger.accounts")
    stats = await try_call(c.data_dir(1), "ledger.stats")
    registered = sum(1 for a in accounts if a["registered"])
    assert stats["total_supply"] == 1000 * registered
    assert sum(a["balance"] for a in accounts) <= stats["total_supply"]


async def test_job_is_trained_by_another_node_and_paid_for(net: Cluster) -> None:
    c = net
    alice = SigningKey.generate()
    with trio.fail_after(180):
        await ready(c)
        await register(c, alice, "alice")
        job_id = await submit_job(c, 1, alice, DIGITS)
        await wait_for(
            lambda: ended_everywhere(c, job_id, "COMPLETED", [1, 2, 3, 4]),
            90,
            "COMPLETED on every node",
        )
        views = [await job(c, i, job_id) for i in (1, 2, 3, 4)]
        first = views[0]
        assert first is not None
        assert first["metrics"]["val_accuracy"] >= 0.95
        assert first["worker"] != c.node_id(1), "the maintenance node must not train"
        for v in views[1:]:
            assert v is not None
            for key in ("status", "worker", "metrics", "model_sha256", "block", "contributions"):
                assert v[key] == first[key]
        # Balances moved exactly by the rules: stake 100, 80 to the worker, 20 to validators.
        account = await try_call(
            c.data_dir(2), "ledger.account", account=bytes(alice.verify_key).hex()
        )
        assert account["balance"] == 900
        assert [x["credits"] for x in first["contributions"]] == [80]
        worker = await try_call(c.data_dir(3), "ledger.account", account=first["worker"])
        assert worker["earned"] == 80
        await check_conserved(c)

        async def same_head() -> bool:
            heads = {
                (s["height"], s["head"])
                for i in (1, 2, 3, 4)
                if (s := await try_call(c.data_dir(i), "status"))
            }
            return len(heads) == 1

        await wait_for(same_head, 20, "the same ledger head everywhere")


async def test_cancel_by_submitter_refunds_and_others_are_refused(net: Cluster) -> None:
    c = net
    bob, carol = SigningKey.generate(), SigningKey.generate()
    with trio.fail_after(180):
        await ready(c)
        await register(c, bob, "bob")
        await register(c, carol, "carol")
        job_id = await submit_job(c, 1, bob, LONG)

        async def running() -> bool:
            j = await job(c, 1, job_id)
            return bool(j and j["status"] == "RUNNING")

        await wait_for(running, 60, "the long job to run")
        await progress_goes_to_followers_only(c, job_id)
        async with open_control_client(c.data_dir(2)) as client:
            status = await client.call("status")
            account = await client.call("ledger.account", account=bytes(carol.verify_key).hex())
            raw = make_job_cancel(
                carol, status["chain_id"], bytes.fromhex(job_id), account["next_nonce"]
            )
            with pytest.raises(RpcError, match="only the submitter can cancel"):
                await client.call("ledger.submit", record=raw.hex())
        await submit(
            c.data_dir(2),
            lambda chain, n: make_job_cancel(bob, chain, bytes.fromhex(job_id), n),
            bytes(bob.verify_key),
        )
        await wait_for(
            lambda: ended_everywhere(c, job_id, "CANCELED", [1, 2, 3, 4]), 30, "CANCELED everywhere"
        )
        j = await job(c, 1, job_id)
        assert j is not None
        earned = sum(x["credits"] for x in j["contributions"])
        account = await try_call(
            c.data_dir(1), "ledger.account", account=bytes(bob.verify_key).hex()
        )
        assert account["balance"] == 1000 - earned and earned < 80
        # The worker stops training: it goes back to ONLINE with a free slot.

        async def worker_idle() -> bool:
            peers = await try_call(c.data_dir(1), "peers")
            return any(
                p["node_id"] == j["worker"] and p["capacity"]["busy"] == 0 for p in peers or []
            )

        await wait_for(worker_idle, 20, "the worker to stop training the canceled job")


async def progress_goes_to_followers_only(c: Cluster, job_id: str) -> None:
    """Node 1 took the submission, so it follows the job's progress at the worker; a node that
    nobody asked about the job receives none, until it is asked. Progress forged by a peer
    that never worked on the job gets that peer banned by the follower."""
    j = await job(c, 1, job_id)
    assert j is not None
    worker = c.index_of(j["worker"])
    observer = next(i for i in (2, 3, 4) if i != worker)

    async def live_at_node_1() -> bool:
        j = await job(c, 1, job_id)
        return bool(j and len(j["history"]) >= 3)

    await wait_for(live_at_node_1, 20, "live progress at the submitter's node")
    quiet = await job(c, observer, job_id)  # this look starts the observer following
    assert quiet is not None and quiet["history"] == [] and quiet["latest"] is None

    async def live_at_observer() -> bool:
        j = await job(c, observer, job_id)
        return bool(j and j["history"])

    await wait_for(live_at_observer, 15, "progress at the observer once it follows the job")
    async with raw_peer(c, 1) as peer:
        chain = (await try_call(c.data_dir(1), "status"))["chain_id"]
        report = {
            "job_id": bytes.fromhex(job_id),
            "step": 1,
            "total_steps": 10,
            "epoch": 0,
            "train_loss": 0.1,
            "val_loss": None,
            "val_accuracy": 0.99,
            "samples_per_second": 1.0,
            "time": 0.0,
        }
        statement = sign(peer.key, PROGRESS_DOMAIN, chain, report)
        topic = progress_topic(bytes.fromhex(job_id))
        await peer.send_plain(wire.encode({"t": "msg", "topic": topic, "data": statement.raw}))

        async def banned() -> bool:
            return "never worked on it" in c.nodes[0].log()

        await wait_for(banned, 10, "node-1 to refuse the forged progress")


async def test_twenty_jobs_at_once_all_complete_and_credits_are_conserved(net: Cluster) -> None:
    c = net
    keys = [SigningKey.generate() for _ in range(4)]
    with trio.fail_after(300):
        await ready(c)
        for n, key in enumerate(keys):
            await register(c, key, f"many{n}")
        job_ids: list[str] = []

        async def submit_five(n: int, key: SigningKey) -> None:
            for k in range(5):
                job_ids.append(
                    await submit_job(c, 1 + (n + k) % 4, key, {**TINY, "title": f"tiny {n}.{k}"})
                )

        async with trio.open_nursery() as nursery:
            for n, key in enumerate(keys):
                nursery.start_soon(submit_five, n, key)
        assert len(set(job_ids)) == 20

        async def all_done() -> bool:
            jobs = await try_call(c.data_dir(2), "jobs.list")
            states = {j["job_id"]: j["status"] for j in jobs or []}
            return all(states.get(j) == "COMPLETED" for j in job_ids)

        await wait_for(all_done, 240, "20 jobs to complete")
        await check_conserved(c)


async def test_bad_jobs_are_refused_or_fail_with_a_reason(net: Cluster) -> None:
    c = net
    dave = SigningKey.generate()
    signer = bytes(dave.verify_key)
    with trio.fail_after(120):
        await ready(c)
        await register(c, dave, "dave")
        async with open_control_client(c.data_dir(3)) as client:
            status = await client.call("status")
            chain = status["chain_id"]
            nonce = (await client.call("ledger.account", account=signer.hex()))["next_nonce"]
            # A stake above the balance.
            raw = make_job_submit(dave, chain, {**TINY, "stake": 5000}, nonce, 0)
            with pytest.raises(RpcError, match="insufficient balance"):
                await client.call("jobs.submit", record=raw.hex())
            # A spec with an invalid field, signed anyway (a client that skipped validation).
            bad = sign(
                dave,
                "job.submit",
                chain,
                {
                    "spec": {**TINY, "hyperparameters": {"epochs": 0}},
                    "stake": 100,
                    "nonce": nonce,
                    "time_ms": 0,
                },
            ).raw
            with pytest.raises(RpcError, match="epochs"):
                await client.call("jobs.submit", record=bad.hex())
        # A dataset blob that nobody has: the job fails with the reason, the stake comes back.
        ghost = {
            "title": "ghost",
            "model": {"kind": "logistic"},
            "dataset": {"name": "file", "blob": "ab" * 32, "label": "y"},
        }
        job_id = await submit_job(c, 3, dave, ghost)
        await wait_for(
            lambda: ended_everywhere(c, job_id, "FAILED", [1, 2, 3, 4]),
            90,
            "the ghost-data job to fail",
        )
        j = await job(c, 2, job_id)
        assert j is not None and "not available" in j["error"]
        account = await try_call(c.data_dir(1), "ledger.account", account=signer.hex())
        assert account["balance"] == 1000

        # A result signed by a node that is not the worker is refused by the ledger ...
        mallory = SigningKey.generate()
        async with open_control_client(c.data_dir(2)) as client:
            forged = make_job_complete(
                mallory, chain, bytes.fromhex(job_id), {"val_accuracy": 1.0}, bytes(32), 1, 1, 1
            )
            with pytest.raises(RpcError, match="job"):
                await client.call("ledger.submit", record=forged.hex())


async def test_cli_submit_follow_and_fetch(net: Cluster, tmp_path: Path) -> None:
    c = net
    env = {**os.environ, "MODELMINE_PASSWORD": "a fine password", "OPENBLAS_NUM_THREADS": "1"}
    d = str(c.data_dir(1))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modelmine", *args, "--data-dir", d],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )

    with trio.fail_after(200):
        await ready(c)
    assert cli("account", "create", "erin").returncode == 0
    assert cli("account", "register", "erin").returncode == 0
    spec = Path(__file__).parents[2] / "examples" / "iris-softmax.toml"
    result = cli("submit", str(spec), "--account", "erin", "--follow", "--json")
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout)
    assert done["status"] == "COMPLETED" and done["metrics"]["val_accuracy"] >= 0.9
    model = tmp_path / "model.npz"
    fetched = cli("fetch", done["job_id"], "-o", str(model))
    assert fetched.returncode == 0, fetched.stderr
    assert "verified" in fetched.stdout and model.stat().st_size > 0
    listed = json.loads(cli("jobs", "--json").stdout)
    assert any(j["job_id"] == done["job_id"] and j["status"] == "COMPLETED" for j in listed)


async def test_failover_after_kill_9_of_the_worker(tmp_path: Path) -> None:
    c = start(tmp_path / "net")
    frank = SigningKey.generate()
    try:
        with trio.fail_after(240):
            await ready(c)
            await register(c, frank, "frank")
            job_id = await submit_job(c, 1, frank, LONG)

            async def checkpointed() -> bool:
                j = await job(c, 1, job_id)
                return bool(j and j["status"] == "RUNNING" and j["checkpoints"] >= 2)

            await wait_for(checkpointed, 90, "the job to run and checkpoint")
            first = await job(c, 1, job_id)
            assert first is not None and first["progress"] < 90, (
                "the job finished too fast to kill halfway"
            )
            victim = c.index_of(first["worker"])
            c.nodes[victim - 1].kill9()
            alive = [i for i in (1, 2, 3, 4) if i != victim]
            await wait_for(
                lambda: ended_everywhere(c, job_id, "COMPLETED", alive),
                150,
                "the job to complete elsewhere",
            )
            done = await job(c, alive[0], job_id)
            assert done is not None
            workers = {x["node_id"] for x in done["contributions"]}
            assert first["worker"] in workers and len(workers) == 2, done["contributions"]
            assert sum(x["credits"] for x in done["contributions"]) == 80
            assert any(e["kind"] == "failover" for e in done["events"])
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop()
