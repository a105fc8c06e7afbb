"""User data files: good CSV and NPZ files load; each kind of bad file gets a clear message."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelmine.trainer import DataError, DatasetSpec, _files, load_dataset, read_features

CSV = "a,b,label\n" + "".join(f"{i},{i * 2 % 7},{'yes' if i % 2 else 'no'}\n" for i in range(40))


def file_spec(path: Path, **fields: Any) -> DatasetSpec:
    return DatasetSpec(name="file", path=str(path), **fields)


def write(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def load_error(path: Path, **fields: Any) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(file_spec(path, **fields))
    return str(info.value)


def test_good_csv_with_class_names(tmp_path: Path) -> None:
    dataset = load_dataset(file_spec(write(tmp_path, CSV)))
    assert dataset.classes == ("no", "yes")
    assert dataset.feature_names == ("a", "b")
    assert len(dataset.y_train) + len(dataset.y_val) == 40
    assert len(dataset.y_val) == 10


def test_csv_with_numeric_labels_bom_and_blank_lines(tmp_path: Path) -> None:
    text = "\ufeffx, label ,y\n1,3,2\n\n2,1,4\n3,3,6\n4,1,8\n5,3,1\n6,1,2\n7,3,3\n8,1,4\n"
    dataset = load_dataset(file_spec(write(tmp_path, text)))
    assert dataset.classes == (1, 3)
    assert dataset.feature_names == ("x", "y")


def test_csv_regression(tmp_path: Path) -> None:
    text = "x,target\n" + "".join(f"{i},{0.5 * i + 1}\n" for i in range(20))
    dataset = load_dataset(file_spec(write(tmp_path, text), label="target", task="regression"))
    assert dataset.task == "regression" and dataset.n_classes == 0


def test_relative_path_is_taken_from_the_base_dir(tmp_path: Path) -> None:
    write(tmp_path, CSV)
    dataset = load_dataset(DatasetSpec(name="file", path="data.csv"), base_dir=tmp_path)
    assert dataset.n_features == 2


BAD_CSV = [
    ("", "empty: no header row"),
    ("\n\n", "empty: no header row"),
    ("a,b,label\n", "has a header but no data rows"),
    ("a,b,label\n1,2,x\n3,4\n", "row 2 (line 3) has 2 cells, the header has 3"),
    ("a,b,label\n1,2,x\n3,4,y,5\n", "row 2 (line 3) has 4 cells, the header has 3"),
    ("a,b,label\n1,2,x\n3,four,y\n", "row 2, column 'b': not a number: 'four'"),
    ("a,b,label\n1,,x\n", "row 1, column 'b': empty cell"),
    ("a,b,label\n1,2,x\nnan,3,y\n", "row 2, column 'a': 'nan' is not allowed (NaN or infinity)"),
    ("a,b,label\n1,2,x\n1,inf,y\n", "row 2, column 'b': 'inf' is not allowed (NaN or infinity)"),
    ("a,b,lable\n1,2,x\n", "no label column 'label'; did you mean 'lable'?"),
    ("a,b,c\n1,2,3\n", "no label column 'label' (columns: a, b, c); set dataset.label"),
    ("a,a,label\n1,2,x\n", "duplicate column names: a"),
    ("label\nx\ny\n", "no feature columns besides the label column 'label'"),
    ("a,label\n1,x\n2,x\n3,x\n", "the label column holds a single class, 'x'"),
    ("a,label\n1,0.5\n2,1\n3,0\n", "row 1: class label '0.5' is not a whole number"),
    ("a,label\n1,x\n2,\n3,y\n", "row 2: empty label"),
    ('a,label\n1,"x\n', "malformed CSV"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CSV)
def test_bad_csv(tmp_path: Path, text: str, expected: str) -> None:
    message = load_error(write(tmp_path, text))
    assert message.startswith(f"dataset file {str(tmp_path / 'data.csv')!r}: ")
    assert expected in message


def test_not_utf8(tmp_path: Path) -> None:
    assert "not UTF-8 text" in load_error(write(tmp_path, b"a,label\n\xff\xfe,1\n"))


def test_missing_file(tmp_path: Path) -> None:
    assert "cannot read" in load_error(tmp_path / "nope.csv")


def test_regression_label_must_be_numeric(tmp_path: Path) -> None:
    path = write(tmp_path, "a,label\n1,2\n2,x\n3,4\n")
    assert "row 2: label 'x' is not a finite number" in load_error(path, task="regression")


def test_too_many_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_files, "MAX_ROWS", 30)
    assert "too many rows: more than 30" in load_error(write(tmp_path, CSV))


def test_too_many_cells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_files, "MAX_CELLS", 40)  # 2 features: at most 20 rows
    assert "too many rows: more than 20" in load_error(write(tmp_path, CSV))


def test_too_many_columns(tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(5000)) + ",label\n"
    assert "too many columns: 5001, at most 4097" in load_error(write(tmp_path, header))


def test_large_csv_is_converted_in_chunks(tmp_path: Path) -> None:
    rows = 20_000  # more than one conversion chunk
    text = "a,label\n" + "".join(f"{i},{i % 3}\n" for i in range(rows))
    text = text.replace(f"\n{rows - 5},", "\n?,")
    assert f"row {rows - 4}, column 'a': not a number: '?'" in load_error(write(tmp_path, text))


def npz_bytes(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_good_npz_with_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6, 5))
    path = write(tmp_path, npz_bytes(X=x, y=np.arange(40) % 4), "data.npz")
    dataset = load_dataset(file_spec(path))
    assert dataset.feature_shape == (6, 5, 1)
    assert dataset.classes == (0, 1, 2, 3)
    assert dataset.x_train.shape[1] == 30


def test_npz_image_shape_from_the_spec(tmp_path: Path) -> None:
    path = write(tmp_path, npz_bytes(X=np.ones((40, 12)), y=np.arange(40) % 2), "d.npz")
    assert load_dataset(file_spec(path, image_shape=(2, 3, 2))).feature_shape == (2, 3, 2)
    assert "dataset.image_shape: [5, 5] holds 25 values" in load_error(path, image_shape=(5, 5))


BAD_NPZ = [
    ({"X": np.ones((0, 3)), "y": np.ones(0)}, "empty: X has no rows"),
    ({"X": np.ones((4, 3))}, "no array named y (found: X)"),
    ({"y": np.ones(4)}, "no array named X (found: y)"),
    ({"X": np.ones(4), "y": np.ones(4)}, "X must have 2 to 4 dimensions"),
    ({"X": np.ones((4, 3)), "y": np.ones(5)}, "y must have shape (4,) to match X, got (5,)"),
    (
        {"X": np.array([[1.0, np.nan]] * 4), "y": np.arange(4)},
        "X[0, 1] is not allowed (NaN or infinity)",
    ),
    (
        {"X": np.ones((4, 2)), "y": np.array([0, 1, np.inf, 0])},
        "y[2] is not allowed (NaN or infinity)",
    ),
    ({"X": np.array([["a", "b"]] * 4), "y": np.arange(4)}, "array 'X' has dtype <U1; only numbers"),
    ({"X": np.ones((4, 5000)), "y": np.arange(4)}, "X has 5000 features per row, must be 1..4096"),
]


@pytest.mark.parametrize(("arrays", "expected"), BAD_NPZ)
def test_bad_npz(tmp_path: Path, arrays: dict[str, Any], expected: str) -> None:
    message = load_error(write(tmp_path, npz_bytes(**arrays), "data.npz"))
    assert expected in message, message


def test_pickled_npz_is_refused_without_unpickling(tmp_path: Path) -> None:
    class Bomb:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path(tmp_path / "exploded").touch, ())

    x = np.empty(4, dtype=object)
    x[:] = [Bomb()] * 4
    path = write(tmp_path, npz_bytes(X=x, y=np.arange(4)), "data.npz")
    message = load_error(path)
    assert "array 'X' holds Python objects (a pickle); pickled data is refused" in message
    assert not (tmp_path / "exploded").exists()


def test_too_many_npz_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_files, "MAX_ROWS", 10)
    path = write(tmp_path, npz_bytes(X=np.ones((11, 2)), y=np.arange(11) % 2), "d.npz")
    assert "too many rows: 11, at most 10" in load_error(path)


def test_oversized_npz_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_files, "MAX_CELLS", 10)
    monkeypatch.setattr(_files, "MAX_ROWS", 10)
    path = write(tmp_path, npz_bytes(X=np.ones((30, 2)), y=np.arange(30) % 2), "d.npz")
    assert "too large: array 'X' has shape (30, 2)" in load_error(path)


def test_corrupt_npz(tmp_path: Path) -> None:
    data = npz_bytes(X=np.ones((40, 2)), y=np.arange(40) % 2)
    assert "not an NPZ" in load_error(write(tmp_path, data[:30], "d.npz"))
    for member, expected in [
        (b"\x93NUMPY garbage", "array 'X' has unsupported .npy version"),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    ", "array 'X' is not a valid .npy array"),
        (b"not an array at all", "array 'X' is not a valid .npy array"),
    ]:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("X.npy", member)
        assert expected in load_error(write(tmp_path, buffer.getvalue(), "e.npz"))
    truncated = npz_bytes(X=np.ones((40, 2)), y=np.arange(40) % 2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(truncated)) as source, zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("X.npy", source.read("X.npy")[:-8])
        archive.writestr("y.npy", source.read("y.npy"))
    assert "array 'X' is truncated" in load_error(write(tmp_path, buffer.getvalue(), "f.npz"))


def test_blob_is_resolved_and_its_hash_checked(tmp_path: Path) -> None:
    path = write(tmp_path, CSV)
    digest = hashlib.sha256(CSV.encode()).hexdigest()
    spec = DatasetSpec(name="file", blob=digest)
    dataset = load_dataset(spec, resolve_file=lambda h: tmp_path / "data.csv")
    assert dataset.n_classes == 2
    with pytest.raises(DataError, match="no way to fetch blob"):
        load_dataset(spec)
    wrong = DatasetSpec(name="file", blob="0" * 64)
    with pytest.raises(DataError, match="content does not match its sha256"):
        load_dataset(wrong, resolve_file=lambda h: path)


def test_read_features_matches_columns_by_name_then_position(tmp_path: Path) -> None:
    path = write(tmp_path, "b,label,a\n1,x,2\n3,y,4\n")
    x, labels = read_features(path, feature_names=["a", "b"], label="label")
    assert x.tolist() == [[2, 1], [4, 3]] and labels == ["x", "y"]
    x, labels = read_features(path, feature_names=["p", "q"], label="label")
    assert x.tolist() == [[1, 2], [3, 4]]
    bare = write(tmp_path, "p,q,r\n1,2,3\n", "bare.csv")
    x, labels = read_features(bare, feature_names=["r", "q", "p"], label="label")
    assert x.tolist() == [[3, 2, 1]] and labels is None
    with pytest.raises(DataError, match="has 2 feature columns, the model takes 3"):
        read_features(path, feature_names=["p", "q", "r"], label="label")
