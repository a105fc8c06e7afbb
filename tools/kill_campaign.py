"""Kill campaign: jobs on 4 validator processes while a random one is kill -9'd and restarted.

A bootstrap server and 4 ``modelmine node`` validators (all taking jobs, one slot each) on
free loopback ports, started as tests/integration/cluster.py starts them. Accounts register,
then two things run at once:

- the workload: ``--jobs`` jobs, a mix of tiny ones (iris logistic, 5 epochs) and long ones
  (digits MLP hidden [128], ``--long-epochs`` epochs: seconds of training, so that kills land
  in the middle and exercise checkpoints, resume and failover), submitted from several
  accounts (one record in flight per account), spread over ``--spread`` seconds, each
  through a node that is up (the same signed record is sent again after a kill until it is on
  the ledger);
- ``--rounds`` kill rounds, one node down at a time (3 of 4 validators keep the chain going):
  wait a random pause, ``kill -9`` a random node, wait a random 1-6 s (``--down``), restart it
  on the same data dir and port, and wait until it is back at the others' head (and linked)
  before the next round. ``--outages`` of the rounds instead kill a node that is training
  (a long job if one runs) and keep it down ``--outage-down`` s, past the 30 s without ledger
  activity after which the next node by rank may take the job over: that exercises failover
  (a few seconds down never does: the worker is back and resumes long before).

Then every job must end (COMPLETED is expected of all, on every node alike), every node must
agree on the head, credits must be conserved (total supply = 1000 x registered accounts, each
submitter paid exactly its stakes, each completed job paid 80 to its workers), no node may
have exited on its own, logged a Traceback or banned a peer (every peer here is honest), and
after a clean stop ``modelmine ledger verify`` must pass on every data dir with the same
height and state root. The summary lists every kill (time back at the head, failover), every
failover found in the chain's claim records (and whether a kill of the old worker explains
it), jobs by status and the verify results.

One seed drives every random choice (which node, when, for how long; the order of the jobs,
their accounts and the node each is submitted through), drawn before anything starts; only
an outage's victim depends on which nodes train at that moment (chosen with a generator
seeded by the seed and the round). A failing run prints its seed and the node logs.

The processes run a copy of the packages taken when the campaign starts (``--code``: the
working tree, a git revision such as HEAD, or a directory holding ``modelmine/`` and
``bootstrap/``), so that a node restarted minutes later runs the same code as its peers even
while the checkout is being edited.

Run: ``.venv/bin/python tools/kill_campaign.py --seed 7 --rounds 20 --jobs 30 [--keep DIR]``
(exit status 0 when every check passed, 1 otherwise; ``--keep`` keeps the logs and data
dirs). The pytest version is tests/integration/test_kill_campaign.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from nacl.signing import SigningKey

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modelmine.control_client import (
    ControlError,
    ControlUnavailable,
    RpcError,
    open_control_client,
)
from modelmine.ledger import make_job_submit, make_register, record_id
from tests.integration.cluster import Cluster

NODES = 4
BAN = re.compile(r"closing link to [0-9a-f]+: banned: ")
GRANT = 1000
STAKE = 100
REWARD = 80  # of a completed job's stake, to its workers
ENDED = ("COMPLETED", "FAILED", "CANCELED")


def tiny_spec(title: str) -> dict[str, Any]:
    return {
        "title": title,
        "model": {"kind": "logistic"},
        "dataset": {"name": "iris"},
        "hyperparameters": {"epochs": 5},
    }


def long_spec(title: str, epochs: int) -> dict[str, Any]:
    return {
        "title": title,
        "model": {"kind": "mlp", "hidden": [128]},
        "dataset": {"name": "digits"},
        "hyperparameters": {"epochs": epochs},
    }


# ---- settings and the seeded plan ----


@dataclass(frozen=True)
class Settings:
    seed: int
    rounds: int = 20
    jobs: int = 30
    long_jobs: int = 6
    long_epochs: int = 3000
    accounts: int = 5
    down: tuple[float, float] = (1.0, 6.0)  # seconds a killed node stays down
    pause: tuple[float, float] = (0.0, 4.0)  # seconds before each kill, once caught up
    spread: float = 60.0  # submissions are spread over this many seconds
    outages: int = 0  # rounds that kill a node while it trains and keep it down long
    outage_down: float = 45.0  # > the 30 s without activity after which a job fails over
    code: str = ""  # the nodes run this git revision of the packages; "": the working tree
    catch_up_limit: float = 120.0  # per round: restart -> back at the others' head
    submit_limit: float = 240.0  # per job: until it is on the ledger
    drain_limit: float = 600.0  # after the last round: every job ended
    total_limit: float = 3600.0

    def describe(self) -> str:
        return (
            f"seed={self.seed} rounds={self.rounds} jobs={self.jobs} (long={self.long_jobs}, "
            f"{self.long_epochs} epochs) accounts={self.accounts} down={self.down} "
            f"pause={self.pause} spread={self.spread:g}s outages={self.outages} "
            f"(down {self.outage_down:g}s) code={self.code or 'working tree'}"
        )


@dataclass(frozen=True)
class Kill:
    pause: float
    victim: int
    down: float
    outage: bool = False  # the victim is a node training a job (if any), down for long


@dataclass(frozen=True)
class PlannedJob:
    index: int
    long: bool
    account: int
    via: int  # the node it is first submitted through
    spec: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    kills: list[Kill]
    jobs: list[PlannedJob]


def make_plan(s: Settings) -> Plan:
    """Every random choice of the campaign, from the seed alone."""
    rng = random.Random(s.seed)
    kills = [
        Kill(
            pause=round(rng.uniform(*s.pause), 2),
            victim=rng.randint(1, NODES),
            down=round(rng.uniform(*s.down), 2),
        )
        for _ in range(s.rounds)
    ]
    # Outages in the first two thirds of the rounds, while jobs still come in.
    window = list(range(max(1, 2 * s.rounds // 3)))
    for r in rng.sample(window, min(s.outages, len(window))) if s.rounds else []:
        kills[r] = Kill(kills[r].pause, kills[r].victim, s.outage_down, outage=True)
    kinds = [True] * min(s.long_jobs, s.jobs) + [False] * max(0, s.jobs - s.long_jobs)
    rng.shuffle(kinds)
    jobs = []
    for k, long in enumerate(kinds):
        title = f"kc{s.seed}-{k:02d}-{'long' if long else 'tiny'}"
        spec = long_spec(title, s.long_epochs) if long else tiny_spec(title)
        jobs.append(PlannedJob(k, long, k % s.accounts, rng.randint(1, NODES), spec))
    return Plan(kills, jobs)


# ---- results ----


@dataclass
class RoundResult:
    round: int
    victim: int
    pause: float
    down: float
    height: int  # the network's height when it was killed
    training: list[str]  # jobs the victim was training when killed (short ids)
    outage: bool = False
    killed_at: float = 0.0  # wall clock (block times are the proposers' wall clocks)
    restarted_at: float = 0.0
    restart_to_head: float = 0.0
    kill_to_head: float = 0.0
    failover_after: float | None = None  # kill -> a failover claim of a job it trained


@dataclass
class Failover:
    job: int
    job_id: str
    old: int  # node index
    new: int
    after_claim: float  # old claim -> new claim, block times
    round: int | None = None  # the last kill of the old worker in between, if any
    after_kill: float = 0.0
    old_was_down: bool = False

    def describe(self) -> str:
        if self.round is None:
            cause = "no kill of the old worker in between: it was up (held the job idle)"
        else:
            state = "still down" if self.old_was_down else "back up"
            cause = f"round {self.round} killed it, {self.after_kill:.1f} s before ({state})"
        return (
            f"job {self.job:02d} {self.job_id[:12]}: node-{self.old} -> node-{self.new} "
            f"{self.after_claim:.1f} s after its claim; {cause}"
        )


@dataclass
class JobResult:
    index: int
    long: bool
    job_id: str = ""
    submitted: float = 0.0  # seconds since the start of the campaign
    status: str = "NOT SUBMITTED"
    claims: int = 0
    workers: int = 0
    failover_events: int = 0
    ended_after: float | None = None  # submit block -> end block, seconds


@dataclass
class Report:
    settings: Settings
    root: Path
    rounds: list[RoundResult] = field(default_factory=list)
    jobs: list[JobResult] = field(default_factory=list)
    failovers: list[Failover] = field(default_factory=list)
    verify: dict[int, dict[str, Any]] = field(default_factory=dict)
    heads: dict[int, tuple[int, str] | None] = field(default_factory=dict)
    supply: dict[str, Any] = field(default_factory=dict)
    tracebacks: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # odd, but not a failed check
    bans: dict[str, list[str]] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    logs: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        s = self.settings
        out = [f"kill campaign: {s.describe()}", f"data: {self.root}"]
        out.append("")
        out.append(
            "round victim pause_s down_s height training_when_killed  restart->head_s "
            "kill->head_s kill->failover_s"
        )
        for r in self.rounds:
            training = ",".join(r.training) or "-"
            failover = f"{r.failover_after:.1f}" if r.failover_after is not None else "-"
            out.append(
                f"{r.round:>5} node-{r.victim} {r.pause:>7.2f} {r.down:>6.2f} {r.height:>6} "
                f"{training:<21} {r.restart_to_head:>15.1f} {r.kill_to_head:>12.1f} "
                f"{failover:>16}" + (" outage" if r.outage else "")
            )
        if self.rounds:
            rec = [r.restart_to_head for r in self.rounds]
            whole = [r.kill_to_head for r in self.rounds]
            out.append(
                f"kills: {len(self.rounds)} "
                f"(per node: {dict(sorted(Counter(r.victim for r in self.rounds).items()))}); "
                f"kills of a node while it trained: {sum(1 for r in self.rounds if r.training)}"
            )
            out.append(
                f"restart -> same head: median {statistics.median(rec):.1f} s, "
                f"max {max(rec):.1f} s; kill -> same head: median "
                f"{statistics.median(whole):.1f} s, max {max(whole):.1f} s"
            )
        out.append("")
        statuses = Counter(j.status for j in self.jobs)
        failovers = sum(max(0, j.claims - 1) for j in self.jobs)
        events = sum(j.failover_events for j in self.jobs)
        out.append(f"jobs by status: {dict(sorted(statuses.items()))}")
        out.append(
            f"failovers: {failovers} on the chain (claims after the first, in "
            f"{sum(1 for j in self.jobs if j.claims > 1)} jobs); {events} 'failover' events "
            "seen in jobs.get (nodes only keep events of blocks they saw since their start)"
        )
        out.extend(f"  failover: {f.describe()}" for f in self.failovers)
        for kind, jobs in (
            ("long", [j for j in self.jobs if j.long]),
            ("tiny", [j for j in self.jobs if not j.long]),
        ):
            ended = [j.ended_after for j in jobs if j.ended_after is not None]
            if ended:
                out.append(
                    f"{kind} jobs: {len(jobs)}, submit -> end block: median "
                    f"{statistics.median(ended):.1f} s, max {max(ended):.1f} s"
                )
        for j in self.jobs:
            if j.claims > 1 or j.status != "COMPLETED":
                out.append(
                    f"  job {j.index:02d} {j.job_id[:12]} {'long' if j.long else 'tiny'} "
                    f"{j.status}: claims {j.claims}, workers {j.workers}, "
                    f"ended after {j.ended_after if j.ended_after is not None else '-'} s"
                )
        out.append("")
        out.append(f"heads before stop: {sorted({h for h in self.heads.values() if h}, key=str)}")
        for i, v in sorted(self.verify.items()):
            out.append(
                f"ledger verify node-{i}: exit {v.get('exit')} ok={v.get('ok')} "
                f"height={v.get('height')} state_root={str(v.get('state_root'))[:16]} "
                f"records={v.get('records')} {v.get('seconds')} s"
            )
        if self.supply:
            out.append(f"credits: {self.supply}")
        for name, lines in sorted(self.tracebacks.items()):
            out.append(f"Traceback in {name}: {len(lines)}")
        for name, lines in sorted(self.bans.items()):
            out.append(f"bans by {name}: {len(lines)}")
            out.extend(f"  {line}" for line in lines[:5])
        out.extend(f"note: {n}" for n in self.notes)
        out.append("phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in self.phases.items()))
        out.append("")
        if self.problems:
            out.append(f"FAILED (seed {s.seed}):")
            out.extend(f"  - {p}" for p in self.problems)
        else:
            out.append(f"PASSED (seed {s.seed})")
        return "\n".join(out)


class CampaignFailed(AssertionError):
    pass


# ---- the code the nodes run ----

# Processes restart for minutes while others may edit the checkout: every process runs a
# copy of the packages taken at the start, so a restarted node never runs other code than its
# peers (a mixed network is a different experiment). The copy comes first on sys.path, before
# the editable install's finder.
RUN_SNAPSHOT = (
    "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); "
    "runpy.run_module('modelmine', run_name='__main__', alter_sys=True)"
)


def snapshot_code(into: Path, rev: str = "") -> Path:
    """Copy the packages the processes run: the working tree's, a git revision's or a
    directory's."""
    repo = Path(__file__).resolve().parents[1]
    packages = ("modelmine", "bootstrap")
    if rev and Path(rev).is_dir():  # a directory holding the packages (e.g. a patched copy)
        repo, rev = Path(rev).resolve(), ""
    if not rev:
        for package in packages:
            shutil.copytree(
                repo / package, into / package, ignore=shutil.ignore_patterns("__pycache__")
            )
        return into
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", rev, *packages],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


