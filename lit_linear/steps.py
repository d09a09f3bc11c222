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

# Past a few dozen steps per batch Lightning's share of a step is negligible; a Ctrl-C waits at
# most this many steps.
MAX_STEPS_PER_BATCH = 50

# The trainer's intervals that a user gives in steps and Lightning counts in training batches.
BATCH_COUNTED = ("val_check_interval", "log_every_n_steps")


def is_count(value: Any) -> bool:
    """A positive int (not a bool): a number of SGD steps."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


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
    """The largest m <= ``limit`` (default :data:`MAX_STEPS_PER_BATCH`) that divides every count (1 when there is none)."""
    limit = MAX_STEPS_PER_BATCH if limit is None else limit
    g = math.gcd(*counts) if counts else 1
    return max(m for m in range(1, min(g, limit) + 1) if g % m == 0)


def warn_if_shorter_than_logging(trainer: pl.Trainer, steps: int, m: int) -> None:
    """Warn, in SGD steps, that a fit of ``steps`` more steps is shorter than its logging interval
    (which the trainer holds in batches of ``m`` steps while the fit runs).

    Lightning's own warning counts training batches, and the training stream has no length
    (:class:`lit_linear.data.TrainBatches`), so Lightning never says it; a user who logs in
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
