"""The job spec: what to train, on what data, how, and within which limits.

A `JobSpec` is immutable and always valid: `JobSpec.from_dict` checks every field against a
bound and reports every error of the input at once. `to_dict` gives the canonical form (plain
str/int/float/bool/list/dict, every default filled in, fields that do not apply left out), so
`from_dict(s.to_dict()) == s` and the dict can be encoded and signed.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ._architecture import ArchitectureError, parameter_count, plan_layers
from ._fields import Fields

# Limits shared with the data loaders and documented in docs/jobs.md.
MAX_PARAMETERS = 5_000_000
MAX_ROWS = 1_000_000
MAX_COLUMNS = 4096
MAX_CELLS = 50_000_000
MAX_SEED = 2**32 - 1
MAX_SYNTHETIC_CELLS = 10_000_000

MODEL_KINDS = ("linear", "logistic", "mlp", "cnn")
ACTIVATIONS = ("relu", "tanh", "gelu")
INITS = ("auto", "he", "xavier")
BUNDLED = ("digits", "iris", "wine", "breast_cancer")
SYNTHETIC = ("blobs", "moons", "spirals", "xor", "regression")
DATASETS = (*BUNDLED, *SYNTHETIC, "file")
TASKS = ("classification", "regression")
OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "nesterov")
SCHEDULES = ("constant", "step", "cosine")

# Shape facts of the built-in datasets: (feature shape, number of classes; 0 = regression).
_BUILTIN_SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((8, 8, 1), 10),
    "iris": ((4,), 3),
    "wine": ((13,), 3),
    "breast_cancer": ((30,), 2),
    "moons": ((2,), 2),
    "xor": ((2,), 2),
}
_NOISE_DEFAULT = {"blobs": 1.0, "moons": 0.1, "spirals": 0.1, "xor": 0.1, "regression": 0.5}
_HEX64 = re.compile(r"[0-9a-f]{64}")


class SpecError(ValueError):
    """A job spec with one or more bad fields; `errors` holds one "field.path: message" each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


@dataclass(frozen=True)
class ModelSpec:
    """The model family and its shape; fields that do not apply to `kind` keep their defaults."""

    kind: str
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    dropout: float = 0.0
    init: str = "auto"
    conv: tuple[int, ...] = ()
    kernel_size: int = 3
    pool: int = 2

    @classmethod
    def from_dict(cls, data: object) -> ModelSpec:
        """Validate a [model] table alone; raises `SpecError`."""
        return _section(cls, "model", data)

    @classmethod
    def _read(cls, f: Fields) -> ModelSpec:
        kind = f.choice("kind", MODEL_KINDS)
        deep = kind in ("mlp", "cnn")
        if not deep:
            for key in ("hidden", "activation", "dropout", "conv", "kernel_size", "pool"):
                f.reject(key, "only used by mlp and cnn models")
        if kind != "cnn":
            for key in ("conv", "kernel_size", "pool"):
                f.reject(key, "only used by cnn models")
        spec = cls(
            kind=kind,
            hidden=f.integers("hidden", 1, 4096, 8, (128,) if kind == "mlp" else (64,))
            if deep
            else (),
            activation=f.choice("activation", ACTIVATIONS, "relu") if deep else "relu",
            dropout=f.number("dropout", 0.0, 0.9, 0.0) if deep else 0.0,
            init=f.choice("init", INITS, "auto"),
            conv=f.integers("conv", 1, 256, 4, (16, 32), min_len=1) if kind == "cnn" else (),
            kernel_size=f.integer("kernel_size", 1, 7, 3) if kind == "cnn" else 3,
            pool=f.integer("pool", 1, 4, 2) if kind == "cnn" else 2,
        )
        if spec.kernel_size % 2 == 0:
            f.error("kernel_size", f"must be odd (1, 3, 5 or 7), got {spec.kernel_size}")
        f.reject_unknown(cls.__dataclass_fields__)
        return spec

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "init": self.init}
        if self.kind in ("mlp", "cnn"):
            out |= {
                "hidden": list(self.hidden),
                "activation": self.activation,
                "dropout": self.dropout,
            }
        if self.kind == "cnn":
            out |= {"conv": list(self.conv), "kernel_size": self.kernel_size, "pool": self.pool}
        return out


