"""Bad options are refused up front, divergence is contained, artifacts are written atomically,
and checkpoints are loaded without running code."""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys

import lightning.pytorch as pl
import pytest
import torch
from conftest import REPO, cli_args, run_main

from lit_linear import CIFARDataModule, LinearClassifierModule, PredictionWriter, SweepDivergedError
from lit_linear.cli import main
from lit_linear.errors import StorageError
from lit_linear.sweep.results import ConfigResult, SweepResult

# --- config errors: refused before any data is read or any step is taken --------------------------

BAD_OPTIONS = [
    (["--model.loss", "hinge"], "model.loss"),
    (["--model.lr", "0"], "model.lr"),
    (["--model.lr", "-0.1"], "model.lr"),
    (["--model.lr", "inf"], "model.lr"),
    (["--model.lr", "[0.1, nan]"], "model.lr"),
    (["--model.reg", "-1e-3"], "model.reg"),
    (["--model.reg", "nan"], "model.reg"),
    (["--model.lr", "[]"], "model.lr"),
    (["--model.reg", "[]"], "model.reg"),
    (["--data.batch_size", "0"], "data.batch_size"),
    (["--data.batch_size", "-5"], "data.batch_size"),
    (["--data.val_ratio", "0"], "data.val_ratio"),
    (["--data.val_ratio", "1.5"], "data.val_ratio"),
    (["--trainer.max_steps", "0"], "trainer.max_steps"),
    (["--trainer.max_steps", "-1"], "trainer.max_steps"),
    (["--trainer.val_check_interval", "0.5"], "val_check_interval"),
    (["--trainer.check_val_every_n_epoch", "1"], "trainer.check_val_every_n_epoch"),
    (["--last_checkpoint.every_n_train_steps", "0"], "last_checkpoint.every_n_train_steps"),
    (["--trainer.limit_val_batches", "0"], "trainer.limit_val_batches"),
    (["--trainer.overfit_batches", "2"], "trainer.overfit_batches"),
    (["--trainer.limit_train_batches", "5"], "trainer.limit_train_batches"),
    (["--model.cuda_graph", "true"], "model.cuda_graph"),  # the CPU has no CUDA graphs
    # Search: ranges, draws and halving.
    (["--model.lr", "{low: 1.0, high: 0.5}", "--model.num_configs", "4"], "model.lr"),
    (["--model.lr", "{low: 0.0, high: 1.0}", "--model.num_configs", "4"], "model.lr.low"),
    (["--model.lr", "{low: 0.1, high: .inf}", "--model.num_configs", "4"], "model.lr.high"),
    (["--model.reg", "{low: 1.0e-3, hi: 1.0}", "--model.num_configs", "4"], "model.reg"),
    (["--model.lr", "{low: 0.01, high: 1.0}", "--model.num_configs", "0"], "model.num_configs"),
    (["--model.lr", "{low: 0.01, high: 1.0}"], "model.num_configs"),
    (["--model.num_configs", "5"], "model.num_configs"),
    (["--model.lr", "[0.1, 0.2]", "--model.halving_factor", "1"], "model.halving_factor"),
    (["--model.halving_factor", "3"], "model.halving_factor"),  # one config: nothing to choose from
]


@pytest.mark.parametrize("bad, option", BAD_OPTIONS, ids=[" ".join(b) for b, _ in BAD_OPTIONS])
def test_bad_option_is_refused_before_training(bad, option, tmp_path, capsys, monkeypatch):
    """Exit status 2 and a message naming the option; the data folder is never even looked at."""
    looked = []
    monkeypatch.setattr(CIFARDataModule, "prepare_data", lambda self: looked.append("prepare_data"))
    monkeypatch.setattr(CIFARDataModule, "setup", lambda self, stage: looked.append("setup"))
    args = cli_args(tmp_path / "no-data-here", tmp_path / "run")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, *bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert option in err, err
    assert looked == []


def test_missing_max_steps_is_refused(tmp_path, capsys):
    args = [a for a in cli_args(tmp_path, tmp_path / "run") if a not in ("--trainer.max_steps", "40")]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    assert exit_info.value.code == 2
    assert "trainer.max_steps must be a positive number" in capsys.readouterr().err


@pytest.mark.slow
def test_config_error_exit_status_from_a_real_process(tmp_path):
    """``python train.py`` as a user types it, a fresh interpreter (the other runs fork from a server)."""
    command = [sys.executable, str(REPO / "train.py"), "fit", *cli_args(tmp_path, tmp_path / "run"), "--model.lr", "-1"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "model.lr" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists(), "nothing may be written for a refused config"


# --- divergence ----------------------------------------------------------------------------------


def fit(data_dir, root, lr, reg, steps=40, precision="32-true"):
    pl.seed_everything(0)
    model = LinearClassifierModule(loss="softmax", lr=lr, reg=reg)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        val_check_interval=20,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        precision=precision,
    )
    trainer.fit(model, CIFARDataModule(data_dir=str(data_dir), download=False, batch_size=20))
    return model


