"""A training run: step-wise, cancellable, checkpointable, deterministic.

Determinism: initial weights, the order of examples in each epoch and dropout masks all come
from generators seeded by `hyperparameters.seed`; the epoch order is derived from (seed,
epoch) rather than carried along, so a position (step) plus the saved dropout generator is
enough to continue bitwise identically. Numerical warnings are silenced on purpose: a
non-finite loss is detected explicitly and ends the run with a clear reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._architecture import activation_width, parameter_count, plan_layers
from ._checkpoint import Checkpoint, CheckpointError, restore_rng
from ._data import Dataset
from ._losses import log_softmax, mean_squared_error, softmax_cross_entropy
from ._model_file import model_to_bytes
from ._network import Network
from ._optim import clip_gradients, learning_rate, make_optimizer
from ._spec import JobSpec, SpecError, model_plan_error, task_error

Array = NDArray[Any]
_EVAL_BATCH = 4096


class TrainingFailed(Exception):
    """The run cannot go on: it diverged or ran out of time. `reason` says which and when."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunStatus(StrEnum):
    COMPLETED = "completed"  # every step of every epoch is done
    PAUSED = "paused"  # `max_steps` were done; train again or checkpoint
    CANCELED = "canceled"  # `should_stop` asked to stop


@dataclass(frozen=True)
class Progress:
    """A progress report. `train_loss` is the mean over the steps since the previous report
    (over the whole training set in the final report); validation figures are those of the
    last finished epoch, None before the first one and `val_accuracy` None for regression."""

    step: int
    total_steps: int
    epoch: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    samples_per_second: float


@dataclass(frozen=True)
class TrainResult:
    """How a call to `Run.train` ended, with metrics measured at that point.

    `metrics` always has train_loss, val_loss, steps, seconds (training time over all
    sessions of the run) and samples_seen; val_accuracy for classification; r2 (on the
    validation set) for regression. train_loss is measured over the whole training set when
    the run completed (or no step was taken); after a pause or cancellation it is the mean
    batch loss of this call, which spares a pass over the training set.
    """

    status: RunStatus
    metrics: dict[str, float | int] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status is RunStatus.COMPLETED


ProgressCallback = Callable[[Progress], object]


