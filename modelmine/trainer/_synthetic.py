"""Synthetic datasets generated from a seed: the same spec always gives the same examples."""

from __future__ import annotations

import numpy as np

from ._data import RawData
from ._spec import DatasetSpec


def generate(spec: DatasetSpec) -> RawData:
    """The examples of a synthetic dataset spec (blobs, moons, spirals, xor or regression)."""
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0x5EED]))
    n, noise = spec.samples, spec.noise
    if spec.name == "regression":
        x = rng.standard_normal((n, spec.features))
        weights = rng.uniform(-3, 3, spec.features)
        y = x @ weights + rng.uniform(-5, 5) + noise * rng.standard_normal(n)
        names = tuple(f"x{i}" for i in range(spec.features))
        return RawData(x, y, "regression", (), (spec.features,), names)
    if spec.name == "blobs":
        x, y = _blobs(rng, n, spec.classes, spec.features, noise)
    elif spec.name == "moons":
        x, y = _moons(rng, n, noise)
    elif spec.name == "spirals":
        x, y = _spirals(rng, n, spec.classes, noise)
    elif spec.name == "xor":
        x = rng.uniform(-1, 1, (n, 2))
        y = ((x[:, 0] > 0) != (x[:, 1] > 0)).astype(np.int64)
        x += noise * rng.standard_normal(x.shape)
    else:
        raise ValueError(f"not a synthetic dataset: {spec.name}")
    n_classes = int(y.max()) + 1
    names = tuple(f"x{i}" for i in range(x.shape[1]))
    return RawData(x, y, "classification", tuple(range(n_classes)), (x.shape[1],), names)


def _labels(n: int, classes: int) -> np.ndarray:
    """Class of each example: classes as equal in size as n allows."""
    return np.arange(n) % classes


def _blobs(
    rng: np.random.Generator, n: int, classes: int, features: int, std: float
) -> tuple[np.ndarray, np.ndarray]:
    centers = rng.uniform(-10, 10, (classes, features))
    y = _labels(n, classes)
    return centers[y] + std * rng.standard_normal((n, features)), y


def _moons(rng: np.random.Generator, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    y = _labels(n, 2)
    t = rng.uniform(0, np.pi, n)
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)
    lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.where(y[:, None] == 0, upper, lower)
    return x + noise * rng.standard_normal((n, 2)), y


def _spirals(
    rng: np.random.Generator, n: int, classes: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved arms winding 1.5 times around the origin; `noise` perturbs the angle (radians)."""
    y = _labels(n, classes)
    radius = rng.uniform(0.05, 1.0, n)
    angle = 2 * np.pi * y / classes + 3 * np.pi * radius + noise * rng.standard_normal(n)
    return np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1), y
