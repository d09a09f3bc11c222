"""AtomicCheckpointIO: Lightning's checkpoint writer, made to replace a checkpoint atomically.

Lightning's ``TorchCheckpointIO`` serializes a checkpoint in memory and then writes the bytes onto
the final name: a full disk or a crash during that write leaves a truncated ``best.ckpt`` or
``last.ckpt`` in place of the previous, good one, and ``--ckpt_path best`` would pick it up.
This writer goes through a temporary file in the same folder, fsynced and renamed
(:mod:`lit_linear.runs.atomic`), so that a failed save leaves the previous file as it was.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_linear.runs.atomic import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` whose saves to a local folder are atomic; other file systems are Lightning's."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)


def use_atomic_checkpoints(trainer: pl.Trainer) -> None:
    """Give the trainer an :class:`AtomicCheckpointIO` in place of Lightning's default writer.

    A CheckpointIO the user chose (``--trainer.plugins``) is kept.
    """
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