class Run:
    """One training run of `spec` on `dataset`. Use it from one thread at a time.

    Raises `SpecError` when the model does not fit the data (task, image shape, parameter
    limit) or the estimated memory exceeds `resources.max_memory_mb`.
    """

    def __init__(
        self,
        spec: JobSpec,
        dataset: Dataset,
        *,
        progress_interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_fit(spec, dataset)
        self.spec = spec
        self.dataset = dataset
        self.progress_interval = progress_interval
        self._clock = clock
        hp = spec.hyperparameters
        n = len(dataset.y_train)
        self.batch_size = min(hp.batch_size, n)
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        self.total_steps = hp.epochs * self.steps_per_epoch
        self._plan = _plan(spec, dataset)
        _check_memory(spec, dataset, self._plan, self.batch_size)
        self._dropout_rng = np.random.default_rng(np.random.SeedSequence([hp.seed, 2]))
        self.network = Network.initialize(
            self._plan,
            init=spec.model.init,
            rng=np.random.default_rng(np.random.SeedSequence([hp.seed, 1])),
            dropout_rng=self._dropout_rng,
        )
        self._optimizer = make_optimizer(hp, self.network.params, self.network.decays)
        self._classify = dataset.task == "classification"
        self._step = 0
        self._samples_seen = 0
        self._seconds = 0.0
        self._order: tuple[int, NDArray[np.intp]] | None = None
        self._val: tuple[float, float] | None = None
        self._evaluation: tuple[int, dict[str, float]] | None = None

    @property
    def samples_seen(self) -> int:
        """Training samples processed so far, across resumes."""
        return self._samples_seen

    @property
    def step(self) -> int:
        """Steps done so far (0..total_steps): the position a checkpoint records."""
        return self._step

    @property
    def epoch(self) -> int:
        """The epoch the next step belongs to, 1-based (the last epoch once finished)."""
        return min(self._step // self.steps_per_epoch + 1, self.spec.hyperparameters.epochs)

    def train(
        self,
        on_progress: ProgressCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
        max_steps: int | None = None,
    ) -> TrainResult:
        """Train until done, until `max_steps` more steps are done, or until `should_stop()`.

        `should_stop` is polled before every step. `on_progress` gets a `Progress` at most
        every `progress_interval` seconds and always once at the end (its rate is that of the
        whole call). It runs on the training thread and should return quickly.

        Raises `TrainingFailed` if the loss becomes NaN or infinite (the weights keep their
        last finite values) or the run's total training time exceeds `resources.max_seconds`.
        """
        end = (
            self.total_steps if max_steps is None else min(self.total_steps, self._step + max_steps)
        )
        status = RunStatus.COMPLETED if end == self.total_steps else RunStatus.PAUSED
        limit = float(self.spec.resources.max_seconds)
        start = last_report = self._clock()
        seconds_before = self._seconds
        window_loss, window_steps, window_samples = 0.0, 0, 0
        call_loss, call_steps, call_samples = 0.0, 0, 0
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            while self._step < end:
                if should_stop is not None and should_stop():
                    status = RunStatus.CANCELED
                    break
                now = self._clock()
                self._seconds = seconds_before + (now - start)
                if self._seconds > limit:
                    raise TrainingFailed(
                        f"ran out of time at step {self._step + 1}: training took more than "
                        f"resources.max_seconds = {self.spec.resources.max_seconds}"
                    )
                loss, samples = self._train_step()
                window_loss += loss
                window_steps += 1
                call_loss += loss
                call_steps += 1
                call_samples += samples
                window_samples += samples
                if on_progress is not None and now - last_report >= self.progress_interval:
                    rate = window_samples / max(now - last_report, 1e-9)
                    on_progress(self._progress(window_loss / window_steps, rate))
                    last_report = now
                    window_loss, window_steps, window_samples = 0.0, 0, 0
            self._seconds = seconds_before + (self._clock() - start)
            if status is RunStatus.COMPLETED or call_steps == 0:
                metrics = self._metrics(self.evaluate())
            else:
                metrics = self._metrics(self._quick_evaluation(call_loss / call_steps))
        if on_progress is not None:
            elapsed = self._clock() - start
            rate = call_samples / elapsed if elapsed > 0 else 0.0
            on_progress(
                Progress(
                    step=self._step,
                    total_steps=self.total_steps,
                    epoch=self.epoch,
                    train_loss=metrics["train_loss"],
                    val_loss=metrics["val_loss"],
                    val_accuracy=metrics.get("val_accuracy"),
                    samples_per_second=rate,
                )
            )
        return TrainResult(status, metrics)

    def _train_step(self) -> tuple[float, int]:
        epoch, index = divmod(self._step, self.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            seed = np.random.SeedSequence([self.spec.hyperparameters.seed, 3, epoch])
            self._order = (
                epoch,
                np.random.default_rng(seed).permutation(len(self.dataset.y_train)),
            )
        batch = self._order[1][index * self.batch_size : (index + 1) * self.batch_size]
        x, y = self.dataset.x_train[batch], self.dataset.y_train[batch]
        out = self.network.forward(x, training=True)
        loss, grad = softmax_cross_entropy(out, y) if self._classify else mean_squared_error(out, y)
        if not math.isfinite(loss):
            raise TrainingFailed(f"diverged at step {self._step + 1}: loss is {loss}")
        self.network.backward(grad)
        hp = self.spec.hyperparameters
        if hp.grad_clip > 0:
            clip_gradients(self.network.grads, hp.grad_clip)
        self._optimizer.step(
            self.network.grads,
            learning_rate(hp, self._step, self.steps_per_epoch, self.total_steps),
        )
        self._step += 1
        self._samples_seen += len(batch)
        if self._step % self.steps_per_epoch == 0:
            self._val = self._evaluate(self.dataset.x_val, self.dataset.y_val)
        return loss, len(batch)

    def _progress(self, train_loss: float, rate: float) -> Progress:
        val_loss, val_score = self._val if self._val is not None else (None, None)
        return Progress(
            step=self._step,
            total_steps=self.total_steps,
            epoch=self.epoch,
            train_loss=train_loss,
            val_loss=val_loss,
            val_accuracy=val_score if self._classify else None,
            samples_per_second=rate,
        )

    def _evaluate(self, x: Array, y: Array) -> tuple[float, float]:
        """(mean loss, accuracy or R^2) of the current weights on examples `x`, `y`."""
        total_loss, correct = 0.0, 0
        predictions = []
        for start in range(0, len(y), _EVAL_BATCH):
            out = self.network.forward(x[start : start + _EVAL_BATCH])
            target = y[start : start + _EVAL_BATCH]
            if self._classify:
                total_loss -= float(
                    log_softmax(out)[np.arange(len(target)), target].sum(dtype=np.float64)
                )
                correct += int((out.argmax(axis=1) == target).sum())
            else:
                predictions.append(out[:, 0].astype(np.float64))
        if self._classify:
            return total_loss / len(y), correct / len(y)
        predicted = np.concatenate(predictions)
        residual = float(((predicted - y) ** 2).sum())
        spread = float(((y - y.mean(dtype=np.float64)) ** 2).sum())
        return residual / len(y), 1.0 - residual / spread if spread > 0 else 0.0

    def evaluate(self) -> dict[str, float]:
        """Loss on the training set, and loss with accuracy or R^2 on the validation set."""
        if self._evaluation is None or self._evaluation[0] != self._step:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
                train_loss, _ = self._evaluate(self.dataset.x_train, self.dataset.y_train)
                val_loss, score = self._evaluate(self.dataset.x_val, self.dataset.y_val)
            metrics = {"train_loss": train_loss, "val_loss": val_loss}
            metrics["val_accuracy" if self._classify else "r2"] = score
            self._evaluation = (self._step, metrics)
        return dict(self._evaluation[1])

    def _quick_evaluation(self, train_loss: float) -> dict[str, float]:
        """Metrics of a pause: the validation set is evaluated, the training set is not."""
        val_loss, score = self._evaluate(self.dataset.x_val, self.dataset.y_val)
        key = "val_accuracy" if self._classify else "r2"
        return {"train_loss": train_loss, "val_loss": val_loss, key: score}

    def _metrics(self, evaluation: dict[str, float]) -> dict[str, float | int]:
        metrics: dict[str, float | int] = dict(evaluation)
        metrics |= {
            "steps": self._step,
            "seconds": self._seconds,
            "samples_seen": self._samples_seen,
        }
        return metrics

    def checkpoint_bytes(self) -> bytes:
        """The run's complete state as NPZ bytes, for `Run.resume`."""
        return Checkpoint(
            params=self.network.arrays(),
            optimizer=self._optimizer.state(),
            optimizer_t=self._optimizer.t,
            rng_state=dict(self._dropout_rng.bit_generator.state),
            step=self._step,
            samples_seen=self._samples_seen,
            seconds=self._seconds,
            spec=self.spec.to_dict(),
            dataset_fingerprint=self.dataset.fingerprint,
        ).to_bytes()

    @classmethod
    def resume(
        cls,
        spec: JobSpec,
        dataset: Dataset,
        checkpoint: bytes,
        *,
        progress_interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> Run:
        """A run continuing from `checkpoint`; training on gives bitwise the same weights as a
        run that was never interrupted. Raises `CheckpointError` if the checkpoint is corrupt
        or was made for another spec or dataset."""
        saved = Checkpoint.from_bytes(checkpoint)
        run = cls(spec, dataset, progress_interval=progress_interval, clock=clock)
        if saved.spec != spec.to_dict():
            raise CheckpointError("checkpoint: made for a different job spec")
        if saved.dataset_fingerprint != dataset.fingerprint:
            raise CheckpointError("checkpoint: made for different training data")
        if not 0 <= saved.step <= run.total_steps:
            raise CheckpointError(f"checkpoint: step {saved.step} is outside 0..{run.total_steps}")
        current = run.network.arrays()
        for name, param in current.items():
            value = saved.params.get(name)
            if value is None or value.shape != param.shape or value.dtype != param.dtype:
                raise CheckpointError(f"checkpoint: parameter {name} is missing or misshapen")
            param[...] = value
        if set(saved.params) != set(current):
            raise CheckpointError("checkpoint: unexpected parameters")
        try:
            run._optimizer.load_state(saved.optimizer_t, saved.optimizer)
        except ValueError as exc:
            raise CheckpointError(f"checkpoint: {exc}") from None
        restore_rng(run._dropout_rng, saved.rng_state)
        run._step = saved.step
        run._samples_seen = saved.samples_seen
        run._seconds = saved.seconds
        if run._step > 0:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
                run._val = run._evaluate(dataset.x_val, dataset.y_val)
        return run

    def model_bytes(self) -> bytes:
        """The trained model as NPZ bytes (see `load_model`); same weights, same bytes."""
        metrics = self.evaluate() | {"steps": self._step}
        return model_to_bytes(self.network, self.dataset, self.spec.to_dict(), metrics)


def _plan(spec: JobSpec, dataset: Dataset) -> list[dict[str, Any]]:
    model = spec.model
    return plan_layers(
        kind=model.kind,
        hidden=model.hidden,
        activation=model.activation,
        dropout=model.dropout,
        conv=model.conv,
        kernel_size=model.kernel_size,
        pool=model.pool,
        feature_shape=dataset.feature_shape,
        n_outputs=max(dataset.n_classes, 1),
    )


def _check_fit(spec: JobSpec, dataset: Dataset) -> None:
    """The spec was checked alone; now that the data's shape is known, check them together."""
    image = len(dataset.feature_shape) == 3
    errors = [task_error(spec.model, dataset.name, dataset.task, image)]
    if errors[0] is None:
        errors.append(model_plan_error(spec.model, dataset.feature_shape, dataset.n_classes))
    found = [e for e in errors if e is not None]
    if found:
        raise SpecError(found)


def _check_memory(spec: JobSpec, dataset: Dataset, plan: list[dict[str, Any]], batch: int) -> None:
    params = parameter_count(plan)
    data = sum(a.nbytes for a in (dataset.x_train, dataset.y_train, dataset.x_val, dataset.y_val))
    # Parameters, gradients and up to two optimizer buffers; activations kept for backward.
    model = 4 * params * 4 + 4 * batch * activation_width(plan, dataset.feature_shape)
    needed = (data + model) // 2**20 + 1
    if needed > spec.resources.max_memory_mb:
        raise SpecError(
            [
                f"resources.max_memory_mb: this run needs about {needed} MiB "
                f"(data {data // 2**20} MiB, model {model // 2**20} MiB), "
                f"got {spec.resources.max_memory_mb}"
            ]
        )
