"""StepProgressBar: Lightning's tqdm progress bar, counting SGD steps instead of Lightning batches.

The module hands Lightning batches of several SGD steps (:mod:`lit_linear.training.grouping`) in one endless
epoch (:class:`lit_linear.data.streams.TrainBatches`), so Lightning's own bar would count batches the user
never asked for, against no total. This one counts what the user set: ``global_step`` out of
``max_steps``, with a rate in steps per second; a resumed fit starts the count at its step.
"""

from __future__ import annotations

import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm


class StepProgressBar(TQDMProgressBar):
    """The training bar reads ``Training: 500/2000 [..., 41.2step/s, val/acc=0.41]``; the other bars are Lightning's.

    :class:`~lit_linear.training.module.LinearClassifierModule` puts it in place of Lightning's default
    :class:`~lightning.pytorch.callbacks.TQDMProgressBar` (``configure_callbacks``), with its
    refresh rate and position; a bar of another kind that the user chose stays as it is.

    Args:
        refresh_rate: update the bar at most once every this many training batches.
        process_position: the bar's line, for several bars at once.
        leave: leave the finished bar on the screen.
    """

    @classmethod
    def replacing(cls, callbacks: list[pl.Callback]) -> list[StepProgressBar]:
        """This bar in place of Lightning's default one among ``callbacks``, with its refresh rate and position
        (none when the user chose another kind of bar, or none)."""
        return [cls(c.refresh_rate, c.process_position) for c in callbacks if type(c) is TQDMProgressBar]

    def init_train_tqdm(self) -> Tqdm:
        """Lightning's training bar, in SGD steps: ``max_steps`` the total, the fit's first step its start."""
        trainer = self.trainer
        return Tqdm(
            desc="Training",
            total=trainer.max_steps if trainer.max_steps > 0 else None,
            # tqdm's rate is (n - initial) / elapsed: the steps of this fit only, resumed or not.
            initial=trainer.global_step,
            unit="step",
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        pass  # one endless epoch (TrainBatches): the bar made at on_train_start counts the whole fit

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        last = trainer.global_step >= trainer.max_steps > 0
        if bar is not None and not bar.disable and (self._should_update(batch_idx + 1, -1) or last):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.n = trainer.global_step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
