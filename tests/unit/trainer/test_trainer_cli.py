"""`modelmine train` and `modelmine predict`, driven through their argument parsers."""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from modelmine.cli import CommandError, main
from modelmine.commands import train
from modelmine.trainer import JobSpec, Run, load_dataset

SPEC = """
title = "cli test"
[model]
kind = "mlp"
hidden = [8]
[dataset]
name = "file"
path = "data.csv"
label = "kind"
[hyperparameters]
epochs = 30
learning_rate = 0.02
"""


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    rows = "".join(
        f"{i % 10},{(i * 7) % 10},{'big' if i % 10 >= 5 else 'small'}\n" for i in range(80)
    )
    (tmp_path / "data.csv").write_text("x,y,kind\n" + rows)
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    return path


def test_train_json_writes_the_model(spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = spec_file.parent / "model.npz"
    assert cli("train", str(spec_file), "--json", "-o", str(model)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "completed"
    assert {"val_accuracy", "val_loss", "train_loss", "steps", "seconds"} <= set(out)
    assert out["val_accuracy"] >= 0.9
    assert out["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()


def test_train_prints_metrics_and_a_progress_bar(
    spec_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(spec_file)]) == 0
    captured = capsys.readouterr()
    assert "cli test: completed after" in captured.out
    assert "val_accuracy" in captured.out and "model_sha256" in captured.out
    assert "training 'cli test'" in captured.err


def test_spec_errors_are_all_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'title = ""\n[model]\nkind = "mlp"\nhiden = [3]\n[dataset]\nname = "digits"\n'
        "[hyperparameters]\nepochs = 0\n"
    )
    assert cli("train", str(path)) == 1
    err = capsys.readouterr().err
    assert "invalid job spec" in err
    assert "  title: must be 1..200 characters long, got 0" in err
    assert "  model.hiden: unknown key; did you mean 'hidden'?" in err
    assert "  hyperparameters.epochs: must be 1..10000, got 0" in err


def test_data_and_training_failures_are_one_line_errors(spec_file: Path) -> None:
    (spec_file.parent / "data.csv").write_text("x,y,kind\n1,2,a\n3,oops,b\n")
    with pytest.raises(CommandError, match=r"row 2, column 'y': not a number: 'oops'"):
        cli("train", str(spec_file))
    diverging = spec_file.parent / "diverge.toml"
    diverging.write_text(
        'title = "d"\n[model]\nkind = "linear"\n[dataset]\nname = "regression"\nnoise = 5.0\n'
        '[hyperparameters]\noptimizer = "sgd"\nlearning_rate = 10.0\nepochs = 50\n'
    )
    with pytest.raises(CommandError, match=r"training failed: diverged at step \d+: loss is"):
        cli("train", str(diverging), "--json")


def test_checkpoint_and_resume(spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = spec_file.parent / "run.ckpt"
    assert cli("train", str(spec_file), "--json", "--checkpoint", str(checkpoint)) == 0
    first = json.loads(capsys.readouterr().out)
    spec = JobSpec.from_toml(spec_file)
    run = Run.resume(
        spec, load_dataset(spec.dataset, base_dir=spec_file.parent), checkpoint.read_bytes()
    )
    assert run.step == run.total_steps
    assert cli("train", str(spec_file), "--json", "--resume", str(checkpoint)) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["model_sha256"] == first["model_sha256"]
    (spec_file.parent / "junk").write_bytes(b"junk")
    with pytest.raises(CommandError, match="checkpoint"):
        cli("train", str(spec_file), "--resume", str(spec_file.parent / "junk"))


def test_predict(spec_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = spec_file.parent / "model.npz"
    cli("train", str(spec_file), "--json", "-o", str(model))
    capsys.readouterr()
    data = spec_file.parent / "new.csv"
    data.write_text("y,x\n0,1\n9,9\n2,8\n")  # columns matched by name, in any order
    assert cli("predict", str(model), str(data)) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == ["prediction", "small", "big", "big"]
    assert captured.err == ""  # no label column, no score
    out = spec_file.parent / "pred.csv"
    assert cli("predict", str(model), str(spec_file.parent / "data.csv"), "-o", str(out)) == 0
    assert len(out.read_text().splitlines()) == 81
    assert capsys.readouterr().err.startswith("accuracy ")
    with pytest.raises(CommandError, match="not an NPZ"):
        cli("predict", str(data), str(data))
    with pytest.raises(CommandError, match="has 1 feature columns, the model takes 2"):
        data.write_text("z\n1\n")
        cli("predict", str(model), str(data))


def test_first_ctrl_c_stops_between_steps_and_keeps_a_checkpoint(
    spec_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = Run.train

    def train_interrupted_at_step_5(
        self: Run, on_progress: Any = None, should_stop: Any = None, max_steps: Any = None
    ) -> Any:
        def poll() -> bool:
            if self.step == 5:
                signal.raise_signal(signal.SIGINT)  # as if the user pressed Ctrl-C here
            return bool(should_stop())

        return original(self, on_progress, poll, max_steps)

    monkeypatch.setattr(Run, "train", train_interrupted_at_step_5)
    model, checkpoint = spec_file.parent / "model.npz", spec_file.parent / "run.ckpt"
    code = cli("train", str(spec_file), "--json", "-o", str(model), "--checkpoint", str(checkpoint))
    assert code == 130
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "canceled"
    assert f"interrupted at step 5 of 30; continue with --resume {checkpoint}" in captured.err
    assert not model.exists()
    spec = JobSpec.from_toml(spec_file)
    dataset = load_dataset(spec.dataset, base_dir=spec_file.parent)
    assert Run.resume(spec, dataset, checkpoint.read_bytes()).step == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
