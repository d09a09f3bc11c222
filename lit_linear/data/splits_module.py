"""SplitsDataModule: the one data path every input takes, CIFAR pixels and user features alike.

Each split is one ``(N, D-1)`` tensor (uint8 pixels, or float features) with its ``(N,)`` labels. A
split that fits lives whole on the training device and a minibatch is a gather of rows from it
(:mod:`lit_linear.data.streams`); a memory-mapped split stays on disk and each block of steps'
rows is gathered from the map ahead of the step. Normalization and the bias column happen in the
model (:func:`lit_linear.features.preprocess.preprocess`), so the data module hands over raw rows.
Subclasses read their files in ``setup`` and call :meth:`_set_train_val` and :meth:`_set_test`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor

from lit_linear.data.feature_files import feature_statistics
from lit_linear.data.streams import Batch, EvalBatches, GatheredBlocks, TrainBatches, TrainBlock, gather_rows
from lit_linear.errors import ConfigError, check_count

# The float64 rows one pass of the statistics holds: its temporaries (a copy, the squared deviations) stay small.
STATS_BYTES = 32 << 20


class SplitsDataModule(pl.LightningDataModule):
    """Training, validation and test splits as row tensors, minibatches by index: the base of the data modules.

    What the model and the CLI read from it: ``num_classes``, ``class_names``, ``feature_dim`` (linked into
    the model), ``feature_offset`` and ``feature_scale`` (the training split's normalization, ``(D-1,)``
    each), ``steps_per_batch`` and ``shard_rows`` (set by the model).
    """

    def __init__(self) -> None:
        super().__init__()
        # SGD steps per Lightning training batch: not an option, set by LinearClassifierModule when
        # a fit starts (lit_linear.training.grouping); the minibatches and the result do not depend on it.
        self.steps_per_batch = 1
        # Under DDP, whether each rank takes its share of every minibatch and of the validation
        # splits (model.split minibatch), or all of them (configs: the ranks split the configs
        # instead). Not an option: set by LinearClassifierModule for each stage. Test and predict
        # always shard their rows (they score the best config only).
        self.shard_rows = True
        self.train_images = self.train_labels = self.val_images = self.val_labels = None
        self.train_eval_images = self.train_eval_labels = None
        self.test_images = self.test_labels = None
        self.feature_offset: Tensor | None = None
        self.feature_scale: Tensor | None = None
        self.train_release = None  # gives back a mapped training split's pages (FeatureSplit.release), or None

    @staticmethod
    def _check_common(batch_size: int, val_ratio: float | None, eval_batch_size: int, train_eval_size: int | None):
        """The options every data module shares, each checked (ConfigError names the first that is not valid)."""
        check_count(batch_size, "data.batch_size")  # bool is an int subclass: batch_size=True must not pass as 1
        if val_ratio is not None and (
            not isinstance(val_ratio, (int, float)) or isinstance(val_ratio, bool) or not 0.0 < val_ratio < 1.0
        ):
            raise ConfigError(f"data.val_ratio must lie strictly between 0 and 1, got {val_ratio!r}")
        check_count(eval_batch_size, "data.eval_batch_size")
        if train_eval_size is not None:
            check_count(train_eval_size, "data.train_eval_size", "integer or null (all)")

    def _normalize(self, rows: Tensor, normalize: str, release: Callable[[], None] | None = None) -> None:
        """``feature_offset`` and ``feature_scale`` ``(D-1,)`` from the training ``rows (N, D-1)`` of float features:
        ``none`` (offset 0), ``center`` (the mean) or ``standardize`` (``x * (1 / std) - mean / std``), the statistics
        read a chunk of rows at a time (``release`` gives a map's pages back after each)."""
        dim = rows.shape[1]
        self.feature_scale = torch.ones(dim)
        if normalize == "none":
            self.feature_offset = torch.zeros(dim)
            return
        chunk = max(1, STATS_BYTES // (dim * 8))
        mean, std = feature_statistics(rows, chunk_rows=chunk, release=release)
        if normalize == "center":
            self.feature_offset = mean
        else:
            self.feature_scale = 1.0 / std
            self.feature_offset = mean / std

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _place(self, rows: Tensor, mapped: bool) -> Tensor:
        """A split's tensor where it is read from: the training device, or its map when ``mapped``."""
        return rows if mapped else rows.to(self._device())

    def _set_train_val(self, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor], *, mapped: bool = False) -> None:
        """The training and validation splits, ``(rows, labels)`` each; ``mapped``: the rows stay in their map."""
        device = self._device()
        self.train_images, self.train_labels = self._place(train[0], mapped), self._place(train[1], mapped)
        self.val_images, self.val_labels = self._place(val[0], mapped), val[1].to(device)
        num_train, size = len(self.train_labels), self.hparams.train_eval_size
        if size is None or size >= num_train:
            self.train_eval_images, self.train_eval_labels = self.train_images, self.train_labels
        else:
            # A fixed sample (its own seed, sorted): the same rows at every validation and in every run.
            rows = torch.randperm(num_train, generator=torch.Generator().manual_seed(0))[:size].sort().values
            sample = gather_rows(self.train_images, rows.to(self.train_images.device), self.train_release)
            self.train_eval_images = sample.to(device)
            self.train_eval_labels = self.train_labels.index_select(0, rows.to(self.train_labels.device)).to(device)

    def _set_test(self, test: tuple[Tensor, Tensor], *, mapped: bool = False) -> None:
        self.test_images, self.test_labels = self._place(test[0], mapped), test[1].to(self._device())

    # --- loaders -------------------------------------------------------------------------------
    def _rank(self, shard_rows: bool = True) -> tuple[int, int]:
        if self.trainer is None or not shard_rows:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _eval(self, images: Tensor, labels: Tensor, shard_rows: bool = True) -> EvalBatches:
        return EvalBatches(images, labels, self.hparams.eval_batch_size, *self._rank(shard_rows))

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Every split already lives on the training device: skip Lightning's generic walk over
        # the batch (a tenth of a millisecond per step on the CPU).
        if isinstance(batch, Batch) and batch.images.device == device:
            return batch
        if isinstance(batch, TrainBlock):
            if batch.source.device == device:
                return batch
            # A block gathered from a mapped split, pinned on a GPU machine: the copy overlaps the host's work.
            return TrainBlock(*(t.to(device, non_blocking=True) for t in batch[:3]), batch.step)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> TrainBatches | GatheredBlocks:
        rank, world_size = self._rank(self.shard_rows)
        trainer = self.trainer
        max_steps = trainer.max_steps if trainer is not None else -1
        batches = TrainBatches(
            self.train_images,
            self.train_labels,
            self.hparams.batch_size,
            self.hparams.seed,
            rank=rank,
            world_size=world_size,
            steps_per_batch=self.steps_per_batch,
            last_step=max_steps if max_steps > 0 else None,
            position=(lambda: trainer.global_step) if trainer is not None else None,
        )
        if self.train_release is None:
            return batches
        return GatheredBlocks(batches, pin=self._device().type == "cuda", release=self.train_release)

    def val_dataloader(self) -> CombinedLoader:
        """The training rows of ``train_eval_size`` and the validation split, side by side as one loader.

        Each batch is ``{"train": Batch | None, "val": Batch | None}``, a chunk of each (None once
        that split is done). One loader, because Lightning reports every loader's metrics in a
        column of its own, and train and val accuracy are one measurement of the same weights;
        ``max_size`` still applies ``limit_val_batches`` to each split.
        """
        splits = {
            "train": self._eval(self.train_eval_images, self.train_eval_labels, self.shard_rows),
            "val": self._eval(self.val_images, self.val_labels, self.shard_rows),
        }
        return CombinedLoader(splits, mode="max_size")

    def test_dataloader(self) -> EvalBatches:
        return self._eval(self.test_images, self.test_labels)

    def predict_dataloader(self) -> EvalBatches:
        """The test split, in row order."""
        return self._eval(self.test_images, self.test_labels)
