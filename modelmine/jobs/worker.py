"""This node's part in running jobs: claiming by rank, training off the event loop,
checkpoints, progress, results, failover and cancellation.

Everything authoritative is on the ledger: a job is assigned when its ``job.claim`` record is
final, its work is what its ``job.checkpoint`` records say, and it ends with one ``job.complete``,
``job.fail`` or ``job.cancel``. This module only decides when this node should write those
records, and does the training in between.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio
from nacl.signing import SigningKey

from modelmine import wire
from modelmine.jobs.assignment import rank
from modelmine.jobs.outbox import Outbox
from modelmine.jobs.progress import (
    PROGRESS_DOMAIN,
    PROGRESS_FAMILY,
    ProgressReport,
    finite,
    progress_topic,
)
from modelmine.ledger import (
    STALL_MS,
    Job,
    JobStatus,
    LedgerState,
    make_job_checkpoint,
    make_job_claim,
    make_job_complete,
    make_job_fail,
)
from modelmine.p2p.blobs import BlobError, BlobService
from modelmine.p2p.host import Host, RequestFailed
from modelmine.p2p.membership import Membership, Status
from modelmine.p2p.overlay import Verdict
from modelmine.signing import Signed, sign
from modelmine.trainer import (
    CheckpointError,
    DataError,
    JobSpec,
    Progress,
    Run,
    RunStatus,
    SpecError,
    TrainingFailed,
    load_dataset,
)

log = logging.getLogger(__name__)

SCHEDULE_EVERY: Final = 2.0
CHECKPOINT_EVERY: Final = 5.0  # seconds of training between checkpoints
CHECKPOINT_FETCH: Final = 10.0  # at most this long to fetch a checkpoint to resume from
PROGRESS_EVERY: Final = 0.5  # at most this often on the network, per job
CLAIM_RETRY: Final = 10.0
HISTORY: Final = 600  # progress points kept per job, for plots
MAX_FOLLOWED: Final = 64  # jobs whose live progress one node follows at once
MAX_DATASET: Final = 256 * 1024 * 1024
MAX_CHECKPOINT: Final = 256 * 1024 * 1024
CLAIM_SKEW_MS: Final = 10_000  # block times vs a worker's clock (consensus MAX_FUTURE_MS)


@dataclass
class _Training:
    job_id: bytes
    stop: bool = False
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class JobWorker:
    def __init__(
        self,
        *,
        key: SigningKey,
        chain_id: str,
        state: LedgerState,
        outbox: Outbox,
        blobs: BlobService,
        host: Host,
        members: Membership,
        slots: int,
        maintenance: bool,
        on_progress: Callable[[ProgressReport], None] | None = None,
    ) -> None:
        self.key = key
        self.node_id = bytes(key.verify_key)
        self.chain_id = chain_id
        self.state = state
        self.outbox = outbox
        self.blobs = blobs
        self.host = host
        self.members = members
        self.slots = slots
        self.maintenance = maintenance
        self.on_progress = on_progress
        self.running: dict[bytes, _Training] = {}
        self.history: dict[bytes, deque[dict[str, Any]]] = {}
        self.latest: dict[bytes, ProgressReport] = {}
        self._claimed_at: dict[bytes, float] = {}
        self._claiming: set[bytes] = set()  # claims sent, not final (or lost) yet
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._last_sent: dict[bytes, float] = {}
        # Which jobs' live progress this node wants: (these job ids, every running job).
        self.interest: Callable[[], tuple[set[bytes], bool]] = lambda: (set(), False)
        host.overlay.register_topic(PROGRESS_FAMILY + "/", self._check_progress, followed=True)
        host.register_handler("blob.providers", self._serve_nothing)

    @property
    def busy(self) -> int:
        return len(self.running)

    def wake(self) -> None:
        """A block was committed: look again at what to claim, start or stop."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                with trio.move_on_after(SCHEDULE_EVERY):
                    await self._wake.wait()
                self._wake = trio.Event()
                self._schedule()
                self._follow_progress()

    # ---- deciding ----

    def _eligible(self) -> list[bytes]:
        nodes = []
        if not self.maintenance and self.busy < self.slots:
            nodes.append(self.node_id)
        for m in self.members:
            hb = m.heartbeat
            if (
                m.node_id != self.node_id
                and m.status is Status.ONLINE
                and hb.capacity["busy"] < hb.capacity["slots"]
            ):
                nodes.append(m.node_id)
        return nodes

    def _worker_gone(self, job: Job, now_ms: int) -> bool:
        if job.worker is None:
            return False
        member = self.members.get(job.worker)
        offline = member is None or member.status in (Status.OFFLINE, Status.SUSPECT)
        stale = now_ms - job.last_activity_ms >= STALL_MS
        return stale and (offline or job.worker != self.node_id)

    def _schedule(self) -> None:
        assert self._nursery is not None
        now = trio.current_time()
        now_ms = int(time.time() * 1000)
        # Stop training that the ledger no longer gives us.
        for job_id, training in list(self.running.items()):
            job = self.state.job(job_id)
            if job is None or job.status is not JobStatus.RUNNING or job.worker != self.node_id:
                training.stop = True
        # Start training the ledger gives us.
        for job in self.state.jobs(JobStatus.RUNNING):
            if job.worker == self.node_id and job.id not in self.running:
                if self.busy >= self.slots:
                    break
                training = _Training(job.id)
                self.running[job.id] = training
                self._nursery.start_soon(self._train, job.id, training)
        # A slot is taken by training, by a job the ledger gave us that has not started, and
        # by a claim in flight: claim no more than we can train.
        waiting = sum(
            1
            for j in self.state.jobs(JobStatus.RUNNING)
            if j.worker == self.node_id and j.id not in self.running
        )
        if self.maintenance or self.busy + waiting + len(self._claiming) >= self.slots:
            return
        # Claim what is ours by rank: new jobs, and jobs whose worker went away.
        candidates = list(self.state.jobs(JobStatus.PENDING))
        candidates += [
            j for j in self.state.jobs(JobStatus.RUNNING) if self._worker_gone(j, now_ms)
        ]
        eligible = self._eligible()
        for job in candidates:
            if now - self._claimed_at.get(job.id, -1e9) < CLAIM_RETRY:
                continue
            pool = [n for n in eligible if n != job.worker]
            if pool and rank(job.id, pool)[0] == self.node_id:
                self._claimed_at[job.id] = now
                self._claiming.add(job.id)
                self._nursery.start_soon(self._claim, job.id)
                break  # one claim at a time; the next block brings the next decision

    async def _claim(self, job_id: bytes) -> None:
        try:
            height = await self.outbox.send(
                lambda nonce: make_job_claim(self.key, self.chain_id, job_id, nonce),
                f"claim of job {job_id.hex()[:12]}",
            )
        finally:
            self._claiming.discard(job_id)
        if height is not None:
            log.info("claimed job %s in block %d", job_id.hex()[:12], height)
            self.wake()

    # ---- training ----

    async def _train(self, job_id: bytes, training: _Training) -> None:
        try:
            reason = await self._train_job(job_id, training)
            if reason is not None and not training.stop:
                log.warning("job %s failed: %s", job_id.hex()[:12], reason)
                await self.outbox.send(
                    lambda nonce: make_job_fail(
                        self.key, self.chain_id, job_id, reason[:256], nonce
                    ),
                    f"failure of job {job_id.hex()[:12]}",
                )
        finally:
            self.running.pop(job_id, None)
            self.wake()

    async def _train_job(self, job_id: bytes, training: _Training) -> str | None:
        job = self.state.job(job_id)
        if job is None:
            return None
        try:
            spec = JobSpec.from_dict(dict(job.spec))
            if spec.dataset.path:
                return "the dataset is a local path on the submitter's machine, not a shared blob"
            data_path: Path | None = None
            if spec.dataset.blob:
                data_path = await self._fetch(spec.dataset.blob, MAX_DATASET, job.worker)
            dataset = await trio.to_thread.run_sync(
                lambda: load_dataset(spec.dataset, resolve_file=lambda _: str(data_path))
            )
            run = await self._start_run(job, spec, dataset)
        except (SpecError, DataError, CheckpointError, BlobError, TrainingFailed) as exc:
            return str(exc)
        log.info("training job %s from step %d of %d", job_id.hex()[:12], run.step, run.total_steps)
        # The ledger counts samples processed by all workers so far. A run resumed from the
        # latest checkpoint already counts them; one started over (no checkpoint could be
        # fetched) adds its own on top, so the recorded total never goes backwards.
        samples_offset = max(0, job.samples - run.samples_seen)
        chunk = 20
        while True:
            started = time.monotonic()
            step_before = run.step
            try:
                result = await trio.to_thread.run_sync(
                    functools.partial(
                        run.train,
                        on_progress=functools.partial(self._progress_from_thread, job_id),
                        should_stop=lambda: training.stop,
                        max_steps=chunk,
                    ),
                    abandon_on_cancel=True,
                )
            except TrainingFailed as exc:
                return str(exc)
            if training.stop or result.status is RunStatus.CANCELED:
                log.info("stopped training job %s at step %d", job_id.hex()[:12], run.step)
                return None
            samples = samples_offset + int(result.metrics.get("samples_seen", 0))
            if result.status is RunStatus.COMPLETED:
                return await self._complete(job_id, run, result.metrics, samples)
            elapsed = max(1e-3, time.monotonic() - started)
            rate = (run.step - step_before) / elapsed
            chunk = max(1, int(rate * CHECKPOINT_EVERY))
            digest = await trio.to_thread.run_sync(
                lambda: self.blobs.store.put(run.checkpoint_bytes())
            )
            step = run.step
            make = functools.partial(
                make_job_checkpoint,
                self.key,
                self.chain_id,
                job_id,
                step,
                samples,
                bytes.fromhex(digest),
            )
            await self.outbox.send(make, f"checkpoint of job {job_id.hex()[:12]} at step {step}")

    async def _start_run(self, job: Job, spec: JobSpec, dataset: Any) -> Run:
        if job.checkpoint_sha256 is None:
            return await trio.to_thread.run_sync(lambda: Run(spec, dataset))
        digest = job.checkpoint_sha256.hex()
        previous = [c.node for c in job.claims if c.node != self.node_id]
        try:
            # Bounded: the claim's block started the 30 s the ledger allows before another
            # node may take the job; the first checkpoint must land well within it.
            with trio.fail_after(CHECKPOINT_FETCH):
                path = await self._fetch(digest, MAX_CHECKPOINT, *previous)
        except trio.TooSlowError:
            log.warning(
                "job %s: checkpoint %s not fetched in time; starting over",
                job.id.hex()[:12],
                digest[:12],
            )
            return await trio.to_thread.run_sync(lambda: Run(spec, dataset))
        except BlobError as exc:
            log.warning(
                "job %s: no checkpoint to resume (%s); starting over", job.id.hex()[:12], exc
            )
            return await trio.to_thread.run_sync(lambda: Run(spec, dataset))
        checkpoint = path.read_bytes()
        log.info("job %s: resuming from checkpoint %s", job.id.hex()[:12], digest[:12])
        return await trio.to_thread.run_sync(lambda: Run.resume(spec, dataset, checkpoint))

    async def _complete(
        self, job_id: bytes, run: Run, metrics: dict[str, float | int], samples: int
    ) -> str | None:
        digest = await trio.to_thread.run_sync(lambda: self.blobs.store.put(run.model_bytes()))
        values = {
            k: float(v)
            for k, v in metrics.items()
            if k in ("val_accuracy", "val_loss", "train_loss", "r2", "seconds")
            and finite(float(v)) is not None
        }
        height = await self.outbox.send(
            lambda nonce: make_job_complete(
                self.key,
                self.chain_id,
                job_id,
                values,
                bytes.fromhex(digest),
                samples,
                run.step,
                nonce,
            ),
            f"result of job {job_id.hex()[:12]}",
        )
        if height is not None:
            log.info("job %s completed in block %d: %s", job_id.hex()[:12], height, values)
        return None

    async def _fetch(self, digest: str, max_size: int, *hints: bytes | None) -> Path:
        if self.blobs.store.has(digest):
            return self.blobs.store.path(digest)
        providers = [h for h in hints if h and h != self.node_id]
        providers += await self.find_providers(digest)
        return await self.blobs.fetch(digest, list(dict.fromkeys(providers)), max_size=max_size)

    async def find_providers(self, digest: str) -> list[bytes]:
        """Linked peers that hold the blob, asked all at once."""
        found: list[bytes] = []

        async def ask(peer: bytes) -> None:
            try:
                reply = await self.host.request(peer, "blob.has", {"id": digest}, within=5.0)
            except RequestFailed:
                return
            if reply.get("has") is True:
                found.append(peer)

        async with trio.open_nursery() as nursery:
            for peer, _, _ in self.host.link_info():
                nursery.start_soon(ask, peer)
        return found

    async def _serve_nothing(self, peer: bytes, body: dict[str, Any]) -> dict[str, Any]:
        return {}

    # ---- progress ----

    def _follow_progress(self) -> None:
        """Follow the progress of the running jobs someone here wants, at their workers; stop
        following the rest. At most MAX_FOLLOWED jobs, the newest first."""
        ids, every_running = self.interest()
        wanted: dict[str, bytes] = {}
        for job in self.state.jobs(JobStatus.RUNNING):  # newest first
            if len(wanted) >= MAX_FOLLOWED:
                break
            if job.worker is None or job.worker == self.node_id:
                continue
            if every_running or job.id in ids:
                wanted[progress_topic(job.id)] = job.worker
        follows = self.host.overlay.follows
        for topic, publisher in follows.items():
            if topic.startswith(PROGRESS_FAMILY + "/") and wanted.get(topic) != publisher:
                self.host.unfollow(topic)
        for topic, publisher in wanted.items():
            if follows.get(topic) != publisher:
                self.host.follow(topic, publisher)

    def _progress_from_thread(self, job_id: bytes, p: Progress) -> None:
        trio.from_thread.run_sync(self._progress, job_id, p)

    def _progress(self, job_id: bytes, p: Progress) -> None:
        """On the event loop (called from the training thread)."""
        report = ProgressReport(
            job_id=job_id,
            worker=self.node_id,
            step=p.step,
            total_steps=p.total_steps,
            epoch=p.epoch,
            train_loss=finite(p.train_loss),
            val_loss=finite(p.val_loss),
            val_accuracy=finite(p.val_accuracy),
            samples_per_second=finite(p.samples_per_second) or 0.0,
            time=time.time(),
        )
        self.record_progress(report)
        last = self._last_sent.get(job_id, 0.0)
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY or p.step == p.total_steps:
            self._last_sent[job_id] = now
            statement = sign(self.key, PROGRESS_DOMAIN, self.chain_id, report.payload())
            self.host.publish(progress_topic(job_id), statement)

    def record_progress(self, report: ProgressReport) -> None:
        latest = self.latest.get(report.job_id)
        if latest is not None and latest.worker == report.worker and latest.step > report.step:
            return
        self.latest[report.job_id] = report
        self.history.setdefault(report.job_id, deque(maxlen=HISTORY)).append(report.to_json())
        if self.on_progress is not None:
            self.on_progress(report)

    def _check_progress(self, statement: Signed, now: float) -> Verdict:
        report = ProgressReport.from_statement(statement)
        job = self.state.job(report.job_id)
        if job is None:
            return Verdict.IGNORE  # not final here yet
        if all(c.node != report.worker for c in job.claims):
            # A claim's block comes before the claimer's first progress. Until our ledger has
            # reached the statement's time (minus clock skew), the claim may be in a block we
            # have not seen yet (we restarted, we lag): not evidence of forgery.
            if self.state.time_ms < report.time * 1000 + CLAIM_SKEW_MS:
                return Verdict.IGNORE
            raise wire.WireError(
                f"progress for job {report.job_id.hex()[:12]} from {report.worker.hex()[:8]}, "
                "which never worked on it"
            )
        if job.status is not JobStatus.RUNNING or job.worker != report.worker:
            return Verdict.IGNORE
        return Verdict.ACCEPT

    def deliver(self, statement: Signed) -> None:
        if statement.signer != self.node_id:
            self.record_progress(ProgressReport.from_statement(statement))
