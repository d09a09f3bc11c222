"""Which earlier run ``--ckpt_path best|last`` means: the newest one trained with this config's settings.

The newest ``best.ckpt`` under the root folder may belong to another sweep (another loss, other
learning rates, another dataset); testing or predicting with it would silently report that
sweep's model. :func:`find_matching_checkpoint` reads the settings each checkpoint was trained
with and keeps only the runs whose settings equal this run's.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from typing import Any

from lit_linear.errors import ConfigError
from lit_linear.runs.checkpoint_file import CheckpointFault, check_checkpoint, same_setting

# The settings that make two runs the same sweep. Model keys are compared when present in either
# the checkpoint or this run (``num_configs`` and a ``{low, high}`` form of lr/reg may appear in
# later versions); the rest (weight_scale, class_names, ...) does not change what a sweep is.
MODEL_KEYS: tuple[str, ...] = ("loss", "lr", "reg", "num_configs")
DATA_KEYS: tuple[str, ...] = ("dataset", "train")  # CIFAR's dataset, or the features' training file


def _differences(group: str, keys: tuple[str, ...], saved: Mapping[str, Any], this: Mapping[str, Any]) -> list[str]:
    """``group.key saved (this run value)`` for each of ``keys`` that either side has and that differs."""
    out = []
    for key in keys:
        if key not in saved and key not in this:
            continue
        # A setting a checkpoint does not record (saved before it existed) had its default, None.
        a, b = saved.get(key), this.get(key)
        if not same_setting(a, b):
            out.append(f"{group}.{key} {a!r} (this run {b!r})")
    return out


def _read_settings(path: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The ``(model, data)`` hyperparameters saved in a checkpoint; raises :class:`CheckpointFault` if it is not
    a usable checkpoint (:func:`~lit_linear.runs.checkpoint_file.check_checkpoint`: nothing in it runs, its weights
    stay on disk)."""
    checkpoint = check_checkpoint(path)
    model = checkpoint.get("hyper_parameters") or {}
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    return model, data


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def find_matching_checkpoint(root: str, name: str, model: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """The newest ``<root>/**/checkpoints/<name>.ckpt`` whose run was trained with these settings.

    Args:
        root: the runs' root folder (``--trainer.default_root_dir``).
        name: ``best`` or ``last``: the checkpoint file's stem.
        model: this run's model settings (``--model.*``); ``loss``, ``lr``, ``reg`` and
            ``num_configs`` are compared with each checkpoint's ``hyper_parameters``.
        data: this run's data settings (``--data.*``); ``dataset`` is compared with each
            checkpoint's ``datamodule_hyper_parameters``.

    Returns:
        The path of the newest (by modification time) matching checkpoint.

    Raises:
        ConfigError: no checkpoint of that name under ``root``, or none trained with these
            settings; the one-line message lists every run seen and how it differs.
    """
    pattern = os.path.join(glob.escape(root), "**", "checkpoints", f"{name}.ckpt")
    # Newest first; the path breaks mtime ties so the choice does not depend on the file system's order.
    found = sorted(glob.glob(pattern, recursive=True), key=lambda p: (-os.path.getmtime(p), p))
    where = os.path.abspath(root)
    if not found:
        raise ConfigError(
            f"--ckpt_path {name}: no {name}.ckpt in any run under {where}; fit first with the same "
            "--trainer.default_root_dir, or pass the path of a .ckpt file"
        )
    seen = []
    for path in found:
        run = os.path.relpath(os.path.dirname(os.path.dirname(path)), root)
        try:
            saved_model, saved_data = _read_settings(path)
        except CheckpointFault as e:  # a half-written or foreign file must not hide the other runs
            seen.append(f"{run}: {_one_line(e.reason)}")
            continue
        except Exception as e:
            seen.append(f"{run}: unreadable ({_one_line(e)})")
            continue
        diffs = _differences("model", MODEL_KEYS, saved_model, model)
        diffs += _differences("data", DATA_KEYS, saved_data, data)
        if not diffs:
            return path
        seen.append(f"{run}: {', '.join(diffs)}")
    raise ConfigError(
        f"--ckpt_path {name}: no run under {where} was trained with these settings; fit first, or pass the "
        f"path of a .ckpt file. Runs with a {name}.ckpt, newest first: {'; '.join(seen)}"
    )
