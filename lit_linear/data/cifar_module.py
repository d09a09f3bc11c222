"""CIFARDataModule: CIFAR splits on the training device, as uint8 pixels or as extracted features.

With ``features: pixels`` each split is one ``(N, 3072)`` uint8 tensor (4x smaller than float32); with
``hog_color`` or ``kmeans`` it is the extractor's float features, extracted once and cached next to the
data (:mod:`lit_linear.features.extract`), standardized with the training split's statistics. Either
way the loaders are :class:`~lit_linear.data.splits_module.SplitsDataModule`'s, the one data path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lit_linear.data.cifar import (
    PIXELS,
    SPECS,
    DatasetName,
    download,
    find_folder,
    get_spec,
    incomplete_folder,
    load_class_names,
    load_split,
)
from lit_linear.data.splits_module import SplitsDataModule
from lit_linear.errors import ConfigError, DataError
from lit_linear.features.extract import FeatureKind, KMeansOptions, build_extractor, extract, extractor_options


class CIFARDataModule(SplitsDataModule):
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
        features: what the classifier reads: ``pixels`` (the course's preprocessing), ``hog_color`` (the
            course's HOG + hue histogram, 154 features) or ``kmeans`` (Coates, Lee & Ng: 4 x
            ``kmeans.num_centroids`` features). Extracted features are standardized with the training
            split's statistics and cached; the extractor is fitted on the training split only.
        kmeans: the k-means extractor's settings (``--data.kmeans.num_centroids 4000``, ...).
        feature_cache: the folder extracted features are kept in; null: ``lit_linear_features/`` beside the
            CIFAR folder.
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
        features: FeatureKind = "pixels",
        kmeans: KMeansOptions = KMeansOptions(),  # noqa: B008 (a frozen set of defaults, never changed)
        feature_cache: str | None = None,
    ) -> None:
        super().__init__()
        if dataset not in SPECS:
            raise ConfigError(f"data.dataset must be one of {', '.join(SPECS)}, got {dataset!r}")
        if features not in ("pixels", "hog_color", "kmeans"):
            raise ConfigError(f"data.features must be one of pixels, hog_color, kmeans; got {features!r}")
        kmeans.check()
        self.spec = get_spec(dataset)
        self._check_common(batch_size, val_ratio, eval_batch_size, train_eval_size)
        # logger=False: Lightning would log these to TensorBoard as an HParams session of the main
        # run (with its hp_metric placeholder); the sweep's configs each have their own session.
        # The k-means settings as a dict: checkpoints hold only what weights_only loading reads back.
        self.save_hyperparameters(logger=False, ignore=["kmeans"])
        self.hparams["kmeans"] = dataclasses.asdict(kmeans)
        self.data_dir = Path(data_dir)
        self._class_names = list(self.spec.class_names)
        self.extractor_options = extractor_options(features, kmeans) if features != "pixels" else None
        self.extractor = None  # the fitted extractor, once the features are extracted (best_model.pt holds it)

    @property
    def pixel_mean(self) -> Tensor | None:
        """``(3072,)``: the per-channel mean of the scaled training pixels, the offset the model subtracts."""
        return self.feature_offset

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
        """Features per image and the bias column: 3072 pixels + 1, or the extractor's features + 1."""
        if self.extractor_options is None:
            return PIXELS + 1
        return build_extractor(self.hparams.features, self.extractor_options).out_features + 1

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
        if stage in ("fit", "validate") and self.train_images is None:
            self._setup_train_val(folder)
        if stage in ("test", "predict") and self.test_images is None:
            test = load_split(folder, self.spec, "test")
            self._set_test(test if self.extractor_options is None else self._extracted(folder)[2:])

    def _num_train(self, num_images: int) -> int:
        num_val = int(round(num_images * self.hparams.val_ratio))
        if not 0 < num_val < num_images:
            raise ConfigError(
                f"data.val_ratio={self.hparams.val_ratio} leaves {num_val} of {num_images} images for validation; "
                "both splits must be non-empty"
            )
        return num_images - num_val

    def _extracted(self, folder: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(train features (50000, F), labels, test features (10000, F), labels)``: extracted once, cached on
        disk (the extractor fitted on the training split's images only)."""
        train, train_labels = load_split(folder, self.spec, "train")
        test, test_labels = load_split(folder, self.spec, "test")
        cache = self.hparams.feature_cache or folder.parent / "lit_linear_features"
        features, self.extractor = extract(
            self.hparams.features,
            self.extractor_options,
            torch.cat([train, test]),
            self._num_train(len(train_labels)),
            folder=cache,
            device=self._device(),
        )
        return features[: len(train)], train_labels, features[len(train) :], test_labels

    def _setup_train_val(self, folder: Path) -> None:
        if self.extractor_options is not None:
            features, labels, _, _ = self._extracted(folder)
            num_train = self._num_train(len(labels))
            self._normalize(features[:num_train], "standardize")
            self._set_train_val((features[:num_train], labels[:num_train]), (features[num_train:], labels[num_train:]))
            return
        images, labels = load_split(folder, self.spec, "train")
        num_train = self._num_train(len(labels))
        train_images = images[:num_train]
        # Per-channel mean of the training rows only (the course subtracts the mean RGB colour),
        # broadcast to every pixel of its channel.
        # Summed in chunks: one float64 sum over all rows materialises a float64 copy of the split
        # (~1 GB for CIFAR-10), the biggest memory peak of a whole run.
        channel_mean = torch.zeros(3, dtype=torch.float64)
        for chunk in train_images.split(2048):
            channel_mean += chunk.view(-1, 3, PIXELS // 3).sum(dim=(0, 2), dtype=torch.float64)
        channel_mean /= num_train * (PIXELS // 3) * 255.0
        self.feature_offset = channel_mean.repeat_interleave(PIXELS // 3).float()  # (3072,)
        self.feature_scale = torch.ones(PIXELS)  # pixels are scaled by 1 / 255 in any case
        self._set_train_val((train_images, labels[:num_train]), (images[num_train:], labels[num_train:]))
