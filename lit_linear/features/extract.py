"""Extractors by name, and features extracted once per setting and data set (:mod:`lit_linear.features.cache`).

``pixels`` is no extractor: the course's preprocessing of raw pixels. ``hog_color`` (the course's HOG + hue
histogram) and ``kmeans`` (Coates, Lee & Ng) turn uint8 images into float features: fitted on the training
split only, run over every image once, and kept on disk, so that later fits, ``validate``, ``test`` and
``predict`` read them back.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from tqdm import tqdm

from lit_linear.errors import ConfigError, check_count
from lit_linear.features.cache import cached, fingerprint
from lit_linear.features.hog_color import HOGColor
from lit_linear.features.kmeans import KMeansFeatures

FeatureKind = Literal["pixels", "hog_color", "kmeans"]
EXTRACTORS: dict[str, type[nn.Module]] = {"hog_color": HOGColor, "kmeans": KMeansFeatures}


@dataclass
class KMeansOptions:
    """The k-means extractor's settings (``--data.kmeans.*``), the paper's values by default.

    Args:
        num_centroids: K; the features are 4 K (one sum per quadrant).
        patch_size: patches of ``patch_size`` x ``patch_size`` pixels (3 colours).
        stride: pixels between patch positions when extracting (1: every position).
        whiten_eps: added to the patch covariance's eigenvalues before ZCA whitening.
        pooling: ``quadrant``: sum the activations over the image's four quadrants.
        num_patches: random training patches k-means learns from.
        iterations: k-means iterations.
        seed: the patches' sampling and the centroids' initialization.
    """

    num_centroids: int = 1600
    patch_size: int = 6
    stride: int = 1
    whiten_eps: float = 0.1
    pooling: Literal["quadrant"] = "quadrant"
    num_patches: int = 400_000
    iterations: int = 50
    seed: int = 0

    def check(self) -> None:
        for name in ("num_centroids", "patch_size", "stride", "num_patches", "iterations"):
            check_count(getattr(self, name), f"data.kmeans.{name}")
        if not self.whiten_eps > 0:
            raise ConfigError(f"data.kmeans.whiten_eps must be > 0, got {self.whiten_eps!r}")
        if not 0 < self.patch_size <= 32:
            raise ConfigError(f"data.kmeans.patch_size must lie in [1, 32], got {self.patch_size!r}")


def extractor_options(kind: str, kmeans: KMeansOptions | None = None) -> dict[str, Any]:
    """The keyword arguments that build the ``kind`` extractor (saved with it, in the cache key and best_model.pt)."""
    if kind == "kmeans":
        options = dataclasses.asdict(kmeans or KMeansOptions())
        options["kmeans_iterations"] = options.pop("iterations")
        return options
    return {}


def build_extractor(kind: str, options: dict[str, Any], state: dict[str, Tensor] | None = None) -> nn.Module:
    """The ``kind`` extractor made with ``options``, holding ``state`` (its fitted tensors) when given.

    It keeps ``kind`` and ``options`` as attributes: what :class:`~lit_linear.features.classifier.LinearClassifier`
    saves to build it again."""
    if kind not in EXTRACTORS:
        raise ConfigError(f"data.features must be one of pixels, {', '.join(EXTRACTORS)}; got {kind!r}")
    extractor = EXTRACTORS[kind](**options)
    if state is not None:
        extractor.load_state_dict(state)
    extractor.kind, extractor.options = kind, dict(options)
    return extractor.eval()


def extract(
    kind: str,
    options: dict[str, Any],
    images: Tensor,
    num_train: int,
    *,
    folder: str | os.PathLike,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, nn.Module]:
    """``(features (N, F) float32, the fitted extractor)`` of ``images (N, 3072)`` uint8, whose first ``num_train``
    rows are the training split the extractor learns from; read from ``folder``'s cache when it holds them.
    Extraction runs on ``device`` (the training device), a chunk of images at a time."""
    key = {"extractor": kind, "options": options, "images": fingerprint(images), "train_rows": num_train}

    def build() -> tuple[Tensor, dict[str, Tensor]]:
        extractor = build_extractor(kind, options).to(device)
        with torch.no_grad():
            bar = tqdm(total=images.shape[0], desc=f"{kind} features", unit="img", file=sys.stdout)
            fitting = images[:num_train].to(device)
            extractor.fit(fitting, progress=lambda t, objective: bar.set_postfix(kmeans_iteration=t + 1))
            chunks = []
            for start in range(0, images.shape[0], 1024):
                chunks.append(extractor(images[start : start + 1024].to(device)).cpu())
                bar.update(chunks[-1].shape[0])
            bar.close()
        return torch.cat(chunks), {k: v.cpu() for k, v in extractor.state_dict().items()}

    features, state, _ = cached(folder, key, images.shape[0], build)
    return features, build_extractor(kind, options, state)
