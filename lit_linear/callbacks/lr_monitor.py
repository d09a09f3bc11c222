"""SweepLearningRateMonitor: Lightning's LearningRateMonitor for a sweep, one learning rate per config.

Lightning's monitor logs the ``lr`` of each param group of each optimizer. :class:`GridSGD` trains
all K configs in one group whose ``lr`` is the list of their base rates, which no logger takes.
This monitor logs what each config trains with instead, in SGD steps, as
``lr-GridSGD/lr=0.4,reg=0.001``: ``lr · lr_decay ** (step // lr_decay_every)``
(:func:`lit_linear.maths.optim.decayed_lr`), for every config still training. A config's curve ends where
successive halving stopped it or a validation found it diverged (its rate is then 0), so the
curves are the same on any number of processes. ``log_weight_decay`` logs each config's
``2 · reg`` (the weight decay its L2 term amounts to); ``log_momentum`` logs 0, as Lightning's
monitor does for an optimizer without momentum.

:class:`~lit_linear.training.module.LinearClassifierModule` puts it in place of a ``LearningRateMonitor``
the user passes (``--trainer.callbacks LearningRateMonitor``), with the same arguments.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import LearningRateMonitor

from lit_linear.maths.optim import decayed_lr
from lit_linear.sweep.configs import config_name

PREFIX = "lr-GridSGD"


class SweepLearningRateMonitor(LearningRateMonitor):
    """Each config's learning rate, logged every ``log_every_n_steps`` SGD steps (``logging_interval`` ``step`` or
    None) or once when training starts (``epoch``: the training stream is one endless epoch).

    Args:
        logging_interval: ``step``, ``epoch`` or None (both), as Lightning's.
        log_momentum: also log each config's momentum (0: GridSGD is plain SGD).
        log_weight_decay: also log each config's weight decay, ``2 · reg``.
    """

    @classmethod
    def replacing(cls, callbacks: list[pl.Callback]) -> list[SweepLearningRateMonitor]:
        """This monitor in place of each of Lightning's ``LearningRateMonitor`` among ``callbacks``, with its arguments
        (a subclass of the user's own is theirs to keep)."""
        return [
            cls(c.logging_interval, c.log_momentum, c.log_weight_decay)
            for c in callbacks
            if type(c) is LearningRateMonitor
        ]

    def on_train_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_train_start(trainer, *args, **kwargs)  # Lightning's checks: a logger, momentum
        self.lrs = {}  # by config, filled as they are logged

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        every = max(1, trainer.log_every_n_steps * getattr(pl_module, "steps_per_batch", 1))  # in SGD steps
        if self.logging_interval != "epoch" and trainer.global_step % every == 0:
            self._log(trainer, pl_module)

    def on_train_epoch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        if self.logging_interval == "epoch":
            self._log(trainer, pl_module)

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        hp = pl_module.hparams
        stats = {}
        for k in pl_module.sweep.training_configs():
            lr, reg = pl_module.sweep.configs[k]
            name = config_name(lr, reg)
            stats[f"{PREFIX}/{name}"] = decayed_lr(lr, step, hp.lr_decay, hp.lr_decay_every)
            if self.log_momentum:
                stats[f"{PREFIX}-momentum/{name}"] = 0.0
            if self.log_weight_decay:
                stats[f"{PREFIX}-weight_decay/{name}"] = 2.0 * reg
        for name, value in stats.items():
            self.lrs.setdefault(name, []).append(value)
        for logger in trainer.loggers:
            logger.log_metrics(stats, step=step)
