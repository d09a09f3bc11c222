"""Test-only callbacks for DDP runs: what each rank holds, and the collectives its training steps run."""

import json
import os

import torch
from lightning.pytorch.callbacks import Callback
from torch.profiler import ProfilerActivity, profile


class RankProbe(Callback):
    """Writes ``<out_dir>/W_rank<r>.pt`` on every rank ``r`` at the end of fit, and
    ``<out_dir>/shapes_rank<r>.json``: the shapes of W during the training steps, with their step.

    Args:
        out_dir: folder for the files.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.shapes: list[tuple[int, list[int]]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.shapes.append((trainer.global_step, list(pl_module.W.shape)))

    def on_fit_end(self, trainer, pl_module) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        torch.save(pl_module.W.detach().cpu(), os.path.join(self.out_dir, f"W_rank{trainer.global_rank}.pt"))
        with open(os.path.join(self.out_dir, f"shapes_rank{trainer.global_rank}.json"), "w") as f:
            json.dump(self.shapes, f)


class CollectiveCounter(Callback):
    """Records every c10d collective (all_reduce, broadcast, all_gather, ...) that runs inside the
    training batches of a fit, through torch's profiler, which sees the c10d ops every collective
    dispatches to, whatever called it (Lightning, DDP's buffer broadcast, torchmetrics); writes
    ``<out_dir>/collectives_rank<r>.json``: ``{"steps": S, "calls": {op name: count}}``.

    Args:
        out_dir: folder for the file.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.calls: dict[str, int] = {}
        self.steps = 0
        self._profile = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step = trainer.global_step
        self._profile = profile(activities=[ProfilerActivity.CPU])
        self._profile.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._profile.__exit__(None, None, None)
        self.steps += trainer.global_step - self._step
        for event in self._profile.events():
            if event.name.startswith("c10d::"):
                self.calls[event.name] = self.calls.get(event.name, 0) + 1

    def on_fit_end(self, trainer, pl_module) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, f"collectives_rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"steps": self.steps, "calls": self.calls}, f)
