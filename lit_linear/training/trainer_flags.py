"""The Trainer settings a sweep can honour, and a one-line refusal of each one it cannot.

A sweep is trained by hand (``automatic_optimization = False``): one stream of ``max_steps`` SGD
steps with no epochs, a hand-formed gradient and no ``backward``. :func:`check_fit_settings`
runs before any data is read (the CLI's ``before_fit``, and the module's ``setup`` for a fit
started from Python) and raises :class:`~lit_linear.errors.ConfigError`, naming the option and what
would be valid, for every setting that would otherwise fail mid-fit or be silently ignored. The
settings Lightning validates itself stay Lightning's.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import (
    BaseFinetuning,
    BatchSizeFinder,
    GradientAccumulationScheduler,
    LearningRateFinder,
    ModelPruning,
    OnExceptionCheckpoint,
    SpikeDetection,
    StochasticWeightAveraging,
    WeightAveraging,
)
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from lit_linear.errors import ConfigError, is_count
from lit_linear.training.precision import check_precision

# Callbacks that act on autograd's backward, an optimizer's param_groups or the loss a training
# step returns, none of which a hand-trained sweep has; the reason names what to use instead.
REFUSED_CALLBACKS: tuple[tuple[type, str], ...] = (
    (
        StochasticWeightAveraging,
        "averages the weights over epochs of automatic optimization, and the sweep "
        "chooses its best config by validating the weights as trained",
    ),
    (WeightAveraging, "would save averaged weights while the sweep validates and chooses the weights as trained"),
    (
        GradientAccumulationScheduler,
        "accumulates autograd's gradients; each SGD step here is one whole "
        "minibatch of data.batch_size images: raise data.batch_size instead",
    ),
    (BaseFinetuning, "freezes and unfreezes submodules of a network; a linear classifier has none"),
    (
        LearningRateFinder,
        "tunes one learning rate of automatic optimization; the sweep searches the learning "
        "rate itself: give model.lr a list or a range {low, high}",
    ),
    (
        BatchSizeFinder,
        "looks for the largest batch that fits in memory; data.batch_size is the SGD minibatch, "
        "a hyperparameter of the sweep: set it directly",
    ),
    (ModelPruning, "prunes the weights of nn.Linear and nn.Conv layers; the sweep's W is one (D, K, C) tensor"),
    (SpikeDetection, "watches the one loss a training step returns; a sweep has one loss per config"),
)


def check_fit_settings(trainer: pl.Trainer) -> None:
    """Refuse trainer settings under which a sweep cannot train and validate as asked (ConfigError)."""
    _check_steps(trainer)
    _check_manual_optimization(trainer)
    check_precision(trainer)
    _check_strategy(trainer)
    _check_callbacks(trainer)


def _check_steps(trainer: pl.Trainer) -> None:
    if trainer.overfit_batches:
        raise ConfigError(
            f"trainer.overfit_batches ({trainer.overfit_batches}) cannot apply: minibatches are drawn afresh from the "
            "whole training split at every step and validation uses the held-out split; leave it at 0"
        )
    if trainer.fast_dev_run:
        return  # Lightning's own settings: fast_dev_run steps, then one validation
    if trainer.max_epochs not in (None, -1):
        raise ConfigError(
            f"trainer.max_epochs ({trainer.max_epochs}) cannot apply: training is one stream of SGD steps with no "
            "epochs; set --trainer.max_steps instead"
        )
    if trainer.min_epochs or trainer.min_steps:
        # Lightning turns min_steps into min_epochs 1 as well, which an endless epoch never meets.
        name, value = ("min_steps", trainer.min_steps) if trainer.min_steps else ("min_epochs", trainer.min_epochs)
        raise ConfigError(
            f"trainer.{name} ({value}) cannot apply: with it, Lightning lets no stop (EarlyStopping, Ctrl-C, "
            "SIGTERM) end the fit before an epoch ends, and the training stream is one endless epoch; leave it unset"
        )
    if trainer.limit_train_batches != 1.0:
        raise ConfigError(
            f"trainer.limit_train_batches ({trainer.limit_train_batches}) cannot apply: training is one stream of "
            "trainer.max_steps SGD steps with no epochs; set --trainer.max_steps instead"
        )
    if trainer.limit_val_batches == 0:
        raise ConfigError(
            "trainer.limit_val_batches 0 cannot apply: the sweep chooses its best config by validation accuracy; "
            "give a number of chunks of data.eval_batch_size images, or a fraction of the split"
        )
    if not is_count(trainer.max_steps):
        raise ConfigError(
            f"trainer.max_steps must be a positive number of SGD steps (got {trainer.max_steps}); "
            "e.g. --trainer.max_steps 2000"
        )
    if not is_count(trainer.val_check_interval):
        raise ConfigError(
            "trainer.val_check_interval must be a positive number of SGD steps "
            f"(got {trainer.val_check_interval!r}): the training stream has no epochs; "
            "e.g. --trainer.val_check_interval 500 --trainer.check_val_every_n_epoch null"
        )
    if trainer.check_val_every_n_epoch is not None:
        raise ConfigError(
            f"trainer.check_val_every_n_epoch must be null (got {trainer.check_val_every_n_epoch}): the training "
            "stream has no epochs, so validation is counted in steps by trainer.val_check_interval"
        )


def _check_manual_optimization(trainer: pl.Trainer) -> None:
    if trainer.gradient_clip_val:
        raise ConfigError(
            f"trainer.gradient_clip_val ({trainer.gradient_clip_val}) cannot apply: the SGD step is written by hand "
            "(manual optimization), with no autograd gradient to clip; leave it unset"
        )
    if trainer.accumulate_grad_batches != 1:
        raise ConfigError(
            f"trainer.accumulate_grad_batches ({trainer.accumulate_grad_batches}) cannot apply: each SGD step is one "
            "whole minibatch of data.batch_size images (manual optimization); raise data.batch_size instead"
        )


def _check_strategy(trainer: pl.Trainer) -> None:
    strategy = trainer.strategy
    if type(strategy) not in (SingleDeviceStrategy, DDPStrategy):
        raise ConfigError(
            f"trainer.strategy {type(strategy).__name__} cannot train a sweep: its configs are shared out across "
            "processes by model.split under DDP; use --trainer.strategy auto, ddp or ddp_spawn"
        )


def _check_callbacks(trainer: pl.Trainer) -> None:
    for callback in trainer.callbacks:
        for kind, reason in REFUSED_CALLBACKS:
            if isinstance(callback, kind):
                raise ConfigError(f"trainer.callbacks {type(callback).__name__} cannot apply: it {reason}")
        if isinstance(callback, OnExceptionCheckpoint) and trainer.world_size > 1:
            raise ConfigError(
                "trainer.callbacks OnExceptionCheckpoint cannot apply under DDP: its save waits for every process, "
                "which a process that failed alone never joins; last.ckpt is already saved wherever that is safe"
            )
