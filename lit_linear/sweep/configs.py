"""The configs of a sweep and their results: a grid of lists or log-uniform draws, names, table, sweep.json."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lit_linear.errors import ConfigError, check_count


def as_value_list(value: float | Sequence[float], option: str, *, allow_zero: bool) -> list[float]:
    """A float or a non-empty list of floats, each finite and > 0 (>= 0 with ``allow_zero``)."""
    values = [value] if isinstance(value, (int, float)) else list(value)
    valid = "finite numbers >= 0" if allow_zero else "finite numbers > 0"
    if not values:
        raise ConfigError(f"{option} is an empty list; give one value or a list of {valid}")
    for v in values:
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or not math.isfinite(v)
            or v < 0
            or (v == 0 and not allow_zero)
        ):
            raise ConfigError(f"{option} must hold {valid}; got {v!r} in {values}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{option} lists a value twice: {values}")
    return [float(v) for v in values]


def grid(lrs: Sequence[float], regs: Sequence[float]) -> list[tuple[float, float]]:
    """All (lr, reg) pairs, lr-major: config ``k = i * len(regs) + j`` is ``(lrs[i], regs[j])``."""
    return [(lr, reg) for lr in lrs for reg in regs]


@dataclass(frozen=True)
class LogUniform:
    """A range ``{low: A, high: B}`` (0 < A < B) from which values are drawn log-uniformly."""

    low: float
    high: float

    def sample(self, n: int, generator: torch.Generator) -> list[float]:
        logs = torch.empty(n, dtype=torch.float64).uniform_(
            math.log(self.low), math.log(self.high), generator=generator
        )
        return logs.exp().tolist()


def as_axis(
    value: float | Sequence[float] | Mapping[str, float], option: str, *, allow_zero: bool
) -> list[float] | LogUniform:
    """A number or a list (:func:`as_value_list`), or a range ``{low, high}`` as a :class:`LogUniform`."""
    if not isinstance(value, Mapping):
        return as_value_list(value, option, allow_zero=allow_zero)
    if set(value) != {"low", "high"}:
        raise ConfigError(
            f"{option} as a range takes exactly the keys low and high, e.g. {{low: 0.05, high: 5.0}}; got {dict(value)}"
        )
    low, high = value["low"], value["high"]
    for key, bound in (("low", low), ("high", high)):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound) or bound <= 0:
            raise ConfigError(f"{option}.{key} must be a finite number > 0 (a log-uniform range), got {bound!r}")
    if low >= high:
        raise ConfigError(f"{option} range needs low < high, got low={low!r}, high={high!r}")
    return LogUniform(float(low), float(high))


def sweep_configs(
    lr: list[float] | LogUniform, reg: list[float] | LogUniform, num_configs: int | None, seed: int
) -> list[tuple[float, float]]:
    """The (lr, reg) pairs of a sweep: the grid of two lists, or ``num_configs`` draws when an axis is a range.

    A range is drawn log-uniformly, a list uniformly, each pair independently, from a generator
    seeded with ``seed`` alone (the run's ``seed_everything``), so that every DDP rank and every
    rerun of the same config.yaml draws the same pairs.
    """
    sampled = isinstance(lr, LogUniform) or isinstance(reg, LogUniform)
    if not sampled:
        if num_configs is not None:
            raise ConfigError(
                f"model.num_configs ({num_configs}) applies only when model.lr or model.reg is a range "
                "{low: A, high: B}; a grid of lists has len(lr) * len(reg) configs"
            )
        return grid(lr, reg)
    check_count(num_configs, "model.num_configs", "number of configs to draw from the range")
    generator = torch.Generator().manual_seed(seed % 2**64)

    def draw(axis: list[float] | LogUniform) -> list[float]:
        if isinstance(axis, LogUniform):
            return axis.sample(num_configs, generator)
        picks = torch.randint(len(axis), (num_configs,), generator=generator).tolist()
        return [axis[i] for i in picks]

    return list(zip(draw(lr), draw(reg)))


def check_model_options(options: Mapping[str, Any], seed: int) -> tuple[list[tuple[float, float]], list[str]]:
    """The sweep's configs and class names from the model's options (:class:`~lit_linear.LinearClassifierModule`),
    each option checked: a ConfigError names the first that is not valid. The draws of a range depend on ``seed`` alone.

    ``options``: the module's ``__init__`` arguments by name (its hparams)."""
    loss, lr, reg, num_configs = options["loss"], options["lr"], options["reg"], options["num_configs"]
    halving_factor, weight_scale = options["halving_factor"], options["weight_scale"]
    lr_decay, lr_decay_every = options["lr_decay"], options["lr_decay_every"]
    num_classes, feature_dim, class_names = options["num_classes"], options["feature_dim"], options["class_names"]
    if loss not in ("svm", "softmax", "l2svm"):
        raise ConfigError(f"model.loss must be one of svm, softmax, l2svm; got {loss!r}")
    configs = sweep_configs(
        as_axis(lr, "model.lr", allow_zero=False), as_axis(reg, "model.reg", allow_zero=True), num_configs, seed
    )
    if halving_factor is not None:
        if (
            isinstance(halving_factor, bool)
            or not isinstance(halving_factor, (int, float))
            or not halving_factor > 1
            or not math.isfinite(halving_factor)
        ):
            raise ConfigError(f"model.halving_factor must be a finite number > 1 (e.g. 3), got {halving_factor!r}")
        if len(configs) < 2:
            raise ConfigError("model.halving_factor needs a sweep of at least 2 configs to choose from; this one has 1")
    if not (math.isfinite(weight_scale) and weight_scale >= 0):
        raise ConfigError(f"model.weight_scale must be a finite number >= 0, got {weight_scale!r}")
    if not (math.isfinite(lr_decay) and 0 < lr_decay <= 1):
        raise ConfigError(f"model.lr_decay must lie in (0, 1], got {lr_decay!r}")
    check_count(lr_decay_every, "model.lr_decay_every", "number of steps")
    if num_classes < 2 or feature_dim < 2:
        raise ConfigError(
            f"model.num_classes must be >= 2 and model.feature_dim >= 2, got {num_classes}, {feature_dim}"
        )
    class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(class_names) != num_classes:
        raise ConfigError(f"model.class_names has {len(class_names)} names for {num_classes} classes")
    return configs, class_names


def check_same_sweep(saved: Mapping[str, object], options: Mapping[str, object]) -> None:
    """Refuse (ConfigError) a checkpoint whose model options ``saved`` define another grid than ``options``."""
    differ = [k for k in ("loss", "lr", "reg", "num_classes", "feature_dim") if k in saved and saved[k] != options[k]]
    if differ:
        detail = "; ".join(f"model.{k}: checkpoint {saved[k]!r}, this run {options[k]!r}" for k in differ)
        raise ConfigError(
            f"the checkpoint was trained with another grid ({detail}); use the config it was trained with"
        )


def config_name(lr: float, reg: float) -> str:
    """A short, readable, filesystem-safe name for one config, e.g. ``lr=0.05,reg=0.0001``."""
    return f"lr={lr:.6g},reg={reg:.6g}"
