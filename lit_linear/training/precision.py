"""What ``--trainer.precision`` means for a sweep: the dtype W is kept in and the dtype its products run in.

Lightning's mixed precision is autocast, which picks a dtype for each operation of the step as the
step runs; the step here is written by hand, so the module states the dtypes itself and runs its
steps with autocast off (:func:`own_dtypes`):

============  ===============  =================================================================
precision     W, update, loss  the products ``X @ W``, ``X.T @ dscores`` (training) and ``X @ W`` (evaluation)
============  ===============  =================================================================
32-true       float32          float32 (TF32 on CUDA with ``--float32_matmul_precision high``)
64-true       float64          float64
bf16-mixed    float32          bfloat16 operands, float32 accumulation, rounded to bfloat16
16-mixed      float32          float16 operands, likewise (``N * dscores`` rounded, see below)
============  ===============  =================================================================

Everything outside the two products (the features' mean subtraction, the softmax and hinge heads,
the regulariser, every per-config statistic) stays in W's dtype. ``bf16-true`` and ``16-true``
would keep W itself in 16 bits, where an SGD step smaller than about 1/256 of a weight (bfloat16)
is lost entirely; a fit refuses them.

float16 has a narrow exponent range, which autograd's GradScaler protects with a loss scale. The
gradient here needs none: its factor is rounded as ``N * dscores`` (entries ``p - onehot(y)`` in
``[-1, 1]`` for softmax, ``[-(C-1), 1]`` for the hinge), and the learning rate and ``1/N`` are
applied afterwards in float32 (:func:`lit_linear.maths.grid.grid_gradient`). Lightning's GradScaler
would call ``optimizer.step()`` without the step's closure, so :func:`check_precision` removes it.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from lit_linear.errors import ConfigError

# The dtype the products run in, for each precision whose products are narrower than W.
PRODUCT_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
FIT_PRECISIONS = ("32-true", "64-true", "bf16-mixed", "16-mixed")


def product_dtype(precision: str) -> torch.dtype | None:
    """The dtype the products run in under ``precision`` (Lightning's name, e.g. ``bf16-mixed``); None: W's own."""
    return PRODUCT_DTYPES.get(str(precision))


def check_precision(trainer: pl.Trainer) -> None:
    """Refuse a precision a fit cannot train in (ConfigError), and turn Lightning's GradScaler off.

    Called before any data is read. ``bf16-true`` and ``16-true`` are refused for fit only: validate,
    test and predict with weights in 16 bits are what Lightning documents them to be.
    """
    precision = str(trainer.precision)
    if precision in ("bf16-true", "16-true"):
        mixed = precision.replace("true", "mixed")
        raise ConfigError(
            f"trainer.precision {precision} would keep W in 16 bits, where an SGD step smaller than about 1/256 "
            f"of a weight is lost; use {mixed} ({mixed.split('-')[0]} products, float32 weights) or 32-true"
        )
    if precision not in FIT_PRECISIONS:
        raise ConfigError(f"trainer.precision {precision} cannot train a sweep; use one of {', '.join(FIT_PRECISIONS)}")
    plugin = trainer.precision_plugin
    if isinstance(plugin, MixedPrecision) and plugin.scaler is not None:
        # A GradScaler scales autograd's loss and then calls optimizer.step() without the closure,
        # which would skip the hand-written step; the gradient here needs no scaling (module doc).
        plugin.scaler = None


def own_dtypes(device: torch.device) -> torch.autocast:
    """A context in which autocast is off, so that a step runs in the dtypes the module chose."""
    return torch.autocast(torch.device(device).type, enabled=False)
