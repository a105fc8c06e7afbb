"""Job specs: defaults, canonical round trip, and a clear error for every bad field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelmine.trainer import DatasetSpec, Hyperparameters, JobSpec, ModelSpec, SpecError

EXAMPLES = Path(__file__).parents[3] / "examples"
MINIMAL: dict[str, Any] = {"title": "x", "model": {"kind": "mlp"}, "dataset": {"name": "digits"}}


def errors_of(data: object) -> list[str]:
    with pytest.raises(SpecError) as info:
        JobSpec.from_dict(data)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def with_(section: str, **fields: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    if section:
        data.setdefault(section, {}).update(fields)
    else:
        data.update(fields)
    return data


def test_minimal_spec_gets_sane_defaults() -> None:
    spec = JobSpec.from_dict(MINIMAL)
    assert spec.model.hidden == (128,)
    assert spec.model.activation == "relu"
    assert spec.dataset.validation_split == 0.25
    assert spec.hyperparameters.optimizer == "adam"
    assert spec.hyperparameters.learning_rate == 0.001
    assert spec.stake == 100
    assert spec.resources.max_seconds == 3600


def test_default_learning_rate_follows_the_optimizer() -> None:
    spec = JobSpec.from_dict(with_("hyperparameters", optimizer="sgd"))
    assert spec.hyperparameters.learning_rate == 0.01
    spec = JobSpec.from_dict(with_("hyperparameters", optimizer="adamw"))
    assert spec.hyperparameters.weight_decay == 0.01


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_examples_round_trip_exactly(path: Path) -> None:
    spec = JobSpec.from_toml(path)
    data = spec.to_dict()
    assert JobSpec.from_dict(data) == spec
    assert JobSpec.from_dict(json.loads(json.dumps(data))).to_dict() == data
    assert_plain(data)


def assert_plain(value: object) -> None:
    """Only str/int/float/bool/list/dict: what canonical msgpack can encode and sign."""
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for item in value.values():
            assert_plain(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain(item)
    else:
        assert type(value) in (str, int, float, bool), value


def test_toml_text_and_syntax_errors() -> None:
    spec = JobSpec.from_toml('title = "t"\n[model]\nkind = "logistic"\n[dataset]\nname = "iris"\n')
    assert spec.model.kind == "logistic"
    with pytest.raises(SpecError, match="not valid TOML"):
        JobSpec.from_toml('title = "t"\n[model\n')
    with pytest.raises(SpecError, match="cannot read"):
        JobSpec.from_toml(Path("/nonexistent/spec.toml"))


def test_integer_coerced_to_float_but_not_the_reverse() -> None:
    spec = JobSpec.from_dict(with_("hyperparameters", learning_rate=1))
    assert spec.hyperparameters.learning_rate == 1.0
    assert isinstance(spec.to_dict()["hyperparameters"]["learning_rate"], float)
    assert errors_of(with_("hyperparameters", epochs=10.0)) == [
        "hyperparameters.epochs: must be an integer 1..10000, got 10.0"
    ]


def test_the_issue_example_message() -> None:
    assert errors_of(with_("hyperparameters", epochs=0)) == [
        "hyperparameters.epochs: must be 1..10000, got 0"
    ]


BAD_FIELDS = [
    (with_("", title=""), "title: must be 1..200 characters long, got 0"),
    (with_("", title="t" * 201), "title: must be 1..200 characters long, got 201"),
    ({k: v for k, v in MINIMAL.items() if k != "title"}, "title: required"),
    (with_("", description=5), "description: must be a string, got 5"),
    (with_("", stake=0), "stake: must be 1..1000000, got 0"),
    (with_("", stake=2_000_000), "stake: must be 1..1000000, got 2000000"),
    (
        with_("model", kind="rnn"),
        'model.kind: must be one of linear, logistic, mlp, cnn, got "rnn"',
    ),
    ({"title": "x", "dataset": {"name": "digits"}}, "model.kind: required"),
    (with_("model", hidden=[0]), "model.hidden[0]: must be an integer 1..4096, got 0"),
    (with_("model", hidden=[5000]), "model.hidden[0]: must be an integer 1..4096, got 5000"),
    (with_("model", hidden=[8] * 9), "model.hidden: must be a list of 0..8 integers, each 1..4096"),
    (with_("model", hidden=64), "model.hidden: must be a list of 0..8 integers"),
    (with_("model", activation="sigmoid"), "model.activation: must be one of relu, tanh, gelu"),
    (with_("model", dropout=0.95), "model.dropout: must be 0..0.9, got 0.95"),
    (with_("model", init="zeros"), "model.init: must be one of auto, he, xavier"),
    (with_("model", conv=[8]), "model.conv: only used by cnn models"),
    (with_("model", kind="cnn", conv=[]), "model.conv: must be a list of 1..4 integers"),
    (with_("model", kind="cnn", conv=[300]), "model.conv[0]: must be an integer 1..256, got 300"),
    (with_("model", kind="cnn", kernel_size=4), "model.kernel_size: must be odd"),
    (with_("model", kind="cnn", kernel_size=9), "model.kernel_size: must be 1..7, got 9"),
    (with_("model", kind="cnn", pool=5), "model.pool: must be 1..4, got 5"),
    (with_("model", kind="logistic", hidden=[4]), "model.hidden: only used by mlp and cnn models"),
    (with_("dataset", name="mnist"), "dataset.name: must be one of digits, iris"),
    ({"title": "x", "model": {"kind": "mlp"}}, "dataset.name: required"),
    (
        with_("dataset", validation_split=0.9),
        "dataset.validation_split: must be 0.05..0.5, got 0.9",
    ),
    (with_("dataset", seed=-1), "dataset.seed: must be 0..4294967295, got -1"),
    (with_("dataset", standardize="yes"), 'dataset.standardize: must be true or false, got "yes"'),
    (with_("dataset", samples=100), "dataset.samples: only used by synthetic datasets"),
    (with_("dataset", name="moons", samples=5), "dataset.samples: must be 20..100000, got 5"),
    (
        with_("dataset", name="moons", samples=10**6),
        "dataset.samples: must be 20..100000, got 1000000",
    ),
    (with_("dataset", name="moons", noise=-1), "dataset.noise: must be 0..10, got -1"),
    (with_("dataset", name="blobs", classes=11), "dataset.classes: must be 2..10, got 11"),
    (
        with_("dataset", name="moons", classes=3),
        "dataset.classes: only used by the blobs and spirals",
    ),
    (with_("dataset", name="blobs", features=0), "dataset.features: must be 1..1000, got 0"),
    (
        with_("dataset", name="regression", samples=100_000, features=1000),
        "dataset.features: samples x features must be at most 10,000,000, got 100,000 x 1,000",
    ),
    (with_("dataset", path="x.csv"), 'dataset.path: only used when name = "file"'),
    (
        with_("dataset", name="file"),
        'dataset.path: a file dataset needs exactly one of "path" or "blob"',
    ),
    (
        with_("dataset", name="file", path="a.csv", blob="0" * 64),
        'dataset.path: a file dataset needs exactly one of "path" or "blob"',
    ),
    (with_("dataset", name="file", blob="abc"), "dataset.blob: must be 64 lowercase hex digits"),
    (with_("dataset", name="file", path="a.csv", task="ranking"), "dataset.task: must be one of"),
    (
        with_("dataset", name="file", path="a.csv", label=""),
        "dataset.label: must be 1..200 characters",
    ),
    (
        with_("dataset", name="file", path="a.csv", image_shape=[8]),
        "dataset.image_shape: must be a list of 2..3 integers",
    ),
    (
        with_("hyperparameters", epochs=10_001),
        "hyperparameters.epochs: must be 1..10000, got 10001",
    ),
    (with_("hyperparameters", batch_size=0), "hyperparameters.batch_size: must be 1..65536, got 0"),
    (with_("hyperparameters", batch_size=True), "hyperparameters.batch_size: must be an integer"),
    (
        with_("hyperparameters", learning_rate=0),
        "hyperparameters.learning_rate: must be 1e-07..10, got 0",
    ),
    (
        with_("hyperparameters", learning_rate=11.0),
        "hyperparameters.learning_rate: must be 1e-07..10",
    ),
    (
        with_("hyperparameters", learning_rate=float("nan")),
        "hyperparameters.learning_rate: must be a finite number",
    ),
    (with_("hyperparameters", optimizer="lbfgs"), "hyperparameters.optimizer: must be one of"),
    (with_("hyperparameters", momentum=0.9), "hyperparameters.momentum: only used by the momentum"),
    (
        with_("hyperparameters", optimizer="momentum", momentum=1.0),
        "hyperparameters.momentum: must be 0..0.999, got 1",
    ),
    (with_("hyperparameters", beta1=1.0), "hyperparameters.beta1: must be 0..0.999, got 1"),
    (
        with_("hyperparameters", optimizer="sgd", beta2=0.9),
        "hyperparameters.beta2: only used by the adam",
    ),
    (with_("hyperparameters", weight_decay=2), "hyperparameters.weight_decay: must be 0..1, got 2"),
    (with_("hyperparameters", grad_clip=-1), "hyperparameters.grad_clip: must be 0..1e+06, got -1"),
    (with_("hyperparameters", schedule="linear"), "hyperparameters.schedule: must be one of"),
    (with_("hyperparameters", gamma=0.5), 'hyperparameters.gamma: only used by schedule = "step"'),
    (
        with_("hyperparameters", schedule="step", step_epochs=0),
        "hyperparameters.step_epochs: must be 1..10000, got 0",
    ),
    (with_("hyperparameters", seed=2**32), "hyperparameters.seed: must be 0..4294967295"),
    (with_("resources", max_seconds=0), "resources.max_seconds: must be 1..604800, got 0"),
    (with_("resources", max_memory_mb=10), "resources.max_memory_mb: must be 64..65536, got 10"),
    (with_("", model="mlp"), 'model: must be a table, got "mlp"'),
    ([1, 2], ": must be a table"),
    (
        with_("model", kind="linear"),
        "model.kind: 'linear' is for regression; dataset 'digits' is classification",
    ),
    (with_("model", kind="cnn", conv=[4, 4, 4, 4]), "model.conv: 4 pooling stages of 2 shrink"),
    (
        with_("model", hidden=[4096, 4096]),
        "model: has 17,088,522 parameters, must be at most 5,000,000",
    ),
    (
        with_("model", kind="cnn") | {"dataset": {"name": "iris"}},
        "model.kind: 'cnn' needs image-shaped data; dataset 'iris' has flat features",
    ),
    (
        with_("model", kind="logistic") | {"dataset": {"name": "regression"}},
        "model.kind: 'logistic' is for classification",
    ),
]


@pytest.mark.parametrize(("data", "expected"), BAD_FIELDS)
def test_each_bad_field_is_named_with_its_range(data: object, expected: str) -> None:
    found = errors_of(data)
    assert any(error.startswith(expected) for error in found), found


def test_values_at_the_limits_are_accepted() -> None:
    JobSpec.from_dict(with_("model", hidden=[4096, 1024]))  # 4.47 million parameters
    JobSpec.from_dict(with_("dataset", name="regression"))  # an MLP may regress
    JobSpec.from_dict(with_("hyperparameters", epochs=10_000, learning_rate=10, batch_size=65_536))
    JobSpec.from_dict(with_("", stake=1_000_000, title="t" * 200))


def test_all_errors_are_reported_at_once() -> None:
    data = {
        "title": "",
        "model": {"kind": "mlp", "hidden": [0], "dropout": 2.0},
        "dataset": {"name": "digits", "validation_split": 0.0},
        "hyperparameters": {"epochs": 0, "batch_size": -1, "optimizer": "adagrad"},
        "resources": {"max_seconds": 0},
        "stake": 0,
    }
    found = errors_of(data)
    fields = [e.split(":")[0] for e in found]
    assert fields == [
        "title",
        "stake",
        "model.hidden[0]",
        "model.dropout",
        "dataset.validation_split",
        "hyperparameters.optimizer",
        "hyperparameters.epochs",
        "hyperparameters.batch_size",
        "resources.max_seconds",
    ]


def test_unknown_keys_are_errors_with_a_hint() -> None:
    data = with_("hyperparameters", epoch=5, lerning_rate=0.1, colour="red")
    data["modle"] = {}
    found = errors_of(data)
    assert "hyperparameters.epoch: unknown key; did you mean 'epochs'?" in found
    assert "hyperparameters.lerning_rate: unknown key; did you mean 'learning_rate'?" in found
    assert "hyperparameters.colour: unknown key" in found
    assert "modle: unknown key; did you mean 'model'?" in found


def test_misspelled_choice_gets_a_hint() -> None:
    assert errors_of(with_("dataset", name="digit")) == [
        "dataset.name: must be one of digits, iris, wine, breast_cancer, blobs, moons, spirals, "
        "xor, regression, file, got \"digit\"; did you mean 'digits'?"
    ]


def test_sections_validate_alone() -> None:
    assert DatasetSpec.from_dict({"name": "moons"}).noise == 0.1
    assert ModelSpec.from_dict({"kind": "cnn"}).conv == (16, 32)
    with pytest.raises(SpecError) as info:
        Hyperparameters.from_dict({"epochs": 0, "optimzer": "sgd"})
    assert info.value.errors == [
        "hyperparameters.epochs: must be 1..10000, got 0",
        "hyperparameters.optimzer: unknown key; did you mean 'optimizer'?",
    ]


def test_file_dataset_round_trips_with_blob() -> None:
    data = with_("dataset", name="file", blob="ab" * 32, label="y", task="regression")
    data["model"] = {"kind": "linear"}
    spec = JobSpec.from_dict(data)
    out = spec.to_dict()["dataset"]
    assert out["blob"] == "ab" * 32 and "path" not in out
    assert JobSpec.from_dict(spec.to_dict()) == spec


def test_cnn_on_a_file_needs_an_image_shape() -> None:
    data = {"title": "x", "model": {"kind": "cnn"}, "dataset": {"name": "file", "path": "a.npz"}}
    assert errors_of(data)[0].startswith("model.kind: 'cnn' needs image-shaped data")
    data["dataset"]["image_shape"] = [8, 8]
    assert JobSpec.from_dict(data).dataset.image_shape == (8, 8)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["mlp", "cnn", "logistic"]),
    hidden=st.lists(st.integers(1, 64), max_size=3),
    dropout=st.floats(0, 0.9),
    epochs=st.integers(1, 10_000),
    lr=st.floats(1e-7, 10),
    optimizer=st.sampled_from(["sgd", "momentum", "nesterov", "adam", "adamw"]),
    schedule=st.sampled_from(["constant", "step", "cosine"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_property(
    kind: str,
    hidden: list[int],
    dropout: float,
    epochs: int,
    lr: float,
    optimizer: str,
    schedule: str,
    seed: int,
) -> None:
    model: dict[str, Any] = {"kind": kind}
    if kind != "logistic":
        model |= {"hidden": hidden, "dropout": dropout}
    data = {
        "title": "p",
        "model": model,
        "dataset": {"name": "digits", "seed": seed},
        "hyperparameters": {
            "epochs": epochs,
            "learning_rate": lr,
            "optimizer": optimizer,
            "schedule": schedule,
        },
    }
    spec = JobSpec.from_dict(data)
    assert JobSpec.from_dict(spec.to_dict()) == spec
    assert JobSpec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()
