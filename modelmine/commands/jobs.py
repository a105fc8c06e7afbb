"""Job commands: submit, jobs, job, cancel, fetch, stats."""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import trio

from modelmine.cli import CommandError
from modelmine.commands.common import (
    add_client_args,
    add_password_args,
    ago,
    data_dir,
    print_json,
    print_table,
)
from modelmine.commands.ledger import node_call, unlock

STATUSES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELED")
ENDED = ("COMPLETED", "FAILED", "CANCELED")


def register(sub: Any) -> None:
    p = sub.add_parser("submit", help="submit a training job to the network")
    p.add_argument("spec", nargs="?", type=Path, help="job spec TOML (see docs/jobs.md)")
    p.add_argument("--account", metavar="NAME", help="local account paying the stake")
    p.add_argument("--title")
    p.add_argument("--description")
    p.add_argument("--model", help="linear, logistic, mlp or cnn")
    p.add_argument("--dataset", help="digits, iris, wine, breast_cancer, spirals, ... or a file")
    p.add_argument("--epochs", type=int)
    p.add_argument("--stake", type=int)
    p.add_argument("--follow", action="store_true", help="show live progress until it ends")
    add_client_args(p)
    add_password_args(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("jobs", help="jobs on the ledger")
    p.add_argument("--status", type=str.upper, choices=STATUSES)
    p.add_argument("--mine", metavar="NAME", help="only jobs submitted by this local account")
    add_client_args(p)
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("job", help="one job: status, progress, metrics, contributions")
    p.add_argument("job_id")
    p.add_argument("--follow", action="store_true", help="live progress until the job ends")
    add_client_args(p)
    p.set_defaults(func=cmd_job)

    p = sub.add_parser("cancel", help="cancel a job you submitted (refunds unearned stake)")
    p.add_argument("job_id")
    p.add_argument("--account", metavar="NAME")
    add_client_args(p)
    add_password_args(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("fetch", help="download a job's trained model from peers")
    p.add_argument("job_id")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL.npz")
    add_client_args(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("stats", help="network statistics")
    add_client_args(p)
    p.set_defaults(func=cmd_stats)


# ---- helpers ----


def pick_account(args: argparse.Namespace) -> str:
    from modelmine.identity import IdentityError, Keystore

    if args.account:
        return str(args.account)
    try:
        names = Keystore(data_dir(args)).names()
    except IdentityError as exc:
        raise CommandError(str(exc)) from None
    if len(names) == 1:
        return names[0]
    if not names:
        raise CommandError("no local account: create one with `modelmine account create NAME`")
    raise CommandError(f"several accounts ({', '.join(names)}): choose one with --account")


def build_spec(args: argparse.Namespace) -> tuple[dict[str, Any], Path]:
    """The spec as a dict (file, then flags) and the folder relative paths are taken from."""
    base = Path.cwd()
    spec: dict[str, Any] = {}
    if args.spec is not None:
        try:
            spec = tomllib.loads(args.spec.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CommandError(f"cannot read {args.spec}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CommandError(f"{args.spec}: not valid TOML: {exc}") from None
        base = args.spec.resolve().parent
    if args.title is not None:
        spec["title"] = args.title
    if args.description is not None:
        spec["description"] = args.description
    if args.model is not None:
        spec.setdefault("model", {})["kind"] = args.model
    if args.dataset is not None:
        if Path(args.dataset).suffix.lower() in (".csv", ".npz"):
            spec["dataset"] = {"name": "file", "path": args.dataset}
        else:
            spec.setdefault("dataset", {})["name"] = args.dataset
    if args.epochs is not None:
        spec.setdefault("hyperparameters", {})["epochs"] = args.epochs
    if args.stake is not None:
        spec["stake"] = args.stake
    if not spec:
        raise CommandError("give a spec file or at least --title, --model and --dataset")
    spec.setdefault("title", "untitled job")
    return spec, base


def validate(spec: dict[str, Any]) -> Any:
    from modelmine.trainer import JobSpec, SpecError

    try:
        return JobSpec.from_dict(spec)
    except SpecError as exc:
        lines = "\n".join(f"  {e}" for e in exc.errors)
        raise CommandError(f"the job spec has {len(exc.errors)} error(s):\n{lines}") from None


# ---- commands ----


def cmd_submit(args: argparse.Namespace) -> int:
    from modelmine.ledger import make_job_submit

    spec_dict, base = build_spec(args)
    job = validate(spec_dict)
    name = pick_account(args)
    key = unlock(args, name)
    signer = bytes(key.verify_key)
    spec = job.to_dict()
    local = spec.get("dataset", {}).get("path")
    upload = None
    if local:
        upload = Path(local) if Path(local).is_absolute() else (base / local)
        if not upload.is_file():
            raise CommandError(f"dataset.path: no file at {upload}")
        # Check the file now, with the trainer's own loader, so bad data never costs a stake.
        from modelmine.trainer import DataError, DatasetSpec, load_dataset

        try:
            ds = dict(spec["dataset"], path=str(upload.resolve()))
            load_dataset(DatasetSpec.from_dict(ds))
        except DataError as exc:
            raise CommandError(f"dataset: {exc}") from None

    async def calls(client: Any) -> dict[str, Any]:
        status = await client.call("status")
        account = await client.call("ledger.account", account=signer.hex())
        if not account["registered"]:
            raise CommandError(
                f"account {name!r} is not registered: run `modelmine account register {name}`"
            )
        if account["balance"] < job.stake:
            raise CommandError(f"insufficient credits: have {account['balance']}, need {job.stake}")
        if upload is not None:
            blob = await client.call("blobs.put", path=str(upload.resolve()))
            spec["dataset"] = {k: v for k, v in spec["dataset"].items() if k != "path"}
            spec["dataset"]["blob"] = blob["id"]
        raw = make_job_submit(
            key, status["chain_id"], spec, account["next_nonce"], int(time.time() * 1000)
        )
        sent = await client.call("jobs.submit", record=raw.hex())
        done = await client.request(
            "ledger.wait", {"record_id": sent["job_id"], "timeout": 60}, call_timeout=70
        )
        if done["height"] is None:
            raise CommandError(f"job {sent['job_id'][:12]} was not recorded within 60 s")
        return {"job_id": sent["job_id"], "height": done["height"], "stake": job.stake}

    result = node_call(args, calls)
    if args.json and not args.follow:
        print_json(result)
        return 0
    print(
        f"submitted job {result['job_id']} in block {result['height']} (stake {result['stake']})",
        file=sys.stderr if args.json else sys.stdout,
    )
    if args.follow:
        return follow(args, result["job_id"])
    return 0


def follow(args: argparse.Namespace, job_id: str) -> int:
    """A live progress bar until the job ends; exit 0 only if it completed."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    async def main() -> dict[str, Any]:
        from modelmine.control_client import open_control_client

        async with open_control_client(data_dir(args)) as client:
            columns = (
                TextColumn("{task.fields[status]:<9}"),
                BarColumn(),
                TextColumn("{task.percentage:>5.1f}%"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
            )
            with Progress(*columns, transient=False, disable=args.json) as bar:
                task = bar.add_task("job", total=100, status="PENDING", detail="")
                while True:
                    job = await client.call("jobs.get", job_id=job_id)
                    detail = []
                    if job["worker"]:
                        detail.append(f"worker {job['worker'][:8]}")
                    if job["loss"] is not None:
                        detail.append(f"loss {job['loss']:.4f}")
                    if job["accuracy"] is not None:
                        detail.append(f"acc {100 * job['accuracy']:.1f}%")
                    bar.update(
                        task,
                        completed=job["progress"],
                        status=job["status"],
                        detail="  ".join(detail),
                    )
                    if job["status"] in ENDED:
                        return dict(job)
                    await trio.sleep(0.5)

    from modelmine.control_client import ControlUnavailable, RpcError

    try:
        job = trio.run(main)
    except ControlUnavailable as exc:
        raise CommandError(str(exc)) from None
    except RpcError as exc:
        raise CommandError(exc.message) from None
    except KeyboardInterrupt:
        print("\nstopped following; the job goes on", file=sys.stderr)
        return 130
    if args.json:
        print_json(job)
    else:
        print_job(job)
    return 0 if job["status"] == "COMPLETED" else 1


def print_job(job: dict[str, Any]) -> None:
    print(f"job       {job['job_id']}")
    print(f"title     {job['title']}")
    print(f"status    {job['status']}  ({job['progress']:.0f}%)")
    print(f"submitter {job['submitter']}")
    print(f"workers   {', '.join(w[:8] for w in job.get('workers', [])) or '-'}")
    if job.get("metrics"):
        print("metrics   " + "  ".join(f"{k} {v:.4f}" for k, v in sorted(job["metrics"].items())))
    if job.get("model_sha256"):
        print(f"model     {job['model_sha256']}")
    if job.get("block"):
        print(f"block     {job['block']}")
    if job.get("error"):
        print(f"error     {job['error']}")
    if job.get("contributions"):
        print("contributions:")
        for c in job["contributions"]:
            print(f"  {c['node_id'][:8]}  {c['samples']:>10} samples  {c['credits']:>6} credits")


def cmd_jobs(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    if args.status:
        params["status"] = args.status
    if args.mine:
        from modelmine.commands.ledger import resolve_account

        params["submitter"] = resolve_account(args, args.mine).hex()

    async def calls(client: Any) -> Any:
        return await client.call("jobs.list", **params)

    jobs = node_call(args, calls)
    if args.json:
        print_json(jobs)
        return 0
    now = time.time()
    print_table(
        jobs,
        [
            ("job_id", "JOB"),
            ("title", "TITLE"),
            ("status", "STATUS"),
            ("progress", "PROGRESS"),
            ("worker", "WORKER"),
            ("accuracy", "ACC"),
            ("created", "CREATED"),
        ],
        formatters={
            "job_id": lambda v: v[:12],
            "title": lambda v: v[:28],
            "progress": lambda v: f"{v:.0f}%",
            "worker": lambda v: v[:8] if v else "-",
            "accuracy": lambda v: f"{100 * v:.1f}%" if v is not None else "-",
            "created": lambda v: ago(v, now),
        },
        empty="no jobs",
    )
    return 0


def cmd_job(args: argparse.Namespace) -> int:
    if args.follow:
        return follow(args, args.job_id)

    async def calls(client: Any) -> Any:
        return await client.call("jobs.get", job_id=args.job_id)

    job = node_call(args, calls)
    if args.json:
        job.pop("history", None)
        print_json(job)
    else:
        print_job(job)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from modelmine.commands.ledger import submit_and_wait
    from modelmine.ledger import make_job_cancel

    name = pick_account(args)
    key = unlock(args, name)
    signer = bytes(key.verify_key)
    try:
        job_id = bytes.fromhex(args.job_id)
    except ValueError:
        job_id = b""
    if len(job_id) != 32:
        raise CommandError("job id: expected 64 hex digits")

    async def calls(client: Any) -> dict[str, Any]:
        job = await client.call("jobs.get", job_id=args.job_id)
        if job["submitter"] != signer.hex():
            raise CommandError(
                f"only the submitter can cancel job {args.job_id[:12]}; {name} did not submit it"
            )
        if job["status"] in ENDED:
            raise CommandError(f"job {args.job_id[:12]} has already ended: {job['status']}")
        return await submit_and_wait(
            client, lambda chain, nonce: make_job_cancel(key, chain, job_id, nonce), signer
        )

    result = node_call(args, calls)
    if args.json:
        print_json(result)
    else:
        print(f"canceled job {args.job_id[:12]} in block {result['height']}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    target = args.output.expanduser().resolve()

    async def calls(client: Any) -> Any:
        return await client.request(
            "jobs.fetch", {"job_id": args.job_id, "path": str(target)}, call_timeout=300
        )

    result = node_call(args, calls)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != result["model_sha256"]:
        target.unlink(missing_ok=True)
        raise CommandError(
            f"downloaded model does not match its hash {result['model_sha256'][:12]}"
        )
    if args.json:
        print_json(result)
    else:
        print(f"wrote {target} ({result['size']} bytes, sha256 {digest[:16]}..., verified)")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    async def calls(client: Any) -> Any:
        return await client.call("stats")

    stats = node_call(args, calls)
    if args.json:
        print_json(stats)
        return 0
    print(f"active nodes      {stats['active_nodes']}")
    print(f"credits staked    {stats['credits_staked']}")
    print(f"completed jobs    {stats['completed_jobs']}")
    print(f"average accuracy  {100 * stats['average_accuracy']:.1f}%")
    print("jobs              " + "  ".join(f"{k.lower()} {v}" for k, v in stats["jobs"].items()))
    print()
    print_table(
        stats["nodes"],
        [
            ("name", "NODE"),
            ("node_id", "ID"),
            ("status", "STATUS"),
            ("jobs_handled", "JOBS"),
            ("credits_earned", "CREDITS"),
        ],
        formatters={"node_id": lambda v: v[:8]},
    )
    return 0
