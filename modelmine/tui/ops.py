"""What the TUI does on the ledger for the active account: register, submit, cancel, fetch.

Records are built and signed here, with the account's key, exactly as the CLI does (the same
record builders and :func:`modelmine.commands.ledger.submit_and_wait`); the node only relays
them. Every function awaits a :class:`~modelmine.tui.bridge.NodeLink` and raises
:class:`OpError` with one line for people.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from modelmine.cli import CommandError
from modelmine.commands.ledger import submit_and_wait
from modelmine.control_client import ControlError, RpcError
from modelmine.ledger import make_job_cancel, make_job_submit, make_register
from modelmine.trainer import DataError, DatasetSpec, JobSpec, SpecError, load_dataset
from modelmine.tui.bridge import NodeLink

RECORD_WAIT = 60.0
ENDED = ("COMPLETED", "FAILED", "CANCELED")


class OpError(Exception):
    """An action that did not happen, and why (one line)."""


@dataclass(frozen=True)
class ActiveAccount:
    """The unlocked account that signs what the TUI submits."""

    name: str
    key: SigningKey

    @property
    def account_id(self) -> str:
        return bytes(self.key.verify_key).hex()


def _message(exc: Exception) -> str:
    if isinstance(exc, RpcError):
        return exc.message
    return str(exc)


async def account_info(link: NodeLink, account_id: str) -> dict[str, Any]:
    info: dict[str, Any] = await link.call("ledger.account", account=account_id)
    return info


async def register(link: NodeLink, account: ActiveAccount) -> dict[str, Any]:
    """Register the account on the ledger (the grant); {height, balance}."""
    try:
        info = await account_info(link, account.account_id)
        if info["registered"]:
            raise OpError(f"{account.name} is already registered")
        result = await submit_and_wait(
            link,
            lambda chain, nonce: make_register(account.key, chain, account.name, nonce),
            bytes(account.key.verify_key),
        )
        info = await account_info(link, account.account_id)
    except (ControlError, CommandError) as exc:
        raise OpError(_message(exc)) from None
    return {"height": result["height"], "balance": info["balance"]}


def _check_file(spec: dict[str, Any]) -> Path | None:
    """The local data file to upload, checked with the trainer's loader (so bad data never
    costs a stake); None for built-in data."""
    local = spec.get("dataset", {}).get("path")
    if not local:
        return None
    path = Path(local).expanduser().resolve()
    if not path.is_file():
        raise OpError(f"dataset.path: no file at {path}")
    try:
        load_dataset(DatasetSpec.from_dict(dict(spec["dataset"], path=str(path))))
    except (DataError, SpecError) as exc:
        raise OpError(f"dataset: {exc}") from None
    return path


async def submit_job(
    link: NodeLink, account: ActiveAccount, spec_dict: dict[str, Any]
) -> dict[str, Any]:
    """Sign and submit a job; returns {job_id, height, stake} once it is on the ledger."""
    try:
        spec = JobSpec.from_dict(dict(spec_dict)).to_dict()
    except SpecError as exc:
        raise OpError(f"the job spec has {len(exc.errors)} error(s): {exc.errors[0]}") from None
    upload = await asyncio.to_thread(_check_file, spec)
    try:
        status = await link.call("status")
        info = await account_info(link, account.account_id)
        if not info["registered"]:
            raise OpError(f"{account.name} is not registered: register it first (Accounts)")
        if info["balance"] < spec["stake"]:
            raise OpError(f"insufficient credits: have {info['balance']}, need {spec['stake']}")
        if upload is not None:
            blob = await link.call("blobs.put", path=str(upload))
            spec["dataset"] = {k: v for k, v in spec["dataset"].items() if k != "path"}
            spec["dataset"]["blob"] = blob["id"]
        raw = make_job_submit(
            account.key, status["chain_id"], spec, info["next_nonce"], int(time.time() * 1000)
        )
        sent = await link.call("jobs.submit", record=raw.hex())
        done = await link.request(
            "ledger.wait",
            {"record_id": sent["job_id"], "timeout": RECORD_WAIT},
            call_timeout=RECORD_WAIT + 10,
        )
    except ControlError as exc:
        raise OpError(_message(exc)) from None
    if done["height"] is None:
        raise OpError(f"job {sent['job_id'][:12]} was not recorded within {RECORD_WAIT:.0f} s")
    return {"job_id": sent["job_id"], "height": done["height"], "stake": spec["stake"]}


async def cancel_job(link: NodeLink, account: ActiveAccount, job_id: str) -> int:
    """Cancel a job the account submitted; the height of the cancel record."""
    try:
        job = await link.call("jobs.get", job_id=job_id)
        if job["submitter"] != account.account_id:
            raise OpError(
                f"only the submitter can cancel this job; {account.name} did not submit it"
            )
        if job["status"] in ENDED:
            raise OpError(f"the job has already ended: {job['status']}")
        result = await submit_and_wait(
            link,
            lambda chain, nonce: make_job_cancel(account.key, chain, bytes.fromhex(job_id), nonce),
            bytes(account.key.verify_key),
        )
    except (ControlError, CommandError) as exc:
        raise OpError(_message(exc)) from None
    return int(result["height"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def fetch_model(link: NodeLink, job_id: str, target: Path) -> dict[str, Any]:
    """Download a job's model to ``target`` and check it against the hash on the ledger."""
    target = await asyncio.to_thread(lambda: target.expanduser().resolve())
    try:
        result: dict[str, Any] = await link.request(
            "jobs.fetch", {"job_id": job_id, "path": str(target)}, call_timeout=300
        )
    except ControlError as exc:
        raise OpError(_message(exc)) from None
    digest = await asyncio.to_thread(_sha256, target)
    if digest != result["model_sha256"]:
        target.unlink(missing_ok=True)
        raise OpError(f"the downloaded model does not match its hash {result['model_sha256'][:12]}")
    return result
