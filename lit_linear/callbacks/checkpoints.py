"""Checkpoints of a sweep: ``best.ckpt`` (by the best config's val accuracy) and ``last.ckpt``.

Both are ModelCheckpoint subclasses, so ``ckpt_path="best"`` and ``ckpt_path="last"`` resolve
the Lightning way in the process that fitted; the CLI resolves them in a fresh process too
(:func:`lit_linear.runs.find_matching_checkpoint`).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_linear.errors import check_count, is_storage_fault


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
    """Keeps ``last.ckpt`` up to date: every N steps, at the end of fit (a graceful stop included), and on a crash.

    For a :class:`~lit_linear.training.module.LinearClassifierModule` fit, whose step grouping
    (:class:`~lit_linear.training.grouping.StepGrouping`) says which steps a validation follows. A fit
    resumed from it (``--ckpt_path last``) continues exactly: weights, optimizer step and frozen configs, the
    loss accumulators, and the minibatch sampler's state are all in it.

    When a fit fails (an exception, a second Ctrl-C), a single process saves the step it reached,
    unless the failure came in the middle of a step or was the disk refusing a write. Several
    processes never save then: a save waits for every process, and one that failed alone may never
    join (:mod:`lit_linear.runs.faults`). Otherwise the last good ``last.ckpt`` is kept, and a line says so.

    Args:
        every_n_train_steps: steps between saves.
        dirpath: where to write it (default: ``<log_dir>/checkpoints``).
    """

    def __init__(self, every_n_train_steps: int = 500, dirpath: str | None = None) -> None:
        check_count(every_n_train_steps, "last_checkpoint.every_n_train_steps", "number of SGD steps")
        # Every save is this class's own (below, through trainer.save_checkpoint); ModelCheckpoint
        # keeps the folder, last_model_path, and what ckpt_path="last" looks for.
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, enable_version_counter=False)
        self.every_n_train_steps = every_n_train_steps
        self._in_step = False
        self._pending = False  # a save is due at this step, after the validation that may follow it
        self._saved_step: int | None = None

    def _save_last_now(self, trainer: pl.Trainer) -> None:
        self._pending = False
        if self.dirpath is None:  # the fit failed before the checkpoint folder was set up: nothing to save
            return
        if (
            trainer.state.fn != "fit"
            or trainer.sanity_checking
            or trainer.fast_dev_run
            or self._saved_step == trainer.global_step
        ):
            return
        path = os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
        trainer.save_checkpoint(path, weights_only=False)  # the whole state: a resume continues exactly
        self.last_model_path = path
        self._saved_step = trainer.global_step

    # The state after step t is W_t with global_step t, exactly what a resume needs. It is saved at
    # the end of the batch that reaches t, where Lightning's own step checkpoints are saved and its
    # batch counts are those a restore expects (by the next batch's start, Lightning has counted
    # that batch as begun). When a validation follows the step, the save waits for it: Lightning
    # does not re-run the validation of the step a checkpoint was taken at, so a checkpoint taken
    # before it would resume with that validation's bookkeeping undone.
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        self._in_step = False
        if trainer.global_step % self.every_n_train_steps == 0:
            if _validates_after_this_batch(trainer, pl_module):
                self._pending = True
            else:
                self._save_last_now(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending:
            self._save_last_now(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if self._pending:  # a validation was due and did not run (a stop request Lightning declined)
            self._save_last_now(trainer)
        self._in_step = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_last_now(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.world_size == 1 and not self._in_step and not is_storage_fault(exception):
            self._save_last_now(trainer)
        elif trainer.is_global_zero and trainer.state.fn == "fit" and self._saved_step != trainer.global_step:
            why = (
                "the disk refused a write"
                if is_storage_fault(exception)
                else "it failed mid-step"
                if trainer.world_size == 1
                else "saving needs every process"
            )
            kept = (
                f"the last good one is kept: {self.last_model_path} (step {self._saved_step})"
                if self._saved_step is not None
                else "this fit saved none before"
            )
            print(f"last.ckpt not updated at step {trainer.global_step} ({why}); {kept}", file=sys.stderr, flush=True)


def _validates_after_this_batch(trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
    """Whether Lightning validates once the current training batch ends (called from ``on_train_batch_end``).

    As Lightning decides: on the validation interval (the module's step grouping, in SGD steps),
    at ``max_steps``, or when asked to stop (a stop asked later, by a Ctrl-C during this hook, adds
    a validation after an earlier save).
    """
    if trainer.should_stop or (trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps):
        return True
    return pl_module.grouping.validates_at(trainer, trainer.global_step)
