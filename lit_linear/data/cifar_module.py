"""CIFARDataModule: CIFAR splits as uint8 tensors on the training device, minibatches by index.

The hot path never touches a per-sample ``Dataset``: each split is one ``(N, 3072)`` uint8 tensor
(4x smaller than float32) that lives on the training device, and a minibatch is a gather of
``batch_size`` rows from it (:mod:`lit_linear.data.streams`). Scaling, mean subtraction and the bias
column happen on the device in the model (:func:`lit_linear.features.pixels.preprocess`), so nothing is
copied host->device per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import CombinedLoader, rank_zero_info
from torch import Tensor

from lit_linear.data.cifar import PIXELS, SPECS, DatasetName, download, find_folder, get_spec, incomplete_folder, load_class_names, load_split
from lit_linear.errors import ConfigError, DataError, check_count
from lit_linear.data.streams import Batch, EvalBatches, TrainBatches, TrainBlock




class CIFARDataModule(pl.LightningDataModule):
    """CIFAR-10/100 for linear classifiers: whole splits on the device, minibatches by index.

    Args:
        data_dir: folder holding ``cifar-10-batches-py/`` (or ``cifar-100-python/``), or that
            folder itself.
        dataset: ``cifar10`` or ``cifar100`` (fine labels, 100 classes).
        download: fetch and verify the official archive if the folder is missing; a folder that
            is present is used as it is, never re-downloaded (one that lacks some files is an error).
        batch_size: images per SGD step, all devices together.
        val_ratio: fraction of the training images held out for validation: the last rows of
            the training files (10,000 of 50,000 at 0.2), as in the course; deterministic.
        seed: seeds the minibatch order (weights are seeded by ``seed_everything``).
        eval_batch_size: images per chunk when measuring accuracy. On the CPU, chunks of about
            1000 keep the float temporaries small enough to be reused instead of freshly mapped.
        train_eval_size: how many training images the train accuracy is measured on at each
            validation: a fixed random sample, the same at every validation (null: all of them).
            Like CS231n's solver, which samples the training set for this; 10,000 images give the
            full-set figure within about half a point at a quarter of the cost.
    """

    def __init__(
        self,
        data_dir: str = "data",
        dataset: DatasetName = "cifar10",
        download: bool = True,
        batch_size: int = 200,
        val_ratio: float = 0.2,
        seed: int = 0,
        eval_batch_size: int = 1000,
        train_eval_size: int | None = 10000,
    ) -> None:
        super().__init__()
        if dataset not in SPECS:
            raise ConfigError(f"data.dataset must be one of {', '.join(SPECS)}, got {dataset!r}")
        self.spec = get_spec(dataset)
        # bool is an int subclass: batch_size=True must not pass as 1.
        check_count(batch_size, "data.batch_size")
        if not isinstance(val_ratio, (int, float)) or isinstance(val_ratio, bool) or not 0.0 < val_ratio < 1.0:
            raise ConfigError(f"data.val_ratio must lie strictly between 0 and 1, got {val_ratio!r}")
        check_count(eval_batch_size, "data.eval_batch_size")
        if train_eval_size is not None:
            check_count(train_eval_size, "data.train_eval_size", "integer or null (all)")
        # logger=False: Lightning would log these to TensorBoard as an HParams session of the main
        # run (with its hp_metric placeholder); the sweep's configs each have their own session.
        self.save_hyperparameters(logger=False)
        self.data_dir = Path(data_dir)
        # SGD steps per Lightning training batch: not an option, set by LinearClassifierModule when
        # a fit starts (lit_linear.training.grouping); the minibatches and the result do not depend on it.
        self.steps_per_batch = 1
        # Under DDP, whether each rank takes its share of every minibatch and of the validation
        # splits (model.split minibatch), or all of them (configs: the ranks split the configs
        # instead). Not an option: set by LinearClassifierModule for each stage. Test and predict
        # always shard their rows (they score the best config only).
        self.shard_rows = True
        self._class_names = list(self.spec.class_names)
        self.train_images = self.train_labels = self.val_images = self.val_labels = None
        self.train_eval_images = self.train_eval_labels = None
        self.test_images = self.test_labels = None
        self.pixel_mean: Tensor | None = None

    # --- what LightningCLI links into the model ------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def class_names(self) -> list[str]:
        """Class names, index order; read from the meta file once the data is set up."""
        return list(self._class_names)

    @property
    def feature_dim(self) -> int:
        """Features per image after preprocessing: 3072 pixels and the bias column."""
        return PIXELS + 1

    # --- files -------------------------------------------------------------------------------
    def _folder(self) -> Path | None:
        """The complete batches folder, else None; a :class:`DataError` for a partial copy."""
        folder = find_folder(self.data_dir, self.spec)
        if folder is None and (partial := incomplete_folder(self.data_dir, self.spec)) is not None:
            # Never downloaded over: the copy may hold the user's own files, and the archive would
            # silently replace them.
            where, missing = partial
            raise DataError(
                f"{self.spec.title} in {where} is incomplete: missing {', '.join(missing)}. Restore the missing "
                f"files, or remove {where} and run with --data.download true to fetch the official archive"
            )
        return folder

    def _missing_message(self) -> str:
        return (
            f"{self.spec.title} not found: looked for {self.data_dir / self.spec.folder} (and {self.data_dir}) "
            f"holding {', '.join(self.spec.all_files)}. Set --data.download true to fetch the official archive, "
            f"or point --data.data_dir at the folder that contains {self.spec.folder}/"
        )

    def prepare_data(self) -> None:
        if self._folder() is not None:
            return
        if not self.hparams.download:
            raise DataError(self._missing_message())
        rank_zero_info(f"Downloading {self.spec.title} into {self.data_dir} ...")
        download(self.data_dir, self.spec)
        if self._folder() is None:
            raise DataError(f"downloaded the {self.spec.title} archive, but: {self._missing_message()}")

    def setup(self, stage: str) -> None:
        """Load what ``stage`` needs: train/val splits (and the mean) to fit or validate, test to test or predict."""
        folder = self._folder()
        if folder is None:
            raise DataError(self._missing_message())
        self._class_names = load_class_names(folder, self.spec)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if stage in ("fit", "validate") and self.train_images is None:
            self._setup_train_val(folder, device)
        if stage in ("test", "predict") and self.test_images is None:
            images, labels = load_split(folder, self.spec, "test")
            self.test_images, self.test_labels = images.to(device), labels.to(device)

    def _setup_train_val(self, folder: Path, device: torch.device) -> None:
        images, labels = load_split(folder, self.spec, "train")
        num_val = int(round(len(labels) * self.hparams.val_ratio))
        if not 0 < num_val < len(labels):
            raise ConfigError(
                f"data.val_ratio={self.hparams.val_ratio} leaves {num_val} of {len(labels)} images for validation; "
                "both splits must be non-empty"
            )
        num_train = len(labels) - num_val
        train_images = images[:num_train]
        # Per-channel mean of the training rows only (the course subtracts the mean RGB colour),
        # broadcast to every pixel of its channel.
        # Summed in chunks: one float64 sum over all rows materialises a float64 copy of the split
        # (~1 GB for CIFAR-10), the biggest memory peak of a whole run.
        channel_mean = torch.zeros(3, dtype=torch.float64)
        for chunk in train_images.split(2048):
            channel_mean += chunk.view(-1, 3, PIXELS // 3).sum(dim=(0, 2), dtype=torch.float64)
        channel_mean /= num_train * (PIXELS // 3) * 255.0
        self.pixel_mean = channel_mean.repeat_interleave(PIXELS // 3).float()  # (3072,)
        self.train_images, self.train_labels = train_images.to(device), labels[:num_train].to(device)
        self.val_images, self.val_labels = images[num_train:].to(device), labels[num_train:].to(device)
        size = self.hparams.train_eval_size
        if size is None or size >= num_train:
            self.train_eval_images, self.train_eval_labels = self.train_images, self.train_labels
        else:
            # A fixed sample (its own seed, sorted): the same rows at every validation and in every run.
            rows = torch.randperm(num_train, generator=torch.Generator().manual_seed(0))[:size].sort().values
            self.train_eval_images = self.train_images.index_select(0, rows.to(device))
            self.train_eval_labels = self.train_labels.index_select(0, rows.to(device))

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
        if isinstance(batch, TrainBlock) and batch.source.device == device:
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> TrainBatches:
        rank, world_size = self._rank(self.shard_rows)
        trainer = self.trainer
        max_steps = trainer.max_steps if trainer is not None else -1
        return TrainBatches(
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

    def val_dataloader(self) -> CombinedLoader:
        """The training images of ``train_eval_size`` and the validation split, side by side as one loader.

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

