"""The submit form as data: form fields to a job spec and back, and the trainer's errors per field.

Pure (no Textual), so the rules are tested on their own. The trainer's ``JobSpec`` is the only
judge of a spec: the form parses what it must (numbers, the list of layers) and hands anything
it cannot parse to the trainer as typed, so every message the user sees is the trainer's.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from modelmine.trainer import JobSpec, SpecError

MODEL_KINDS: Final = ("mlp", "cnn", "logistic", "linear")
DATASETS: Final = (
    "digits",
    "iris",
    "wine",
    "breast_cancer",
    "blobs",
    "moons",
    "spirals",
    "xor",
    "regression",
    "file",
)
OPTIMIZERS: Final = ("adam", "adamw", "sgd", "momentum", "nesterov")

# Form field -> the spec path it edits.
PATHS: Final[Mapping[str, str]] = {
    "title": "title",
    "description": "description",
    "model": "model.kind",
    "layers": "model.hidden",
    "dataset": "dataset.name",
    "dataset_path": "dataset.path",
    "epochs": "hyperparameters.epochs",
    "batch_size": "hyperparameters.batch_size",
    "learning_rate": "hyperparameters.learning_rate",
    "optimizer": "hyperparameters.optimizer",
    "seed": "hyperparameters.seed",
    "stake": "stake",
}
FIELDS: Final = tuple(PATHS)

# Keys of a section that only apply to some choices; dropped from a loaded spec when the form
# changes the choice, so that switching from mlp to logistic does not leave `hidden` behind.
_MODEL_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "linear": frozenset({"kind", "init"}),
    "logistic": frozenset({"kind", "init"}),
    "mlp": frozenset({"kind", "init", "hidden", "activation", "dropout"}),
    "cnn": frozenset(
        {"kind", "init", "hidden", "activation", "dropout", "conv", "kernel_size", "pool"}
    ),
}
_DATASET_COMMON: Final = frozenset({"name", "validation_split", "seed", "standardize"})
_OPTIMIZER_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "adam": frozenset({"beta1", "beta2"}),
    "adamw": frozenset({"beta1", "beta2"}),
    "sgd": frozenset(),
    "momentum": frozenset({"momentum"}),
    "nesterov": frozenset({"momentum"}),
}


class SpecFileError(Exception):
    """A spec file that cannot be read or is not TOML; one line for people."""


@dataclass
class FormCheck:
    """The outcome of checking the form: the spec (if valid) and every error by field."""

    spec: dict[str, Any]
    job: JobSpec | None
    errors: dict[str, str] = field(default_factory=dict)  # form field -> first message
    other: list[str] = field(default_factory=list)  # errors of fields the form does not show

    @property
    def ok(self) -> bool:
        return self.job is not None and not self.errors and not self.other

    @property
    def count(self) -> int:
        return len(self.errors) + len(self.other)


def _int_or_text(text: str) -> int | str:
    try:
        return int(text.replace("_", ""))
    except ValueError:
        return text


def _float_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def parse_layers(text: str) -> list[int | str]:
    """``"256, 128"`` or ``"256 128"`` -> [256, 128]; what is not a number stays as typed."""
    parts = text.replace(",", " ").split()
    return [_int_or_text(p) for p in parts]


def form_to_spec(
    values: Mapping[str, str], base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The spec dict the form describes, on top of ``base`` (a loaded spec file's other fields)."""
    spec: dict[str, Any] = copy.deepcopy(dict(base or {}))

    def get(name: str) -> str:
        return values.get(name, "").strip()

    spec["title"] = values.get("title", "").strip()
    description = values.get("description", "")
    if description.strip():
        spec["description"] = description
    else:
        spec.pop("description", None)

    model = dict(spec.get("model") or {})
    kind = get("model")
    if kind:
        if model.get("kind") != kind:
            allowed = _MODEL_KEYS.get(kind, frozenset(model))
            model = {k: v for k, v in model.items() if k in allowed}
        model["kind"] = kind
    if kind in ("mlp", "cnn") and get("layers"):
        model["hidden"] = parse_layers(get("layers"))
    else:
        model.pop("hidden", None)
    spec["model"] = model

    dataset = dict(spec.get("dataset") or {})
    name = get("dataset")
    if name:
        if dataset.get("name") != name:
            dataset = {k: v for k, v in dataset.items() if k in _DATASET_COMMON}
        dataset["name"] = name
    if name == "file":
        if get("dataset_path"):
            dataset["path"] = get("dataset_path")
            dataset.pop("blob", None)
        elif "blob" not in dataset:
            dataset.pop("path", None)
    else:
        dataset.pop("path", None)
        dataset.pop("blob", None)
    spec["dataset"] = dataset

    hyper = dict(spec.get("hyperparameters") or {})
    optimizer = get("optimizer")
    if optimizer and hyper.get("optimizer", "adam") != optimizer:
        extra = set().union(*_OPTIMIZER_KEYS.values()) - _OPTIMIZER_KEYS.get(optimizer, set())
        hyper = {k: v for k, v in hyper.items() if k not in extra}
        if "learning_rate" in hyper and not get("learning_rate"):
            del hyper["learning_rate"]  # the default follows the optimizer
    for name, key, parse in (
        ("epochs", "epochs", _int_or_text),
        ("batch_size", "batch_size", _int_or_text),
        ("learning_rate", "learning_rate", _float_or_text),
        ("seed", "seed", _int_or_text),
    ):
        if get(name):
            hyper[key] = parse(get(name))
        else:
            hyper.pop(key, None)
    if optimizer:
        hyper["optimizer"] = optimizer
    if hyper:
        spec["hyperparameters"] = hyper
    else:
        spec.pop("hyperparameters", None)

    if get("stake"):
        spec["stake"] = _int_or_text(get("stake"))
    else:
        spec.pop("stake", None)
    return spec


