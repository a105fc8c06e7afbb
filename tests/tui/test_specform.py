"""The submit form's rules without Textual: form <-> spec, and the trainer's errors per field."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelmine.tui import specform
from modelmine.tui.charts import Series, plot_bars, plot_lines

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

VALID = {
    "title": "t",
    "description": "",
    "model": "mlp",
    "layers": "256, 128",
    "dataset": "digits",
    "dataset_path": "",
    "epochs": "5",
    "batch_size": "32",
    "learning_rate": "",
    "optimizer": "adam",
    "seed": "7",
    "stake": "100",
}


def test_a_valid_form_is_the_spec_the_trainer_accepts() -> None:
    result = specform.check(VALID)
    assert result.ok and result.job is not None
    assert result.spec["model"] == {"kind": "mlp", "hidden": [256, 128]}
    assert result.spec["hyperparameters"] == {
        "epochs": 5,
        "batch_size": 32,
        "optimizer": "adam",
        "seed": 7,
    }
    assert result.job.stake == 100


@pytest.mark.parametrize(
    ("field", "typed", "message"),
    [
        ("title", "", "must be 1..200 characters long, got 0"),
        ("layers", "12, x", 'must be an integer 1..4096, got "x"'),
        ("epochs", "0", "must be 1..10000, got 0"),
        ("epochs", "2.5", 'must be an integer 1..10000, got "2.5"'),
        ("batch_size", "0", "must be 1..65536, got 0"),
        ("learning_rate", "fast", 'must be a number 1e-07..10, got "fast"'),
        ("seed", "-1", "must be 0..4294967295, got -1"),
        ("stake", "2000000", "must be 1..1000000, got 2000000"),
    ],
)
def test_each_bad_field_gets_the_trainers_message(field: str, typed: str, message: str) -> None:
    result = specform.check({**VALID, field: typed})
    assert not result.ok
    assert result.errors == {field: message}


def test_layers_only_apply_to_mlp_and_cnn() -> None:
    result = specform.check({**VALID, "model": "logistic"})
    assert result.ok
    assert result.spec["model"] == {"kind": "logistic"}


def test_a_file_dataset_needs_an_existing_file(tmp_path: Path) -> None:
    result = specform.check({**VALID, "dataset": "file"})
    assert "dataset_path" in result.errors
    missing = tmp_path / "nope.csv"
    result = specform.check({**VALID, "dataset": "file", "dataset_path": str(missing)})
    assert result.errors == {"dataset_path": f"no file at {missing}"}
    data = EXAMPLES / "data" / "iris.csv"
    result = specform.check({**VALID, "dataset": "file", "dataset_path": str(data)})
    assert result.ok
    assert result.spec["dataset"] == {"name": "file", "path": str(data)}


def test_a_spec_file_round_trips_and_keeps_what_the_form_does_not_show() -> None:
    spec = specform.load_spec_file(EXAMPLES / "iris-csv.toml")
    values, base = specform.spec_to_form(spec)
    assert Path(values["dataset_path"]).is_absolute()  # relative to the spec file
    result = specform.check(values, base)
    assert result.ok, result.errors
    assert result.spec == {**spec, "title": spec["title"]}


def test_switching_the_optimizer_drops_settings_that_no_longer_apply() -> None:
    base = {"hyperparameters": {"optimizer": "momentum", "momentum": 0.8, "learning_rate": 0.1}}
    result = specform.check({**VALID, "optimizer": "adam"}, base)
    assert result.ok, (result.errors, result.other)
    assert "momentum" not in result.spec["hyperparameters"]
    assert "learning_rate" not in result.spec["hyperparameters"]


def test_a_bad_spec_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("title = ")
    with pytest.raises(specform.SpecFileError, match="not valid TOML"):
        specform.load_spec_file(bad)
    with pytest.raises(specform.SpecFileError, match="cannot read"):
        specform.load_spec_file(tmp_path / "missing.toml")


def test_line_chart_draws_every_series_inside_its_box() -> None:
    up = Series("up", "green", [(float(x), float(x)) for x in range(10)])
    down = Series("down", "red", [(float(x), 9.0 - x) for x in range(10)])
    lines = plot_lines([up, down], 40, 12)
    assert len(lines) == 12
    assert all(line.cell_len <= 40 for line in lines)
    plot = "".join(line.plain[9:] for line in lines[:10])
    assert any("\u2800" < c <= "\u28ff" for c in plot)
    assert lines[0].plain.strip().startswith("9")
    assert lines[-1].plain.split() == ["0", "9"]
    assert "waiting for data" in "".join(t.plain for t in plot_lines([], 40, 8))


def test_a_level_line_sits_in_a_narrow_band_around_its_value() -> None:
    flat = Series("acc", "green", [(float(x), 98.4) for x in range(10)])
    lines = plot_lines([flat], 40, 12)
    top, bottom = float(lines[0].plain.split("┤")[0]), float(lines[9].plain.split("┤")[0])
    assert bottom < 98.4 < top and top - bottom < 3  # not 98.4 .. 196.8
    plot = [line.plain.split("┤")[-1].split("│")[-1] for line in lines[:10]]
    assert any(c != " " for c in plot[4] + plot[5])  # drawn across the middle


def test_bar_chart_scales_to_the_largest_value() -> None:
    lines = [t.plain for t in plot_bars([("a", 100), ("b", 50), ("c", 0)], 30, 5)]
    assert abs(lines[0].count("█") - 2 * lines[1].count("█")) <= 1
    assert "█" not in lines[2]
