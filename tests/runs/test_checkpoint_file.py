"""check_checkpoint: a file named by ``--ckpt_path`` is opened without running anything in it, and each fault is
one line; check_resumed_options: the model options a fit from a checkpoint may not change."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from lit_linear.errors import ConfigError
from lit_linear.runs.checkpoint_file import CheckpointFault, check_checkpoint, check_resumed_options, names_a_file

CHECKPOINT = {"state_dict": {"W": torch.zeros(3, 2)}, "global_step": 20, "pytorch-lightning_version": "2.6.6"}


class Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def fault(path: Path) -> str:
    with pytest.raises(CheckpointFault) as raised:
        check_checkpoint(path)
    assert isinstance(raised.value, ConfigError) and raised.value.path == str(path)
    message = str(raised.value)
    assert message == f"--ckpt_path {path}: {raised.value.reason}" and "\n" not in message
    return raised.value.reason


def test_a_lightning_checkpoint_is_read_with_its_weights_on_disk(tmp_path: Path) -> None:
    torch.save(CHECKPOINT, tmp_path / "a.ckpt")
    checkpoint = check_checkpoint(tmp_path / "a.ckpt")
    assert checkpoint["global_step"] == 20 and torch.equal(checkpoint["state_dict"]["W"], torch.zeros(3, 2))
    # torch's format before the zip (no mmap there) is read too
    torch.save(CHECKPOINT, tmp_path / "old.ckpt", _use_new_zipfile_serialization=False)
    assert check_checkpoint(tmp_path / "old.ckpt")["global_step"] == 20


def test_missing_file_and_folder(tmp_path: Path) -> None:
    assert fault(tmp_path / "none.ckpt") == "not found"
    assert fault(tmp_path) == "is a folder; give a .ckpt file"


@pytest.mark.parametrize("form", ["zip", "pickle"])
def test_a_hostile_pickle_is_refused_and_nothing_in_it_runs(tmp_path: Path, form: str) -> None:
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(Hostile(marker)))  # the probe is real: unpickled unsafely, it runs
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "hostile.ckpt"
    if form == "zip":
        torch.save({**CHECKPOINT, "hyper_parameters": Hostile(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Hostile(marker), protocol=2))
    assert fault(path) == (
        "holds Python objects that weights_only loading refuses (GLOBAL posix.system), so nothing in it may run"
    )
    assert not marker.exists()


def test_files_that_are_not_lightning_checkpoints(tmp_path: Path) -> None:
    torch.save({"a": torch.zeros(2)}, tmp_path / "dict.ckpt")
    assert fault(tmp_path / "dict.ckpt") == (
        "is not a Lightning checkpoint (no state_dict / global_step / pytorch-lightning_version)"
    )
    torch.save(torch.zeros(2), tmp_path / "tensor.ckpt")
    assert fault(tmp_path / "tensor.ckpt") == "is not a Lightning checkpoint (a Tensor, not a dict with a state_dict)"
    torch.save({**CHECKPOINT, "state_dict": [1]}, tmp_path / "list.ckpt")
    assert fault(tmp_path / "list.ckpt") == "is not a Lightning checkpoint (its state_dict is not a dict)"
    (tmp_path / "text.ckpt").write_text("global_step: 20\n")
    assert fault(tmp_path / "text.ckpt") == "is not a Lightning checkpoint (not a file torch.save writes)"


def test_a_truncated_or_empty_checkpoint(tmp_path: Path) -> None:
    torch.save(CHECKPOINT, tmp_path / "whole.ckpt")
    data = (tmp_path / "whole.ckpt").read_bytes()
    for keep in (len(data) // 2, len(data) - 1, 10):
        (tmp_path / "cut.ckpt").write_bytes(data[:keep])
        assert fault(tmp_path / "cut.ckpt").startswith("is truncated or unreadable: PytorchStreamReader failed")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    assert fault(tmp_path / "empty.ckpt") == "is truncated or unreadable: the file is empty"


def test_which_ckpt_path_values_name_a_file() -> None:
    assert names_a_file("runs/last.ckpt") and names_a_file(Path("best.ckpt")) and names_a_file("./best")
    for value in (None, "best", "last", "hpc", "registry", "registry:model:v1", "s3://bucket/last.ckpt"):
        assert not names_a_file(value), value


SAVED = {"loss": "softmax", "lr": [0.1, 0.2], "reg": 0.001, "num_configs": None, "split": "auto", "compile": False}


def test_resumed_options_equal_to_the_checkpoints_or_not_recorded_pass() -> None:
    check_resumed_options("a.ckpt", SAVED, {})
    check_resumed_options("a.ckpt", SAVED, {"loss": "softmax", "lr": (0.1, 0.2), "reg": 0.001, "num_configs": None})
    check_resumed_options("a.ckpt", SAVED, {"new_option": 3})  # a checkpoint saved before it existed
    check_resumed_options("a.ckpt", SAVED, {"split": "configs", "compile": True, "cuda_graph": True})  # this run's


def test_resumed_options_other_than_the_checkpoints_are_refused() -> None:
    with pytest.raises(ConfigError) as raised:
        check_resumed_options("a.ckpt", SAVED, {"lr": [0.3, 0.5, 0.7], "reg": 0.001, "num_configs": 4, "loss": "svm"})
    message = str(raised.value)
    assert message.startswith(
        "--ckpt_path a.ckpt: the checkpoint was trained with other model options: model.lr [0.1, 0.2] "
        "(this run [0.3, 0.5, 0.7]), model.num_configs None (this run 4), model.loss 'softmax' (this run 'svm'); "
    )
    assert "model.reg" not in message and "\n" not in message
