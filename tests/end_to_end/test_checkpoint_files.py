"""``--ckpt_path``: a file that is no usable checkpoint, or one of another sweep, ends a run in one line.

fit, validate, test and predict each refuse, with one ``error:`` line naming the file and exit
status 2, before anything is read from it or logged: a missing file, a folder, a pickle that
``weights_only`` loading refuses (nothing in it runs), a torch file that is not a Lightning
checkpoint and a checkpoint cut short. A fit refuses model options other than its checkpoint's,
which LightningCLI would silently replace; validate, test and predict measure the checkpoint's sweep.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import cli_args, run_main, table_rows

from lit_linear.cli import main

pytestmark = pytest.mark.slow

GRID = ["--model.lr", "[0.1, 0.2]", "--model.reg", "0.001"]
SUBCOMMANDS = ("fit", "validate", "test", "predict")


@pytest.fixture(scope="module")
def fitted(cifar10_dir, tmp_path_factory) -> Path:
    """The root folder of one 20-step fit of a 2-config grid: ``lightning_logs/version_0/checkpoints/*.ckpt``."""
    root = tmp_path_factory.mktemp("fitted")
    main(["fit", *GRID, *cli_args(cifar10_dir, root, steps=20, interval=10)])
    return root


def last_ckpt(root: Path, version: int = 0) -> Path:
    return root / "lightning_logs" / f"version_{version}" / "checkpoints" / "last.ckpt"


class Hostile:
    """Unpickling it would create ``marker`` (``os.system``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_fault(kind: str, path: Path, fitted_root: Path) -> str:
    """Make ``path`` (or leave it missing) as the fault ``kind``; the words the error line must hold."""
    if kind == "missing":
        return "not found"
    if kind == "folder":
        path.mkdir()
        return "is a folder; give a .ckpt file"
    if kind == "hostile zip":  # torch.save of an object that runs code when unpickled
        torch.save({"state_dict": Hostile(path.parent / "marker")}, path)
        return "GLOBAL posix.system), so nothing in it may run"
    if kind == "hostile pickle":  # a bare pickle, torch's format before the zip
        path.write_bytes(pickle.dumps(Hostile(path.parent / "marker"), protocol=2))
        return "GLOBAL posix.system), so nothing in it may run"
    if kind == "foreign dict":
        torch.save({"a": torch.zeros(2)}, path)
        return "is not a Lightning checkpoint (no state_dict / global_step / pytorch-lightning_version)"
    if kind == "bare tensor":
        torch.save(torch.zeros(2), path)
        return "is not a Lightning checkpoint (a Tensor"
    assert kind == "truncated"
    data = last_ckpt(fitted_root).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "is truncated or unreadable: PytorchStreamReader failed reading zip archive"


FAULTS = ("missing", "folder", "hostile zip", "hostile pickle", "foreign dict", "bare tensor", "truncated")


def one_error_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
@pytest.mark.parametrize("kind", FAULTS)
def test_a_file_that_is_no_checkpoint_ends_the_run_in_one_line(fitted, cifar10_dir, tmp_path, capfd, kind, subcommand):
    path = tmp_path / "given.ckpt"
    words = write_fault(kind, path, fitted)
    root = tmp_path / "runs"
    result = run_main(capfd, subcommand, *GRID, "--ckpt_path", str(path), *cli_args(cifar10_dir, root))
    assert result.returncode == 2, result.stderr[-3000:]
    line = one_error_line(result)
    assert line.startswith(f"error: --ckpt_path {path}: ") and words in line, line
    assert not (tmp_path / "marker").exists(), "nothing in the file ran"
    assert not root.exists(), "nothing ran, nothing was logged"


@pytest.mark.parametrize("name", ["best", "last"])
def test_best_and_last_pass_over_an_unusable_checkpoint(fitted, cifar10_dir, tmp_path, capfd, name):
    good = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    shutil.copytree(last_ckpt(fitted).parent, good)
    bad = tmp_path / "lightning_logs" / "version_1" / "checkpoints" / f"{name}.ckpt"
    bad.parent.mkdir(parents=True)
    torch.save({"state_dict": Hostile(tmp_path / "marker")}, bad)  # newer than the good one
    result = run_main(capfd, "test", *GRID, "--ckpt_path", name, *cli_args(cifar10_dir, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "marker").exists()

    (good / f"{name}.ckpt").write_bytes((good / f"{name}.ckpt").read_bytes()[:1000])  # now cut short
    result = run_main(capfd, "validate", *GRID, "--ckpt_path", name, *cli_args(cifar10_dir, tmp_path))
    assert result.returncode == 2
    line = one_error_line(result)
    assert "lightning_logs/version_1: holds Python objects that weights_only loading refuses" in line
    assert "lightning_logs/version_0: is truncated or unreadable" in line
    assert not (tmp_path / "marker").exists()


# --- a checkpoint of another sweep -------------------------------------------------------------------
def test_a_fit_refuses_model_options_other_than_its_checkpoints(fitted, cifar10_dir, tmp_path, capfd):
    ckpt = last_ckpt(fitted)
    other = ["--model.lr", "[0.3, 0.5, 0.7]", "--model.reg", "0.001", "--model.loss", "svm"]
    result = run_main(capfd, "fit", *other, "--ckpt_path", str(ckpt), *cli_args(cifar10_dir, tmp_path, steps=40))
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith(f"error: --ckpt_path {ckpt}: the checkpoint was trained with other model options: ")
    assert "model.lr [0.1, 0.2] (this run [0.3, 0.5, 0.7])" in line and "model.loss 'softmax' (this run 'svm')" in line
    assert "model.reg" not in line, "an option given with the checkpoint's value is no difference"
    assert not (tmp_path / "lightning_logs").exists()

    # The same from a config file.
    config = tmp_path / "other.yaml"
    config.write_text(yaml.safe_dump({"model": {"lr": [0.3, 0.5, 0.7], "num_configs": None}}))
    result = run_main(capfd, "fit", "--config", str(config), "--ckpt_path", str(ckpt), *cli_args(cifar10_dir, tmp_path))
    assert result.returncode == 2
    assert "model.lr [0.1, 0.2] (this run [0.3, 0.5, 0.7])" in one_error_line(result)


def test_a_fit_with_the_checkpoints_options_or_none_resumes(fitted, cifar10_dir, tmp_path, capfd):
    ckpt = last_ckpt(fitted)
    own_config = ["--config", str(ckpt.parent.parent / "config.yaml")]  # every option, defaults included
    for version, options in enumerate((GRID, own_config, [], ["--model.split", "minibatch"])):
        result = run_main(capfd, "fit", *options, "--ckpt_path", str(ckpt), *cli_args(cifar10_dir, tmp_path, steps=30))
        assert result.returncode == 0, result.stderr[-3000:]
        assert "softmax sweep: 2 configs after 30 steps" in result.stdout
        config = yaml.safe_load((tmp_path / "lightning_logs" / f"version_{version}" / "config.yaml").read_text())
        assert config["model"]["lr"] == [0.1, 0.2], "the checkpoint's sweep"
    assert config["model"]["split"] == "minibatch", "how the sweep runs is this run's to say"


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_validate_test_and_predict_measure_the_checkpoints_sweep(fitted, cifar10_dir, tmp_path, capfd, subcommand):
    other = ["--model.lr", "[0.3, 0.5, 0.7]"]
    ckpt = str(last_ckpt(fitted))
    result = run_main(capfd, subcommand, *other, "--ckpt_path", ckpt, *cli_args(cifar10_dir, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    if subcommand == "validate":
        _, rows = table_rows(result.stdout)
        assert [float(row[0]) for row in rows] == [0.1, 0.2]


# --- the console ------------------------------------------------------------------------------------------
def test_no_dirpath_warning_from_a_run_off_a_checkpoint(fitted, cifar10_dir, tmp_path, capfd, recwarn):
    """Lightning's "The dirpath has changed ... won't be reloaded", which no setting can act on, stays silent."""
    runs = tmp_path / "runs"
    shutil.copytree(fitted, runs)
    ckpt = str(last_ckpt(fitted))
    results = [
        run_main(capfd, "test", *GRID, "--ckpt_path", "best", *cli_args(cifar10_dir, runs)),
        run_main(capfd, "predict", *GRID, "--ckpt_path", "best", *cli_args(cifar10_dir, runs)),
        run_main(capfd, "fit", *GRID, "--ckpt_path", ckpt, *cli_args(cifar10_dir, tmp_path / "new", steps=30)),
    ]
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    said = [str(w.message) for w in recwarn] + [result.stderr for result in results]
    assert not [text for text in said if "dirpath has changed" in text]
