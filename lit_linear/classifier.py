"""LinearClassifier: what a user deploys. The weights, the preprocessing they expect, the class names.

Preprocessing is the course's: pixels scaled to [0, 1], the training set's mean colour subtracted,
rows flattened channel-major (as stored in the CIFAR files), and a constant 1 appended so that the
last row of ``W`` is the bias (the bias trick): ``D = 3 * 32 * 32 + 1 = 3073``.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from lit_linear.atomic import atomic_torch_save
from lit_linear.errors import DataError

FORMAT = "lit_linear.LinearClassifier/1"


def preprocess(images: Tensor, pixel_mean: Tensor, dtype: torch.dtype | None = None, out: Tensor | None = None) -> Tensor:
    """Raw uint8 images -> classifier features, on the images' device.

    Args:
        images: ``(N, 3, 32, 32)`` or ``(N, 3072)`` uint8.
        pixel_mean: ``(3072,)`` mean of the scaled training pixels.
        dtype: feature dtype (default: ``pixel_mean``'s).
        out: a buffer to write into and return, used when its shape, dtype and device fit
            (a training loop reuses one instead of allocating ``(N, 3073)`` every step).

    Returns:
        ``X (N, 3073)``: ``images / 255 - pixel_mean``, then a column of ones.
    """
    n = images.shape[0]
    rows = images.reshape(n, -1)  # (N, 3072)
    if rows.shape[1] != pixel_mean.shape[0]:
        raise ValueError(f"images have {rows.shape[1]} values each, expected {pixel_mean.shape[0]} (3x32x32)")
    dtype = dtype or pixel_mean.dtype
    shape = (n, rows.shape[1] + 1)
    if out is not None and out.shape == shape and out.dtype == dtype and out.device == images.device:
        X = out
    else:
        X = torch.empty(shape, dtype=dtype, device=images.device)  # (N, D)
    pixels = X[:, :-1]
    # -mean + pixels / 255 in one pass after the uint8 -> dtype copy (both vectorised; an add that
    # converts the uint8 as it reads them is slower on the CPU), computed in `dtype` throughout.
    torch.add(pixel_mean.to(dtype).neg(), pixels.copy_(rows), alpha=1.0 / 255.0, out=pixels)
    X[:, -1] = 1.0
    return X


def gather_features(split: Tensor, rows: Tensor, pixel_mean: Tensor, dtype: torch.dtype | None = None,
                    out: Tensor | None = None) -> Tensor:  # fmt: skip
    """:func:`preprocess` of the rows ``rows (N,)`` of a ``(M, 3072)`` uint8 split: ``X (N, 3073)``."""
    # index_select, not split[rows]: the advanced-indexing gather is much slower on the CPU.
    return preprocess(split.index_select(0, rows), pixel_mean, dtype, out=out)


class LinearClassifier(nn.Module):
    """A trained linear classifier over raw CIFAR images.

    Args:
        weight: ``(D, C)`` with the bias in the last row, ``D = 3073``.
        pixel_mean: ``(3072,)`` the mean subtracted from the scaled pixels.
        class_names: ``C`` names, in label order.
        info: free-form facts about the training run (loss, lr, reg, accuracies), saved alongside.
    """

    def __init__(
        self, weight: Tensor, pixel_mean: Tensor, class_names: Sequence[str], info: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        if weight.dim() != 2 or weight.shape[0] != pixel_mean.shape[0] + 1:
            raise ValueError(
                f"weight must be (D, C) with D = pixel_mean size + 1 = {pixel_mean.shape[0] + 1}, got {tuple(weight.shape)}"
            )
        if len(class_names) != weight.shape[1]:
            raise ValueError(f"{len(class_names)} class names for {weight.shape[1]} weight columns")
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("pixel_mean", pixel_mean.detach().clone().to(weight.dtype))
        self.class_names = list(class_names)
        self.info = dict(info or {})

    def forward(self, images: Tensor) -> Tensor:
        """Class scores ``(N, C)`` of raw uint8 images ``(N, 3, 32, 32)`` or ``(N, 3072)``."""
        return preprocess(images.to(self.weight.device), self.pixel_mean) @ self.weight

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """Predicted labels ``(N,)`` int64 of raw uint8 images ``(N, 3, 32, 32)``."""
        return self(images).argmax(dim=1)

    def save(self, path: str | os.PathLike) -> None:
        """Write the classifier to ``path`` atomically; :meth:`load` reads it back."""
        payload = {
            "format": FORMAT,
            "weight": self.weight.cpu(),
            "pixel_mean": self.pixel_mean.cpu(),
            "class_names": list(self.class_names),
            "info": dict(self.info),
        }
        atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> "LinearClassifier":
        """Read a classifier written by :meth:`save`.

        Only tensors and plain Python values are unpickled (``weights_only=True``): a file crafted
        to run code on load is refused before any of it runs.
        """
        payload = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            raise DataError(f"{path}: not a lit_linear classifier (format {found!r}, expected {FORMAT!r})")
        return cls(payload["weight"], payload["pixel_mean"], payload["class_names"], payload.get("info"))
