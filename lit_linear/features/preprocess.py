"""The course's preprocessing: raw uint8 CIFAR pixels -> classifier features.

Pixels scaled to [0, 1], the training split's mean colour subtracted, rows flattened channel-major
(as stored in the CIFAR files), and a constant 1 appended so that the last row of ``W`` is the bias
(the bias trick): ``D = 3 * 32 * 32 + 1 = 3073``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def preprocess(
    images: Tensor, pixel_mean: Tensor, dtype: torch.dtype | None = None, out: Tensor | None = None
) -> Tensor:
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


def gather_features(
    split: Tensor, rows: Tensor, pixel_mean: Tensor, dtype: torch.dtype | None = None, out: Tensor | None = None
) -> Tensor:
    """:func:`preprocess` of the rows ``rows (N,)`` of a ``(M, 3072)`` uint8 split: ``X (N, 3073)``."""
    # index_select, not split[rows]: the advanced-indexing gather is much slower on the CPU.
    return preprocess(split.index_select(0, rows), pixel_mean, dtype, out=out)
