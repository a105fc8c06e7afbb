"""Trained-model files: self-contained, deterministic, and strict about what they accept."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelmine.trainer import JobSpec, ModelFileError, Run, load_dataset, load_model
from modelmine.trainer._bundled import load_bundled
from modelmine.trainer._data import split_indices
from modelmine.trainer._npz import read_npz, write_npz


def trained(
    model: dict[str, Any], dataset: dict[str, Any], epochs: int = 5, lr: float = 0.001
) -> Run:
    hyperparameters = {"epochs": epochs, "learning_rate": lr}
    spec = JobSpec.from_dict(
        {"title": "m", "model": model, "dataset": dataset, "hyperparameters": hyperparameters}
    )
    run = Run(spec, load_dataset(spec.dataset))
    run.train()
    return run


@pytest.fixture(scope="module")
def iris_run() -> Run:
    return trained({"kind": "mlp", "hidden": [8], "dropout": 0.1}, {"name": "iris"}, epochs=30)


def test_predict_takes_raw_features_and_returns_class_labels(iris_run: Run) -> None:
    model = load_model(iris_run.model_bytes())
    raw = load_bundled("iris")
    _, val = split_indices(raw.y, "classification", 0.25, 0)
    labels = model.predict(raw.x[val])
    expected = iris_run.network.forward(iris_run.dataset.x_val).argmax(axis=1)
    assert labels.tolist() == [raw.classes[i] for i in expected]
    assert set(labels.tolist()) <= {"setosa", "versicolor", "virginica"}
    proba = model.predict_proba(raw.x[val])
    assert proba.shape == (len(val), 3) and np.allclose(proba.sum(axis=1), 1)
    assert model.predict(raw.x[0]).shape == (1,)


def test_metadata_describes_the_model(iris_run: Run) -> None:
    meta = load_model(iris_run.model_bytes()).metadata
    assert meta["task"] == "classification"
    assert meta["classes"] == ["setosa", "versicolor", "virginica"]
    assert [layer["type"] for layer in meta["architecture"]] == [
        "dense",
        "relu",
        "dropout",
        "dense",
    ]
    assert meta["spec"] == iris_run.spec.to_dict()
    assert meta["metrics"]["val_accuracy"] == iris_run.evaluate()["val_accuracy"]
    assert "seconds" not in meta["metrics"]  # the file must not depend on the clock


def test_model_bytes_are_deterministic_and_load_from_a_path(iris_run: Run, tmp_path: Path) -> None:
    again = trained({"kind": "mlp", "hidden": [8], "dropout": 0.1}, {"name": "iris"}, epochs=30)
    assert again.model_bytes() == iris_run.model_bytes()
    path = tmp_path / "m.npz"
    path.write_bytes(iris_run.model_bytes())
    assert load_model(path).metadata == load_model(str(path)).metadata
    # A standard NPZ: numpy itself reads it without pickle.
    with np.load(path, allow_pickle=False) as archive:
        assert "param/0.W" in archive.files


def test_regression_predictions_are_in_the_targets_units() -> None:
    run = trained({"kind": "linear"}, {"name": "regression", "samples": 400}, epochs=30, lr=0.05)
    model = load_model(run.model_bytes())
    raw_x = run.dataset.x_val * run.dataset.x_scale + run.dataset.x_mean
    raw_y = run.dataset.y_val * run.dataset.y_scale + run.dataset.y_mean
    predicted = model.predict(raw_x)
    r2 = 1 - ((predicted - raw_y) ** 2).sum() / ((raw_y - raw_y.mean()) ** 2).sum()
    assert r2 == pytest.approx(run.evaluate()["r2"], abs=1e-4)
    assert r2 > 0.95


def test_cnn_model_round_trip() -> None:
    run = trained({"kind": "cnn", "conv": [4], "hidden": [8]}, {"name": "digits"}, epochs=1)
    model = load_model(run.model_bytes())
    raw = run.dataset.x_val * run.dataset.x_scale + run.dataset.x_mean
    expected = run.network.forward(run.dataset.x_val).argmax(axis=1)
    assert model.predict(raw).tolist() == expected.tolist()


def test_predict_checks_its_input(iris_run: Run) -> None:
    model = load_model(iris_run.model_bytes())
    with pytest.raises(ValueError, match="expected rows of 4 features"):
        model.predict(np.ones((2, 5)))
    with pytest.raises(ValueError, match="finite"):
        model.predict(np.array([[1.0, np.nan, 1.0, 1.0]]))


def rewrite(data: bytes, change: Any) -> bytes:
    arrays, meta = read_npz(data, max_elements=10**7)
    change(arrays, meta)
    return write_npz(arrays, meta)


def corrupt_cases() -> list[tuple[Any, str]]:
    def set_meta(key: str, value: Any) -> Any:
        return lambda arrays, meta: meta.__setitem__(key, value)

    def set_array(key: str, value: Any) -> Any:
        return lambda arrays, meta: arrays.__setitem__(key, value)

    def drop(key: str) -> Any:
        return lambda arrays, meta: arrays.pop(key)

    def layer(i: int, **fields: Any) -> Any:
        return lambda arrays, meta: meta["architecture"][i].update(fields)

    return [
        (set_meta("format", "other"), "not a ModelMine model"),
        (set_meta("version", 99), "unsupported version 99"),
        (set_meta("task", "ranking"), "unknown task"),
        (set_meta("classes", ["a", "b"]), "3 outputs do not match"),
        (
            lambda arrays, meta: meta.update(feature_shape=[5], feature_names=list("abcde")),
            "layer 0 expects 4 inputs",
        ),
        (set_meta("feature_names", ["a"]), "feature_names must be one string per feature"),
        (set_meta("classes", [True, False, 2]), "classes must be integers or strings"),
        (set_meta("y_scale", 0.0), "y_scale non-zero"),
        (set_meta("architecture", []), "non-empty list"),
        (layer(1, type="swish"), "unknown type 'swish'"),
        (layer(0, out=10**8), "must be a positive integer"),
        (layer(0, **{"in": True}), "must be a positive integer"),
        (drop("param/0.W"), "missing parameter 0.W"),
        (
            set_array("param/0.W", np.ones((4, 9), dtype=np.float32)),
            "parameter 0.W has shape (4, 9)",
        ),
        (set_array("extra", np.ones(2)), "unexpected arrays: extra"),
        (drop("x_mean"), "x_mean"),
    ]


@pytest.mark.parametrize(("change", "expected"), corrupt_cases())
def test_corrupt_model_files_are_refused(iris_run: Run, change: Any, expected: str) -> None:
    with pytest.raises(
        ModelFileError, match="^model file: .*" + expected.replace("(", r"\(").replace(")", r"\)")
    ):
        load_model(rewrite(iris_run.model_bytes(), change))


def test_non_model_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not an NPZ"):
        load_model(b"hello")
    with pytest.raises(ModelFileError, match="cannot read"):
        load_model(tmp_path / "missing.npz")
    buffer = io.BytesIO()
    np.savez(buffer, evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelFileError, match="pickled data is refused"):
        load_model(buffer.getvalue())
    with pytest.raises(ModelFileError, match="metadata is not valid JSON"):
        load_model(write_npz({"__meta__": np.frombuffer(b"{nope", dtype=np.uint8)}))
