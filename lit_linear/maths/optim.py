"""GridSGD: the hand-written SGD update for K configs stored side by side in one tensor."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from lit_linear.maths.graphs import CapturedCall
from lit_linear.maths.grid import NARROW_GRID, grid_gradient, grid_sq_norms, per_column

Closure = Callable[[], "Tensor | tuple[Tensor, Tensor, Tensor]"]


class GridSGD(torch.optim.Optimizer):
    """Plain SGD on a grid ``W (D, K, C)`` of K configs: ``W_k <- W_k - lr_k(t) * (G_k + 2 reg_k W_k)``.

    ``G`` is the gradient of the data term, computed by hand; nothing here calls backward.
    ``step`` takes a closure that computes it and returns the per-config data loss ``(K,)``, in
    one of two forms:

    - ``data_loss``, with ``G`` placed in ``W.grad`` (``(D, K, C)``; under DDP, already averaged);
    - ``(data_loss, X, dscores)``, with ``G = X.T @ dscores`` (``X (N, D)``, ``dscores (N, K*C)``)
      left unformed: the update adds ``-lr * X.T @ dscores`` into ``W`` in one matrix product
      (``addmm_``), which saves forming ``G`` and reading it again. ``dscores`` is the closure's
      scratch: the step scales it by ``lr`` in place.

    The regulariser is the optimizer's: ``step`` returns the full loss ``data_loss + reg_k *
    ||W_k||^2`` (the norms of W before the step), and scales ``W`` by ``1 - 2 lr reg`` before
    adding the data gradient. Together: ``W - lr * (G + 2 reg W)``, the textbook update.

    A config whose loss is not finite takes no gradient step from then on: its learning rate is
    0 (its weights had already been scaled by the regulariser in that step). Its weights are no
    longer meaningful (0 * inf is NaN, and zeroing non-finite gradients would cost a pass over
    ``W`` every step); the other configs are untouched, since every operation acts per column.

    The learning rate decays in steps, ``lr_k(t) = lr_k * lr_decay ** (t // lr_decay_every)``:
    a function of the step count alone, not of the run length. The step count, like every other
    state, is a tensor on W's device and the whole step is tensor operations with no value read
    back to the host, so a step can be captured in a CUDA graph (torch's ``capturable``).

    Args:
        params: the grid tensor, ``(D, K, C)``: config k is ``W[:, k, :]``.
        lr: the K base learning rates.
        reg: the K L2 strengths (the loss adds ``reg_k * ||W_k||^2``); ``None``: all 0.
        lr_decay: factor applied every ``lr_decay_every`` steps (1.0: constant).
        lr_decay_every: steps between decays.
        compile: run the update's tensor work through ``torch.compile``.
        cuda_graph: record the update in a CUDA graph after a few steps and replay it
            (:class:`~lit_linear.maths.graphs.CapturedCall`); for a CUDA grid whose closure returns the
            same tensors at every step.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: Sequence[float],
        reg: Sequence[float] | None = None,
        *,
        lr_decay: float = 1.0,
        lr_decay_every: int = 1,
        compile: bool = False,
        cuda_graph: bool = False,
    ) -> None:
        lr = [float(v) for v in lr]
        reg = [0.0] * len(lr) if reg is None else [float(v) for v in reg]
        if len(reg) != len(lr):
            raise ValueError(f"reg has {len(reg)} values for {len(lr)} learning rates")
        # capturable: torch's own flag, under which load_state_dict keeps "step" on the parameter's device.
        defaults = {"lr": lr, "reg": reg, "lr_decay": lr_decay, "lr_decay_every": lr_decay_every, "capturable": True}
        super().__init__(params, defaults)
        grids = [p for group in self.param_groups for p in group["params"]]
        if len(grids) != 1:
            raise ValueError(f"GridSGD trains one grid tensor (D, K, C); got {len(grids)} parameters")
        self._state(*self._grid())
        update = torch.compile(sgd_update, dynamic=False) if compile else sgd_update
        self._update = CapturedCall(update) if cuda_graph else update

    def _grid(self) -> tuple[Tensor, dict]:
        """The one grid tensor and its parameter group."""
        group = next(g for g in self.param_groups if g["params"])
        return group["params"][0], group

    def _state(self, p: Tensor, group: dict) -> dict:
        state = self.state[p]
        if not state:
            # Made on the parameter's device when the optimizer is built, so that no step copies
            # host -> device (on CUDA, a copy from pageable memory waits for the device).
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state.update(per_config_state(group["lr"], group["reg"], torch.ones(len(group["lr"])), p))
        return state

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Tensor | None:
        """Update every live config once; returns the full loss ``(K,)`` (None without a closure).

        Step hooks (``register_step_pre_hook`` and the others) and the profiler's
        ``Optimizer.step#GridSGD.step`` range work as for any torch optimizer.
        """
        out = closure() if closure is not None else None
        data_loss, factors = (out[0], out[1:]) if isinstance(out, tuple) else (out, None)
        p, group = self._grid()
        if p.grad is None and factors is None:
            return None
        state = self._state(p, group)
        if p.shape[1] == 0:  # a rank left without configs (model.split configs) keeps the shared step count
            state["step"].add_(1)
            return data_loss
        X, dscores = factors if factors is not None else (None, None)
        grad = p.grad if factors is None else None
        schedule = (group["lr_decay"], group["lr_decay_every"])
        return self._update(p, state, data_loss, schedule=schedule, X=X, dscores=dscores, grad=grad)

    def hold(self, param: Tensor, lr: Sequence[float], reg: Sequence[float], active: Tensor) -> None:
        """Train the configs of the grid tensor ``param (D, K', C)`` from now on: their base learning rates and
        L2 strengths, and ``active (K',)`` (1: training, 0: frozen as diverged); the step count carries over.

        The only way the configs GridSGD trains change; :meth:`SweepState.hold <lit_linear.sweep.state.SweepState.hold>`
        calls it for halving, the processes' shares and resume."""
        p, group = self._grid()
        step = self.state.pop(p)["step"]
        group["params"], group["lr"], group["reg"] = [param], [float(v) for v in lr], [float(v) for v in reg]
        self.state[param] = {"step": step, **per_config_state(group["lr"], group["reg"], active, param)}

    def active(self) -> Tensor:
        """``(K,)``: 1 for a config still training, 0 for one frozen as diverged."""
        return self._state(*self._grid())["live"]

    @staticmethod
    def hold_in(
        state_dict: dict[str, Any], lr: Sequence[float], reg: Sequence[float], active: Tensor, like: Tensor
    ) -> None:
        """:meth:`hold` on a saved ``state_dict`` of a GridSGD (a checkpoint's): it then trains these configs,
        with per-config tensors in ``like``'s dtype and device, as :meth:`hold` makes them."""
        group = state_dict["param_groups"][0]
        group["lr"], group["reg"] = list(lr), list(reg)
        # New dicts: Optimizer.state_dict hands out the optimizer's own per-parameter state dicts.
        state_dict["state"] = {
            index: {**state, **per_config_state(lr, reg, active, like)} for index, state in state_dict["state"].items()
        }

    def diverged(self) -> Tensor | None:
        """``(K,)`` bool: configs frozen because their loss turned non-finite (None before any step)."""
        return _frozen(self.state[self._grid()[0]])

    @staticmethod
    def diverged_in(state_dict: dict[str, Any]) -> Tensor | None:
        """:meth:`diverged` of the GridSGD that saved ``state_dict`` (a checkpoint's), without building one."""
        states = list(state_dict.get("state", {}).values())
        return _frozen(states[0]) if states else None


def per_config_state(lr: Sequence[float], reg: Sequence[float], active: Tensor, like: Tensor) -> dict[str, Tensor]:
    """GridSGD's per-config state of K configs, ``(K,)`` tensors in ``like``'s dtype and device: the one definition
    of its layout. ``active`` is saved as ``live``, the key every checkpoint has used; it is a float (1 training,
    0 frozen) because ``Optimizer.load_state_dict`` casts every state tensor to the parameter's dtype."""
    return {
        "lr": torch.tensor(lr, dtype=like.dtype, device=like.device),
        "reg": torch.tensor(reg, dtype=like.dtype, device=like.device),
        "live": active.to(dtype=like.dtype, device=like.device),
    }


def decayed_lr(lr: float, step: int, lr_decay: float, lr_decay_every: int) -> float:
    """The learning rate of a config of base rate ``lr`` at ``step``: ``lr * lr_decay ** (step // lr_decay_every)``,
    as :func:`sgd_update` computes it on the device."""
    return lr * lr_decay ** (step // lr_decay_every)


def _frozen(state: dict[str, Tensor]) -> Tensor | None:
    """``(K,)`` bool from GridSGD's per-grid state: ``live`` is 0 for a frozen config; None before any step."""
    return state["live"] == 0 if bool(state["step"] > 0) else None


def sgd_update(
    p: Tensor,
    state: dict[str, Tensor],
    data_loss: Tensor | None,
    *,
    schedule: tuple[float, int],
    X: Tensor | None = None,
    dscores: Tensor | None = None,
    grad: Tensor | None = None,
) -> Tensor | None:
    """One step of :class:`GridSGD` on ``p (D, K, C)``, in place; returns the full loss ``(K,)`` (or None).

    ``state`` is GridSGD's state of ``p`` (:func:`per_config_state` and ``step``); its ``step`` (0-dim) and
    ``live (K,)`` are updated in place. ``schedule`` is ``(lr_decay, lr_decay_every)``. Either ``X (N, D)`` and
    ``dscores (N, K*C)`` (the data gradient ``X.T @ dscores``, scaled here in place) or ``grad (D, K, C)`` is
    given. X may be narrower than W (mixed precision, :mod:`lit_linear.training.precision`): the gradient's product
    then runs in X's dtype, and everything else in W's.
    """
    step, base_lr, reg, live = state["step"], state["lr"], state["reg"], state["live"]
    lr_decay, lr_decay_every = schedule
    D, K, C = p.shape
    W = p.view(D, K * C)
    decay = torch.pow(lr_decay, torch.div(step, lr_decay_every, rounding_mode="floor").to(W.dtype))
    lr = base_lr * live * decay  # (K,), the configs live before this step
    norms = grid_sq_norms(W, K, C)  # (K,) ||W_k||^2 of W before the step
    W.mul_(per_column(lr.mul(reg).mul_(-2.0).add_(1.0), K, C, W))  # W_k *= 1 - 2 lr_k reg_k
    loss = None
    if data_loss is not None:
        loss = torch.addcmul(data_loss, reg, norms)  # data + reg ||W||^2
        live.mul_(torch.isfinite(loss))
        lr = lr * live  # no gradient step for a config whose loss is not finite
    if dscores is None:
        W.addcmul_(grad.view(D, K * C), per_column(lr, K, C, W), value=-1.0)
    elif X.dtype != W.dtype:  # mixed precision: the product in X's narrower dtype, lr applied after it in W's
        W.addcmul_(grid_gradient(X, dscores), per_column(lr, K, C, W), value=-1.0)
    else:
        dscores.view(-1, K, C).mul_(lr.view(1, K, 1))  # small: a broadcast costs nothing here
        if K * C <= NARROW_GRID:  # faster as (K*C, N) @ (N, D) for a narrow grid (losses.grid_gradient)
            W.sub_(grid_gradient(X, dscores))
        else:
            W.addmm_(X.t(), dscores, alpha=-1.0)  # the same product, added into W in place
    step.add_(1)
    return loss
