"""A test-only callback: every rank saves its own W at the end of fit, to check that ranks agree."""

import os

import torch
from lightning.pytorch.callbacks import Callback


class RankProbe(Callback):
    """Writes ``<out_dir>/W_rank<r>.pt`` on every rank ``r`` at the end of fit.

    Args:
        out_dir: folder for the files.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_fit_end(self, trainer, pl_module) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        torch.save(pl_module.W.detach().cpu(), os.path.join(self.out_dir, f"W_rank{trainer.global_rank}.pt"))
