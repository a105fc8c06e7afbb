"""Training runs: determinism, checkpoint resumption, progress, cancellation, failures."""

from __future__ import annotations

import itertools
import re
import threading
from typing import Any

import numpy as np
import pytest

from modelmine.trainer import (
    CheckpointError,
    Dataset,
    JobSpec,
    Progress,
    Run,
    RunStatus,
    SpecError,
    TrainingFailed,
    load_dataset,
    shard,
)
from modelmine.trainer._npz import read_npz, write_npz

MLP = {"kind": "mlp", "hidden": [16, 8], "dropout": 0.2, "activation": "gelu"}
SPIRALS = {"name": "spirals", "samples": 200, "classes": 3}
ADAMW = {
    "epochs": 4,
    "batch_size": 32,
    "optimizer": "adamw",
    "schedule": "cosine",
    "grad_clip": 1.0,
    "seed": 5,
}


def make_spec(
    model: dict[str, Any] = MLP,
    dataset: dict[str, Any] = SPIRALS,
    hyperparameters: dict[str, Any] = ADAMW,
    resources: dict[str, Any] | None = None,
) -> JobSpec:
    return JobSpec.from_dict(
        {
            "title": "t",
            "model": model,
            "dataset": dataset,
            "hyperparameters": hyperparameters,
            "resources": resources or {},
        }
    )


def small_cnn() -> tuple[JobSpec, Dataset]:
    """A CNN with dropout, Nesterov momentum, weight decay and a step schedule on a quarter
    of the digits (sharding is deterministic, and keeps the test fast)."""
    spec = make_spec(
        model={"kind": "cnn", "conv": [4], "hidden": [8], "dropout": 0.3},
        dataset={"name": "digits"},
        hyperparameters={
            "optimizer": "nesterov",
            "learning_rate": 0.05,
            "schedule": "step",
            "step_epochs": 1,
            "gamma": 0.5,
            "weight_decay": 0.001,
            "epochs": 2,
            "batch_size": 50,
        },
    )
    return spec, shard(load_dataset(spec.dataset), 4, 0)


def mlp() -> tuple[JobSpec, Dataset]:
    spec = make_spec()
    return spec, load_dataset(spec.dataset)


def weights(run: Run) -> list[bytes]:
    return [p.tobytes() for p in run.network.params]


def test_same_spec_and_seed_give_bitwise_identical_models() -> None:
    spec, dataset = mlp()
    first, second = Run(spec, dataset), Run(spec, load_dataset(spec.dataset))
    first.train()
    second.train()
    assert first.model_bytes() == second.model_bytes()
    other = Run(make_spec(hyperparameters={**ADAMW, "seed": 6}), dataset)
    other.train()
    assert weights(other) != weights(first)


@pytest.mark.parametrize("setup", [mlp, small_cnn], ids=["mlp", "cnn"])
def test_resuming_from_any_checkpoint_gives_the_same_weights(setup: Any) -> None:
    spec, dataset = setup()
    reference = Run(spec, dataset)
    reference.train()
    expected = weights(reference)
    total = reference.total_steps
    # Start, mid-epoch, an epoch boundary, the step before the end, the end.
    for stop in sorted({0, 3, reference.steps_per_epoch, total - 1, total}):
        run = Run(spec, dataset)
        paused = run.train(max_steps=stop)
        assert paused.status is (RunStatus.COMPLETED if stop == total else RunStatus.PAUSED)
        assert run.step == stop
        resumed = Run.resume(spec, dataset, run.checkpoint_bytes())
        assert resumed.step == stop
        result = resumed.train()
        assert result.completed and result.metrics["steps"] == total
        assert weights(resumed) == expected, f"differs after resuming at step {stop}"
        assert resumed.model_bytes() == reference.model_bytes()


def test_checkpoints_chain_across_several_interruptions() -> None:
    spec, dataset = mlp()
    reference = Run(spec, dataset)
    reference.train()
    run = Run(spec, dataset)
    while run.step < run.total_steps:
        run.train(max_steps=5)
        run = Run.resume(spec, dataset, run.checkpoint_bytes())
    assert weights(run) == weights(reference)
    assert run.train().metrics["samples_seen"] == reference.train().metrics["samples_seen"]


def test_resume_refuses_a_checkpoint_of_other_work() -> None:
    spec, dataset = mlp()
    run = Run(spec, dataset)
    run.train(max_steps=2)
    checkpoint = run.checkpoint_bytes()
    other_spec = make_spec(hyperparameters={**ADAMW, "epochs": 5})
    with pytest.raises(CheckpointError, match="made for a different job spec"):
        Run.resume(other_spec, dataset, checkpoint)
    with pytest.raises(CheckpointError, match="made for different training data"):
        Run.resume(spec, shard(dataset, 2, 0), checkpoint)
    with pytest.raises(CheckpointError, match="not an NPZ"):
        Run.resume(spec, dataset, checkpoint[:100])
    with pytest.raises(CheckpointError, match="not a ModelMine checkpoint"):
        Run.resume(spec, dataset, run.model_bytes())


def test_resume_refuses_a_tampered_position() -> None:
    spec, dataset = mlp()
    run = Run(spec, dataset)
    run.train(max_steps=3)
    arrays, meta = read_npz(run.checkpoint_bytes(), max_elements=10**7)
    for change, expected in [
        ({"seconds": -100.0}, "seconds must be a finite number >= 0"),
        ({"optimizer_t": 2}, "inconsistent position"),
        ({"step": 10**9, "optimizer_t": 10**9}, "outside 0.."),
        ({"rng_state": {"bit_generator": "MT19937"}}, "bad random generator state"),
        ({"seconds": "soon"}, "field 'seconds' is missing or not a float"),
    ]:
        tampered = write_npz(arrays, {**meta, **change})
        with pytest.raises(CheckpointError, match=expected):
            Run.resume(spec, dataset, tampered)


