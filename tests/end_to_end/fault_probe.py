"""Test-only faults for real runs: a disk that fills up at a chosen save, a write that fails on chosen processes.

Used from the command line (``PYTHONPATH=tests/end_to_end``), e.g.
``--trainer.plugins fault_probe.FullDiskAt --trainer.plugins.step 30``.
"""

from __future__ import annotations

import errno
import io
import os

import torch
from lightning.pytorch.callbacks import Callback

from lit_linear.runs.atomic import atomic_open
from lit_linear.runs.checkpoint_io import AtomicCheckpointIO


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class FullDiskAt(AtomicCheckpointIO):
    """The package's checkpoint writer, except that saving ``name`` at ``step`` fails as on a full disk:
    half of the checkpoint's bytes reach the file, then the write raises ENOSPC.

    Args:
        step: the global step of the save that fails.
        name: the checkpoint file whose save fails (``last.ckpt`` or ``best.ckpt``).
    """

    def __init__(self, step: int, name: str = "last.ckpt") -> None:
        super().__init__()
        self.step, self.name = step, name

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if checkpoint["global_step"] != self.step or os.path.basename(path) != self.name:
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        with atomic_open(path, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            raise disk_full()


class FailingWriteAt(Callback):
    """Raises ENOSPC, as a write of this process's own would, at the end of the batch that reaches ``step``,
    on the processes ``ranks`` only (every process when None).

    Args:
        step: the SGD step.
        ranks: the global ranks that fail.
    """

    def __init__(self, step: int, ranks: list[int] | None = None) -> None:
        self.step, self.ranks = step, ranks

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step and (self.ranks is None or trainer.global_rank in self.ranks):
            raise disk_full()


class FillDiskAt(Callback):
    """Fills the file system of the run folder at the end of the batch that reaches ``step`` (rank 0), with
    a file ``filler`` there: from then on every write to it fails, as the kernel says, with ENOSPC.

    Args:
        step: the SGD step.
    """

    def __init__(self, step: int) -> None:
        self.step, self._done = step, False

    def on_train_batch_end(self, trainer, *args) -> None:
        if self._done or trainer.global_step < self.step or not trainer.is_global_zero:
            return
        self._done = True
        with open(os.path.join(trainer.default_root_dir, "filler"), "wb", buffering=0) as f:
            for size in (1 << 20, 4096, 1):
                try:
                    while f.write(b"\0" * size):
                        pass
                except OSError:  # full at this size: go on with smaller writes
                    pass
