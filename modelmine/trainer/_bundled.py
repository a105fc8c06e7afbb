"""The real datasets that scikit-learn ships inside its wheel, read offline.

The CSV files are read straight from the installed package instead of through
``sklearn.datasets.load_*``: importing scikit-learn costs about a second and 90 MiB of memory,
more than the training of a digits model. Tests check that the arrays equal scikit-learn's.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
from pathlib import Path

import numpy as np

from ._data import DataError, Label, RawData

_FILES = {
    "iris": "iris.csv",
    "wine": "wine_data.csv",
    "breast_cancer": "breast_cancer.csv",
}


def _data_dir() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the bundled datasets need scikit-learn installed (its wheel ships them)")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def load_bundled(name: str) -> RawData:
    """digits, iris, wine or breast_cancer, with the class names scikit-learn gives them."""
    directory = _data_dir()
    if name == "digits":
        with gzip.open(directory / "digits.csv.gz", "rt", encoding="ascii") as stream:
            table = np.loadtxt(stream, delimiter=",")
        names = tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8))
        classes: tuple[Label, ...] = tuple(range(10))
        return RawData(
            table[:, :-1],
            table[:, -1].astype(np.int64),
            "classification",
            classes,
            (8, 8, 1),
            names,
        )
    if name not in _FILES:
        raise DataError(f"no bundled dataset named {name!r}")
    with (directory / _FILES[name]).open(encoding="utf-8", newline="") as stream:
        rows = csv.reader(stream)
        header = next(rows)
        n_samples, n_features = int(header[0]), int(header[1])
        table = np.array(list(rows), dtype=np.float64)
    if table.shape != (n_samples, n_features + 1):
        raise DataError(f"bundled dataset {name} is damaged: shape {table.shape}")
    names = tuple(f"feature_{i}" for i in range(n_features))
    return RawData(
        table[:, :-1],
        table[:, -1].astype(np.int64),
        "classification",
        tuple(header[2:]),
        (n_features,),
        names,
    )