@dataclass(frozen=True)
class DatasetSpec:
    """Where the data comes from and how it is split; see docs/jobs.md for each field.

    Build it with `from_dict` (or as part of a `JobSpec`): that fills in the defaults that
    depend on `name`, which the dataclass defaults cannot.
    """

    name: str
    validation_split: float = 0.25
    seed: int = 0
    standardize: bool = True
    task: str = "classification"
    samples: int = 0
    noise: float = 0.0
    classes: int = 0
    features: int = 0
    path: str = ""
    blob: str = ""
    label: str = "label"
    image_shape: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, data: object) -> DatasetSpec:
        """Validate a [dataset] table alone; raises `SpecError`."""
        return _section(cls, "dataset", data)

    @classmethod
    def _read(cls, f: Fields) -> DatasetSpec:
        name = f.choice("name", DATASETS)
        synthetic = name in SYNTHETIC
        if not synthetic:
            for key in ("samples", "noise"):
                f.reject(key, f"only used by synthetic datasets ({', '.join(SYNTHETIC)})")
        if name not in ("blobs", "spirals"):
            f.reject("classes", "only used by the blobs and spirals datasets")
        if name not in ("blobs", "regression"):
            f.reject("features", "only used by the blobs and regression datasets")
        if name != "file":
            for key in ("path", "blob", "label", "task", "image_shape"):
                f.reject(key, 'only used when name = "file"')
        path, blob = "", ""
        if name == "file":
            path = f.text("path", 4096, "")
            blob = f.text("blob", 64, "")
            if f.has("path") == f.has("blob"):
                f.error("path", 'a file dataset needs exactly one of "path" or "blob"')
            if blob and not _HEX64.fullmatch(blob):
                f.error("blob", f"must be 64 lowercase hex digits (a sha256), got {blob!r}")
        spec = cls(
            name=name,
            validation_split=f.number("validation_split", 0.05, 0.5, 0.25),
            seed=f.integer("seed", 0, MAX_SEED, 0),
            standardize=f.flag("standardize", True),
            task=f.choice("task", TASKS, "classification")
            if name == "file"
            else ("regression" if name == "regression" else "classification"),
            samples=f.integer("samples", 20, 100_000, 1000) if synthetic else 0,
            noise=f.number("noise", 0.0, 10.0, _NOISE_DEFAULT[name]) if synthetic else 0.0,
            classes=f.integer("classes", 2, 10, 3) if name in ("blobs", "spirals") else 0,
            features=f.integer("features", 1, 1000, 2 if name == "blobs" else 10)
            if name in ("blobs", "regression")
            else 0,
            path=path,
            blob=blob,
            label=f.text("label", 200, "label", min_len=1) if name == "file" else "label",
            image_shape=f.integers("image_shape", 1, 256, 3, (), min_len=2)
            if name == "file"
            else (),
        )
        if spec.samples * spec.features > MAX_SYNTHETIC_CELLS:
            f.error(
                "features",
                f"samples x features must be at most {MAX_SYNTHETIC_CELLS:,}, "
                f"got {spec.samples:,} x {spec.features:,}",
            )
        f.reject_unknown(cls.__dataclass_fields__)
        return spec

    @property
    def known_shape(self) -> tuple[tuple[int, ...], int] | None:
        """(feature shape, classes or 0 for regression) when known before loading the data."""
        if self.name in _BUILTIN_SHAPES:
            return _BUILTIN_SHAPES[self.name]
        if self.name == "blobs":
            return (self.features,), self.classes
        if self.name == "spirals":
            return (2,), self.classes
        if self.name == "regression":
            return (self.features,), 0
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "validation_split": self.validation_split,
            "seed": self.seed,
            "standardize": self.standardize,
        }
        if self.name in SYNTHETIC:
            out |= {"samples": self.samples, "noise": self.noise}
        if self.name in ("blobs", "spirals"):
            out["classes"] = self.classes
        if self.name in ("blobs", "regression"):
            out["features"] = self.features
        if self.name == "file":
            out |= {"task": self.task, "label": self.label}
            out |= {"path": self.path} if self.path else {"blob": self.blob}
            if self.image_shape:
                out["image_shape"] = list(self.image_shape)
        return out


