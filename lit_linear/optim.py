"""GridSGD: the hand-written SGD update for K configs stored side by side in one tensor."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor


class GridSGD(torch.optim.Optimizer):
    """Plain SGD, ``W_k <- W_k - lr_k(t) * dW_k``, for a grid ``W (D, K, C)`` of K configs.

    ``dW`` is computed by hand and placed in ``W.grad``; nothing here calls backward. ``step``
    takes a closure that does that and returns the per-config loss ``(K,)``. A config whose
    loss is not finite is frozen from then on: its learning rate is 0. Its weights are no longer
    meaningful (0 * inf is NaN, and zeroing non-finite gradients would cost a pass over ``W``
    every step); the other configs are untouched, since every operation acts per column.

    The learning rate decays in steps, ``lr_k(t) = lr_k * lr_decay ** (t // lr_decay_every)``:
    a function of the step count alone (kept in the optimizer state), not of the run length.

    Args:
        params: the grid tensor(s), each ``(D, K, C)``: config k is ``W[:, k, :]``.
        lr: the K base learning rates.
        lr_decay: factor applied every ``lr_decay_every`` steps (1.0: constant).
        lr_decay_every: steps between decays.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: Sequence[float],
        lr_decay: float = 1.0,
        lr_decay_every: int = 1,
    ) -> None:
        defaults = {"lr": [float(v) for v in lr], "lr_decay": lr_decay, "lr_decay_every": lr_decay_every}
        super().__init__(params, defaults)

    def _state(self, p: Tensor, base_lr: Sequence[float]) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = 0
            # Device copies made once, so that a step never copies host -> device (a CUDA sync).
            state["lr"] = torch.tensor(base_lr, dtype=p.dtype, device=p.device)
            # 1 = still training, 0 = frozen. Floats, because Optimizer.load_state_dict casts
            # every state tensor to the parameter's dtype.
            state["live"] = torch.ones(len(base_lr), dtype=p.dtype, device=p.device)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """Update every live config once. ``closure`` sets ``W.grad`` and returns the loss ``(K,)``."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state(p, group["lr"])
                live = state["live"]
                if loss is not None:
                    live.mul_(torch.isfinite(loss))
                decay = group["lr_decay"] ** (state["step"] // group["lr_decay_every"])
                D, K, C = p.shape
                # One factor per column of the (D, K*C) matrix: a contiguous row broadcasts over
                # the rows with a vectorised loop, unlike a (1, K, 1) tensor.
                step_lr = torch.mul(state["lr"], live).repeat_interleave(C).view(1, K * C)
                p.view(D, K * C).addcmul_(p.grad.view(D, K * C), step_lr, value=-decay)
                state["step"] += 1
        return loss

    def diverged(self) -> Tensor | None:
        """``(K,)`` bool: configs frozen because their loss turned non-finite (None before any step)."""
        for group in self.param_groups:
            for p in group["params"]:
                if "live" in self.state[p]:
                    return self.state[p]["live"] == 0
        return None
