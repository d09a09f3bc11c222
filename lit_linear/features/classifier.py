"""LinearClassifier: what a user deploys. The weights, the preprocessing they expect, the class names.

Preprocessing is the course's: pixels scaled to [0, 1], the training set's mean colour subtracted,
rows flattened channel-major (as stored in the CIFAR files), and a constant 1 appended so that the
last row of ``W`` is the bias (the bias trick): ``D = 3 * 32 * 32 + 1 = 3073``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lit_linear.errors import DataError
from lit_linear.features.extract import build_extractor
from lit_linear.features.preprocess import preprocess
from lit_linear.runs.atomic import atomic_torch_save

FORMAT = "lit_linear.LinearClassifier/1"


class LinearClassifier(nn.Module):
    """A trained linear classifier over raw CIFAR images, or over features (a linear probe).

    Args:
        weight: ``(D, C)`` with the bias in the last row: ``D = 3073`` for CIFAR pixels.
        pixel_mean: ``(D-1,)`` the offset subtracted from the scaled inputs: the mean of the scaled
            training pixels, or of the scaled training features (:func:`~lit_linear.features.preprocess.preprocess`).
        class_names: ``C`` names, in label order.
        info: free-form facts about the training run (loss, lr, reg, accuracies), saved alongside.
        feature_scale: ``(D-1,)`` each float feature's factor (``1 / std`` when the probe standardized its
            features); None: 1. Pixels are scaled by 1 / 255 whatever it holds.
        extractor: the module that turns raw uint8 images into the features the weight reads (HOG + colour,
            k-means; :func:`~lit_linear.features.extract.build_extractor`); None: the inputs are the features.
    """

    def __init__(
        self,
        weight: Tensor,
        pixel_mean: Tensor,
        class_names: Sequence[str],
        info: dict[str, Any] | None = None,
        *,
        feature_scale: Tensor | None = None,
        extractor: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if weight.dim() != 2 or weight.shape[0] != pixel_mean.shape[0] + 1:
            raise ValueError(
                f"weight must be (D, C) with D = pixel_mean size + 1 = {pixel_mean.shape[0] + 1}, "
                f"got {tuple(weight.shape)}"
            )
        if len(class_names) != weight.shape[1]:
            raise ValueError(f"{len(class_names)} class names for {weight.shape[1]} weight columns")
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("pixel_mean", pixel_mean.detach().clone().to(weight.dtype))
        scale = None if feature_scale is None else feature_scale.detach().clone().to(weight.dtype)
        self.register_buffer("feature_scale", scale)
        self.extractor = extractor
        self.class_names = list(class_names)
        self.info = dict(info or {})

    def forward(self, inputs: Tensor) -> Tensor:
        """Class scores ``(N, C)`` of raw uint8 images ``(N, 3, 32, 32)`` or ``(N, 3072)``, or features ``(N, D-1)``."""
        inputs = inputs.to(self.weight.device)
        if self.extractor is not None:
            inputs = self.extractor(inputs)  # (N, F) float features of the raw images
        return preprocess(inputs, self.pixel_mean, scale=self.feature_scale) @ self.weight

    @torch.no_grad()
    def predict(self, inputs: Tensor) -> Tensor:
        """Predicted labels ``(N,)`` int64 of raw uint8 images or of features, as :meth:`forward` takes them."""
        return self(inputs).argmax(dim=1)

    def save(self, path: str | os.PathLike) -> None:
        """Write the classifier to ``path`` atomically; :meth:`load` reads it back."""
        payload = {
            "format": FORMAT,
            "weight": self.weight.cpu(),
            "pixel_mean": self.pixel_mean.cpu(),
            "class_names": list(self.class_names),
            "info": dict(self.info),
        }
        if self.feature_scale is not None and not bool((self.feature_scale == 1).all()):  # 1s: the format of pixels
            payload["feature_scale"] = self.feature_scale.cpu()
        if self.extractor is not None:  # rebuilt by name on load: no code is pickled
            state = {k: v.cpu() for k, v in self.extractor.state_dict().items()}
            payload["extractor"] = {"kind": self.extractor.kind, "options": self.extractor.options, "state": state}
        atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> LinearClassifier:
        """Read a classifier written by :meth:`save`.

        Only tensors and plain Python values are unpickled (``weights_only=True``): a file crafted
        to run code on load is refused before any of it runs.
        """
        payload = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise DataError(f"{path}: not a lit_linear classifier (format {found!r}, expected {FORMAT!r})")
        return cls(
            payload["weight"],
            payload["pixel_mean"],
            payload["class_names"],
            payload.get("info"),
            feature_scale=payload.get("feature_scale"),
            extractor=_extractor(payload.get("extractor")),
        )


def _extractor(saved: dict[str, Any] | None) -> nn.Module | None:
    """The extractor a classifier file describes (its kind, options and tensors), built again; None: none."""
    if saved is None:
        return None
    return build_extractor(saved["kind"], saved["options"], saved["state"])
