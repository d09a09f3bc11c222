"""The names a checkpoint gives the sweep's tensors: those earlier versions saved, so that any version loads.

The module holds a :class:`~lit_linear.sweep.state.SweepState` as ``sweep``; its tensors are saved at the top of
the module's state dict (``W``, ``columns``, ...), as before SweepState existed (``tests/fixtures`` holds one such
checkpoint).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# The tensors of a SweepState, saved at the top of the module's state dict as earlier versions did.
TENSORS = ("W", "best_index", "columns", "loss_sum", "loss_steps")


def flatten_state_dict(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """A state-dict hook of the module that holds a SweepState as ``sweep``: its tensors at the module's top level."""
    for name in TENSORS:
        if prefix + "sweep." + name in state_dict:
            state_dict[prefix + name] = state_dict.pop(prefix + "sweep." + name)


def nest_state_dict(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """The load hook that undoes :func:`flatten_state_dict`; a checkpoint from before ``feature_scale`` (pixels
    only) gets its 1s."""
    if prefix + "pixel_mean" in state_dict and prefix + "feature_scale" not in state_dict:
        state_dict[prefix + "feature_scale"] = torch.ones_like(state_dict[prefix + "pixel_mean"])
    for name in TENSORS:
        if prefix + name in state_dict:
            state_dict[prefix + "sweep." + name] = state_dict.pop(prefix + name)
