"""`modelmine train` and `modelmine predict`: run a job spec locally, use a trained model.

No node and no network are involved. The trainer is imported inside the handlers so that
`modelmine --help` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from modelmine.cli import CommandError

if TYPE_CHECKING:
    from modelmine.trainer import JobSpec, Run, TrainedModel, TrainResult


def register(sub: Any) -> None:
    """Add the `train` and `predict` subcommands to the CLI's subparsers."""
    train = sub.add_parser(
        "train",
        help="train a job spec on this machine (no network)",
        description="Train the model a job spec describes, locally, and print its metrics.",
    )
    train.add_argument("spec", metavar="SPEC.toml", help="job spec (see docs/jobs.md)")
    train.add_argument("-o", "--output", metavar="MODEL.npz", help="write the trained model here")
    train.add_argument(
        "--json", action="store_true", help="print the final metrics as one JSON object"
    )
    train.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="write a checkpoint here when training ends or is interrupted (Ctrl-C)",
    )
    train.add_argument("--resume", metavar="FILE", help="continue from this checkpoint")
    train.set_defaults(func=run_train)

    predict = sub.add_parser(
        "predict",
        help="predict with a trained model",
        description="Print one prediction per row of a CSV (with a header) or NPZ (array X).",
    )
    predict.add_argument("model", metavar="MODEL.npz")
    predict.add_argument("data", metavar="DATA.csv")
    predict.add_argument("-o", "--output", metavar="FILE", help="write predictions to FILE")
    predict.add_argument(
        "--label",
        metavar="COLUMN",
        help="label column to ignore, and to score against (default: the model's)",
    )
    predict.set_defaults(func=run_predict)


def run_train(args: argparse.Namespace) -> int:
    from modelmine import trainer

    spec_path = Path(args.spec)
    try:
        spec = trainer.JobSpec.from_toml(spec_path)
        dataset = trainer.load_dataset(spec.dataset, base_dir=spec_path.parent)
        if args.resume:
            run = trainer.Run.resume(spec, dataset, _read_bytes(args.resume))
        else:
            run = trainer.Run(spec, dataset)
    except trainer.SpecError as exc:
        print(f"error: {spec_path}: invalid job spec:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return 1
    except (trainer.DataError, trainer.CheckpointError) as exc:
        raise CommandError(str(exc)) from None

    try:
        with _polite_sigint() as interrupted:
            if args.json:
                result = run.train(should_stop=interrupted)
            else:
                result = _train_with_bar(run, spec, interrupted)
    except trainer.TrainingFailed as exc:
        raise CommandError(f"training failed: {exc.reason}") from None
    if args.checkpoint:
        _write(args.checkpoint, run.checkpoint_bytes())
    model = run.model_bytes()
    # An interrupted run leaves an existing model file alone rather than replace it with a
    # half-trained one; the checkpoint is the way to keep its progress.
    if args.output and result.completed:
        _write(args.output, model)
    _report(args, spec, result, hashlib.sha256(model).hexdigest())
    if not result.completed:
        hint = f"; continue with --resume {args.checkpoint}" if args.checkpoint else ""
        print(f"interrupted at step {run.step} of {run.total_steps}{hint}", file=sys.stderr)
        return 130
    return 0


def _train_with_bar(run: Run, spec: JobSpec, should_stop: Callable[[], bool]) -> TrainResult:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from modelmine import trainer

    columns = (
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(spec.title, total=run.total_steps, completed=run.step, status="")
        bar.console.print(f"training {spec.title!r}: {run.total_steps} steps")

        def show(p: trainer.Progress) -> None:
            parts = [f"epoch {p.epoch}", f"loss {p.train_loss:.3f}"]
            if p.val_accuracy is not None:
                parts.append(f"val acc {p.val_accuracy:.1%}")
            elif p.val_loss is not None:
                parts.append(f"val loss {p.val_loss:.3f}")
            parts.append(f"{p.samples_per_second:,.0f}/s")
            bar.update(task, completed=p.step, status="  ".join(parts))

        return run.train(on_progress=show, should_stop=should_stop)


def _report(args: argparse.Namespace, spec: JobSpec, result: TrainResult, sha256: str) -> None:
    summary: dict[str, Any] = {"title": spec.title, "status": str(result.status)}
    summary |= result.metrics
    summary["model_sha256"] = sha256
    if args.output and result.completed:
        summary["model_path"] = str(args.output)
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{spec.title}: {result.status} after {result.metrics['steps']} steps")
    for key, value in summary.items():
        if key in ("title", "status"):
            continue
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<14} {text}")


def run_predict(args: argparse.Namespace) -> int:
    from modelmine import trainer

    try:
        model = trainer.load_model(args.model)
    except trainer.ModelFileError as exc:
        raise CommandError(str(exc)) from None
    label = args.label or model.metadata["spec"]["dataset"].get("label", "label")
    try:
        x, labels = trainer.read_features(
            Path(args.data), feature_names=model.feature_names, label=label
        )
    except trainer.DataError as exc:
        raise CommandError(str(exc)) from None
    predictions = model.predict(x)
    lines = ["prediction", *(_format(v) for v in predictions.tolist())]
    if args.output:
        _write(args.output, ("\n".join(lines) + "\n").encode())
    else:
        print("\n".join(lines))
    if labels is not None:
        print(_score(model, predictions, labels), file=sys.stderr)
    return 0


def _score(model: TrainedModel, predictions: Any, labels: list[Any]) -> str:
    """A one-line quality figure against the labels found in the data file."""
    import numpy as np

    if model.task == "classification":
        hits = sum(
            _format(p) == _format(_as_label(t)) for p, t in zip(predictions.tolist(), labels)
        )
        return f"accuracy {hits / len(labels):.4f} on {len(labels)} rows"
    try:
        truth = np.array(labels, dtype=np.float64)
    except ValueError:
        return f"labels in column are not numbers; no score for {len(labels)} rows"
    residual = float(((predictions - truth) ** 2).sum())
    spread = float(((truth - truth.mean()) ** 2).sum())
    r2 = 1 - residual / spread if spread > 0 else 0.0
    return f"r2 {r2:.4f} on {len(labels)} rows"


def _as_label(value: Any) -> Any:
    """A label cell as the model's class labels are written: whole numbers without '.0'."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() else number


def _format(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror}") from None


def _write(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise CommandError(f"{path}: cannot write: {exc.strerror}") from None


@contextlib.contextmanager
def _polite_sigint() -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a stop between steps (so a checkpoint can be written);
    a second Ctrl-C interrupts at once."""
    stop = False

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        if stop:
            raise KeyboardInterrupt
        stop = True

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield lambda: stop
    finally:
        signal.signal(signal.SIGINT, previous)
