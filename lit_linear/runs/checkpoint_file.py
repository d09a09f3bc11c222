"""What ``--ckpt_path FILE`` may name: a readable Lightning checkpoint, checked before anything loads it.

LightningCLI reads the checkpoint's hyperparameters as soon as the command line is parsed, and
the Trainer loads the file again; a missing file, a folder, a pickle that ``weights_only``
loading refuses, a torch file of something else or a checkpoint cut short by a crash each ended
in a long traceback from deep inside torch. :func:`check_checkpoint` opens the file the safe way
(``weights_only=True``: no pickled code runs; ``mmap=True``: the weights stay on disk) and turns
each of those faults into a :class:`CheckpointFault`, one line naming the file and what is wrong.
:func:`check_resumed_options` refuses a fit whose model options would be silently replaced by
the checkpoint's.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from lit_linear.errors import ConfigError

# The module's options that say how a sweep runs, not what it is: a run from a checkpoint keeps the
# value it is given (LightningCLI would take the checkpoint's), and a fit may change them.
RUN_OPTIONS: tuple[str, ...] = ("compile", "cuda_graph", "split")

# What every checkpoint Lightning writes holds.
LIGHTNING_KEYS: tuple[str, ...] = ("state_dict", "global_step", "pytorch-lightning_version")

# The start of a zip file: torch.save's format since torch 1.6, the only one that mmap reads.
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = 0x80  # the first byte of a pickle of protocol 2 or later: torch.save's format before the zip


class CheckpointFault(ConfigError):
    """``--ckpt_path FILE`` names no usable checkpoint; ``reason`` says why, the message names the file too."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"--ckpt_path {path}: {reason}")


def normalise(value: Any) -> Any:
    """``value`` with ints turned into floats and tuples into lists, recursively.

    So ``lr: [1, 2]`` equals a saved ``(1.0, 2.0)`` (a list may come back from a config or a
    checkpoint as either), and a message shows both sides in one form. A scalar and a list stay
    different: one config is not a grid axis. Bools stay bools.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, Mapping):
        return {k: normalise(v) for k, v in value.items()}
    return value


def same_setting(a: Any, b: Any) -> bool:
    """Whether two values of a setting (one saved in a checkpoint, one of this run) are the same (:func:`normalise`)."""
    return normalise(a) == normalise(b)


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refusal(error: pickle.UnpicklingError) -> str:
    """What ``weights_only`` loading refused, from torch's long message: ``GLOBAL posix.system``, ..."""
    text = str(error)
    found = re.search(r"GLOBAL [\w.]+", text) or re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if found is None:
        return _one_line(text, 80)
    return found.group(0) if found.group(0).startswith("GLOBAL") else _one_line(found.group(1), 80)


def _load(path: str) -> Any:
    with open(path, "rb") as f:
        head = f.read(len(ZIP_MAGIC))
    if not head:
        raise CheckpointFault(path, "is truncated or unreadable: the file is empty")
    if head != ZIP_MAGIC and head[0] != PICKLE_PROTO:
        raise CheckpointFault(path, "is not a Lightning checkpoint (not a file torch.save writes)")
    with warnings.catch_warnings():  # torch's note on an old pickle protocol is no concern of the user's
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=head == ZIP_MAGIC)


def names_a_file(ckpt_path: str | os.PathLike | None) -> bool:
    """Whether a ``--ckpt_path`` value names a local file: not unset, best, last, hpc, a registry or a URL."""
    if ckpt_path is None:
        return False
    value = os.fspath(ckpt_path)
    return value not in ("best", "last", "hpc", "registry") and not value.startswith("registry:") and "://" not in value


def check_checkpoint(path: str | os.PathLike) -> Mapping[str, Any]:
    """The checkpoint at ``path``, opened without running anything in it (its weights memory-mapped).

    Raises:
        CheckpointFault: ``path`` is missing, a folder, unreadable or cut short, holds Python objects
            that ``weights_only`` loading refuses, or is not a Lightning checkpoint (a dict with
            :data:`LIGHTNING_KEYS`).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointFault(path, "not found")
    if os.path.isdir(path):
        raise CheckpointFault(path, "is a folder; give a .ckpt file")
    try:
        checkpoint = _load(path)
    except CheckpointFault:
        raise
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointFault(path, f"is truncated or unreadable: {_one_line(e)}") from None
        raise CheckpointFault(
            path, f"holds Python objects that weights_only loading refuses ({_refusal(e)}), so nothing in it may run"
        ) from None
    except Exception as e:  # a cut zip, an OS error: the first sentence of torch's or the OS's reason
        reason = _one_line(str(e).split(". ")[0]) or type(e).__name__
        raise CheckpointFault(path, f"is truncated or unreadable: {reason}") from None
    if not isinstance(checkpoint, Mapping):
        raise CheckpointFault(
            path, f"is not a Lightning checkpoint (a {type(checkpoint).__name__}, not a dict with a state_dict)"
        )
    missing = [key for key in LIGHTNING_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointFault(path, f"is not a Lightning checkpoint (no {' / '.join(missing)})")
    if not isinstance(checkpoint["state_dict"], Mapping):
        raise CheckpointFault(path, "is not a Lightning checkpoint (its state_dict is not a dict)")
    return checkpoint


def check_resumed_options(path: str, saved: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """Refuse (ConfigError) the model options this run gave that differ from those the checkpoint recorded.

    A fit from a checkpoint trains the checkpoint's sweep: LightningCLI would replace ``given``
    (the ``--model.*`` options of the command line and its configs, defaults left out) with
    ``saved`` (the checkpoint's ``hyper_parameters``). An option the checkpoint does not record
    is not compared, nor are :data:`RUN_OPTIONS`.
    """
    differ = [
        key for key in given if key not in RUN_OPTIONS and key in saved and not same_setting(saved[key], given[key])
    ]
    if differ:
        detail = ", ".join(f"model.{key} {saved[key]!r} (this run {given[key]!r})" for key in differ)
        raise ConfigError(
            f"--ckpt_path {path}: the checkpoint was trained with other model options: {detail}; a fit from a "
            "checkpoint goes on with the checkpoint's sweep: drop those options (or pass the config it was "
            "trained with), or start a new fit without --ckpt_path"
        )