# ---- talking to nodes ----


def say(start: float, text: str) -> None:
    print(f"[{time.monotonic() - start:7.1f}s] {text}", flush=True)


async def call(data_dir: Path, method: str, limit: float = 10.0, **params: Any) -> Any:
    """One call; None when the node is not there (killed, restarting), does not answer or
    answers with an error (such as a job it does not know yet)."""
    try:
        async with open_control_client(data_dir, call_timeout=limit) as client:
            return await client.call(method, **params)
    except (ControlError, OSError):
        return None


async def poll(predicate: Callable[[], Awaitable[bool]], limit: float, what: str) -> float:
    start = time.monotonic()
    with trio.move_on_after(limit):
        while True:
            if await predicate():
                return time.monotonic() - start
            await trio.sleep(0.25)
    raise CampaignFailed(f"timed out after {limit:g} s waiting for {what}")


class Campaign:
    def __init__(self, settings: Settings, root: Path) -> None:
        self.s = settings
        self.plan = make_plan(settings)
        self.c = Cluster(root, NODES)
        self.code = snapshot_code(root / "code", settings.code)
        for proc in [self.c.bootstrap, *self.c.nodes]:
            proc.argv = self.modelmine(*proc.argv[3:])
        self.report = Report(settings, root)
        self.report.jobs = [JobResult(j.index, j.long) for j in self.plan.jobs]
        self.keys = [SigningKey.generate() for _ in range(settings.accounts)]
        self.down: int | None = None  # the node that is killed right now
        self.nonces: dict[int, int] = {}  # account -> its next nonce
        self.t0 = time.monotonic()
        self.chain_id = ""
        self.kills_done = False

    def say(self, text: str) -> None:
        say(self.t0, text)

    def modelmine(self, *args: str) -> list[str]:
        """``python -m modelmine ARGS`` running the code as it was when the campaign began."""
        return [sys.executable, "-c", RUN_SNAPSHOT, str(self.code), *args]

    def up(self) -> list[int]:
        return [i for i in range(1, NODES + 1) if i != self.down]

    def dir(self, i: int) -> Path:
        return self.c.data_dir(i)

    async def heads(self, nodes: list[int]) -> dict[int, tuple[int, str] | None]:
        out: dict[int, tuple[int, str] | None] = {}
        for i in nodes:
            s = await call(self.dir(i), "status")
            out[i] = (s["height"], s["head"]) if s else None
        return out

    # ---- phases ----

    async def form(self) -> None:
        async def linked() -> bool:
            for i in range(1, NODES + 1):
                s = await call(self.dir(i), "status")
                peers = await call(self.dir(i), "peers")
                online = sum(p["status"] == "ONLINE" for p in peers or [])
                if not s or s["peers"] < 2 or online < NODES - 1:
                    return False
            return True

        await poll(linked, 90, "the network to form")
        status = await call(self.dir(1), "status")
        self.chain_id = status["chain_id"]

    async def next_nonce(self, signer: bytes) -> int:
        for i in [*self.up(), *self.up()]:
            account = await call(self.dir(i), "ledger.account", account=signer.hex())
            if account is not None:
                return int(account["next_nonce"])
            await trio.sleep(1)
        raise CampaignFailed(f"no node answered ledger.account for {signer.hex()[:12]}")

    async def register(self) -> None:
        async def one(n: int) -> None:
            key = self.keys[n]
            signer = bytes(key.verify_key)
            nonce = await self.next_nonce(signer)
            raw = make_register(key, self.chain_id, f"kc{n}", nonce)
            await self.until_on_ledger(
                raw, 1 + n % NODES, lambda c: self.registered(c, signer), f"registration {n}"
            )
            self.nonces[n] = nonce + 1  # kept here: a node that lags would say otherwise

        async with trio.open_nursery() as nursery:
            for n in range(self.s.accounts):
                nursery.start_soon(one, n)

    @staticmethod
    async def registered(client: Any, signer: bytes) -> bool:
        account = await client.call("ledger.account", account=signer.hex())
        return bool(account["registered"])

    async def until_on_ledger(
        self,
        raw: bytes,
        via: int,
        landed: Callable[[Any], Awaitable[bool]],
        what: str,
        method: str = "ledger.submit",
    ) -> None:
        """Send the same signed record through a node that is up until the ledger has it."""
        last = ""
        refusals = 0
        with trio.move_on_after(self.s.submit_limit):
            attempt = 0
            while True:
                nodes = self.up()
                first = nodes.index(via) if via in nodes else 0
                i = nodes[(first + attempt) % len(nodes)]
                attempt += 1
                try:
                    async with open_control_client(self.dir(i), call_timeout=15) as client:
                        if await landed(client):
                            return
                        try:
                            sent = await client.call(method, record=raw.hex())
                        except RpcError as exc:
                            last = f"node-{i} refused it: {exc}"
                            if await landed(client):
                                return
                            refusals += 1
                            if refusals >= 10:  # not a node that lags behind: a real refusal
                                raise CampaignFailed(f"{what}: {last}") from None
                            await trio.sleep(1)
                            continue
                        rid = sent.get("record_id") or sent.get("job_id")
                        await client.request(
                            "ledger.wait", {"record_id": rid, "timeout": 20}, call_timeout=30
                        )
                        if await landed(client):
                            return
                        last = f"node-{i}: not final within 20 s"
                except (ControlUnavailable, OSError) as exc:
                    last = f"node-{i}: {exc}"
                    await trio.sleep(0.5)
        raise CampaignFailed(f"{what} not on the ledger after {self.s.submit_limit:g} s: {last}")

    async def workload(self) -> None:
        by_account: dict[int, list[PlannedJob]] = {}
        for job in self.plan.jobs:
            by_account.setdefault(job.account, []).append(job)

        async def account(n: int, jobs: list[PlannedJob]) -> None:
            key = self.keys[n]
            nonce = self.nonces[n]
            for job in jobs:
                due = self.t_work + job.index * self.s.spread / max(1, self.s.jobs)
                await trio.sleep(max(0.0, due - time.monotonic()))
                raw = make_job_submit(key, self.chain_id, job.spec, nonce, int(time.time() * 1000))
                job_id = record_id(raw).hex()
                result = self.report.jobs[job.index]
                result.job_id = job_id
                result.submitted = time.monotonic() - self.t0
                result.status = "SUBMITTING"

                async def landed(client: Any, job_id: str = job_id) -> bool:
                    try:
                        await client.call("jobs.get", job_id=job_id)
                    except RpcError:
                        return False
                    return True

                await self.until_on_ledger(
                    raw, job.via, landed, f"job {job.index} ({job_id[:12]})", "jobs.submit"
                )
                result.status = "SUBMITTED"
                nonce += 1
                self.say(
                    f"job {job.index:02d} {job_id[:12]} "
                    f"{'long' if job.long else 'tiny'} on the ledger (account {n})"
                )

        async with trio.open_nursery() as nursery:
            for n, jobs in by_account.items():
                nursery.start_soon(account, n, jobs)

    async def running(self) -> dict[int, list[dict[str, Any]]] | None:
        """The jobs each node trains, as the ledger of a node that is up says."""
        for i in self.up():
            jobs = await call(self.dir(i), "jobs.list", status="RUNNING")
            if jobs is not None:
                out: dict[int, list[dict[str, Any]]] = {}
                for j in jobs:
                    if j["worker"] is not None:
                        out.setdefault(self.c.index_of(j["worker"]), []).append(j)
                return out
        return None

    async def pick_trainer(self, r: int, fallback: int) -> int:
        """For an outage: a node training a long job (a tiny one after 20 s), waiting up to
        40 s for one; chosen with a generator seeded by the seed and the round."""
        rng = random.Random(self.s.seed * 1_000_003 + r)
        start = time.monotonic()
        while time.monotonic() - start < 40:
            running = await self.running() or {}
            longs = [i for i, jobs in running.items() if any("long" in j["title"] for j in jobs)]
            pool = sorted(longs or (running if time.monotonic() - start > 20 else []))
            if pool:
                return rng.choice(pool)
            await trio.sleep(0.5)
        return fallback

    async def kill_rounds(self) -> None:
        for r, kill in enumerate(self.plan.kills, 1):
            await trio.sleep(kill.pause)
            victim = kill.victim
            if kill.outage:
                victim = await self.pick_trainer(r, victim)
            others = [i for i in range(1, NODES + 1) if i != victim]
            training = [j["job_id"][:12] for j in (await self.running() or {}).get(victim, [])]
            before = await self.heads(others)
            height = max((h[0] for h in before.values() if h), default=0)
            proc = self.c.nodes[victim - 1]
            if not proc.alive:
                raise CampaignFailed(f"round {r}: node-{victim} is not running before the kill")
            self.down = victim
            t_kill, killed_at = time.monotonic(), time.time()
            proc.kill9()
            self.say(
                f"round {r}: kill -9 node-{victim} at height {height} "
                f"(training {training or 'nothing'}), down {kill.down} s"
                + (" (outage)" if kill.outage else "")
            )
            await trio.sleep(kill.down)
            proc.start()
            t_start, restarted_at = time.monotonic(), time.time()

            async def back(
                victim: int = victim, height: int = height, others: list[int] = others
            ) -> bool:
                s = await call(self.dir(victim), "status")
                if not s or s["peers"] < 2 or s["height"] < height:
                    return False
                others_now = await self.heads(others)
                return (s["height"], s["head"]) in set(others_now.values())

            try:
                await poll(back, self.s.catch_up_limit, f"node-{victim} to catch up (round {r})")
            except CampaignFailed as exc:
                statuses = await self.heads(list(range(1, NODES + 1)))
                raise CampaignFailed(f"{exc}; heads {statuses}") from None
            now = time.monotonic()
            self.down = None
            result = RoundResult(
                r,
                victim,
                kill.pause,
                kill.down,
                height,
                training,
                outage=kill.outage,
                killed_at=killed_at,
                restarted_at=restarted_at,
                restart_to_head=now - t_start,
                kill_to_head=now - t_kill,
            )
            self.report.rounds.append(result)
            self.say(
                f"round {r}: node-{victim} back at the head {now - t_start:.1f} s after restart"
            )
        self.kills_done = True

    async def watch(self) -> None:
        """A node that dies on its own (not killed by us) is a crash."""
        while True:
            for i in range(1, NODES + 1):
                proc = self.c.nodes[i - 1]
                if i != self.down and proc.process is not None and not proc.alive:
                    rc = proc.process.returncode
                    raise CampaignFailed(f"node-{i} exited on its own with status {rc}")
            if not self.c.bootstrap.alive:
                raise CampaignFailed("the bootstrap server exited on its own")
            await trio.sleep(0.5)

    async def drain(self) -> None:
        ids = [j.job_id for j in self.report.jobs]

        async def all_ended() -> bool:
            for i in range(1, NODES + 1):
                jobs = await call(self.dir(i), "jobs.list")
                if jobs is None:
                    return False
                states = {j["job_id"]: j["status"] for j in jobs}
                if not all(states.get(x) in ENDED for x in ids):
                    return False
            return True

        try:
            await poll(all_ended, self.s.drain_limit, "every job to end on every node")
        except CampaignFailed as exc:
            stuck = []
            for j in self.report.jobs:
                got = await call(self.dir(1), "jobs.get", job_id=j.job_id) if j.job_id else None
                if got is None or got["status"] not in ENDED:
                    stuck.append(describe_job(j, got))
            raise CampaignFailed(f"{exc}; not ended: " + " | ".join(stuck)) from None

    async def same_head(self) -> None:
        nodes = list(range(1, NODES + 1))

        async def agreed() -> bool:
            h = await self.heads(nodes)
            return None not in h.values() and len(set(h.values())) == 1

        try:
            await poll(agreed, 60, "the same head on every node")
        finally:
            self.report.heads = await self.heads(nodes)

    async def collect(self) -> None:
        """Job outcomes, failovers (from the chain's claim records) and credits."""
        claims: dict[str, list[tuple[float, str]]] = {}  # job -> (block time, claimer)
        async with open_control_client(self.dir(1), call_timeout=30) as client:
            head = (await client.call("status"))["height"]
            for h in range(1, head + 1):
                block = await client.call("ledger.block", height=h)
                for rec in block["records"]:
                    if rec["kind"] == "job.claim":
                        job_id = rec["payload"]["job_id"]
                        claims.setdefault(job_id, []).append((block["time"], rec["signer"]))
        # Each failover, put down to the last kill of the old worker since it claimed the
        # job, if there is one; otherwise the old worker was up all along.
        index = {j.job_id: j.index for j in self.report.jobs}
        for job_id, got in claims.items():
            for (before, old), (when, new) in itertools.pairwise(got):
                f = Failover(
                    index.get(job_id, -1),
                    job_id,
                    self.c.index_of(old),
                    self.c.index_of(new),
                    round(when - before, 1),
                )
                for r in self.report.rounds:
                    if r.victim == f.old and before <= r.killed_at <= when:
                        f.round, f.after_kill = r.round, round(when - r.killed_at, 1)
                        f.old_was_down = when < r.restarted_at
                if f.round is not None:
                    r = self.report.rounds[f.round - 1]
                    if r.failover_after is None or f.after_kill < r.failover_after:
                        r.failover_after = f.after_kill
                self.report.failovers.append(f)
        views: dict[int, dict[str, dict[str, Any]]] = {}
        for i in range(1, NODES + 1):
            views[i] = {}
            for j in self.report.jobs:
                got = await call(self.dir(i), "jobs.get", job_id=j.job_id)
                if got is not None:
                    views[i][j.job_id] = got
        for j in self.report.jobs:
            first = views[1].get(j.job_id)
            if first is None:
                self.report.problems.append(f"job {j.index} {j.job_id[:12]} unknown to node-1")
                continue
            j.status = first["status"]
            j.claims = len(claims.get(j.job_id, []))
            j.workers = len(first["workers"])
            seen = {
                e["height"]
                for i in views
                for e in (views[i].get(j.job_id) or {}).get("events", [])
                if e["kind"] == "failover"
            }
            j.failover_events = len(seen)
            created = first["created"]
            if first.get("ended"):
                j.ended_after = round(first["ended"] - created, 1)
            if j.status != "COMPLETED":
                self.report.problems.append(
                    f"job {j.index} {j.job_id[:12]} ended {j.status}: {first.get('error')}"
                )
            elif sum(x["credits"] for x in first["contributions"]) != REWARD:
                self.report.problems.append(
                    f"job {j.index} {j.job_id[:12]} paid its workers "
                    f"{first['contributions']}, not {REWARD} in all"
                )
            for i in range(2, NODES + 1):
                other = views[i].get(j.job_id)
                keys = ("status", "worker", "metrics", "model_sha256", "block", "contributions")
                if other is None or any(other[k] != first[k] for k in keys):
                    self.report.problems.append(
                        f"job {j.index} {j.job_id[:12]}: node-{i} sees it otherwise than node-1"
                    )
        # Credits: the same on every node, conserved, and each submitter paid its stakes.
        stats = {i: await call(self.dir(i), "ledger.stats") for i in range(1, NODES + 1)}
        exact = {
            i: {k: v for k, v in (s or {}).items() if k != "average_accuracy"}
            for i, s in stats.items()
        }
        if len({json.dumps(s, sort_keys=True) for s in exact.values()}) != 1:
            self.report.problems.append(f"ledger.stats differ between nodes: {stats}")
        averages = {i: (s or {}).get("average_accuracy") for i, s in stats.items()}
        if len(set(averages.values())) != 1:  # a float sum in another order: not the ledger
            self.report.notes.append(f"ledger.stats average_accuracy differs: {averages}")
        accounts = await call(self.dir(1), "ledger.accounts") or []
        registered = sum(1 for a in accounts if a["registered"])
        s1 = stats[1] or {}
        balances = sum(a["balance"] for a in accounts)
        self.report.supply = {
            "total_supply": s1.get("total_supply"),
            "registered": registered,
            "balances": balances,
            "staked": s1.get("credits_staked"),
        }
        if s1.get("total_supply") != GRANT * registered:
            self.report.problems.append(
                f"total_supply {s1.get('total_supply')} != {GRANT} x {registered} registered"
            )
        if balances + (s1.get("credits_staked") or 0) > (s1.get("total_supply") or 0):
            self.report.problems.append(
                f"balances {balances} + staked {s1.get('credits_staked')} exceed the supply"
            )
        for n, key in enumerate(self.keys):
            signer = bytes(key.verify_key).hex()
            account = next((a for a in accounts if a["account"] == signer), None)
            completed = sum(
                1
                for job, j in zip(self.plan.jobs, self.report.jobs, strict=True)
                if job.account == n and j.status == "COMPLETED"
            )
            want = GRANT - STAKE * completed
            if account is None or not account["registered"] or account["balance"] != want:
                self.report.problems.append(
                    f"account {n}: {account}, expected balance {want} ({completed} completed)"
                )

    async def stop_and_verify(self) -> None:
        procs = [p for p in self.c.nodes if p.alive]
        for p in procs:  # all at once: no block can be committed by some and not others
            assert p.process is not None
            p.process.send_signal(signal.SIGTERM)
        for p in procs:
            p.stop()
        for p in procs:
            if p.process is not None and p.process.returncode not in (0, -signal.SIGTERM):
                self.report.problems.append(
                    f"{p.name} exited with status {p.process.returncode} on SIGTERM"
                )
        self.c.stop()
        for i in range(1, NODES + 1):
            with trio.move_on_after(120) as verifying:
                result = await trio.run_process(
                    self.modelmine("ledger", "verify", "--json", "--data-dir", str(self.dir(i))),
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
            if verifying.cancelled_caught:
                self.report.problems.append(f"ledger verify on node-{i} took over 120 s")
                continue
            try:
                v = json.loads(result.stdout)
            except ValueError:
                v = {"ok": False, "output": (result.stdout + result.stderr).decode()[-2000:]}
            v["exit"] = result.returncode
            self.report.verify[i] = v
            if result.returncode != 0 or not v.get("ok"):
                self.report.problems.append(f"ledger verify failed on node-{i}: {v}")
        tips = {(v.get("height"), v.get("state_root")) for v in self.report.verify.values()}
        if len(tips) != 1:
            self.report.problems.append(f"verified chains end differently: {tips}")

    def scan_logs(self) -> None:
        for proc in [self.c.bootstrap, *self.c.nodes]:
            text = proc.log()
            lines = text.splitlines()
            found = []
            for n, line in enumerate(lines):
                if line.startswith("Traceback"):
                    found.append("\n".join(lines[max(0, n - 2) : n + 25]))
            if found:
                self.report.tracebacks[proc.name] = found
                self.report.problems.append(
                    f"{proc.name} logged {len(found)} Traceback(s); the first:\n{found[0]}"
                )
            # Every peer here is an honest node: a ban is a node misjudging another.
            bans = [line for line in lines if BAN.search(line)]
            if bans:
                self.report.bans[proc.name] = bans
                self.report.problems.append(
                    f"{proc.name} banned honest peers {len(bans)} time(s); the first: {bans[0]}"
                )

    # ---- the whole run ----

    async def run(self) -> Report:
        phases = self.report.phases
        self.say(f"kill campaign {self.s.describe()}")
        self.say(
            "plan: kills "
            + " ".join(f"{k.pause:.1f}/node-{k.victim}/{k.down:.1f}" for k in self.plan.kills)
        )
        self.c.start()
        try:
            with trio.fail_after(self.s.total_limit):
                mark = time.monotonic()
                await self.form()
                await self.register()
                phases["start+register"] = time.monotonic() - mark
                self.say(f"network formed, {self.s.accounts} accounts registered")
                mark = self.t_work = time.monotonic()
                async with trio.open_nursery() as nursery:
                    watcher = trio.CancelScope()

                    async def watch() -> None:
                        with watcher:
                            await self.watch()

                    nursery.start_soon(watch)
                    async with trio.open_nursery() as inner:
                        inner.start_soon(self.workload)
                        inner.start_soon(self.kill_rounds)
                    phases["kills+submit"] = time.monotonic() - mark
                    self.say("all rounds done and all jobs submitted; waiting for the jobs")
                    mark = time.monotonic()
                    await self.drain()
                    phases["drain"] = time.monotonic() - mark
                    watcher.cancel()
                mark = time.monotonic()
                await self.same_head()
                await self.collect()
                phases["checks"] = time.monotonic() - mark
        except BaseException as exc:
            failures = leaves(exc)
            if not all(
                isinstance(e, CampaignFailed | trio.TooSlowError | ControlError) for e in failures
            ):
                raise
            self.report.problems.extend(f"{type(e).__name__}: {e}" for e in failures)
        finally:
            mark = time.monotonic()
            with trio.CancelScope(shield=True):
                await self.stop_and_verify()
            phases["stop+verify"] = time.monotonic() - mark
            self.scan_logs()
            self.report.logs = self.c.logs()
            phases["total"] = time.monotonic() - self.t0
        return self.report

    t_work: float = 0.0


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def describe_job(j: JobResult, got: dict[str, Any] | None) -> str:
    if got is None:
        return f"job {j.index} {j.job_id[:12] or '(not submitted)'}: not on the ledger"
    events = [(e["kind"], e["height"]) for e in got.get("events", [])][-6:]
    return (
        f"job {j.index} {j.job_id[:12]} {got['status']} worker {str(got['worker'])[:8]} "
        f"workers {[w[:8] for w in got['workers']]} checkpoints {got['checkpoints']} "
        f"steps {got['steps']} progress {got['progress']} events {events}"
    )


async def run_campaign(settings: Settings, root: Path) -> Report:
    return await Campaign(settings, root).run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--jobs", type=int, default=30)
    p.add_argument("--long-jobs", type=int, default=6)
    p.add_argument("--long-epochs", type=int, default=3000)
    p.add_argument("--accounts", type=int, default=5)
    p.add_argument("--down", type=float, nargs=2, default=(1.0, 6.0), metavar=("MIN", "MAX"))
    p.add_argument("--pause", type=float, nargs=2, default=(0.0, 4.0), metavar=("MIN", "MAX"))
    p.add_argument("--spread", type=float, default=None, help="seconds to spread submissions over")
    p.add_argument(
        "--outages",
        type=int,
        default=3,
        help="rounds that kill a node that trains and keep it down --outage-down s (failover)",
    )
    p.add_argument("--outage-down", type=float, default=45.0)
    p.add_argument(
        "--code",
        default="",
        metavar="REV|DIR",
        help="run the nodes on this git revision (e.g. HEAD), or on the packages in DIR, "
        "instead of the working tree",
    )
    p.add_argument("--keep", type=Path, default=None, help="keep the network here (logs)")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    settings = Settings(
        seed=seed,
        rounds=args.rounds,
        jobs=args.jobs,
        long_jobs=args.long_jobs,
        long_epochs=args.long_epochs,
        accounts=args.accounts,
        down=tuple(args.down),
        pause=tuple(args.pause),
        spread=args.spread if args.spread is not None else 6.0 * args.rounds + 30 * args.outages,
        outages=args.outages,
        outage_down=args.outage_down,
        code=args.code,
    )
    print(f"seed {seed}", flush=True)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        root = args.keep / f"seed-{seed}"
        report = trio.run(run_campaign, settings, root)
    else:
        with tempfile.TemporaryDirectory(prefix="kill-campaign-") as tmp:
            report = trio.run(run_campaign, settings, Path(tmp) / "net")
            if not report.ok:
                print(report.logs)
    print(report.summary(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
