"""Checkpoints of a sweep: ``best.ckpt`` (by the best config's val accuracy) and ``last.ckpt``.

Both are ModelCheckpoint subclasses, so ``--ckpt_path best`` and ``--ckpt_path last`` resolve
the Lightning way; :func:`find_run_checkpoint` resolves them in a fresh process too (a ``test``
or ``predict`` run after the ``fit`` that made them).
"""

from __future__ import annotations

import glob
import os
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """Keeps ``best.ckpt``: the checkpoint with the highest ``val/acc`` (the best config's).

    Args:
        dirpath: where to write it (default: ``<log_dir>/checkpoints``).
    """

    def __init__(self, dirpath: str | None = None) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="best",
            monitor="val/acc",
            mode="max",
            save_top_k=1,
            save_last=False,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )


class LastCheckpoint(ModelCheckpoint):
    """Keeps ``last.ckpt`` up to date: every N steps, at the end of fit, and on Ctrl-C or a crash.

    A fit resumed from it (``--ckpt_path last``) continues exactly: weights, optimizer step and
    frozen configs, the loss accumulators, and the minibatch sampler's state are all in it.

    Args:
        every_n_train_steps: steps between saves.
        dirpath: where to write it (default: ``<log_dir>/checkpoints``).
    """

    def __init__(self, every_n_train_steps: int = 500, dirpath: str | None = None) -> None:
        if every_n_train_steps <= 0:
            from lit_linear.errors import ConfigError

            raise ConfigError(f"last_checkpoint.every_n_train_steps must be positive, got {every_n_train_steps}")
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )

    def _save_last_now(self, trainer: "pl.Trainer") -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @staticmethod
    def _validates_now(trainer: "pl.Trainer") -> bool:
        interval = trainer.val_check_batch
        return trainer.enable_validation and isinstance(interval, int) and trainer.global_step % interval == 0

    # The state after step t is W_t with global_step t, exactly what a resume needs (ModelCheckpoint's
    # manual-optimization path would warn about pre-update copies instead). When a validation follows
    # this step, save after it: Lightning does not re-run the validation of the step a checkpoint was
    # taken at, so a pre-validation checkpoint would resume with that validation's bookkeeping undone.
    def on_train_batch_end(self, trainer: "pl.Trainer", *args: Any, **kwargs: Any) -> None:
        if trainer.global_step % self._every_n_train_steps == 0 and not self._validates_now(trainer):
            self._save_last_now(trainer)

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.global_step % self._every_n_train_steps == 0:
            self._save_last_now(trainer)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        pass

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._save_last_now(trainer)

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        self._save_last_now(trainer)


def find_run_checkpoint(root: str, name: str) -> str | None:
    """The newest ``<name>.ckpt`` of any run under ``root`` (``<root>/**/checkpoints/``), or None."""
    pattern = os.path.join(glob.escape(root), "**", "checkpoints", f"{name}.ckpt")
    found = glob.glob(pattern, recursive=True)
    return max(found, key=os.path.getmtime) if found else None
