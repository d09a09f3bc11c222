"""ConfigShards: which configs of a sweep each process trains, and how the whole sweep is gathered.

Under DDP a sweep is split one of two ways (``model.split``):

- ``minibatch``: every rank holds the whole grid ``W (D, K, C)`` and takes its share of each
  minibatch; the hand-formed gradient is averaged across ranks at every step (the parallelism of
  one big model).
- ``configs``: each rank trains its own configs on every whole minibatch, as DINOv2's
  logistic-regression sweep hands rank r the configs ``range(r, K, world_size)``. The configs are
  independent models that share their data, so no traffic runs while they train.

Under ``configs`` the module is *sharded* from the start of training to its end: its ``W`` holds
only this rank's columns, ``(D, ceil(K_held / N) or fewer, C)``. Everything that describes the
sweep as a whole is gathered into config order, the order one device keeps them in: the
validation results (so every rank ranks all configs alike), the grid and its optimizer state
when successive halving rebalances the survivors, and the checkpoint, which is written exactly as
one device writes it and so loads on any number of processes. Outside training (before the first
step, after the last, in test and predict) the module holds the whole grid on every rank.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from lit_linear.errors import ConfigError
from lit_linear.maths.optim import GridSGD
from lit_linear.sweep.state import SweepState

Split = Literal["configs", "minibatch", "auto"]
SPLITS = ("configs", "minibatch", "auto")


def resolve_split(split: str, num_configs: int, world_size: int) -> str:
    """``configs`` or ``minibatch``: what ``model.split`` means for K configs on ``world_size`` processes."""
    if split not in SPLITS:
        raise ConfigError(f"model.split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "auto":
        return "configs" if num_configs >= world_size else "minibatch"
    if split == "configs" and num_configs < world_size:
        raise ConfigError(
            f"model.split configs needs at least as many configs as processes: {num_configs} configs on "
            f"{world_size} processes; use model.split minibatch (or auto), or fewer devices"
        )
    return split


def config_share(num_live: int, rank: int, world_size: int) -> Tensor:
    """Positions among ``num_live`` configs (in config order) of those rank ``rank`` of ``world_size`` trains.

    Rank r takes every N-th live config from the r-th on, as DINOv2's sweep does, so that no rank
    holds more than ``ceil(num_live / N)`` and the survivors of any halving deal out evenly again.
    """
    return torch.arange(num_live)[rank::world_size]


class ConfigShards:
    """This rank's share of the configs, and the collectives that gather the sweep back together.

    Args:
        split: ``configs`` or ``minibatch`` (resolved, see :func:`resolve_split`).
        strategy: the trainer's strategy; its ``all_gather`` and ``broadcast`` are the collectives.
    """

    def __init__(self, split: str = "minibatch", strategy: pl.strategies.Strategy | None = None) -> None:
        self.split = split
        self.strategy = strategy
        self.rank = strategy.global_rank if strategy is not None else 0
        self.world_size = strategy.world_size if strategy is not None else 1
        self.sharded = False  # W holds only this rank's configs (between the start and the end of training)

    @property
    def splits_configs(self) -> bool:
        """Ranks train disjoint configs on whole minibatches (``configs`` with more than one process)."""
        return self.split == "configs" and self.world_size > 1

    @property
    def splits_minibatch(self) -> bool:
        """Ranks share each minibatch and average the gradient (``minibatch`` with more than one process)."""
        return self.split == "minibatch" and self.world_size > 1

    def mine(self, columns: Tensor) -> Tensor:
        """Positions in the whole grid's ``columns (K_held,)`` (config order) of the configs this rank trains."""
        return config_share(columns.numel(), self.rank, self.world_size).to(columns.device)

    def gather(self, columns: Tensor, *per_config: Tensor) -> tuple[Tensor, ...]:
        """The whole sweep in config order from every rank's share: ``(columns (K_held,), *tensors)``.

        Each tensor of ``per_config`` has this rank's configs on its first dimension, in the order
        of ``columns``; the result has all live configs there, sorted by config. The shares differ
        in size by at most one, so each is padded to the largest for one ``all_gather``.
        """
        if not self.sharded:
            return (columns, *per_config)
        width = int(self.strategy.all_gather(torch.tensor(columns.numel(), device=columns.device)).max())
        gathered = [self._all_gather_padded(columns, width, fill=-1)]
        gathered += [self._all_gather_padded(t, width) for t in per_config]
        valid = gathered[0] >= 0  # (N * width,) the padding's columns are -1
        order = gathered[0][valid].argsort()
        return tuple(t[valid][order] for t in gathered)

    def _all_gather_padded(self, t: Tensor, width: int, fill: float = 0) -> Tensor:
        """``t (n, ...)`` of every rank, each padded to ``width`` rows: ``(N * width, ...)``."""
        padded = t.new_full((width, *t.shape[1:]), fill)
        padded[: t.shape[0]] = t
        return self.strategy.all_gather(padded).reshape(-1, *t.shape[1:])

    # --- which configs this rank holds: the sweep's W, its per-config buffers and GridSGD's state ---
    def hold(self, sweep: SweepState, optimizer: GridSGD, keep: set[int] | None = None, *, split: bool = True) -> None:
        """Make this rank hold its share of the configs ``keep`` (None: the configs held now), or all of them
        (``split=False``, or a fit not split by configs), through :meth:`SweepState.hold`.

        The start of a fit split by configs deals the configs out; a halving keeps its survivors and deals
        them out afresh; the end of the fit gives every rank the whole grid again, in config order.
        """
        splitting = split and self.splits_configs
        if keep is None and not self.sharded and not splitting:
            return
        columns, W, loss_sum, active = self._whole_grid(sweep, optimizer)
        if keep is not None:
            positions = torch.tensor([j for j, k in enumerate(columns.tolist()) if k in keep], device=columns.device)
            columns, W, loss_sum, active = _select(positions, columns, W, loss_sum, active)
        if splitting:
            columns, W, loss_sum, active = _select(self.mine(columns), columns, W, loss_sum, active)
            # DDP would broadcast rank 0's buffers at every forward (each training batch); the ranks'
            # buffers now differ on purpose, and a sweep split by configs has nothing to sync while it trains.
            wrapper = self.strategy.model
            if isinstance(wrapper, DistributedDataParallel):
                wrapper.broadcast_buffers = False
        self.sharded = splitting
        # Split by configs, each rank measures its own configs: their accuracies are not summed across ranks.
        sweep.hold(columns, W, loss_sum, optimizer=optimizer, active=active, sync=not splitting)

    def _whole_grid(self, sweep: SweepState, optimizer: GridSGD) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(columns (K_held,), W (D, K_held, C), loss_sum (K_held,), active (K_held,))`` of the whole sweep."""
        gathered = self.gather(sweep.columns, sweep.W.detach().transpose(0, 1), sweep.loss_sum, optimizer.active())
        columns, W, loss_sum, active = gathered
        return columns, W.transpose(0, 1), loss_sum, active  # W back to (D, K_held, C)

    def write_whole(self, sweep: SweepState, optimizer: GridSGD, checkpoint: dict[str, Any]) -> None:
        """Make ``checkpoint`` describe the whole sweep as one device saves it: ``W (D, K_held, C)``,
        ``columns`` and ``loss_sum`` and GridSGD's per-config state, in config order, so that it
        resumes on any number of processes. Every rank calls it (Lightning dumps the checkpoint on
        every rank; rank 0 writes it)."""
        columns, W, loss_sum, active = self._whole_grid(sweep, optimizer)
        state_dict = checkpoint["state_dict"]
        state_dict["W"], state_dict["columns"], state_dict["loss_sum"] = W.contiguous(), columns, loss_sum
        for optimizer_state in checkpoint.get("optimizer_states", []):
            GridSGD.hold_in(optimizer_state, *sweep.axes(columns), active, W)

    def column_of(self, k: int, sweep: SweepState) -> Tensor | None:
        """``W_k (D, C)`` of config ``k`` on every rank, sent by the rank that holds it (None: no rank holds it)."""
        columns, W = sweep.columns.tolist(), sweep.W
        owners = self.strategy.all_gather(torch.tensor(int(k in columns), device=W.device))  # (N,)
        if not bool(owners.any()):
            return None
        owner = int(owners.argmax())
        local = W[:, columns.index(k), :].detach().cpu() if owner == self.rank else None
        return self.strategy.broadcast(local, src=owner).to(W.device)


def _select(positions: Tensor, columns: Tensor, W: Tensor, loss_sum: Tensor, active: Tensor) -> tuple[Tensor, ...]:
    """The configs at ``positions (K',)`` of a grid: its columns, weights (``W (D, K, C)`` on dim 1) and state."""
    return columns[positions], W.index_select(1, positions), loss_sum[positions], active[positions]
