"""FeaturesDataModule: a linear probe's features (a backbone's embeddings, saved as ``.npy`` or ``.pt``).

    python train.py fit --config configs/probe_sweep.yaml --data.train train_x.npy --data.train_labels train_y.npy

The features take the data path of CIFAR's pixels (:class:`~lit_linear.data.splits_module.SplitsDataModule`):
the same minibatch stream, sweep, halving, checkpoints and exact resume. The files are read and
checked when the module is made, so that a bad file is one ``error:`` line before anything trains.
"""

from __future__ import annotations

from typing import Literal

from lit_linear.data.feature_files import (
    check_labels,
    check_same_dim,
    infer_num_classes,
    load_split,
    read_class_names,
)
from lit_linear.data.splits_module import SplitsDataModule
from lit_linear.errors import ConfigError

Normalize = Literal["none", "center", "standardize"]
NORMALIZE = ("none", "center", "standardize")


class FeaturesDataModule(SplitsDataModule):
    """Features ``(N, D)`` and labels ``(N,)`` from files, for a linear probe over any representation.

    Args:
        train: training features, a ``.npy`` file (``numpy.save``) or a ``.pt`` file holding one tensor
            (``torch.save``): ``(N, D)`` float16, bfloat16, float32 or float64.
        train_labels: their labels, ``(N,)`` integers in ``[0, C)``, ``.npy`` or ``.pt``.
        val: validation features; without them, the last ``val_ratio`` of the training rows validate.
        val_labels: their labels (with ``val``).
        val_ratio: the fraction of the training rows held out for validation when ``val`` is not given.
        test: test features, which ``test`` and ``predict`` read.
        test_labels: their labels (with ``test``).
        normalize: ``none`` (the features as they are), ``center`` (minus the training split's mean) or
            ``standardize`` (minus the mean, divided by the std, per feature). The statistics come from the
            training split and are kept in the checkpoint and in ``best_model.pt``.
        class_names: the C class names: a list, or a text file with one name per line; null: ``0 .. C-1``.
        mmap: keep the features memory-mapped (read row by row from disk) rather than on the training
            device; null: map a file larger than 1 GiB. Only ``.npy`` maps give their pages back as they go.
        batch_size: rows per SGD step, all devices together.
        seed: seeds the minibatch order (weights are seeded by ``seed_everything``).
        eval_batch_size: rows per chunk when measuring accuracy.
        train_eval_size: how many training rows the train accuracy is measured on at each validation: a
            fixed random sample (null: all of them).
    """

    def __init__(
        self,
        train: str,
        train_labels: str,
        val: str | None = None,
        val_labels: str | None = None,
        val_ratio: float = 0.2,
        test: str | None = None,
        test_labels: str | None = None,
        normalize: Normalize = "standardize",
        class_names: list[str] | str | None = None,
        mmap: bool | None = None,
        batch_size: int = 200,
        seed: int = 0,
        eval_batch_size: int = 1000,
        train_eval_size: int | None = 10000,
    ) -> None:
        super().__init__()
        if normalize not in NORMALIZE:
            raise ConfigError(f"data.normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
        for features, labels, name in ((val, val_labels, "val"), (test, test_labels, "test")):
            if (features is None) != (labels is None):
                raise ConfigError(f"data.{name} and data.{name}_labels go together: give both or neither")
        self._check_common(batch_size, val_ratio, eval_batch_size, train_eval_size)
        self.save_hyperparameters(logger=False)
        # Read and checked now, before the model is made (it needs C and D) and before anything trains.
        self.splits = {"train": load_split(train, train_labels, name="train", mmap=mmap)}
        if val is not None:
            self.splits["val"] = load_split(val, val_labels, name="val", mmap=mmap)
        if test is not None:
            self.splits["test"] = load_split(test, test_labels, name="test", mmap=mmap)
        check_same_dim(self.splits)
        # Without names, C = the largest training label + 1; with them, C = their number.
        num_classes = infer_num_classes([self.splits["train"]]) if class_names is None else None
        self._class_names = read_class_names(class_names, num_classes)
        self._num_classes = len(self._class_names)
        if self._num_classes < 2:
            raise ConfigError(f"a classifier needs at least 2 classes; {train_labels} holds labels of 1")
        for split in self.splits.values():
            check_labels(split, self._num_classes)
        if val is None and not 0 < round(self.splits["train"].num_rows * val_ratio) < self.splits["train"].num_rows:
            raise ConfigError(
                f"data.val_ratio={val_ratio} leaves no row of {train} for training or for validation; "
                "give more rows, another ratio, or data.val"
            )

    # --- what LightningCLI links into the model ------------------------------------------
    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    @property
    def feature_dim(self) -> int:
        """Features per row and the bias column."""
        return self.splits["train"].dim + 1

    # --- splits ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """The train and val splits (and the statistics) to fit or validate; the test split to test or predict."""
        if stage in ("fit", "validate") and self.train_images is None:
            self._setup_train_val()
        if stage in ("test", "predict") and self.test_images is None:
            test = self.splits.get("test")
            if test is None:
                raise ConfigError(f"{stage} reads the test split: give data.test and data.test_labels")
            self._set_test((test.features, test.labels), mapped=test.mapped)

    def _setup_train_val(self) -> None:
        train = self.splits["train"]
        if "val" in self.splits:
            val = self.splits["val"]
            rows, labels, val_rows, val_labels = train.features, train.labels, val.features, val.labels
        else:
            num_train = train.num_rows - round(train.num_rows * self.hparams.val_ratio)
            rows, labels = train.features[:num_train], train.labels[:num_train]
            val_rows, val_labels = train.features[num_train:], train.labels[num_train:]
        self._normalize(rows, self.hparams.normalize, train.release if train.mapped else None)
        where = "memory-mapped from disk" if train.mapped else f"on the {self._device().type}"
        if self.trainer is None or self.trainer.is_global_zero:
            print(f"features: {len(labels)} training rows of {train.dim} ({train.features.dtype}), {where}", flush=True)
        self.train_release = train.release if train.mapped else None
        self._set_train_val((rows, labels), (val_rows, val_labels), mapped=train.mapped)
