"""PredictionWriter: the CSV's columns, its row order, and the printed path (unit tests, no Trainer)."""

from __future__ import annotations

import csv
import os
import types
from pathlib import Path

import pytest
import torch

from lit_linear.callbacks.predictions import PredictionWriter

NAMES = ["cat", "dog", "emu"]
HEADER = ["index", "predicted_label", "predicted_class", "true_label", "true_class"]


def trainer(tmp_path: Path) -> types.SimpleNamespace:
    """What ``write_on_epoch_end`` reads of a single-process Trainer."""
    return types.SimpleNamespace(log_dir=str(tmp_path), world_size=1, is_global_zero=True)


def module() -> types.SimpleNamespace:
    return types.SimpleNamespace(class_names=NAMES)


def t(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def read(path: str) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_rows_in_index_order_with_true_labels(tmp_path: Path) -> None:
    # Two batches whose rows come shuffled, as a sharded or reordered loader may give them.
    batches = [(t(3, 0), t(2, 1), t(2, 0)), (t(1, 4, 2), t(0, 0, 2), t(1, 0, 2))]
    writer = PredictionWriter()
    writer.write_on_epoch_end(trainer(tmp_path), module(), batches, [])
    assert writer.path == os.path.join(str(tmp_path), "predictions.csv")
    assert read(writer.path) == [
        HEADER,
        ["0", "1", "dog", "0", "cat"],
        ["1", "0", "cat", "1", "dog"],
        ["2", "2", "emu", "2", "emu"],
        ["3", "2", "emu", "2", "emu"],
        ["4", "0", "cat", "0", "cat"],
    ]


def test_pairs_have_no_true_label_columns(tmp_path: Path) -> None:
    writer = PredictionWriter(filename="out.csv")
    writer.write_on_epoch_end(trainer(tmp_path), module(), [(t(1), t(2)), (t(0), t(1))], [])
    assert writer.path == os.path.join(str(tmp_path), "out.csv")
    assert read(writer.path) == [["index", "predicted_label", "predicted_class"], ["0", "1", "dog"], ["1", "2", "emu"]]


def test_a_batch_without_true_labels_drops_the_columns_for_all(tmp_path: Path) -> None:
    writer = PredictionWriter()
    writer.write_on_epoch_end(trainer(tmp_path), module(), [(t(1), t(2), t(2)), (t(0), t(1), None)], [])
    assert read(writer.path)[0] == ["index", "predicted_label", "predicted_class"]


def test_prints_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    writer = PredictionWriter()
    writer.write_on_epoch_end(trainer(tmp_path), module(), [(t(0), t(0), t(0))], [])
    assert capsys.readouterr().out == f"predictions written to {os.path.join(str(tmp_path), 'predictions.csv')}\n"


def test_other_ranks_neither_write_nor_print(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rank1 = types.SimpleNamespace(log_dir=str(tmp_path), world_size=1, is_global_zero=False)
    writer = PredictionWriter()
    writer.write_on_epoch_end(rank1, module(), [(t(0), t(0))], [])
    assert writer.path is None and not os.listdir(tmp_path) and capsys.readouterr().out == ""


def test_a_wrong_tuple_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="predict_step must return .* got a 4-tuple"):
        PredictionWriter().write_on_epoch_end(trainer(tmp_path), module(), [(t(0), t(0), t(0), t(0))], [])


def test_ddp_shards_are_gathered_and_an_empty_rank_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand-in for the collective: rank 0's shard, then rank 1's rows, then rank 2 with none.
    others = [(t(0, 2), t(0, 0), t(1, 0)), (t(), t(), None)]

    def all_gather_object(out: list, obj: object) -> None:
        out[:] = [obj, *others]

    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    ddp = types.SimpleNamespace(log_dir=str(tmp_path), world_size=3, is_global_zero=True)
    writer = PredictionWriter()
    writer.write_on_epoch_end(ddp, module(), [(t(3, 1), t(1, 2), t(1, 2))], [])
    assert read(writer.path) == [
        HEADER,
        ["0", "0", "cat", "1", "dog"],
        ["1", "2", "emu", "2", "emu"],
        ["2", "0", "cat", "0", "cat"],
        ["3", "1", "dog", "1", "dog"],
    ]
