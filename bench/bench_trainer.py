"""Trainer benchmarks: step time against hand-written numpy, digits epochs, memory, accuracy.

Run with ``.venv/bin/python bench/bench_trainer.py``. Every figure is printed next to a
baseline measured in the same run, and their ratio:

- MLP 784-256-10 step (batch 128, float32, SGD): `Run.train` against a minimal hand-written
  numpy gather/forward/backward/SGD step on the same data: medians of interleaved trials,
  and the median of the paired ratios.
  The trainer's time includes all it does per call: loss checks, schedule, the validation
  pass at each epoch end and at the end of the call. Goal: ratio at most 1.10.
- Digits MLP and CNN examples: seconds per epoch (baseline: scikit-learn's MLPClassifier with
  the same hidden layers and batch size, per epoch); peak RSS of a fresh process that loads
  the data and trains (baseline: a fresh process that only imports numpy). Goal: 200 MiB.
- Validation accuracy of those examples next to the scikit-learn MLP on the same split.

`run()` returns the rows {name, value, unit, baseline, ratio, goal} for `make bench`.
"""

from __future__ import annotations

import os

# Fixed before numpy loads: one BLAS thread, as in `make`, so ratios are comparable.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from modelmine.trainer import Dataset, JobSpec, Run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BATCH, FEATURES, HIDDEN, CLASSES = 128, 784, 256, 10
STEPS = 100  # per timed trial; trials alternate trainer and baseline
TRIALS = 25


def _synthetic(rng: np.random.Generator) -> Dataset:
    n = BATCH * 50
    x = rng.standard_normal((n, FEATURES), dtype=np.float32)
    y = rng.integers(0, CLASSES, n)
    return Dataset(
        name="bench",
        task="classification",
        x_train=x,
        y_train=y,
        x_val=x[:BATCH],
        y_val=y[:BATCH],
        feature_shape=(FEATURES,),
        feature_names=tuple(f"x{i}" for i in range(FEATURES)),
        classes=tuple(range(CLASSES)),
        x_mean=np.zeros(FEATURES),
        x_scale=np.ones(FEATURES),
    )


class HandWritten:
    """The least a numpy MLP step can do: gather a batch, forward, backward, SGD update."""

    def __init__(self, dataset: Dataset, rng: np.random.Generator, lr: float) -> None:
        self.x, self.y, self.lr = dataset.x_train, dataset.y_train, lr
        self.w1 = (rng.standard_normal((FEATURES, HIDDEN)) * np.sqrt(2 / FEATURES)).astype(
            np.float32
        )
        self.b1 = np.zeros(HIDDEN, dtype=np.float32)
        self.w2 = (rng.standard_normal((HIDDEN, CLASSES)) * np.sqrt(1 / HIDDEN)).astype(np.float32)
        self.b2 = np.zeros(CLASSES, dtype=np.float32)
        self.order = rng.permutation(len(self.y))
        self.position = 0

    def step(self) -> None:
        if self.position + BATCH > len(self.order):
            self.position = 0
        index = self.order[self.position : self.position + BATCH]
        self.position += BATCH
        x, y = self.x[index], self.y[index]
        h = x @ self.w1
        h += self.b1
        np.maximum(h, 0, out=h)
        logits = h @ self.w2
        logits += self.b2
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(BATCH), y] -= 1
        p *= np.float32(1 / BATCH)
        dw2 = h.T @ p
        db2 = p.sum(axis=0)
        dh = p @ self.w2.T
        dh *= h > 0
        dw1 = x.T @ dh
        db1 = dh.sum(axis=0)
        self.w1 -= self.lr * dw1
        self.b1 -= self.lr * db1
        self.w2 -= self.lr * dw2
        self.b2 -= self.lr * db2


def bench_step() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    dataset = _synthetic(rng)
    spec = JobSpec.from_dict(
        {
            "title": "bench",
            "model": {"kind": "mlp", "hidden": [HIDDEN]},
            # The data is passed in directly; the dataset section only has to be valid.
            "dataset": {"name": "file", "path": "unused.csv"},
            "hyperparameters": {
                "optimizer": "sgd",
                "learning_rate": 0.01,
                "batch_size": BATCH,
                "epochs": 10_000,
            },
        }
    )
    run = Run(spec, dataset)
    baseline = HandWritten(dataset, rng, 0.01)
    run.train(max_steps=20)  # warm up caches and BLAS buffers
    for _ in range(20):
        baseline.step()
    ours, theirs = [], []
    for trial in range(TRIALS):
        # Alternate who goes first, so slow drifts in machine load do not favour either.
        for side in (0, 1) if trial % 2 == 0 else (1, 0):
            start = time.perf_counter()
            if side == 0:
                run.train(max_steps=STEPS)
            else:
                for _ in range(STEPS):
                    baseline.step()
            (ours if side == 0 else theirs).append((time.perf_counter() - start) / STEPS)
    # Medians, and the median of the paired ratios: each pair ran under the same load.
    value, base = float(np.median(ours)), float(np.median(theirs))
    ratio = float(np.median(np.array(ours) / np.array(theirs)))
    row = _row("mlp 784-256-10 step, batch 128, float32", value * 1e3, "ms", base * 1e3, "<= 1.10x")
    row["ratio"] = ratio
    return row