def test_training_off_the_main_thread_gives_the_same_weights() -> None:
    spec, dataset = mlp()
    here = Run(spec, dataset)
    here.train()
    there = Run(spec, dataset)
    thread = threading.Thread(target=there.train)
    thread.start()
    thread.join(timeout=60)
    assert weights(there) == weights(here)


class FakeClock:
    """Advances by `tick` seconds every time it is read."""

    def __init__(self, tick: float) -> None:
        self.now = 0.0
        self.tick = tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_progress_is_rate_limited_and_always_sent_at_the_end() -> None:
    spec, dataset = mlp()
    clock = FakeClock(0.1)
    run = Run(spec, dataset, progress_interval=0.25, clock=clock)
    events: list[tuple[float, Progress]] = []
    result = run.train(on_progress=lambda p: events.append((clock.now, p)))
    times = [t for t, _ in events[:-1]]
    assert all(b - a >= 0.25 for a, b in itertools.pairwise(times))
    assert len(events) <= clock.now / 0.25 + 2
    assert len(events) >= run.total_steps // 4
    last = events[-1][1]
    assert last.step == last.total_steps == run.total_steps == result.metrics["steps"]
    assert last.epoch == spec.hyperparameters.epochs
    assert last.val_accuracy == result.metrics["val_accuracy"]
    steps = [p.step for _, p in events]
    assert steps == sorted(steps)
    first = events[0][1]
    assert first.val_loss is None and first.val_accuracy is None  # no epoch finished yet
    assert first.samples_per_second > 0 and np.isfinite(first.train_loss)
    later = [p for _, p in events if p.step > run.steps_per_epoch]
    assert later and all(p.val_accuracy is not None for p in later)


def test_progress_reports_no_accuracy_for_regression() -> None:
    spec = make_spec(
        model={"kind": "linear"},
        dataset={"name": "regression", "samples": 100},
        hyperparameters={"epochs": 3},
    )
    events: list[Progress] = []
    result = Run(spec, load_dataset(spec.dataset), progress_interval=0).train(events.append)
    assert all(p.val_accuracy is None for p in events)
    assert set(result.metrics) >= {"r2", "val_loss", "train_loss", "steps", "seconds"}
    assert "val_accuracy" not in result.metrics


def test_cancellation_stops_between_steps_and_the_run_can_go_on() -> None:
    spec, dataset = mlp()
    reference = Run(spec, dataset)
    reference.train()
    run = Run(spec, dataset)
    polls = iter(range(100))
    result = run.train(should_stop=lambda: next(polls) >= 7)
    assert result.status is RunStatus.CANCELED
    assert run.step == result.metrics["steps"] == 7
    assert 0 < result.metrics["train_loss"] < 10 and 0 <= result.metrics["val_accuracy"] <= 1
    assert run.train().completed
    assert weights(run) == weights(reference)


def test_divergence_fails_with_a_clear_reason() -> None:
    spec = make_spec(
        model={"kind": "linear"},
        dataset={"name": "regression", "samples": 200, "noise": 5.0},
        hyperparameters={"optimizer": "sgd", "learning_rate": 10.0, "epochs": 50},
    )
    run = Run(spec, load_dataset(spec.dataset))
    with pytest.raises(TrainingFailed) as info:
        run.train()
    assert re.fullmatch(r"diverged at step \d+: loss is (nan|inf)", info.value.reason)
    assert 1 < run.step < run.total_steps
    assert all(np.isfinite(p).all() for p in run.network.params)


def test_wall_time_limit_fails_the_run() -> None:
    spec = make_spec(resources={"max_seconds": 3})
    run = Run(spec, load_dataset(spec.dataset), clock=FakeClock(1.0))
    with pytest.raises(
        TrainingFailed, match=r"ran out of time at step \d+: .*resources.max_seconds = 3"
    ):
        run.train()


def test_wall_time_counts_across_resumptions() -> None:
    spec = make_spec(resources={"max_seconds": 10})
    dataset = load_dataset(spec.dataset)
    run = Run(spec, dataset, clock=FakeClock(1.0))
    run.train(max_steps=4)
    assert run.train(max_steps=0).metrics["seconds"] >= 4
    resumed = Run.resume(spec, dataset, run.checkpoint_bytes(), clock=FakeClock(1.0))
    with pytest.raises(TrainingFailed, match="ran out of time"):
        resumed.train()
    assert resumed.step < run.step + 8


def test_model_that_does_not_fit_the_data_is_a_spec_error() -> None:
    spec = make_spec(
        model={"kind": "mlp", "hidden": [4096, 1024]},
        dataset={"name": "digits"},
        resources={"max_memory_mb": 64},
    )
    with pytest.raises(SpecError, match=r"resources.max_memory_mb: this run needs about \d+ MiB"):
        Run(spec, load_dataset(spec.dataset))


def test_metrics_are_real() -> None:
    spec = make_spec(dataset={"name": "blobs", "samples": 300, "classes": 4, "noise": 3.0})
    dataset = load_dataset(spec.dataset)
    run = Run(spec, dataset)
    before = run.train(max_steps=0).metrics
    after = run.train().metrics
    assert after["train_loss"] < before["train_loss"]
    assert after["val_accuracy"] > before["val_accuracy"]
    predicted = run.network.forward(dataset.x_val).argmax(axis=1)
    assert after["val_accuracy"] == pytest.approx(float((predicted == dataset.y_val).mean()))
    assert after["samples_seen"] == len(dataset.y_train) * spec.hyperparameters.epochs
