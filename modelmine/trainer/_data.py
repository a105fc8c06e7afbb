"""Datasets ready for training: split, standardized, and shardable across workers."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]
Label = int | str


class DataError(ValueError):
    """Data that cannot be used: a bad file, or too little of it. The message says what and where."""


@dataclass(frozen=True, eq=False)
class RawData:
    """Examples as loaded, before splitting: `y` holds class indices into `classes`
    (classification) or float targets (regression)."""

    x: NDArray[np.float64]
    y: Array
    task: str
    classes: tuple[Label, ...]
    feature_shape: tuple[int, ...]
    feature_names: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Training and validation examples.

    Features are float32 rows of length prod(feature_shape), standardized with `x_mean` and
    `x_scale` fitted on the training part only. Classification targets are int64 indices into
    `classes`; regression targets are float32, standardized with `y_mean` and `y_scale`.
    """

    name: str
    task: str
    x_train: NDArray[np.float32]
    y_train: Array
    x_val: NDArray[np.float32]
    y_val: Array
    feature_shape: tuple[int, ...]
    feature_names: tuple[str, ...]
    classes: tuple[Label, ...]
    x_mean: NDArray[np.float64]
    x_scale: NDArray[np.float64]
    y_mean: float = 0.0
    y_scale: float = 1.0
    seed: int = 0

    @property
    def n_classes(self) -> int:
        """Number of classes; 0 for regression."""
        return len(self.classes)

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the examples and their layout: equal fingerprints, equal training data."""
        digest = hashlib.sha256(repr((self.task, self.feature_shape, self.classes)).encode())
        for array in (self.x_train, self.y_train, self.x_val, self.y_val):
            digest.update(repr((array.shape, array.dtype.str)).encode())
            digest.update(np.ascontiguousarray(array).data)
        return digest.hexdigest()


def prepare(
    raw: RawData, *, name: str, validation_split: float, seed: int, standardize: bool
) -> Dataset:
    """Split `raw` (stratified by class for classification) and standardize it.

    The split is exactly scikit-learn's ``train_test_split(test_size=validation_split,
    stratify=y, random_state=seed)`` (without `stratify` for regression), so anyone can
    reproduce the validation set with the standard tool.
    """
    train_idx, val_idx = split_indices(raw.y, raw.task, validation_split, seed)
    x_train, x_val = raw.x[train_idx], raw.x[val_idx]
    x_mean = x_train.mean(axis=0) if standardize else np.zeros(x_train.shape[1])
    x_scale = _scale(x_train, standardize)
    y_train, y_val = raw.y[train_idx], raw.y[val_idx]
    y_mean, y_scale = 0.0, 1.0
    if raw.task == "regression":
        if standardize:
            y_mean, y_scale = float(y_train.mean()), float(_scale(y_train[:, None], True)[0])
        y_train = ((y_train - y_mean) / y_scale).astype(np.float32)
        y_val = ((y_val - y_mean) / y_scale).astype(np.float32)
    else:
        y_train, y_val = y_train.astype(np.int64), y_val.astype(np.int64)
    return Dataset(
        name=name,
        task=raw.task,
        x_train=((x_train - x_mean) / x_scale).astype(np.float32),
        y_train=y_train,
        x_val=((x_val - x_mean) / x_scale).astype(np.float32),
        y_val=y_val,
        feature_shape=raw.feature_shape,
        feature_names=raw.feature_names,
        classes=raw.classes,
        x_mean=x_mean,
        x_scale=x_scale,
        y_mean=y_mean,
        y_scale=y_scale,
        seed=seed,
    )


def split_indices(
    y: Array, task: str, validation_split: float, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(train, validation) example indices, in scikit-learn's order for the same seed."""
    n = len(y)
    n_val = math.ceil(validation_split * n)
    n_train = n - n_val
    if n_train < 2 or n_val < 1:
        raise DataError(
            f"too few examples ({n}) for a {validation_split:g} validation split: "
            "need at least 2 for training and 1 for validation"
        )
    # The legacy generator, because scikit-learn's splitters use it.
    rng = np.random.RandomState(seed)
    if task != "classification":
        order = rng.permutation(n)
        return order[n_val:], order[:n_val]
    labels, y_indices, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise DataError(
            f"class {labels[counts.argmin()]} has a single example; "
            "a stratified split needs at least 2 of each class"
        )
    if n_train < len(labels) or n_val < len(labels):
        raise DataError(
            f"too few examples ({n}) to hold each of {len(labels)} classes on both sides"
        )
    by_class = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(counts)[:-1])
    train_counts = _approximate_mode(counts, n_train, rng)
    val_counts = _approximate_mode(counts - train_counts, n_val, rng)
    train_parts, val_parts = [], []
    for members, n_t, n_v in zip(by_class, train_counts, val_counts, strict=True):
        shuffled = members.take(rng.permutation(len(members)), mode="clip")
        train_parts.append(shuffled[:n_t])
        val_parts.append(shuffled[n_t : n_t + n_v])
    train = rng.permutation(np.concatenate(train_parts))
    val = rng.permutation(np.concatenate(val_parts))
    return train, val


def _approximate_mode(counts: Array, draws: int, rng: np.random.RandomState) -> Array:
    """How many of `draws` to take from each class: proportional, remainders handed out by
    size with random tie-breaks (scikit-learn's ``_approximate_mode``, call for call)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (candidates,) = np.where(remainder == value)
            take = min(len(candidates), need)
            floored[rng.choice(candidates, size=take, replace=False)] += 1
            need -= take
            if need == 0:
                break
    taken: Array = floored.astype(int)
    return taken


def _scale(x: NDArray[np.float64], standardize: bool) -> NDArray[np.float64]:
    if not standardize:
        return np.ones(x.shape[1])
    std = x.std(axis=0)
    # A constant column carries no information; dividing by 1 keeps it at zero, not NaN.
    std[std < 1e-12] = 1.0
    result: NDArray[np.float64] = std
    return result


def shard(dataset: Dataset, k: int, i: int) -> Dataset:
    """Part `i` of `k` disjoint, near-equal parts of the training set (validation is shared).

    The parts depend only on the dataset's seed and `k`, so every worker computes the same
    partition; together the k parts hold each training example exactly once.
    """
    n = len(dataset.y_train)
    if not 1 <= k <= n:
        raise ValueError(f"shard count must be 1..{n} (training examples), got {k}")
    if not 0 <= i < k:
        raise ValueError(f"shard index must be 0..{k - 1}, got {i}")
    rng = np.random.default_rng(np.random.SeedSequence([dataset.seed, 0x54A2D, k]))
    part = np.sort(rng.permutation(n)[i::k])
    return dataclasses.replace(
        dataset, x_train=dataset.x_train[part], y_train=dataset.y_train[part]
    )
