"""find_matching_checkpoint: ``--ckpt_path best|last`` picks the newest run trained with this config's settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from lit_linear.errors import ConfigError
from lit_linear.runs.find import find_matching_checkpoint

MODEL = {"loss": "softmax", "lr": [0.1, 0.01], "reg": 0.001, "weight_scale": 1e-6}
DATA = {"dataset": "cifar10", "batch_size": 200}


def fake_checkpoint(
    root: Path,
    run: str,
    mtime: float,
    model: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    name: str = "best",
) -> str:
    """``<root>/<run>/checkpoints/<name>.ckpt`` holding the hparams dicts and no weights, modified at ``mtime``."""
    path = root / run / "checkpoints" / f"{name}.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    hparams = {
        "hyper_parameters": dict(MODEL, **(model or {})),
        "datamodule_hyper_parameters": dict(DATA, **(data or {})),
    }
    torch.save({"state_dict": {}, "global_step": 0, "pytorch-lightning_version": "2.6.6", **hparams}, path)
    os.utime(path, (mtime, mtime))
    return str(path)


def test_newest_matching_run_wins_over_newer_other_runs(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, "lightning_logs/version_0", 1000)  # matches, but older
    want = fake_checkpoint(tmp_path, "lightning_logs/version_1", 2000)  # matches
    fake_checkpoint(tmp_path, "lightning_logs/version_2", 3000, model={"loss": "svm"})
    fake_checkpoint(tmp_path, "lightning_logs/version_3", 4000, data={"dataset": "cifar100"})
    fake_checkpoint(tmp_path, "lightning_logs/version_4", 5000, name="last")  # another name
    assert find_matching_checkpoint(str(tmp_path), "best", MODEL, DATA) == want


def test_settings_outside_the_compared_keys_do_not_matter(tmp_path: Path) -> None:
    want = fake_checkpoint(tmp_path, "run", 1000, model={"weight_scale": 0.5}, data={"batch_size": 7})
    assert find_matching_checkpoint(str(tmp_path), "best", MODEL, DATA) == want


def test_ints_equal_floats_but_a_scalar_is_not_a_list(tmp_path: Path) -> None:
    want = fake_checkpoint(tmp_path, "ints", 1000, model={"lr": [1, 2], "reg": 0})
    fake_checkpoint(tmp_path, "list", 2000, model={"lr": [1.0, 2.0], "reg": [0.0]})
    this = dict(MODEL, lr=(1.0, 2), reg=0.0)  # a tuple is the same list
    assert find_matching_checkpoint(str(tmp_path), "best", this, DATA) == want


def test_nested_settings_and_keys_on_one_side_only(tmp_path: Path) -> None:
    # A later lr of the form {low, high} with num_configs: nested ints normalise too.
    ranged = {"lr": {"low": 1, "high": 2.0}, "num_configs": 4}
    want = fake_checkpoint(tmp_path, "ranged", 1000, model=ranged)
    fake_checkpoint(tmp_path, "old", 2000)  # saved without num_configs: not the same sweep
    this = dict(MODEL, lr={"low": 1.0, "high": 2}, num_configs=4)
    assert find_matching_checkpoint(str(tmp_path), "best", this, DATA) == want
    # Under the old run's own folder (the run is the root itself, shown as "."): no match.
    with pytest.raises(
        ConfigError,
        match=r"first: \.: model\.lr \[0\.1, 0\.01\] \(this run \{'low': 1\.0, 'high': 2\}\), "
        r"model\.num_configs None \(this run 4\)$",
    ):
        find_matching_checkpoint(str(tmp_path / "old"), "best", this, DATA)


def test_no_match_lists_every_run_and_how_it_differs(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, "lightning_logs/version_0", 1000, model={"loss": "svm", "reg": [0.5]})
    fake_checkpoint(tmp_path, "lightning_logs/version_1", 2000, data={"dataset": "cifar100"})
    broken = tmp_path / "lightning_logs/version_2/checkpoints/best.ckpt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a checkpoint")
    os.utime(broken, (3000, 3000))
    with pytest.raises(ConfigError) as raised:
        find_matching_checkpoint(str(tmp_path), "best", MODEL, DATA)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"--ckpt_path best: no run under {tmp_path.resolve()} was trained with these settings")
    runs = message.split("newest first: ", 1)[1].split("; ")
    assert runs[0] == "lightning_logs/version_2: is not a Lightning checkpoint (not a file torch.save writes)"
    assert runs[1] == "lightning_logs/version_1: data.dataset 'cifar100' (this run 'cifar10')"
    assert (
        runs[2] == "lightning_logs/version_0: model.loss 'svm' (this run 'softmax'), model.reg [0.5] (this run 0.001)"
    )
    assert len(runs) == 3


def test_no_checkpoint_at_all(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, "run", 1000, name="last")
    root = os.path.relpath(tmp_path)  # the message names the absolute folder whatever it was given
    with pytest.raises(ConfigError) as raised:
        find_matching_checkpoint(root, "best", MODEL, DATA)
    assert str(raised.value) == (
        f"--ckpt_path best: no best.ckpt in any run under {os.path.abspath(root)}; fit first with the same "
        "--trainer.default_root_dir, or pass the path of a .ckpt file"
    )


def test_root_with_glob_characters(tmp_path: Path) -> None:
    root = tmp_path / "sweep[1]"
    want = fake_checkpoint(root, "run", 1000)
    assert find_matching_checkpoint(str(root), "best", MODEL, DATA) == want
