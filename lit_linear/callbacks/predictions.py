"""PredictionWriter: ``predict`` -> ``predictions.csv`` in the run folder, written atomically."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from lit_linear.runs.atomic import atomic_open


class PredictionWriter(BasePredictionWriter):
    """Writes one CSV row per predicted image, in row order, to ``<log_dir>/<filename>``.

    Columns: ``index`` (the image's row in the predicted split), ``predicted_label`` (the best
    config's class, an int in ``[0, C)``) and ``predicted_class`` (its name); when the module's
    ``predict_step`` also returns the true labels, ``true_label`` and ``true_class`` follow.

    ``predict_step`` returns per batch either ``(index (n,), predicted (n,))`` or
    ``(index (n,), predicted (n,), true (n,))``, int64 tensors on any device. Under DDP every
    rank predicts its own shard; the shards are gathered and rank 0 writes the file (atomically)
    and prints its path. The path is kept in :attr:`path`.

    Args:
        filename: file name inside ``trainer.log_dir``.
    """

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename
        self.path: str | None = None

    @staticmethod
    def _concat(predictions: Sequence[Sequence[Tensor]]) -> tuple[Tensor, Tensor, Tensor | None]:
        """This rank's ``(index (N,), predicted (N,), true (N,) or None)``, on the CPU.

        True labels are kept only if every batch has them (a 3-tuple whose third item is not None).
        """
        if not predictions:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty, None
        for batch in predictions:
            if len(batch) not in (2, 3):
                raise ValueError(
                    f"PredictionWriter: predict_step must return (index, predicted) or (index, predicted, true), "
                    f"got a {len(batch)}-tuple"
                )
        index = torch.cat([b[0] for b in predictions]).cpu()
        predicted = torch.cat([b[1] for b in predictions]).cpu()
        has_true = all(len(b) == 3 and b[2] is not None for b in predictions)
        true = torch.cat([b[2] for b in predictions]).cpu() if has_true else None
        return index, predicted, true

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Sequence[Any], batch_indices: Any
    ) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        index, predicted, true = self._concat(predictions)
        shards: list[Any] = [(index, predicted, true)]
        if trainer.world_size > 1:
            # Each rank predicted its own shard of rows: gather them all on every rank.
            shards = [None] * trainer.world_size
            torch.distributed.all_gather_object(shards, (index, predicted, true))
        if not trainer.is_global_zero:
            return
        # A rank with no rows has no say in whether true labels exist; any rank with rows but
        # without labels drops the columns for all, so that every row has the same columns.
        with_rows = [s for s in shards if s[0].numel()]
        has_true = bool(with_rows) and all(s[2] is not None for s in with_rows)
        index = torch.cat([s[0] for s in shards])
        predicted = torch.cat([s[1] for s in shards])
        order = torch.argsort(index)
        names = pl_module.class_names
        header = ["index", "predicted_label", "predicted_class"]
        rows = [[i, y, names[y]] for i, y in zip(index[order].tolist(), predicted[order].tolist())]
        if has_true:
            # Empty shards add no rows, so these line up with ``index`` and ``predicted``.
            header += ["true_label", "true_class"]
            for row, t in zip(rows, torch.cat([s[2] for s in with_rows])[order].tolist()):
                row += [t, names[t]]
        self.path = os.path.join(log_dir, self.filename)
        with atomic_open(self.path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(header)
            out.writerows(rows)
        print(f"predictions written to {self.path}", flush=True)
