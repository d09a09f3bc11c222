"""GridAccuracy: the accuracy of K classifiers on the same rows, as one torchmetrics Metric."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class GridAccuracy(Metric):
    """Fraction of rows each of K configs labels correctly; states are summed across DDP ranks.

    Args:
        num_configs: K.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_configs: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_configs = num_configs
        self.add_state("correct", torch.zeros(num_configs, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """``preds (N, K)`` predicted labels of every config, ``target (N,)`` true labels."""
        if preds.dim() != 2 or preds.shape != (target.shape[0], self.num_configs):
            raise ValueError(f"preds must be (N, {self.num_configs}) for target (N,), got {tuple(preds.shape)}")
        self.correct += (preds == target.unsqueeze(1)).sum(dim=0)
        self.total += target.numel()

    def compute(self) -> Tensor:
        """``(K,)`` float64 accuracies in [0, 1]."""
        return self.correct.double() / self.total.clamp_min(1)
