"""Checkpoints of a sweep: ``best.ckpt`` (by the best config's val accuracy) and ``last.ckpt``.

Both are ModelCheckpoint subclasses, so ``--ckpt_path best`` and ``--ckpt_path last`` resolve
the Lightning way; :func:`find_run_checkpoint` resolves them in a fresh process too (a ``test``
or ``predict`` run after the ``fit`` that made them).
"""

from __future__ import annotations

import functools
import glob
import os
import signal
import threading
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from lit_linear.data import steps_per_batch
from lit_linear.errors import ConfigError


class _Checkpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``state_key`` is built once per setting instead of at every use.

    Lightning formats ``[Callback]{state_key}.{hook}`` for every callback hook it calls, so the
    key is read twice per SGD step (``on_before_optimizer_step``); ModelCheckpoint builds it as
    the repr of a dict of five settings each time (1 us). The key is the same function of them.
    """

    @property
    def state_key(self) -> str:
        settings = (self.monitor, self.mode, self._every_n_train_steps, self._every_n_epochs, self._train_time_interval)
        cached = self.__dict__.get("_state_key_cache")
        if cached is None or cached[0] != settings:
            cached = self._state_key_cache = (settings, super().state_key)
        return cached[1]


class BestCheckpoint(_Checkpoint):
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


class LastCheckpoint(_Checkpoint):
    """Keeps ``last.ckpt`` up to date: every N steps, at the end of fit, and on Ctrl-C or a crash.

    A fit resumed from it (``--ckpt_path last``) continues exactly: weights, optimizer step and
    frozen configs, the loss accumulators, and the minibatch sampler's state are all in it.

    Ctrl-C in a single-process fit stops gracefully: the current batch of steps finishes, the configs are
    validated, ``last.ckpt``, ``sweep.json`` and ``best_model.pt`` are written, and
    :attr:`interrupted` is set (the CLI then exits with status 130). A second Ctrl-C aborts at once.
    Under DDP, Lightning's own handling applies: the processes stop and ``last.ckpt`` is saved
    unless the interrupt came in the middle of a step (a half-done step is never saved).

    Args:
        every_n_train_steps: steps between saves.
        dirpath: where to write it (default: ``<log_dir>/checkpoints``).
    """

    def __init__(self, every_n_train_steps: int = 500, dirpath: str | None = None) -> None:
        if every_n_train_steps <= 0:
            raise ConfigError(f"last_checkpoint.every_n_train_steps must be positive, got {every_n_train_steps}")
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )
        self.interrupted = False
        self._in_step = False
        self._previous_sigint: Any = None

    def _save_last_now(self, trainer: "pl.Trainer") -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def check_steps_per_batch(self, steps_per_batch: int) -> None:
        """Saves happen between Lightning batches, so N must be a multiple of the steps in one."""
        if self._every_n_train_steps % steps_per_batch:
            raise ConfigError(
                f"last_checkpoint.every_n_train_steps ({self._every_n_train_steps}) must be a multiple of "
                f"data.steps_per_batch ({steps_per_batch}): checkpoints are taken between batches"
            )

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self.check_steps_per_batch(steps_per_batch(trainer))

    @staticmethod
    def _validates_now(trainer: "pl.Trainer") -> bool:
        interval = trainer.val_check_batch  # in batches of data.steps_per_batch steps
        return (
            trainer.enable_validation
            and isinstance(interval, int)
            and trainer.global_step % (interval * steps_per_batch(trainer)) == 0
        )

    # The state after step t is W_t with global_step t, exactly what a resume needs (ModelCheckpoint's
    # manual-optimization path would warn about pre-update copies instead). When a validation follows
    # this step, save after it: Lightning does not re-run the validation of the step a checkpoint was
    # taken at, so a pre-validation checkpoint would resume with that validation's bookkeeping undone.
    def on_train_batch_end(self, trainer: "pl.Trainer", *args: Any, **kwargs: Any) -> None:
        self._in_step = False
        if trainer.global_step % self._every_n_train_steps == 0 and not self._validates_now(trainer):
            self._save_last_now(trainer)

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.global_step % self._every_n_train_steps == 0:
            self._save_last_now(trainer)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        pass

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._restore_sigint()
        self._save_last_now(trainer)
        if self.interrupted:
            rank_zero_info(f"Interrupted at step {trainer.global_step}; resume with --ckpt_path last ({self.last_model_path})")

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        self._restore_sigint()
        if not self._in_step:
            self._save_last_now(trainer)

    def teardown(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        self._restore_sigint()
        super().teardown(trainer, pl_module, stage)

    # --- Ctrl-C ------------------------------------------------------------------------------
    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self.interrupted = False
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, functools.partial(self._on_sigint, trainer))

    def _on_sigint(self, trainer: "pl.Trainer", signum: int, frame: Any) -> None:
        if self.interrupted:  # pressed twice: stop now, the Lightning way
            self._restore_sigint()
            raise KeyboardInterrupt
        self.interrupted = True
        trainer.should_stop = True
        rank_zero_info("\nCtrl-C: stopping after this batch, then validating and saving (Ctrl-C again to abort)")

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_train_batch_start(self, trainer: "pl.Trainer", *args: Any, **kwargs: Any) -> None:
        self._in_step = True


def find_run_checkpoint(root: str, name: str) -> str | None:
    """The newest ``<name>.ckpt`` of any run under ``root`` (``<root>/**/checkpoints/``), or None."""
    pattern = os.path.join(glob.escape(root), "**", "checkpoints", f"{name}.ckpt")
    found = glob.glob(pattern, recursive=True)
    return max(found, key=os.path.getmtime) if found else None
