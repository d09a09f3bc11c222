"""How a fit's SGD steps are grouped into Lightning batches.

Every count a user gives is in SGD steps, as in any Lightning fit: ``trainer.max_steps``,
``trainer.val_check_interval``, ``trainer.log_every_n_steps`` (with a logger) and
``last_checkpoint.every_n_train_steps``. Lightning's own work per training batch (its loop, the
hooks of every callback, progress tracking) costs about as much as a whole SGD step of a sweep on a
small CPU, so the module hands Lightning batches of m steps: m is the largest number up to
:data:`MAX_STEPS_PER_BATCH` that divides every one of those counts, so that every validation,
checkpoint and the end of the run falls on the boundary of a batch. Lightning counts its validation
and logging intervals in batches (:data:`BATCH_COUNTED`); the module therefore gives the trainer
each of them divided by m for the length of the fit and puts the user's values back afterwards.
The minibatches, their order and the weights do not depend on m.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from lit_linear.errors import is_count

# Past a few dozen steps per batch Lightning's share of a step is negligible; a Ctrl-C waits at
# most this many steps.
MAX_STEPS_PER_BATCH = 50

# The trainer's intervals that a user gives in steps and Lightning counts in training batches.
BATCH_COUNTED = ("val_check_interval", "log_every_n_steps")


def step_counts(trainer: pl.Trainer, global_step: int = 0) -> list[int]:
    """The step counts a batch boundary must fall on: ``max_steps``, the validation interval, the
    logging interval (with a logger), the ``every_n_train_steps`` of any callback that has one, and
    ``global_step`` (where a resumed fit starts)."""
    counts = [trainer.max_steps, trainer.val_check_interval]
    if trainer.loggers:
        counts.append(trainer.log_every_n_steps)
    counts += [getattr(callback, "every_n_train_steps", None) for callback in trainer.callbacks]
    counts.append(global_step)
    return [c for c in counts if is_count(c)]


def steps_per_batch(counts: list[int], limit: int | None = None) -> int:
    """The largest m <= ``limit`` (default :data:`MAX_STEPS_PER_BATCH`) dividing every count (1 when there is none)."""
    limit = MAX_STEPS_PER_BATCH if limit is None else limit
    g = math.gcd(*counts) if counts else 1
    return max(m for m in range(1, min(g, limit) + 1) if g % m == 0)


def warn_if_shorter_than_logging(trainer: pl.Trainer, steps: int, m: int) -> None:
    """Warn, in SGD steps, that a fit of ``steps`` more steps is shorter than its logging interval
    (which the trainer holds in batches of ``m`` steps while the fit runs).

    Lightning's own warning counts training batches, and the training stream has no length
    (:class:`lit_linear.data.streams.TrainBatches`), so Lightning never says it; a user who logs in
    per-batch hooks would otherwise see nothing and not know why.
    """
    if trainer.fast_dev_run or not trainer.loggers or not 0 < steps < trainer.log_every_n_steps * m:
        return
    interval = trainer.log_every_n_steps * m
    rank_zero_warn(
        f"This fit runs {steps} SGD steps, fewer than trainer.log_every_n_steps ({interval}): set a lower "
        "value to see the metrics logged in per-batch hooks during the fit.",
        category=PossibleUserWarning,
    )


class StepGrouping:
    """The SGD steps per Lightning batch of one fit, and the trainer's intervals in such batches while it runs.

    :attr:`steps_per_batch` is m (1 outside a fit). For the length of a fit the trainer's
    :data:`BATCH_COUNTED` intervals are divided by m; :meth:`restore` puts the user's back.
    """

    def __init__(self) -> None:
        self.steps_per_batch = 1
        self._user_intervals: dict[str, Any] | None = None  # the trainer's intervals in steps, put back after fit

    def start(self, trainer: pl.Trainer, global_step: int) -> int:
        """Choose m for a fit that starts at ``global_step``, give the trainer its intervals in batches of m
        and the data module m (one that hands out several steps a batch has ``steps_per_batch``); returns m."""
        self.restore(trainer)  # chosen before: start again from the user's intervals
        datamodule = trainer.datamodule
        groupable = hasattr(datamodule, "steps_per_batch")
        m = steps_per_batch(step_counts(trainer, global_step)) if groupable and not trainer.fast_dev_run else 1
        self.steps_per_batch = m
        if groupable:
            datamodule.steps_per_batch = m  # always set: a reused data module keeps no earlier fit's m
        if m > 1:
            self._user_intervals = {name: getattr(trainer, name) for name in BATCH_COUNTED}
            for name, steps in self._user_intervals.items():
                # m divides each where it matters (step_counts); 0 (logging off) stays 0.
                setattr(trainer, name, max(1, steps // m) if steps else 0)
        return m

    def restore(self, trainer: pl.Trainer) -> None:
        """Give the trainer back the user's intervals, in SGD steps."""
        if self._user_intervals is not None:
            for name, steps in self._user_intervals.items():
                setattr(trainer, name, steps)
            self._user_intervals = None

    def resume(self, trainer: pl.Trainer, checkpoint: dict[str, Any]) -> int:
        """A resumed fit starts at the checkpoint's step: group steps so that batches start there, and
        restate Lightning's count of batches so far in batches of the new size; returns m.

        Lightning validates when its count of batches reaches a multiple of its interval, and a
        resumed trainer continues the count it saved. With other settings than the checkpointed run
        (another interval, say), the batches may hold another number of steps; the count is then
        rewritten in the checkpoint's loop state before Lightning restores it (there is no public
        way to set it; ``tests/test_resume.py`` fails loudly if the format changes).
        """
        step = int(checkpoint.get("global_step", 0))
        before = checkpoint.get("steps_per_batch", self.steps_per_batch)
        m = self.start(trainer, step)
        if m != before:
            progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
            batches = step // m
            for counts in (progress["total"], progress["current"]):
                counts.update(ready=batches, started=batches, processed=batches, completed=batches)
        return m

    def validates_at(self, trainer: pl.Trainer, step: int) -> bool:
        """Whether ``val_check_interval`` (counted in SGD steps) schedules a validation at ``step``;
        outside a fit, every validation counts as scheduled."""
        interval = trainer.val_check_interval  # in Lightning batches of steps_per_batch steps while fitting
        if trainer.state.fn != "fit" or trainer.fast_dev_run or not isinstance(interval, int):
            return True
        return step % (interval * self.steps_per_batch) == 0
