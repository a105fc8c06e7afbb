"""Datasets: bundled sets equal scikit-learn's, splits equal its train_test_split, synthetic
sets follow the seed, standardization sees only the training part, shards partition it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import datasets as sk_datasets
from sklearn.model_selection import train_test_split

from modelmine.trainer import DataError, DatasetSpec, load_dataset, shard
from modelmine.trainer._bundled import load_bundled
from modelmine.trainer._data import split_indices

LOADERS = {
    "digits": sk_datasets.load_digits,
    "iris": sk_datasets.load_iris,
    "wine": sk_datasets.load_wine,
    "breast_cancer": sk_datasets.load_breast_cancer,
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_bundled_sets_equal_scikit_learns(name: str) -> None:
    reference = LOADERS[name]()
    raw = load_bundled(name)
    assert np.array_equal(raw.x, reference.data)
    assert np.array_equal(raw.y, reference.target)
    if name == "digits":
        assert raw.feature_shape == (8, 8, 1)
    else:
        assert raw.classes == tuple(reference.target_names)


@pytest.mark.parametrize("seed", [0, 1, 42])
@pytest.mark.parametrize("fraction", [0.25, 0.1, 0.5])
def test_stratified_split_equals_train_test_split(seed: int, fraction: float) -> None:
    reference = sk_datasets.load_wine()
    _, _, y_train, y_val = train_test_split(
        np.arange(len(reference.target)),
        reference.target,
        test_size=fraction,
        stratify=reference.target,
        random_state=seed,
    )
    train, val = split_indices(reference.target, "classification", fraction, seed)
    assert np.array_equal(reference.target[train], y_train)
    expected_train, expected_val = train_test_split(
        np.arange(len(reference.target)),
        test_size=fraction,
        stratify=reference.target,
        random_state=seed,
    )
    assert np.array_equal(train, expected_train) and np.array_equal(val, expected_val)
    assert np.array_equal(reference.target[val], y_val)


def test_regression_split_equals_train_test_split() -> None:
    expected_train, expected_val = train_test_split(np.arange(101), test_size=0.25, random_state=3)
    train, val = split_indices(np.zeros(101), "regression", 0.25, 3)
    assert np.array_equal(train, expected_train) and np.array_equal(val, expected_val)


def test_split_is_stratified_and_disjoint() -> None:
    dataset = load_dataset(DatasetSpec(name="digits"))
    assert len(dataset.y_val) == 450 and len(dataset.y_train) == 1347
    train_share = np.bincount(dataset.y_train) / len(dataset.y_train)
    val_share = np.bincount(dataset.y_val) / len(dataset.y_val)
    assert np.abs(train_share - val_share).max() < 0.01
    rows = {r.tobytes() for r in dataset.x_train} & {r.tobytes() for r in dataset.x_val}
    assert len(rows) < 10  # digits has a few duplicate images, nothing more


def test_split_needs_two_examples_of_each_class() -> None:
    with pytest.raises(DataError, match="class 2 has a single example"):
        split_indices(np.array([0, 0, 1, 1, 2, 0, 1]), "classification", 0.25, 0)
    with pytest.raises(DataError, match="too few examples"):
        split_indices(np.array([0, 1]), "regression", 0.25, 0)


def test_standardization_is_fitted_on_the_training_part_only() -> None:
    spec = DatasetSpec(name="breast_cancer")
    dataset = load_dataset(spec)
    raw = load_bundled("breast_cancer")
    train, val = split_indices(raw.y, "classification", 0.25, 0)
    assert np.allclose(dataset.x_mean, raw.x[train].mean(axis=0))
    assert np.allclose(dataset.x_scale, raw.x[train].std(axis=0))
    assert np.abs(dataset.x_train.mean(axis=0)).max() < 1e-4
    assert np.allclose(dataset.x_train.std(axis=0), 1, atol=1e-4)
    expected_val = (raw.x[val] - raw.x[train].mean(axis=0)) / raw.x[train].std(axis=0)
    assert np.allclose(dataset.x_val, expected_val, atol=1e-5)
    assert dataset.x_train.dtype == np.float32


def test_constant_features_do_not_become_nan() -> None:
    dataset = load_dataset(DatasetSpec(name="digits"))  # pixel 0 is always 0
    assert np.isfinite(dataset.x_train).all() and np.isfinite(dataset.x_val).all()


def test_unstandardized() -> None:
    dataset = load_dataset(DatasetSpec(name="iris", standardize=False))
    assert dataset.x_train.max() > 5


SYNTHETIC = [
    DatasetSpec(name="blobs", samples=300, classes=4, features=3, noise=1.0),
    DatasetSpec(name="moons", samples=200, noise=0.1),
    DatasetSpec(name="spirals", samples=300, classes=3, noise=0.1),
    DatasetSpec(name="xor", samples=200, noise=0.0),
    DatasetSpec(name="regression", samples=200, features=5, noise=0.5, task="regression"),
]


@pytest.mark.parametrize("spec", SYNTHETIC, ids=lambda s: s.name)
def test_synthetic_sets_follow_the_seed(spec: DatasetSpec) -> None:
    first, again = load_dataset(spec), load_dataset(spec)
    assert first.fingerprint == again.fingerprint
    assert np.array_equal(first.x_train, again.x_train)
    other = load_dataset(DatasetSpec(**{**spec.__dict__, "seed": 1}))
    assert other.fingerprint != first.fingerprint
    assert len(first.y_train) + len(first.y_val) == spec.samples


def test_synthetic_shapes_and_labels() -> None:
    blobs = load_dataset(SYNTHETIC[0])
    assert blobs.feature_shape == (3,) and blobs.n_classes == 4
    xor = load_dataset(DatasetSpec(name="xor", samples=200, noise=0.0, standardize=False))
    x, y = xor.x_train, xor.y_train
    assert np.array_equal(y, ((x[:, 0] > 0) != (x[:, 1] > 0)).astype(int))
    regression = load_dataset(SYNTHETIC[4])
    assert regression.task == "regression" and regression.n_classes == 0
    assert abs(float(regression.y_train.mean())) < 1e-5


def test_shards_partition_the_training_set() -> None:
    dataset = load_dataset(DatasetSpec(name="iris"))
    parts = [shard(dataset, 3, i) for i in range(3)]
    rows = [tuple(r) for p in parts for r in p.x_train.tolist()]
    assert sorted(rows) == sorted(tuple(r) for r in dataset.x_train.tolist())
    assert [len(p.y_train) for p in parts] == [38, 37, 37]
    assert all(p.x_val is dataset.x_val for p in parts)
    again = shard(dataset, 3, 1)
    assert np.array_equal(again.x_train, parts[1].x_train)
    assert parts[0].fingerprint != parts[1].fingerprint != dataset.fingerprint
    with pytest.raises(ValueError, match=r"shard index must be 0\.\.2"):
        shard(dataset, 3, 3)
    with pytest.raises(ValueError, match="shard count must be"):
        shard(dataset, 0, 0)
