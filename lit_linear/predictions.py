"""PredictionWriter: ``predict`` -> ``predictions.csv`` in the run folder, written atomically."""

from __future__ import annotations

import csv
import os
import warnings
from typing import Any, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from lit_linear.atomic import atomic_open

# Lightning looks for a sampler's indices to hand to epoch-level writers; this writer takes each
# row's index from the batch itself, so the warning that it found none is noise.
warnings.filterwarnings("ignore", message="Couldn't infer the batch indices fetched from your dataloader")


class PredictionWriter(BasePredictionWriter):
    """Writes one CSV row per predicted image: ``index,label,class_name``, in row order.

    Args:
        filename: file name inside ``trainer.log_dir``.
    """

    def __init__(self, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename
        self.path: str | None = None

    def write_on_epoch_end(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", predictions: Sequence[Any], batch_indices: Any
    ) -> None:
        log_dir = trainer.log_dir  # a collective under DDP: every rank asks
        index = torch.cat([i for i, _ in predictions]).cpu() if predictions else torch.empty(0, dtype=torch.long)
        labels = torch.cat([p for _, p in predictions]).cpu() if predictions else torch.empty(0, dtype=torch.long)
        if trainer.world_size > 1:
            # Each rank predicted its own shard of rows: gather them all on every rank.
            shards: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(shards, (index, labels))
            index = torch.cat([s[0] for s in shards])
            labels = torch.cat([s[1] for s in shards])
        if not trainer.is_global_zero:
            return
        order = torch.argsort(index)
        names = pl_module.class_names
        self.path = os.path.join(log_dir, self.filename)
        with atomic_open(self.path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["index", "label", "class_name"])
            for i, y in zip(index[order].tolist(), labels[order].tolist()):
                out.writerow([i, y, names[y]])
