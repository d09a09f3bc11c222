"""GridSGD: the hand-written SGD update for K configs stored side by side in one tensor."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

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
            state["lr"] = torch.tensor(group["lr"], dtype=p.dtype, device=p.device)
            state["reg"] = torch.tensor(group["reg"], dtype=p.dtype, device=p.device)
            # 1 = still training, 0 = frozen. Floats, because Optimizer.load_state_dict casts
            # every state tensor to the parameter's dtype.
            state["live"] = torch.ones(len(group["lr"]), dtype=p.dtype, device=p.device)
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
        return self._update(p, state["step"], state["lr"], state["reg"], state["live"], group["lr_decay"],
                            group["lr_decay_every"], data_loss, X, dscores, grad)  # fmt: skip

    def keep(self, positions: Tensor, param: Tensor) -> None:
        """Train only the configs ``positions (K',)`` from now on, as the new grid tensor ``param (D, K', C)``
        (their columns of the old one): the per-config state shrinks with them."""
        p, group = self._grid()
        state = self.state.pop(p)
        cpu = positions.tolist()
        group["params"] = [param]
        group["lr"] = [group["lr"][i] for i in cpu]
        group["reg"] = [group["reg"][i] for i in cpu]
        self.state[param] = {"step": state["step"], **{key: state[key][positions] for key in ("lr", "reg", "live")}}

    def regrid(self, param: Tensor, lr: Sequence[float], reg: Sequence[float], live: Tensor) -> None:
        """Train the configs of another grid tensor ``param (D, K', C)`` from now on: their base learning
        rates and L2 strengths, and ``live (K',)``; the step count carries over (configs moved between ranks)."""
        p, group = self._grid()
        step = self.state.pop(p)["step"]
        group["params"], group["lr"], group["reg"] = [param], [float(v) for v in lr], [float(v) for v in reg]
        self.state[param] = {"step": step, "live": live.to(param.dtype)}
        self.state[param]["lr"] = torch.tensor(group["lr"], dtype=param.dtype, device=param.device)
        self.state[param]["reg"] = torch.tensor(group["reg"], dtype=param.dtype, device=param.device)

    def diverged(self) -> Tensor | None:
        """``(K,)`` bool: configs frozen because their loss turned non-finite (None before any step)."""
        return _frozen(self.state[self._grid()[0]])

    @staticmethod
    def diverged_in(state_dict: dict[str, Any]) -> Tensor | None:
        """:meth:`diverged` of the GridSGD that saved ``state_dict`` (a checkpoint's), without building one."""
        states = list(state_dict.get("state", {}).values())
        return _frozen(states[0]) if states else None


def decayed_lr(lr: float, step: int, lr_decay: float, lr_decay_every: int) -> float:
    """The learning rate a config of base rate ``lr`` trains with at ``step``: ``lr * lr_decay ** (step // lr_decay_every)``,
    as :func:`sgd_update` computes it on the device."""
    return lr * lr_decay ** (step // lr_decay_every)


def _frozen(state: dict[str, Tensor]) -> Tensor | None:
    """``(K,)`` bool from GridSGD's per-grid state: ``live`` is 0 for a frozen config; None before any step."""
    return state["live"] == 0 if bool(state["step"] > 0) else None


def sgd_update(p: Tensor, step: Tensor, base_lr: Tensor, reg: Tensor, live: Tensor, lr_decay: float, lr_decay_every: int,
               data_loss: Tensor | None, X: Tensor | None, dscores: Tensor | None, grad: Tensor | None) -> Tensor | None:  # fmt: skip
    """One step of :class:`GridSGD` on ``p (D, K, C)``, in place; returns the full loss ``(K,)`` (or None).

    Either ``X (N, D)`` and ``dscores (N, K*C)`` (the data gradient ``X.T @ dscores``, scaled here
    in place) or ``grad (D, K, C)`` is given. ``step`` (0-dim), ``live (K,)`` are updated in place.
    X may be narrower than W (mixed precision, :mod:`lit_linear.training.precision`): the gradient's product
    then runs in X's dtype, and everything else in W's.
    """
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
