"""Control API methods for jobs, blobs and network statistics."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Final

import trio

from modelmine import wire
from modelmine.consensus.service import ChainService
from modelmine.control import ControlServer, InvalidParams, RpcError
from modelmine.jobs.progress import ProgressReport
from modelmine.jobs.worker import JobWorker
from modelmine.ledger import (
    KINDS,
    Job,
    JobStatus,
    LedgerState,
    RecordError,
    parse_record,
    record_id,
)
from modelmine.ledger_api import INVALID_RECORD, NOT_FOUND, hex_param
from modelmine.p2p.blobs import BlobError, BlobService
from modelmine.p2p.membership import Membership, Status

MAX_MODEL: Final = 512 * 1024 * 1024
WATCH_FOR: Final = 30.0  # seconds a node follows a job's live progress after it was looked at
MAX_SUBMITTED: Final = 1024  # jobs submitted here whose progress is followed until they end
JOB_KINDS: Final = frozenset(k for k in KINDS if k.startswith("job."))


def job_summary(job: Job, latest: ProgressReport | None) -> dict[str, Any]:
    metrics = dict(job.metrics)
    progress = 0.0
    loss, accuracy = metrics.get("val_loss"), metrics.get("val_accuracy")
    if job.status is JobStatus.COMPLETED:
        progress = 100.0
    elif latest is not None and latest.worker == job.worker:
        progress = round(100 * latest.step / max(1, latest.total_steps), 1)
        loss, accuracy = latest.val_loss or latest.train_loss, latest.val_accuracy
    elif job.planned_samples:  # no live progress here: what the last checkpoint recorded
        progress = round(min(99.9, 100 * job.samples / job.planned_samples), 1)
    return {
        "job_id": job.id.hex(),
        "title": job.title,
        "status": job.status.value,
        "progress": progress,
        "worker": job.worker.hex() if job.worker else None,
        "submitter": job.submitter.hex(),
        "created": job.created_ms / 1000,
        "stake": job.stake,
        "model": job.spec.get("model", {}).get("kind"),
        "dataset": job.spec.get("dataset", {}).get("name"),
        "loss": loss,
        "accuracy": accuracy,
    }


class JobsApi:
    def __init__(
        self,
        chain: ChainService,
        state: LedgerState,
        worker: JobWorker,
        blobs: BlobService,
        members: Membership,
        node_id: bytes,
        chain_id: str,
    ) -> None:
        self.chain = chain
        self.state = state
        self.worker = worker
        self.blobs = blobs
        self.members = members
        self.node_id = node_id
        self.chain_id = chain_id
        self.events: dict[bytes, list[dict[str, Any]]] = {}
        self._control: ControlServer | None = None
        self._submitted: dict[bytes, None] = {}  # insertion-ordered set
        self._watched: dict[bytes, float] = {}  # job id -> follow its progress until
        worker.interest = self.progress_interest

    def progress_interest(self) -> tuple[set[bytes], bool]:
        """Whose live progress this node wants: the jobs submitted through it (until they end),
        the jobs a control client looked at in the last WATCH_FOR seconds or subscribed to
        (``progress:<id>``), and every running job while someone subscribes to ``progress:``."""
        now = time.monotonic()
        for job_id in [j for j, until in self._watched.items() if until <= now]:
            del self._watched[job_id]
        for job_id in list(self._submitted):
            job = self.state.job(job_id)
            if job is not None and job.status.ended:
                del self._submitted[job_id]
        ids = set(self._submitted) | set(self._watched)
        every = False
        topics = self._control.subscribed_topics() if self._control is not None else set()
        for topic in topics:
            if topic == "progress:":
                every = True
            elif topic.startswith("progress:"):
                try:
                    ids.add(bytes.fromhex(topic.removeprefix("progress:")))
                except ValueError:
                    continue
        return ids, every

    def register(self, control: ControlServer) -> None:
        self._control = control
        control.register("jobs.submit", self._submit)
        control.register("jobs.list", self._list)
        control.register("jobs.get", self._get)
        control.register("jobs.fetch", self._fetch)
        control.register("blobs.put", self._blob_put)
        control.register("stats", self._stats)
        control.register_topic("jobs")
        control.register_topic("progress:")

    # ---- events from blocks ----

    def on_block(
        self, control: ControlServer, height: int, time_ms: int, records: tuple[bytes, ...]
    ) -> None:
        """Job events from a committed block, kept for job detail and pushed to subscribers."""
        touched: set[bytes] = set()
        for raw in records:
            try:
                record = parse_record(raw, self.chain_id)
            except (RecordError, wire.WireError):
                continue
            kind = type(record).__name__
            job_id = getattr(record, "job_id", None)
            if kind == "JobSubmit":
                job_id = record_id(raw)
            if job_id is None:
                continue
            touched.add(job_id)
            event = {
                "kind": _EVENT_NAMES.get(kind, kind),
                "height": height,
                "time": time_ms / 1000,
                "by": getattr(record, "signer", b"").hex(),
            }
            for extra in ("step", "samples", "reason"):
                if hasattr(record, extra):
                    event[extra] = getattr(record, extra)
            job = self.state.job(job_id)
            if kind == "JobClaim" and job is not None and len(job.claims) > 1:
                event["kind"] = "failover"
            self.events.setdefault(job_id, []).append(event)
            del self.events[job_id][:-200]
        for job_id in touched:
            job = self.state.job(job_id)
            if job is not None:
                control.publish("jobs", job_summary(job, self.worker.latest.get(job_id)))

    # ---- methods ----

    async def _submit(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = hex_param(params, "record")
        try:
            parse_record(raw, self.chain_id)
        except (RecordError, wire.WireError) as exc:
            raise RpcError(INVALID_RECORD, f"invalid record: {exc}") from None
        job_id = record_id(raw)
        if self.state.job(job_id) is not None:
            return {"job_id": job_id.hex(), "duplicate": True}
        reason = self.chain.submit(raw)
        if reason is not None:
            raise RpcError(INVALID_RECORD, reason)
        self._submitted[job_id] = None
        while len(self._submitted) > MAX_SUBMITTED:
            del self._submitted[next(iter(self._submitted))]
        return {"job_id": job_id.hex(), "duplicate": False}

    def _job(self, params: dict[str, Any]) -> Job:
        job_id = hex_param(params, "job_id", 32)
        job = self.state.job(job_id)
        if job is None:
            raise RpcError(NOT_FOUND, f"no job {job_id.hex()[:12]} on the ledger (yet)")
        return job

    async def _list(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        status = params.get("status")
        if status is not None:
            try:
                status = JobStatus(str(status).upper())
            except ValueError:
                names = ", ".join(s.value for s in JobStatus)
                raise InvalidParams(f"status: must be one of {names}") from None
        submitter = hex_param(params, "submitter", 32) if params.get("submitter") else None
        jobs = self.state.jobs(status, submitter=submitter)
        jobs.sort(key=lambda j: (j.created_height, j.id), reverse=True)
        return [job_summary(j, self.worker.latest.get(j.id)) for j in jobs]

    async def _get(self, params: dict[str, Any]) -> dict[str, Any]:
        job = self._job(params)
        if not job.status.ended:
            newly = job.id not in self._watched
            self._watched[job.id] = time.monotonic() + WATCH_FOR
            if newly:
                self.worker.wake()  # follow it now, not at the next schedule
        out = job_summary(job, self.worker.latest.get(job.id))
        latest = self.worker.latest.get(job.id)
        out.update(
            {
                "workers": list(dict.fromkeys(c.node.hex() for c in job.claims)),
                "metrics": dict(job.metrics),
                "model_sha256": job.model_sha256.hex() if job.model_sha256 else None,
                "block": job.ended_height or None,
                "contributions": [
                    {"node_id": c.node_id.hex(), "samples": c.samples, "credits": c.credits}
                    for c in self.state.contributions(job.id)
                ],
                "error": job.error or None,
                "spec": job.spec,
                "samples": job.samples,
                "steps": job.steps,
                "checkpoints": job.checkpoints,
                "created_height": job.created_height,
                "ended": job.ended_ms / 1000 if job.ended_ms else None,
                "latest": latest.to_json() if latest else None,
                "history": list(self.worker.history.get(job.id, ())),
                "events": self.events.get(job.id, []),
            }
        )
        return out

    async def _fetch(self, params: dict[str, Any]) -> dict[str, Any]:
        job = self._job(params)
        target = params.get("path")
        if not isinstance(target, str) or not target:
            raise InvalidParams("path: expected the file to write the model to")
        if job.model_sha256 is None:
            raise RpcError(
                NOT_FOUND, f"job {job.id.hex()[:12]} has no model: it is {job.status.value}"
            )
        digest = job.model_sha256.hex()
        hints = [job.worker] if job.worker else []
        try:
            providers = hints + await self.worker.find_providers(digest)
            path = await self.blobs.fetch(digest, providers, max_size=MAX_MODEL)
        except BlobError as exc:
            raise RpcError(NOT_FOUND, str(exc)) from None
        out = trio.Path(target)
        if not out.is_absolute():
            raise InvalidParams("path: must be absolute (the node may run in another directory)")
        try:
            await trio.to_thread.run_sync(shutil.copyfile, path, out)
            size = (await out.stat()).st_size
        except OSError as exc:
            raise RpcError(INVALID_RECORD, f"cannot write {out}: {exc.strerror}") from None
        return {"path": str(out), "model_sha256": digest, "size": size}

    async def _blob_put(self, params: dict[str, Any]) -> dict[str, Any]:
        path = params.get("path")
        if not isinstance(path, str) or not path:
            raise InvalidParams("path: expected a file path")
        source = trio.Path(path)
        if not source.is_absolute():
            raise InvalidParams("path: must be absolute (the node may run in another directory)")
        if not await source.is_file():
            raise RpcError(NOT_FOUND, f"no file at {source}")
        try:
            digest = await trio.to_thread.run_sync(self.blobs.store.put_file, Path(source))
            size = (await source.stat()).st_size
        except (BlobError, OSError) as exc:
            raise RpcError(INVALID_RECORD, str(exc)) from None
        return {"id": digest, "size": size}

    async def _stats(self, params: dict[str, Any]) -> dict[str, Any]:
        s = self.state.stats()
        earnings = {e.node_id: e for e in self.state.node_earnings()}
        nodes = []
        now = time.time()
        for m in self.members:
            e = earnings.get(m.node_id)
            nodes.append(
                {
                    "node_id": m.node_id.hex(),
                    "name": m.heartbeat.name,
                    "status": m.status.value if m.node_id != self.node_id else "ONLINE",
                    "jobs_handled": e.jobs if e else 0,
                    "credits_earned": e.total if e else 0,
                    "samples": e.samples if e else 0,
                }
            )
        active = sum(1 for m in self.members if m.status is not Status.OFFLINE)
        return {
            "active_nodes": active,
            "credits_staked": s.credits_staked,
            "completed_jobs": s.completed_jobs,
            "average_accuracy": s.average_accuracy,
            "jobs": {
                "PENDING": s.pending_jobs,
                "RUNNING": s.running_jobs,
                "COMPLETED": s.completed_jobs,
                "FAILED": s.failed_jobs,
                "CANCELED": s.canceled_jobs,
            },
            "total_supply": s.total_supply,
            "height": s.height,
            "time": now,
            "nodes": sorted(nodes, key=lambda n: n["name"]),
        }


_EVENT_NAMES = {
    "JobSubmit": "submitted",
    "JobClaim": "claimed",
    "JobCheckpoint": "checkpoint",
    "JobComplete": "completed",
    "JobFail": "failed",
    "JobCancel": "canceled",
}
