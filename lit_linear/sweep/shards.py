"""ConfigShards: which configs of a sweep each process trains, and how the whole sweep is gathered.

Under DDP a sweep is split one of two ways (``model.split``):

- ``minibatch``: every rank holds the whole grid ``W (D, K, C)`` and takes its share of each
  minibatch; the hand-formed gradient is averaged across ranks at every step (the parallelism of
  one big model).
- ``configs``: each rank trains its own configs on every whole minibatch, as DINOv2's
  logistic-regression sweep hands rank r the configs ``range(r, K, world_size)``. The configs are
  independent models that share their data, so no traffic runs while they train.

Under ``configs`` the module is *sharded* from the start of training to its end: its ``W`` holds
only this rank's columns, ``(D, ceil(K_live / N) or fewer, C)``. Everything that describes the
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
        """Positions in the whole grid's ``columns (K_live,)`` (config order) of the configs this rank trains."""
        return config_share(columns.numel(), self.rank, self.world_size).to(columns.device)

    def gather(self, columns: Tensor, *per_config: Tensor) -> tuple[Tensor, ...]:
        """The whole sweep in config order from every rank's share: ``(columns (K_live,), *tensors)``.

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

    # --- moving configs between ranks: the sweep's W, its per-config buffers and GridSGD's state ---
    def shard(self, sweep: SweepState, optimizer: GridSGD) -> None:
        """Keep only this rank's configs of the whole grid the sweep holds (at the start of training,
        and after successive halving, which deals the survivors out afresh)."""
        self.sharded = True
        sweep.keep(self.mine(sweep.columns), optimizer, sync=False)  # each rank measures its own configs
        # DDP would broadcast rank 0's buffers at every forward (each training batch); the ranks'
        # buffers now differ on purpose, and a sweep split by configs has nothing to sync while it trains.
        wrapper = self.strategy.model
        if isinstance(wrapper, DistributedDataParallel):
            wrapper.broadcast_buffers = False

    def unshard(self, sweep: SweepState, optimizer: GridSGD) -> None:
        """Give every rank the whole grid again, in config order, with GridSGD's state of every config."""
        columns, W, loss_sum, live = self._whole_grid(sweep, optimizer)
        self.sharded = False
        sweep.set_columns(columns, W, loss_sum)
        optimizer.regrid(sweep.W, *sweep.axes(columns), live)

    def keep_only(self, sweep: SweepState, optimizer: GridSGD, keep: set[int]) -> None:
        """Train only the configs ``keep`` from now on (successive halving): the survivors are dealt out afresh."""
        resharding = self.sharded
        if resharding:
            self.unshard(sweep, optimizer)
        positions = [j for j, k in enumerate(sweep.columns.tolist()) if k in keep]
        sweep.keep(torch.tensor(positions, device=sweep.W.device), optimizer)
        if resharding:
            self.shard(sweep, optimizer)

    def _whole_grid(self, sweep: SweepState, optimizer: GridSGD) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(columns (K_live,), W (D, K_live, C), loss_sum (K_live,), live (K_live,))`` of the whole sweep."""
        live = optimizer.state[sweep.W]["live"]
        columns, W, loss_sum, live = self.gather(sweep.columns, sweep.W.detach().transpose(0, 1), sweep.loss_sum, live)
        return columns, W.transpose(0, 1).contiguous(), loss_sum, live  # W back to (D, K_live, C)

    def write_whole(self, sweep: SweepState, optimizer: GridSGD, checkpoint: dict[str, Any]) -> None:
        """Make ``checkpoint`` describe the whole sweep as one device saves it: ``W (D, K_live, C)``,
        ``columns`` and ``loss_sum`` and GridSGD's per-config state, in config order, so that it
        resumes on any number of processes. Every rank calls it (Lightning dumps the checkpoint on
        every rank; rank 0 writes it)."""
        columns, W, loss_sum, live = self._whole_grid(sweep, optimizer)
        state_dict = checkpoint["state_dict"]
        state_dict["W"], state_dict["columns"], state_dict["loss_sum"] = W, columns, loss_sum
        lr, reg = sweep.axes(columns)
        for optimizer_state in checkpoint.get("optimizer_states", []):
            group = optimizer_state["param_groups"][0]
            group["lr"], group["reg"] = lr, reg
            # New dicts: Optimizer.state_dict hands out the optimizer's own per-parameter state dicts.
            optimizer_state["state"] = {
                index: {**state, "lr": torch.tensor(lr, dtype=W.dtype, device=W.device),  # as GridSGD builds them
                        "reg": torch.tensor(reg, dtype=W.dtype, device=W.device), "live": live}
                for index, state in optimizer_state["state"].items()
            }  # fmt: skip

    def column_of(self, k: int, sweep: SweepState) -> Tensor | None:
        """``W_k (D, C)`` of live config ``k`` on every rank, sent by the rank that trains it (None if it is not live)."""
        columns, W = sweep.columns.tolist(), sweep.W
        owners = self.strategy.all_gather(torch.tensor(int(k in columns), device=W.device))  # (N,)
        if not bool(owners.any()):
            return None
        owner = int(owners.argmax())
        local = W[:, columns.index(k), :].detach().cpu() if owner == self.rank else None
        return self.strategy.broadcast(local, src=owner).to(W.device)