CHILD = """
import json, resource, sys, time
from pathlib import Path
from modelmine.trainer import JobSpec, Run, load_dataset
spec = JobSpec.from_toml(Path(sys.argv[1]))
start = time.perf_counter()
dataset = load_dataset(spec.dataset)
run = Run(spec, dataset)
loaded = time.perf_counter()
result = run.train()
done = time.perf_counter()
print(json.dumps({
    "seconds_per_epoch": (done - loaded) / spec.hyperparameters.epochs,
    "load_seconds": loaded - start,
    "val_accuracy": result.metrics["val_accuracy"],
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""

FLOOR = """
import json, resource
import numpy
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

SKLEARN = """
import json, sys, time, warnings
from pathlib import Path
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from modelmine.trainer import JobSpec, load_dataset
spec = JobSpec.from_toml(Path(sys.argv[1]))
dataset = load_dataset(spec.dataset)
hp = spec.hyperparameters
model = MLPClassifier(hidden_layer_sizes=spec.model.hidden, batch_size=hp.batch_size,
                      learning_rate_init=hp.learning_rate, max_iter=hp.epochs,
                      random_state=0, n_iter_no_change=hp.epochs + 1)
start = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    model.fit(dataset.x_train, dataset.y_train)
seconds = time.perf_counter() - start
print(json.dumps({"seconds_per_epoch": seconds / model.n_iter_,
                  "val_accuracy": model.score(dataset.x_val, dataset.y_val)}))
"""


# Linux carries a parent's peak RSS into a child it forks or vforks (it survives exec), so
# the measured interpreter is started by a small one that has loaded nothing.
LAUNCHER = (
    "import subprocess, sys; sys.exit(subprocess.run([sys.executable, *sys.argv[1:]]).returncode)"
)


def _child(code: str, *args: str) -> dict[str, Any]:
    """Run `code` in a fresh interpreter, so its peak memory is its own."""
    out = subprocess.run(
        [sys.executable, "-c", LAUNCHER, "-c", code, *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OPENBLAS_NUM_THREADS": os.environ["OPENBLAS_NUM_THREADS"]},
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def bench_digits() -> list[dict[str, Any]]:
    floor = _child(FLOOR)["peak_rss_mib"]
    rows = []
    for example, label in (("digits-mlp.toml", "digits mlp"), ("digits-cnn.toml", "digits cnn")):
        path = str(EXAMPLES / example)
        ours = _child(CHILD, path)
        # The CNN has no scikit-learn counterpart: its reference is the MLP example's.
        reference = _child(SKLEARN, str(EXAMPLES / "digits-mlp.toml") if "cnn" in example else path)
        rows.append(
            _row(
                f"{label}: seconds per epoch (baseline: sklearn MLPClassifier)",
                ours["seconds_per_epoch"],
                "s",
                reference["seconds_per_epoch"],
                "-",
            )
        )
        rows.append(
            _row(
                f"{label}: peak RSS of a fresh process (baseline: python + numpy)",
                ours["peak_rss_mib"],
                "MiB",
                floor,
                "<= 200 MiB",
            )
        )
        rows.append(
            _row(
                f"{label}: validation accuracy (baseline: sklearn MLPClassifier)",
                ours["val_accuracy"],
                "",
                reference["val_accuracy"],
                ">= 0.97 and >= baseline - 0.01",
            )
        )
    return rows


def _row(name: str, value: float, unit: str, baseline: float, goal: str) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": value / baseline if baseline else float("nan"),
        "goal": goal,
    }


def run() -> list[dict[str, Any]]:
    return [bench_step(), *bench_digits()]


def main() -> None:
    print(f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}, numpy {np.__version__}")
    for row in run():
        print(
            f"{row['name']:<66} {row['value']:9.4f} {row['unit']:<4} "
            f"baseline {row['baseline']:9.4f}  ratio {row['ratio']:5.2f}  goal {row['goal']}"
        )


if __name__ == "__main__":
    main()
