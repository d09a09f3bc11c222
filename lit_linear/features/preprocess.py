"""Inputs -> classifier features: the course's pixel preprocessing, or a linear probe's normalized features.

Raw uint8 CIFAR pixels are scaled to [0, 1] and the training split's mean colour is subtracted (the
course's preprocessing); float features (a backbone's embeddings) are scaled per column and shifted
(``--data.normalize``). Either way a constant 1 is appended, so that the last row of ``W`` is the bias
(the bias trick): ``D = 3 * 32 * 32 + 1 = 3073`` for pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def preprocess(
    inputs: Tensor,
    offset: Tensor,
    dtype: torch.dtype | None = None,
    out: Tensor | None = None,
    *,
    scale: Tensor | None = None,
) -> Tensor:
    """Inputs -> classifier features ``X``, on the inputs' device.

    Args:
        inputs: ``(N, 3, 32, 32)`` or ``(N, 3072)`` uint8 pixels, or ``(N, D-1)`` float features.
        offset: ``(D-1,)``, subtracted after scaling: the mean of the scaled training pixels, or of the
            scaled training features (zeros for ``normalize none``).
        dtype: feature dtype (default: ``offset``'s).
        out: a buffer to write into and return, used when its shape, dtype and device fit
            (a training loop reuses one instead of allocating ``(N, D)`` every step).
        scale: ``(D-1,)``, each float feature's factor (``1 / std`` for ``normalize standardize``);
            None: 1. Pixels are always scaled by 1 / 255.

    Returns:
        ``X (N, D)``: ``inputs * scale - offset``, then a column of ones.
    """
    n = inputs.shape[0]
    rows = inputs.reshape(n, -1)  # (N, D-1)
    if rows.shape[1] != offset.shape[0]:
        expected = f"{offset.shape[0]} (3x32x32)" if offset.shape[0] == 3072 else str(offset.shape[0])
        raise ValueError(f"inputs have {rows.shape[1]} values each, expected {expected}")
    dtype = dtype or offset.dtype
    shape = (n, rows.shape[1] + 1)
    if out is not None and out.shape == shape and out.dtype == dtype and out.device == inputs.device:
        X = out
    else:
        X = torch.empty(shape, dtype=dtype, device=inputs.device)  # (N, D)
    values = X[:, :-1]
    if rows.dtype == torch.uint8:
        # -mean + pixels / 255 in one pass after the uint8 -> dtype copy (both vectorised; an add that
        # converts the uint8 as it reads them is slower on the CPU), computed in `dtype` throughout.
        torch.add(offset.to(dtype).neg(), values.copy_(rows), alpha=1.0 / 255.0, out=values)
    else:
        values.copy_(rows)
        if scale is not None:
            values.mul_(scale.to(dtype))
        values.sub_(offset.to(dtype))
    X[:, -1] = 1.0
    return X


def gather_features(
    split: Tensor,
    rows: Tensor,
    offset: Tensor,
    *,
    dtype: torch.dtype | None = None,
    out: Tensor | None = None,
    scale: Tensor | None = None,
) -> Tensor:
    """:func:`preprocess` of the rows ``rows (N,)`` of a ``(M, D-1)`` split: ``X (N, D)``."""
    # index_select, not split[rows]: the advanced-indexing gather is much slower on the CPU.
    return preprocess(split.index_select(0, rows), offset, dtype, out=out, scale=scale)