def spec_to_form(spec: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """Form values for a spec, and the rest of the spec (kept as the form's base)."""

    def section(name: str) -> dict[str, Any]:
        value = spec.get(name)
        return value if isinstance(value, dict) else {}

    model, dataset, hyper = section("model"), section("dataset"), section("hyperparameters")

    def text(value: Any) -> str:
        return "" if value is None else str(value)

    hidden = model.get("hidden")
    values = {
        "title": text(spec.get("title")),
        "description": text(spec.get("description")),
        "model": text(model.get("kind")),
        "layers": ", ".join(str(h) for h in hidden) if isinstance(hidden, list) else text(hidden),
        "dataset": text(dataset.get("name")),
        "dataset_path": text(dataset.get("path")),
        "epochs": text(hyper.get("epochs")),
        "batch_size": text(hyper.get("batch_size")),
        "learning_rate": text(hyper.get("learning_rate")),
        "optimizer": text(hyper.get("optimizer")),
        "seed": text(hyper.get("seed")),
        "stake": text(spec.get("stake")),
    }
    return values, copy.deepcopy(dict(spec))


def load_spec_file(path: Path) -> dict[str, Any]:
    """A spec file as a dict, with a relative dataset path made absolute from the file's folder."""
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecFileError(f"{path}: not valid TOML: {exc}") from None
    dataset = spec.get("dataset")
    if isinstance(dataset, dict) and isinstance(dataset.get("path"), str) and dataset["path"]:
        data = Path(dataset["path"]).expanduser()
        if not data.is_absolute():
            dataset["path"] = str((path.resolve().parent / data).resolve())
    return spec


def field_of(error: str) -> tuple[str | None, str]:
    """Which form field a trainer error (``"path: message"``) belongs to, and its message."""
    path, sep, message = error.partition(": ")
    if not sep:
        return None, error
    for name, prefix in PATHS.items():
        if path == prefix or path.startswith((prefix + "[", prefix + ".")):
            return name, message
    return None, error


def check(values: Mapping[str, str], base: Mapping[str, Any] | None = None) -> FormCheck:
    """Build the spec from the form and let the trainer judge it."""
    spec = form_to_spec(values, base)
    result = FormCheck(spec=spec, job=None)
    try:
        result.job = JobSpec.from_dict(copy.deepcopy(spec))
    except SpecError as exc:
        for error in exc.errors:
            name, message = field_of(error)
            if name is None:
                result.other.append(error)
            else:
                result.errors.setdefault(name, message)
    path = spec.get("dataset", {}).get("path")
    if values.get("dataset") == "file" and path and not Path(path).expanduser().is_file():
        result.errors.setdefault("dataset_path", f"no file at {path}")
    if result.errors or result.other:
        result.job = None
    return result
