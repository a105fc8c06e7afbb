"""The example specs reach their accuracy goals on the fixed split (25% stratified validation,
seed 0), next to a scikit-learn reference model fitted on exactly the same examples.

"Within 1 point of scikit-learn" is checked one-sided: doing better than the reference is
never a failure.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier

from modelmine.trainer import Dataset, JobSpec, Run, load_dataset

EXAMPLES = Path(__file__).parents[3] / "examples"


def train_example(name: str) -> tuple[dict[str, Any], Dataset, JobSpec]:
    spec = JobSpec.from_toml(EXAMPLES / name)
    assert spec.dataset.validation_split == 0.25 and spec.dataset.seed == 0
    dataset = load_dataset(spec.dataset)
    result = Run(spec, dataset).train()
    assert result.completed
    return result.metrics, dataset, spec


def sklearn_score(model: Any, dataset: Dataset) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(dataset.x_train, dataset.y_train)
    return float(model.score(dataset.x_val, dataset.y_val))


@pytest.fixture(scope="module")
def digits_reference() -> float:
    """scikit-learn's MLPClassifier with the digits-mlp example's hidden layer."""
    spec = JobSpec.from_toml(EXAMPLES / "digits-mlp.toml")
    mlp = MLPClassifier(hidden_layer_sizes=spec.model.hidden, max_iter=500, random_state=0)
    return sklearn_score(mlp, load_dataset(spec.dataset))


def test_digits_mlp(digits_reference: float) -> None:
    metrics, _, _ = train_example("digits-mlp.toml")
    assert metrics["val_accuracy"] >= 0.97
    assert metrics["val_accuracy"] >= digits_reference - 0.01


def test_digits_cnn(digits_reference: float) -> None:
    metrics, _, _ = train_example("digits-cnn.toml")
    assert metrics["val_accuracy"] >= 0.97
    assert metrics["val_accuracy"] >= digits_reference - 0.01


def test_breast_cancer_logistic() -> None:
    metrics, dataset, _ = train_example("breast-cancer-logistic.toml")
    reference = sklearn_score(LogisticRegression(max_iter=5000), dataset)
    assert metrics["val_accuracy"] >= 0.95
    assert metrics["val_accuracy"] >= reference - 0.01


def test_iris_softmax() -> None:
    metrics, dataset, _ = train_example("iris-softmax.toml")
    reference = sklearn_score(LogisticRegression(max_iter=5000), dataset)
    assert metrics["val_accuracy"] >= 0.93
    assert metrics["val_accuracy"] >= reference - 0.01


def test_spirals_mlp() -> None:
    metrics, dataset, spec = train_example("spirals-mlp.toml")
    mlp = MLPClassifier(hidden_layer_sizes=spec.model.hidden, max_iter=2000, random_state=0)
    reference = sklearn_score(mlp, dataset)
    assert metrics["val_accuracy"] >= 0.95
    assert metrics["val_accuracy"] >= reference - 0.01


def test_linear_regression_r2() -> None:
    metrics, dataset, _ = train_example("regression-linear.toml")
    reference = sklearn_score(LinearRegression(), dataset)
    assert abs(metrics["r2"] - reference) <= 0.01
