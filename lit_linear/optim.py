"""GridSGD: the hand-written SGD update for K configs stored side by side in one tensor."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor

from lit_linear import native
from lit_linear.losses import NARROW_GRID, grid_sq_norms, per_column

Closure = Callable[[], "Tensor | tuple[Tensor, Tensor, Tensor]"]


class GridSGD(torch.optim.Optimizer):
    """Plain SGD on a grid ``W (D, K, C)`` of K configs: ``W_k <- W_k - lr_k(t) * (G_k + 2 reg_k W_k)``.

    ``G`` is the gradient of the data term, computed by hand; nothing here calls backward.
    ``step`` takes a closure that computes it and returns the per-config data loss ``(K,)``, in
    one of two forms:

    - ``data_loss``, with ``G`` placed in ``W.grad`` (``(D, K, C)``; under DDP, already averaged);
    - ``(data_loss, X, dscores)``, with ``G = X.T @ dscores`` (``X (N, D)``, ``dscores (N, K*C)``)
      left unformed: the update adds ``-lr * X.T @ dscores`` into ``W`` in one matrix product
      (``addmm_``), which saves forming ``G`` and reading it again.

    The regulariser is the optimizer's: ``step`` returns the full loss ``data_loss + reg_k *
    ||W_k||^2``, the norms taken in the same pass over ``W`` that scales it by ``1 - 2 lr reg``
    (on the CPU one compiled pass, :mod:`lit_linear.native`). With ``reg`` left at ``None``,
    ``W.grad`` may hold the whole gradient, regulariser included.

    A config whose loss is not finite takes no gradient step from then on: its learning rate is
    0 (its weights had already been scaled by the regulariser in that step). Its weights are no
    longer meaningful (0 * inf is NaN, and zeroing non-finite gradients would cost a pass over
    ``W`` every step); the other configs are untouched, since every operation acts per column.

    The learning rate decays in steps, ``lr_k(t) = lr_k * lr_decay ** (t // lr_decay_every)``:
    a function of the step count alone (kept in the optimizer state), not of the run length.

    Args:
        params: the grid tensor, ``(D, K, C)``: config k is ``W[:, k, :]``.
        lr: the K base learning rates.
        reg: the K L2 strengths (the loss adds ``reg_k * ||W_k||^2``); ``None``: all 0.
        lr_decay: factor applied every ``lr_decay_every`` steps (1.0: constant).
        lr_decay_every: steps between decays.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: Sequence[float],
        reg: Sequence[float] | None = None,
        lr_decay: float = 1.0,
        lr_decay_every: int = 1,
    ) -> None:
        lr = [float(v) for v in lr]
        reg = [0.0] * len(lr) if reg is None else [float(v) for v in reg]
        if len(reg) != len(lr):
            raise ValueError(f"reg has {len(reg)} values for {len(lr)} learning rates")
        defaults = {"lr": lr, "reg": reg, "lr_decay": lr_decay, "lr_decay_every": lr_decay_every}
        super().__init__(params, defaults)
        grids = [p for group in self.param_groups for p in group["params"]]
        if len(grids) != 1:
            raise ValueError(f"GridSGD trains one grid tensor (D, K, C); got {len(grids)} parameters")
        self._state(*self._grid())

    def _grid(self) -> tuple[Tensor, dict]:
        """The one grid tensor and its parameter group."""
        group = next(g for g in self.param_groups if g["params"])
        return group["params"][0], group

    def _state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if not state:
            # Made on the parameter's device when the optimizer is built, so that no step copies
            # host -> device (on CUDA, a copy from pageable memory waits for the device).
            state["step"] = 0
            state["lr"] = torch.tensor(group["lr"], dtype=p.dtype, device=p.device)
            state["reg"] = torch.tensor(group["reg"], dtype=p.dtype, device=p.device)
            # 1 = still training, 0 = frozen. Floats, because Optimizer.load_state_dict casts
            # every state tensor to the parameter's dtype.
            state["live"] = torch.ones(len(group["lr"]), dtype=p.dtype, device=p.device)
        return state

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor | None:
        """Update every live config once; returns the full loss ``(K,)`` (None without a closure)."""
        out = closure() if closure is not None else None
        data_loss, factors = (out[0], out[1:]) if isinstance(out, tuple) else (out, None)
        p, group = self._grid()
        if p.grad is None and factors is None:
            return None
        state = self._state(p, group)
        live = state["live"]
        decay = group["lr_decay"] ** (state["step"] // group["lr_decay_every"])
        D, K, C = p.shape
        W = p.view(D, K * C)
        lr = torch.mul(state["lr"], live).mul_(decay)  # (K,), the configs live before this step
        # 1 - 2 lr reg, one factor per column of the (D, K*C) matrix, as a (1, K*C) row.
        shrink = per_column(torch.mul(lr, state["reg"]).mul_(-2.0).add_(1.0), K, C, W)
        norms = scale_sq_norms(W, shrink, K, C)  # (K,) ||W_k||^2, then W *= shrink
        loss = None
        if data_loss is not None:
            loss = data_loss + state["reg"] * norms
            live.mul_(torch.isfinite(loss))
            lr.mul_(live)  # no gradient step for a config whose loss is not finite
        step_lr = per_column(lr, K, C, W)
        if factors is None:
            W.addcmul_(p.grad.view(D, K * C), step_lr, value=-1.0)
        else:
            X, dscores = factors
            scaled = dscores.mul(step_lr)  # (N, K*C): lr_k * dscores
            if K * C <= NARROW_GRID:  # faster as (K*C, N) @ (N, D) for a narrow grid (see losses)
                W.add_((scaled.t() @ X).t(), alpha=-1.0)
            else:
                W.addmm_(X.t(), scaled, alpha=-1.0)
        state["step"] += 1
        return loss

    def diverged(self) -> Tensor | None:
        """``(K,)`` bool: configs frozen because their loss turned non-finite (None before any step)."""
        state = self.state[self._grid()[0]]
        return state["live"] == 0 if state.get("step", 0) > 0 else None


def scale_sq_norms(W_flat: Tensor, scale: Tensor, K: int, C: int) -> Tensor:
    """``||W_k||^2 (K,)`` of a ``(D, K*C)`` grid, which is then scaled in place by ``scale (1, K*C)``.

    One pass over ``W`` on the CPU (:mod:`lit_linear.native`); elsewhere the norms
    (:func:`~lit_linear.losses.grid_sq_norms`) and then the scaling.
    """
    norms = native.scale_sq_norms(W_flat, scale, K, C)
    if norms is None:
        norms = grid_sq_norms(W_flat, K, C)
        W_flat.mul_(scale)
    return norms