def test_a_diverging_config_is_contained(cifar10_dir, tmp_path, capsys):
    """lr = 1e6 blows up; it is marked, frozen, never best, and the others are untouched."""
    mixed = fit(cifar10_dir, tmp_path / "mixed", [0.05, 1e6], [1e-3])
    # Like with like: a neighbour that stays finite, in a grid of the same width. (A config alone is
    # a product of another width, which BLAS may round differently in float32.)
    clean = fit(cifar10_dir, tmp_path / "clean", [0.05, 1e-3], [1e-3])
    sweep = json.loads((tmp_path / "mixed" / "sweep.json").read_text())
    assert [c["status"] for c in sweep["configs"]] == ["ok", "diverged"]
    assert sweep["best"]["lr"] == 0.05
    assert torch.equal(mixed.W[:, 0], clean.W[:, 0]), "a diverging neighbour must not disturb a config"
    alone = fit(cifar10_dir, tmp_path / "alone", [0.05], [1e-3])
    assert torch.allclose(mixed.W[:, 0], alone.W[:, 0], rtol=1e-5, atol=1e-7)
    assert (tmp_path / "mixed" / "best_model.pt").is_file()
    assert "diverged" in capsys.readouterr().out


def test_when_every_config_diverges_fit_says_so_and_writes_no_model(cifar10_dir, tmp_path):
    with pytest.raises(SweepDivergedError, match="every one of the 2 configs diverged"):
        fit(cifar10_dir, tmp_path, [1e6, 1e7], [1e-3])
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert sweep["best"] is None and {c["status"] for c in sweep["configs"]} == {"diverged"}
    assert not (tmp_path / "best_model.pt").exists()


@pytest.mark.slow
def test_all_diverged_exit_status_from_the_cli(cifar10_dir, tmp_path, capfd):
    result = run_main(capfd, "fit", *cli_args(cifar10_dir, tmp_path), "--model.lr", "[1e6]", "--model.reg", "[1e-3]")
    assert result.returncode == 1
    assert "error: every one of the 1 configs diverged" in result.stderr
    assert "Traceback" not in result.stderr


# --- atomic artifacts ----------------------------------------------------------------------------


def crash_on_rename(monkeypatch):
    def refuse(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device (simulated, before the rename)")

    monkeypatch.setattr("lit_linear.runs.atomic.os.replace", refuse)


def test_sweep_json_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "sweep.json"
    old = SweepResult("svm", 10, (ConfigResult(0.1, 0.0, 0.5, 0.4, 1.0, "ok"),), 0)
    old.write_json(path)
    before = path.read_bytes()
    crash_on_rename(monkeypatch)
    new = SweepResult("svm", 20, (ConfigResult(0.1, 0.0, 0.6, 0.5, 0.9, "ok"),), 0)
    with pytest.raises(StorageError, match=f"cannot write {path}: No space left on device"):
        new.write_json(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["sweep.json"], "the temporary file is cleaned up"


def test_predictions_csv_write_is_atomic(cifar10_dir, tmp_path, monkeypatch):
    """A predict that crashes mid-write leaves the earlier predictions.csv as it was."""
    model = fit(cifar10_dir, tmp_path, [0.05], [1e-3], steps=20)
    datamodule = CIFARDataModule(data_dir=str(cifar10_dir), download=False, batch_size=20)
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
        callbacks=[PredictionWriter()],
    )
    trainer.predict(model, datamodule, return_predictions=False)
    before = (tmp_path / "predictions.csv").read_bytes()
    assert before.count(b"\n") == 61
    crash_on_rename(monkeypatch)
    with pytest.raises(StorageError, match="predictions.csv: No space left on device"):
        trainer.predict(model, datamodule, return_predictions=False)
    assert (tmp_path / "predictions.csv").read_bytes() == before


# --- safe loading --------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_hostile_checkpoint_is_refused_and_its_payload_never_runs(cifar10_dir, tmp_path, capfd):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "hostile.ckpt"
    with open(hostile, "wb") as f:
        pickle.dump({"state_dict": {}, "payload": _Payload(str(marker))}, f, protocol=2)
    for subcommand in ("test", "fit"):
        result = run_main(capfd, subcommand, "--ckpt_path", str(hostile), *cli_args(cifar10_dir, tmp_path / subcommand))
        assert result.returncode == 2 and "Traceback" not in result.stderr
        (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert line == (
            f"error: --ckpt_path {hostile}: holds Python objects that weights_only loading refuses "
            "(GLOBAL io.open), so nothing in it may run"
        )
        assert not marker.exists(), f"the payload ran during {subcommand}"
