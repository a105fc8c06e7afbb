"""`load_dataset`: from the dataset section of a spec to a split, standardized `Dataset`."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from ._bundled import load_bundled
from ._data import DataError, Dataset, RawData, prepare
from ._files import load_file
from ._spec import BUNDLED, SYNTHETIC, DatasetSpec
from ._synthetic import generate

BlobResolver = Callable[[str], "str | os.PathLike[str]"]


def load_dataset(
    spec: DatasetSpec,
    *,
    resolve_file: BlobResolver | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Load, split and standardize the data a spec names. Nothing is downloaded.

    A `path` is taken relative to `base_dir` (the spec file's folder) when given. A `blob` is
    mapped to a local file by `resolve_file(sha256_hex)`, and the file's content must hash to
    that sha256. Raises `DataError` with a message naming the file and the problem.
    """
    raw = _load_raw(spec, resolve_file, base_dir)
    return prepare(
        raw,
        name=spec.name,
        validation_split=spec.validation_split,
        seed=spec.seed,
        standardize=spec.standardize,
    )


def _load_raw(
    spec: DatasetSpec,
    resolve_file: BlobResolver | None,
    base_dir: str | os.PathLike[str] | None,
) -> RawData:
    if spec.name in SYNTHETIC:
        return generate(spec)
    if spec.name in BUNDLED:
        return load_bundled(spec.name)
    if spec.blob:
        if resolve_file is None:
            raise DataError(
                f"dataset.blob: no way to fetch blob {spec.blob[:12]}... on this machine"
            )
        path = Path(resolve_file(spec.blob))
        what = f"dataset blob {spec.blob[:12]}"
        _check_sha256(path, spec.blob, what)
    else:
        path = Path(spec.path)
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        what = f"dataset file {str(path)!r}"
    return load_file(
        path, what=what, label=spec.label, task=spec.task, image_shape=spec.image_shape
    )


def _check_sha256(path: Path, expected: str, what: str) -> None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"{what}: cannot read: {exc.strerror or exc}") from None
    if digest.hexdigest() != expected:
        raise DataError(
            f"{what}: content does not match its sha256 (got {digest.hexdigest()[:12]})"
        )
