"""Trained-model files: weights plus the architecture and preprocessing as JSON, in one NPZ.

A model file is self-contained: `load_model` rebuilds the network from its metadata alone and
`predict` takes raw (unstandardized) features, as in the original data file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._architecture import check_plan
from ._data import Dataset
from ._network import Network
from ._npz import NpzError, read_npz, write_npz
from ._spec import MAX_COLUMNS, MAX_PARAMETERS

FORMAT = "modelmine-model"
VERSION = 1


class ModelFileError(ValueError):
    """Bytes that are not a valid trained-model file."""


def model_to_bytes(
    network: Network, dataset: Dataset, spec: dict[str, Any], metrics: dict[str, Any]
) -> bytes:
    """Serialize a trained network with what `predict` needs; same inputs, same bytes."""
    arrays: dict[str, NDArray[Any]] = {f"param/{k}": v for k, v in network.arrays().items()}
    arrays["x_mean"] = dataset.x_mean
    arrays["x_scale"] = dataset.x_scale
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "architecture": network.plan,
        "task": dataset.task,
        "classes": list(dataset.classes),
        "feature_shape": list(dataset.feature_shape),
        "feature_names": list(dataset.feature_names),
        "y_mean": dataset.y_mean,
        "y_scale": dataset.y_scale,
        "dataset": dataset.name,
        "spec": spec,
        "metrics": metrics,
    }
    return write_npz(arrays, meta)


class TrainedModel:
    """A loaded model: `predict` maps raw feature rows to class labels or regression values."""

    def __init__(
        self,
        network: Network,
        metadata: dict[str, Any],
        x_mean: NDArray[Any],
        x_scale: NDArray[Any],
    ) -> None:
        self.metadata = metadata
        self.network = network
        self.task: str = metadata["task"]
        self.classes: list[int | str] = metadata["classes"]
        self.feature_names: list[str] = metadata["feature_names"]
        self.n_features = len(x_mean)
        self._x_mean = x_mean
        self._x_scale = x_scale

    def _outputs(self, x: NDArray[Any]) -> NDArray[Any]:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features must be finite numbers (no NaN or infinity)")
        dtype = self.network.params[0].dtype
        standardized = ((x - self._x_mean) / self._x_scale).astype(dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            parts = [
                self.network.forward(standardized[i : i + 4096]) for i in range(0, len(x), 4096)
            ]
        return np.concatenate(parts) if parts else np.zeros((0, 1), dtype=dtype)

    def predict(self, x: NDArray[Any]) -> NDArray[Any]:
        """Class labels (classification) or values in the target's units (regression)."""
        out = self._outputs(x)
        if self.task == "classification":
            labels: NDArray[Any] = np.asarray(self.classes)[out.argmax(axis=1)]
            return labels
        result: NDArray[Any] = (
            out[:, 0].astype(np.float64) * self.metadata["y_scale"] + self.metadata["y_mean"]
        )
        return result

    def predict_proba(self, x: NDArray[Any]) -> NDArray[Any]:
        """Class probabilities, one column per entry of `classes`."""
        if self.task != "classification":
            raise ValueError("predict_proba needs a classification model")
        out = self._outputs(x).astype(np.float64)
        out -= out.max(axis=1, keepdims=True)
        np.exp(out, out=out)
        result: NDArray[Any] = out / out.sum(axis=1, keepdims=True)
        return result


def load_model(source: bytes | str | os.PathLike[str]) -> TrainedModel:
    """Load a model file (bytes or a path); raises `ModelFileError` if it is not valid."""
    if not isinstance(source, bytes):
        try:
            source = Path(source).read_bytes()
        except OSError as exc:
            raise ModelFileError(f"{exc.filename}: cannot read: {exc.strerror or exc}") from None
    try:
        arrays, meta = read_npz(
            source, max_elements=MAX_PARAMETERS + 2 * MAX_COLUMNS, what="model file"
        )
    except NpzError as exc:
        raise ModelFileError(str(exc)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError("model file: not a ModelMine model")
    if meta.get("version") != VERSION:
        raise ModelFileError(f"model file: unsupported version {meta.get('version')!r}")
    try:
        _check_meta(meta)
        n_features = math.prod(meta["feature_shape"])
        outputs = check_plan(meta["architecture"], n_features, max_parameters=MAX_PARAMETERS)
        if outputs != (len(meta["classes"]) if meta["task"] == "classification" else 1):
            raise ValueError(f"{outputs} outputs do not match the task and classes")
        x_mean, x_scale = arrays.pop("x_mean"), arrays.pop("x_scale")
        if x_mean.shape != (n_features,) or x_scale.shape != (n_features,):
            raise ValueError("standardization does not match the feature count")
        extra = [k for k in arrays if not k.startswith("param/")]
        if extra:
            raise ValueError(f"unexpected arrays: {', '.join(sorted(extra))}")
        params = {k.removeprefix("param/"): v for k, v in arrays.items()}
        network = Network.from_arrays(meta["architecture"], params)
    except (KeyError, ValueError) as exc:
        raise ModelFileError(f"model file: {exc}") from None
    return TrainedModel(network, meta, x_mean.astype(np.float64), x_scale.astype(np.float64))


def _check_meta(meta: dict[str, Any]) -> None:
    kinds = {
        "architecture": list,
        "task": str,
        "classes": list,
        "feature_shape": list,
        "feature_names": list,
        "y_mean": float,
        "y_scale": float,
    }
    for key, kind in kinds.items():
        if not isinstance(meta.get(key), kind):
            raise ValueError(f"metadata field {key!r} is missing or not a {kind.__name__}")
    if meta["task"] not in ("classification", "regression"):
        raise ValueError(f"unknown task {meta['task']!r}")
    if meta["task"] == "classification" and len(meta["classes"]) < 2:
        raise ValueError("a classifier needs at least two classes")
    if not all(isinstance(d, int) and 0 < d <= MAX_COLUMNS for d in meta["feature_shape"]):
        raise ValueError("feature_shape must be positive integers")
    if not all(isinstance(c, int | str) and not isinstance(c, bool) for c in meta["classes"]):
        raise ValueError("classes must be integers or strings")
    names = meta["feature_names"]
    if not all(isinstance(n, str) for n in names) or len(names) != math.prod(meta["feature_shape"]):
        raise ValueError("feature_names must be one string per feature")
    if not (math.isfinite(meta["y_mean"]) and math.isfinite(meta["y_scale"]) and meta["y_scale"]):
        raise ValueError("y_mean and y_scale must be finite, y_scale non-zero")