@dataclass(frozen=True)
class Hyperparameters:
    """How the model is fitted; optimizer-specific fields apply only to their optimizers."""

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 0.001
    optimizer: str = "adam"
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    schedule: str = "constant"
    step_epochs: int = 10
    gamma: float = 0.1
    seed: int = 0

    @classmethod
    def from_dict(cls, data: object) -> Hyperparameters:
        """Validate a [hyperparameters] table alone; raises `SpecError`."""
        return _section(cls, "hyperparameters", data)

    @classmethod
    def _read(cls, f: Fields) -> Hyperparameters:
        optimizer = f.choice("optimizer", OPTIMIZERS, "adam")
        adam = optimizer in ("adam", "adamw")
        if optimizer not in ("momentum", "nesterov"):
            f.reject("momentum", "only used by the momentum and nesterov optimizers")
        if not adam:
            for key in ("beta1", "beta2"):
                f.reject(key, "only used by the adam and adamw optimizers")
        schedule = f.choice("schedule", SCHEDULES, "constant")
        if schedule != "step":
            for key in ("step_epochs", "gamma"):
                f.reject(key, 'only used by schedule = "step"')
        spec = cls(
            epochs=f.integer("epochs", 1, 10_000, 20),
            batch_size=f.integer("batch_size", 1, 65_536, 64),
            learning_rate=f.number("learning_rate", 1e-7, 10.0, 0.001 if adam else 0.01),
            optimizer=optimizer,
            momentum=f.number("momentum", 0.0, 0.999, 0.9)
            if optimizer in ("momentum", "nesterov")
            else 0.9,
            beta1=f.number("beta1", 0.0, 0.999, 0.9) if adam else 0.9,
            beta2=f.number("beta2", 0.0, 0.99999, 0.999) if adam else 0.999,
            weight_decay=f.number("weight_decay", 0.0, 1.0, 0.01 if optimizer == "adamw" else 0.0),
            grad_clip=f.number("grad_clip", 0.0, 1e6, 0.0),
            schedule=schedule,
            step_epochs=f.integer("step_epochs", 1, 10_000, 10) if schedule == "step" else 10,
            gamma=f.number("gamma", 0.001, 1.0, 0.1) if schedule == "step" else 0.1,
            seed=f.integer("seed", 0, MAX_SEED, 0),
        )
        f.reject_unknown(cls.__dataclass_fields__)
        return spec

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "optimizer": self.optimizer,
            "weight_decay": self.weight_decay,
            "grad_clip": self.grad_clip,
            "schedule": self.schedule,
            "seed": self.seed,
        }
        if self.optimizer in ("momentum", "nesterov"):
            out["momentum"] = self.momentum
        if self.optimizer in ("adam", "adamw"):
            out |= {"beta1": self.beta1, "beta2": self.beta2}
        if self.schedule == "step":
            out |= {"step_epochs": self.step_epochs, "gamma": self.gamma}
        return out


@dataclass(frozen=True)
class Resources:
    """Limits the worker enforces: wall time of the whole run, and memory."""

    max_seconds: int = 3600
    max_memory_mb: int = 1024

    @classmethod
    def from_dict(cls, data: object) -> Resources:
        """Validate a [resources] table alone; raises `SpecError`."""
        return _section(cls, "resources", data)

    @classmethod
    def _read(cls, f: Fields) -> Resources:
        spec = cls(
            max_seconds=f.integer("max_seconds", 1, 7 * 24 * 3600, 3600),
            max_memory_mb=f.integer("max_memory_mb", 64, 65_536, 1024),
        )
        f.reject_unknown(cls.__dataclass_fields__)
        return spec

    def to_dict(self) -> dict[str, Any]:
        return {"max_seconds": self.max_seconds, "max_memory_mb": self.max_memory_mb}


_SECTIONS = ("title", "description", "model", "dataset", "hyperparameters", "resources", "stake")


