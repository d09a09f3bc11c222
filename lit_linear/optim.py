"""GridSGD: the hand-written SGD update for K configs stored side by side in one tensor."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import Tensor
from torch.optim import optimizer as torch_optimizer

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
      (``addmm_``), which saves forming ``G`` and reading it again. ``dscores`` is the closure's
      scratch: the step scales it by ``lr`` in place.

    The regulariser is the optimizer's: ``step`` returns the full loss ``data_loss + reg_k *
    ||W_k||^2``, the norms taken in the same pass over ``W`` that scales it by ``1 - 2 lr reg``.
    On the CPU, in float32, all of the step but the gradient product is one compiled call
    (:mod:`lit_linear.native`). With ``reg`` left at ``None``,
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
        self._scratch: Tensor | None = None  # the compiled step's scratch, kept between steps

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._scratch = None  # Optimizer pickles only its defaults, state and groups

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

    def _patch_step_function(self) -> None:
        # torch wraps the step of every optimizer class in a profiler range and a walk over the
        # step hooks (Optimizer.profile_hook_step): 75 us a step measured in a 20-config CPU sweep,
        # where Python next to MKL's products runs several times slower than alone. GridSGD's step
        # takes that wrapped path only while a hook is registered or a profiler runs.
        self._zero_grad_profile_name = f"Optimizer.zero_grad#{type(self).__name__}.zero_grad"

    def step(self, closure: Closure | None = None) -> Tensor | None:
        """Update every live config once; returns the full loss ``(K,)`` (None without a closure).

        Step hooks (``register_step_pre_hook`` and the others) and the profiler's
        ``Optimizer.step#GridSGD.step`` range work as for any torch optimizer.
        """
        if _hooks_or_profiler(self):
            return _hooked_step(self, closure)
        with torch.no_grad():
            return self._step(closure)

    def _step(self, closure: Closure | None) -> Tensor | None:
        out = closure() if closure is not None else None
        data_loss, factors = (out[0], out[1:]) if isinstance(out, tuple) else (out, None)
        p, group = self._grid()
        if p.grad is None and factors is None:
            return None
        state = self._state(p, group)
        decay = group["lr_decay"] ** (state["step"] // group["lr_decay_every"])
        D, K, C = p.shape
        W = p.view(D, K * C)
        X, dscores = factors if factors is not None else (None, None)
        # One compiled call on the CPU (lit_linear.native): the dozen small ops of _prepare cost
        # about 0.2 ms a step there, a quarter of a 20-config step's products.
        if self._scratch is None and p.device.type == "cpu" and p.dtype == torch.float32:
            self._scratch = native.grid_sgd_scratch(D, K, C)
        prepared = native.grid_sgd_prepare(W, state["lr"], state["reg"], state["live"], decay, data_loss, dscores, K, C,
                                           self._scratch)  # fmt: skip
        loss, lr = prepared if prepared is not None else self._prepare(W, state, decay, data_loss, dscores, K, C)
        if dscores is None:
            W.addcmul_(p.grad.view(D, K * C), per_column(lr, K, C, W), value=-1.0)
        elif K * C <= NARROW_GRID:  # faster as (K*C, N) @ (N, D) for a narrow grid (see losses)
            W.add_((dscores.t() @ X).t(), alpha=-1.0)  # dscores already holds lr_k * dscores
        else:
            W.addmm_(X.t(), dscores, alpha=-1.0)
        state["step"] += 1
        return loss if data_loss is not None else None

    @staticmethod
    def _prepare(W: Tensor, state: dict, decay: float, data_loss: Tensor | None, dscores: Tensor | None, K: int,
                 C: int) -> tuple[Tensor | None, Tensor]:
        """The step's work besides the gradient product, in PyTorch (the definition the compiled
        kernel transcribes): the learning rates ``(K,)``, the regulariser's shrink of ``W (D, K*C)``
        with its loss, the freezing of non-finite configs, and ``dscores`` scaled by ``lr`` in place.
        Returns ``(loss (K,) or None, lr (K,))``."""
        live = state["live"]
        lr = torch.mul(state["lr"], live).mul_(decay)  # (K,), the configs live before this step
        norms = grid_sq_norms(W, K, C)  # (K,) ||W_k||^2, of W before the shrink
        W.mul_(per_column(torch.mul(lr, state["reg"]).mul_(-2.0).add_(1.0), K, C, W))  # W_k *= 1 - 2 lr_k reg_k
        loss = None
        if data_loss is not None:
            loss = data_loss + state["reg"] * norms
            live.mul_(torch.isfinite(loss))
            lr.mul_(live)  # no gradient step for a config whose loss is not finite
        if dscores is not None:
            dscores.mul_(per_column(lr, K, C, W))
        return loss, lr

    def diverged(self) -> Tensor | None:
        """``(K,)`` bool: configs frozen because their loss turned non-finite (None before any step)."""
        state = self.state[self._grid()[0]]
        return state["live"] == 0 if state.get("step", 0) > 0 else None


def _hooks_or_profiler(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` must run inside torch's wrapper: step hooks registered, or a profiler on."""
    return bool(
        optimizer._optimizer_step_pre_hooks
        or optimizer._optimizer_step_post_hooks
        # True where a torch version keeps its global hooks elsewhere: then always the wrapped path.
        or getattr(torch_optimizer, "_global_optimizer_pre_hooks", True)
        or getattr(torch_optimizer, "_global_optimizer_post_hooks", True)
        or torch.autograd._profiler_enabled()
    )


# GridSGD's step inside torch's own wrapper: the profiler range, then the pre hooks, the step, the post hooks.
_hooked_step = torch.optim.Optimizer.profile_hook_step(torch.no_grad()(GridSGD._step))
