"""NPZ archives written byte-for-byte reproducibly and read without ever unpickling.

`numpy.savez` stamps each member with the current time, so two saves of the same arrays
differ; hashes of models and checkpoints must not. Reading goes through the ``.npy`` header
first so that shape and dtype are checked before any memory is allocated for the data.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from typing import IO

import numpy as np
from numpy.typing import NDArray

# A fixed timestamp (the earliest ZIP allows) keeps archives reproducible.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_META = "__meta__"


class NpzError(ValueError):
    """An archive that is not a well-formed, pickle-free NPZ within the given limits."""


def write_npz(arrays: Mapping[str, NDArray[np.generic]], meta: object | None = None) -> bytes:
    """Serialize arrays (and optional JSON-able `meta`) into NPZ bytes; same input, same bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        members = dict(arrays)
        if meta is not None:
            text = json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False)
            members[_META] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        for name in sorted(members):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(members[name]), allow_pickle=False)
    return out.getvalue()


def read_npz(
    source: bytes | str | IO[bytes],
    *,
    max_elements: int,
    what: str = "archive",
) -> tuple[dict[str, NDArray[np.generic]], object | None]:
    """Read every array and the JSON meta of an NPZ; never unpickles.

    Raises `NpzError` naming `what` for a corrupt archive, an object (pickled) array, a
    non-numeric dtype, or more than `max_elements` elements in total.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise NpzError(f"{what}: not an NPZ (zip) archive: {exc}") from None
    arrays: dict[str, NDArray[np.generic]] = {}
    budget = max_elements
    with archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise NpzError(f"{what}: unexpected member {info.filename!r}; only .npy arrays")
            name = info.filename[: -len(".npy")]
            with archive.open(info) as member:
                array = _read_member(member, name, budget, what)
            budget -= array.size
            arrays[name] = array
    raw_meta = arrays.pop(_META, None)
    if raw_meta is None:
        return arrays, None
    try:
        meta = json.loads(raw_meta.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NpzError(f"{what}: metadata is not valid JSON: {exc}") from None
    return arrays, meta


def _read_member(member: IO[bytes], name: str, budget: int, what: str) -> NDArray[np.generic]:
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise NpzError(f"{what}: array {name!r} has unsupported .npy version {version}")
    except NpzError:
        raise
    except ValueError as exc:
        raise NpzError(f"{what}: array {name!r} is not a valid .npy array: {exc}") from None
    if dtype.hasobject:
        raise NpzError(
            f"{what}: array {name!r} holds Python objects (a pickle); pickled data is refused"
        )
    if dtype.kind not in "biuf":
        raise NpzError(f"{what}: array {name!r} has dtype {dtype}; only numbers are accepted")
    size = int(np.prod(shape, dtype=np.int64))
    if size > budget:
        raise NpzError(f"{what}: too large: array {name!r} has shape {shape}")
    data = member.read(size * dtype.itemsize + 1)
    if len(data) != size * dtype.itemsize:
        raise NpzError(f"{what}: array {name!r} is truncated or has trailing bytes")
    flat = np.frombuffer(data, dtype=dtype)
    # A copy makes the array writable and native-endian, independent of the archive buffer.
    array: NDArray[np.generic] = flat.reshape(shape, order="F" if fortran else "C").astype(
        dtype.newbyteorder("="), order="C"
    )
    return array