@dataclass(frozen=True)
class JobSpec:
    """A complete, validated training job."""

    title: str
    model: ModelSpec
    dataset: DatasetSpec
    description: str = ""
    hyperparameters: Hyperparameters = Hyperparameters()
    resources: Resources = Resources()
    stake: int = 100

    @classmethod
    def from_dict(cls, data: object) -> JobSpec:
        """Validate `data` (as parsed from TOML or JSON); raises `SpecError` listing all errors."""
        errors: list[str] = []
        top = Fields("", data, errors)
        raw = data if isinstance(data, dict) else {}
        title = top.text("title", 200, min_len=1)
        description = top.text("description", 10_000, "")
        stake = top.integer("stake", 1, 1_000_000, 100)
        model = ModelSpec._read(Fields("model", raw.get("model", {}), errors))
        dataset = DatasetSpec._read(Fields("dataset", raw.get("dataset", {}), errors))
        hyper = Hyperparameters._read(
            Fields("hyperparameters", raw.get("hyperparameters", {}), errors)
        )
        resources = Resources._read(Fields("resources", raw.get("resources", {}), errors))
        top.reject_unknown(_SECTIONS)
        if not errors:
            errors.extend(_cross_check(model, dataset))
        if errors:
            raise SpecError(_dedupe(errors))
        return cls(
            title=title,
            description=description,
            model=model,
            dataset=dataset,
            hyperparameters=hyper,
            resources=resources,
            stake=stake,
        )

    @classmethod
    def from_toml(cls, source: str | os.PathLike[str]) -> JobSpec:
        """Load a spec from a TOML file path, or from TOML text (a str containing "=")."""
        if isinstance(source, str) and ("=" in source or "\n" in source):
            text, origin = source, "toml"
        else:
            try:
                text, origin = Path(source).read_text(encoding="utf-8"), str(source)
            except (OSError, UnicodeDecodeError) as exc:
                raise SpecError([f"{source}: cannot read the spec: {exc}"]) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError([f"{origin}: not valid TOML: {exc}"]) from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The canonical plain-data form; `JobSpec.from_dict` of it gives back an equal spec."""
        return {
            "title": self.title,
            "description": self.description,
            "model": self.model.to_dict(),
            "dataset": self.dataset.to_dict(),
            "hyperparameters": self.hyperparameters.to_dict(),
            "resources": self.resources.to_dict(),
            "stake": self.stake,
        }


_Section = TypeVar("_Section", ModelSpec, DatasetSpec, Hyperparameters, Resources)


def _section(cls: type[_Section], name: str, data: object) -> _Section:
    errors: list[str] = []
    spec = cls._read(Fields(name, data, errors))
    if errors:
        raise SpecError(errors)
    return spec


def model_plan_error(model: ModelSpec, feature_shape: tuple[int, ...], classes: int) -> str | None:
    """Why `model` cannot be built for this data shape, as a spec error line, or None."""
    try:
        plan = plan_layers(
            kind=model.kind,
            hidden=model.hidden,
            activation=model.activation,
            dropout=model.dropout,
            conv=model.conv,
            kernel_size=model.kernel_size,
            pool=model.pool,
            feature_shape=feature_shape,
            n_outputs=max(classes, 1),
        )
    except ArchitectureError as exc:
        return f"model.conv: {exc}; use fewer conv layers or a smaller model.pool"
    count = parameter_count(plan)
    if count > MAX_PARAMETERS:
        return (
            f"model: has {count:,} parameters, must be at most {MAX_PARAMETERS:,} "
            "(use fewer or smaller hidden layers)"
        )
    return None


def task_error(model: ModelSpec, dataset_name: str, task: str, image: bool) -> str | None:
    """Why `model` does not fit a dataset with this task and shape, or None."""
    if model.kind == "linear" and task != "regression":
        return f"model.kind: 'linear' is for regression; dataset {dataset_name!r} is classification (use 'logistic')"
    if model.kind == "logistic" and task != "classification":
        return f"model.kind: 'logistic' is for classification; dataset {dataset_name!r} is regression (use 'linear')"
    if model.kind == "cnn" and not image:
        return (
            f"model.kind: 'cnn' needs image-shaped data; dataset {dataset_name!r} has flat "
            "features (use 'mlp', or set dataset.image_shape for a file)"
        )
    return None


def _cross_check(model: ModelSpec, dataset: DatasetSpec) -> list[str]:
    shape = dataset.known_shape
    image = len(shape[0]) == 3 if shape else len(dataset.image_shape) >= 2
    errors = [task_error(model, dataset.name, dataset.task, image)]
    if shape is not None and errors[0] is None:
        errors.append(model_plan_error(model, shape[0], shape[1]))
    return [e for e in errors if e is not None]


def _dedupe(errors: list[str]) -> list[str]:
    return list(dict.fromkeys(errors))
