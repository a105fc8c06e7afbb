"""User data files: CSV with a header and a label column, or NPZ with arrays X and y.

Files come from strangers on the network, so every check is explicit and every failure is a
`DataError` that says what is wrong and where (row, column). NPZ files are never unpickled.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._data import DataError, Label, RawData
from ._fields import did_you_mean
from ._npz import NpzError, read_npz
from ._spec import MAX_CELLS, MAX_COLUMNS, MAX_ROWS

MAX_CLASSES = 1000
_CHUNK = 8192  # rows converted to numbers at a time, bounding the memory held as text


def load_file(
    path: Path, *, what: str, label: str, task: str, image_shape: Sequence[int]
) -> RawData:
    """Read a CSV or NPZ data file (told apart by content, not name) into examples."""
    try:
        with path.open("rb") as stream:
            magic = stream.read(4)
    except OSError as exc:
        raise DataError(f"{what}: cannot read: {exc.strerror or exc}") from None
    if magic == b"PK\x03\x04":
        x, labels, names = _read_npz(path, what)
        shape: tuple[int, ...] = tuple(x.shape[1:]) if x.ndim > 2 else ()
        x = x.reshape(len(x), -1)
    else:
        x, labels, names = _read_csv(path, what, label, label_required=True)
        shape = ()
    assert labels is not None, "a required label column is always found or refused"
    if image_shape:
        wanted = (*image_shape, 1) if len(image_shape) == 2 else tuple(image_shape)
        if math.prod(wanted) != x.shape[1]:
            raise DataError(
                f"dataset.image_shape: {list(image_shape)} holds {math.prod(wanted)} values, "
                f"but {what} has {x.shape[1]} features"
            )
        shape = wanted
    elif len(shape) == 2:
        shape = (*shape, 1)
    if not shape:
        shape = (x.shape[1],)
    y, classes = _targets(labels, task, what)
    return RawData(x, y, task, classes, shape, names)


def _read_csv(
    path: Path, what: str, label: str, *, label_required: bool
) -> tuple[NDArray[np.float64], list[str] | None, tuple[str, ...]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            return _parse_csv(csv.reader(stream, strict=True), what, label, label_required)
    except UnicodeDecodeError:
        raise DataError(f"{what}: not UTF-8 text (expected CSV or NPZ)") from None
    except csv.Error as exc:
        raise DataError(f"{what}: malformed CSV: {exc}") from None
    except OSError as exc:
        raise DataError(f"{what}: cannot read: {exc.strerror or exc}") from None


def _parse_csv(
    rows: Any, what: str, label: str, label_required: bool
) -> tuple[NDArray[np.float64], list[str] | None, tuple[str, ...]]:
    header = next((r for r in rows if r), None)
    if header is None:
        raise DataError(f"{what}: empty: no header row")
    header = [name.strip() for name in header]
    if len(header) > MAX_COLUMNS + 1:
        raise DataError(f"{what}: too many columns: {len(header)}, at most {MAX_COLUMNS + 1}")
    if label not in header and label_required:
        raise DataError(
            f"{what}: no label column {label!r}{did_you_mean(label, header)} "
            f"(columns: {', '.join(header[:10])}{', ...' if len(header) > 10 else ''}); "
            "set dataset.label"
        )
    duplicates = sorted({n for n in header if header.count(n) > 1})
    if duplicates:
        raise DataError(f"{what}: duplicate column names: {', '.join(duplicates)}")
    label_at = header.index(label) if label in header else None
    if len(header) < 1 + (label_at is not None):
        raise DataError(f"{what}: no feature columns besides the label column {label!r}")
    names = tuple(n for i, n in enumerate(header) if i != label_at)
    max_rows = min(MAX_ROWS, MAX_CELLS // len(names))
    chunks: list[NDArray[np.float64]] = []
    labels: list[str] = []
    pending: list[list[str]] = []
    for cells in rows:
        if not cells:
            continue  # blank lines, including a trailing one
        if len(cells) != len(header):
            raise DataError(
                f"{what}: row {len(labels) + 1} (line {rows.line_num}) has {len(cells)} cells, "
                f"the header has {len(header)}"
            )
        if len(labels) >= max_rows:
            raise DataError(f"{what}: too many rows: more than {max_rows:,}")
        labels.append(cells.pop(label_at).strip() if label_at is not None else "")
        pending.append(cells)
        if len(pending) == _CHUNK:
            chunks.append(_numbers(pending, names, what, len(labels) - len(pending)))
            pending = []
    if pending:
        chunks.append(_numbers(pending, names, what, len(labels) - len(pending)))
    if not labels:
        raise DataError(f"{what}: has a header but no data rows")
    return np.concatenate(chunks), labels if label_at is not None else None, names


def _numbers(
    rows: list[list[str]], names: tuple[str, ...], what: str, offset: int
) -> NDArray[np.float64]:
    """Rows of feature cells as floats; on failure, finds and names the first bad cell."""
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError:
        for r, cells in enumerate(rows):
            for c, cell in enumerate(cells):
                try:
                    float(cell)
                except ValueError:
                    problem = "empty cell" if not cell.strip() else f"not a number: {cell!r}"
                    raise DataError(
                        f"{what}: row {offset + r + 1}, column {names[c]!r}: {problem}"
                    ) from None
        raise
    bad = np.argwhere(~np.isfinite(table))
    if len(bad):
        r, c = bad[0]
        raise DataError(
            f"{what}: row {offset + r + 1}, column {names[c]!r}: {rows[r][c].strip()!r} "
            "is not allowed (NaN or infinity)"
        )
    return table


def read_features(
    path: Path, *, feature_names: Sequence[str], label: str
) -> tuple[NDArray[np.float64], list[Any] | None]:
    """Feature rows for prediction from a CSV or NPZ file, and the labels if the file has them.

    CSV columns are matched by name when the file has every feature name, otherwise by
    position (all columns but `label`); an NPZ needs X and may have y.
    """
    what = f"data file {str(path)!r}"
    try:
        with path.open("rb") as stream:
            magic = stream.read(4)
    except OSError as exc:
        raise DataError(f"{what}: cannot read: {exc.strerror or exc}") from None
    if magic == b"PK\x03\x04":
        x, labels, _ = _read_npz(path, what, y_required=False)
        x = x.reshape(len(x), -1)
        names: tuple[str, ...] = tuple(feature_names)
    else:
        x, labels, names = _read_csv(path, what, label, label_required=False)
    if set(feature_names) <= set(names) and len(set(feature_names)) == len(feature_names):
        x = x[:, [names.index(n) for n in feature_names]]
    elif x.shape[1] != len(feature_names):
        raise DataError(
            f"{what}: has {x.shape[1]} feature columns, the model takes {len(feature_names)} "
            f"({', '.join(feature_names[:5])}{', ...' if len(feature_names) > 5 else ''})"
        )
    return x, labels


def _read_npz(
    path: Path, what: str, *, y_required: bool = True
) -> tuple[NDArray[np.float64], list[Any] | None, tuple[str, ...]]:
    try:
        arrays, _ = read_npz(str(path), max_elements=MAX_CELLS + MAX_ROWS, what=what)
    except NpzError as exc:
        raise DataError(str(exc)) from None
    missing = [name for name in ("X", "y")[: 1 + y_required] if name not in arrays]
    if missing:
        raise DataError(
            f"{what}: no array named {' or '.join(missing)} (found: {', '.join(sorted(arrays)) or 'none'})"
        )
    x = arrays["X"]
    y = arrays.get("y", np.zeros(len(x)) if x.ndim else np.zeros(0))
    if x.ndim < 2 or x.ndim > 4:
        raise DataError(
            f"{what}: X must have 2 to 4 dimensions (rows, features...), got shape {x.shape}"
        )
    if len(x) == 0:
        raise DataError(f"{what}: empty: X has no rows")
    if len(x) > MAX_ROWS:
        raise DataError(f"{what}: too many rows: {len(x):,}, at most {MAX_ROWS:,}")
    width = math.prod(x.shape[1:])
    if width == 0 or width > MAX_COLUMNS:
        raise DataError(f"{what}: X has {width} features per row, must be 1..{MAX_COLUMNS}")
    if y.shape != (len(x),):
        raise DataError(f"{what}: y must have shape ({len(x)},) to match X, got {y.shape}")
    x64 = x.astype(np.float64)
    for name, array in (("X", x64), ("y", y)):
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = np.argwhere(~np.isfinite(array))
            raise DataError(f"{what}: {name}{bad[0].tolist()} is not allowed (NaN or infinity)")
    names = tuple(f"x{i}" for i in range(width))
    return x64, list(y.tolist()) if "y" in arrays else None, names


def _targets(labels: list[Any], task: str, what: str) -> tuple[np.ndarray, tuple[Label, ...]]:
    """Targets as floats (regression) or as class indices plus the class labels."""
    empty = next((i for i, v in enumerate(labels) if v == ""), None)
    if empty is not None:
        raise DataError(f"{what}: row {empty + 1}: empty label")
    numbers = _as_numbers(labels)
    if task == "regression":
        if numbers is None:
            bad = next(i for i, v in enumerate(labels) if _as_numbers([v]) is None)
            raise DataError(f"{what}: row {bad + 1}: label {labels[bad]!r} is not a finite number")
        return numbers, ()
    if numbers is not None:
        fractional = np.flatnonzero(numbers != np.round(numbers))
        if len(fractional):
            i = int(fractional[0])
            raise DataError(
                f"{what}: row {i + 1}: class label {labels[i]!r} is not a whole number; "
                'for a numeric target set dataset.task = "regression"'
            )
        values, y = np.unique(numbers.astype(np.int64), return_inverse=True)
        classes: tuple[Label, ...] = tuple(int(v) for v in values)
    else:
        names, y = np.unique(np.array([str(v) for v in labels]), return_inverse=True)
        classes = tuple(str(v) for v in names)
    if len(classes) < 2:
        raise DataError(f"{what}: the label column holds a single class, {classes[0]!r}")
    if len(classes) > MAX_CLASSES:
        raise DataError(f"{what}: too many classes: {len(classes)}, at most {MAX_CLASSES}")
    return y.astype(np.int64), classes


def _as_numbers(labels: list[Any]) -> NDArray[np.float64] | None:
    try:
        values = np.array(labels, dtype=np.float64)
    except (ValueError, TypeError):
        return None
    return values if bool(np.isfinite(values).all()) else None
