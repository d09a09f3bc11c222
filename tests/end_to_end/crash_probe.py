"""Test-only callbacks for resume tests: a real signal at a chosen step, and a log of the minibatch rows.

Used from the command line (``PYTHONPATH=tests/end_to_end``), e.g.
``--trainer.callbacks+=crash_probe.SignalAt --trainer.callbacks.step=30 --trainer.callbacks.signal=SIGKILL``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal as signals

from lightning.pytorch.callbacks import Callback

from lit_linear.callbacks.checkpoints import LastCheckpoint


class SignalAt(Callback):
    """Sends this process ``signal`` once, at the end of the training batch that reaches ``step``.

    Runs before the checkpoint callbacks (Lightning puts those last), so a SIGKILL here lands
    before any save due at that step: the run on disk is the last save before it.

    Args:
        step: the SGD step at which to send it.
        signal: ``SIGKILL`` (a crash), ``SIGINT`` (Ctrl-C) or ``SIGTERM`` (a scheduler).
        rank: the global rank that sends it to itself (None: every process), as ``timeout`` or ``kill``
            reach the process the user started, or one process of a job fails alone.
    """

    def __init__(self, step: int, signal: str = "SIGKILL", rank: int | None = None) -> None:
        self.step, self.signal, self.rank, self._sent = step, signal, rank, False

    def on_train_batch_end(self, trainer, *args) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if not self._sent and trainer.global_step >= self.step:
            self._sent = True
            os.kill(os.getpid(), getattr(signals, self.signal))


class RowLog(Callback):
    """Appends ``{"step": first SGD step of the batch, "rows": [[...], ...]}`` per training batch to ``path``.

    Args:
        path: a JSON-lines file, appended to (flushed per batch, so a killed run keeps what it logged).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": trainer.global_step, "rows": batch.index.tolist()}) + "\n")


class CopyLastAt(Callback):
    """Copies ``last.ckpt`` to ``path`` once it holds ``step`` (at the start of the next batch, on rank 0):
    a mid-fit checkpoint as a crash right after that save would leave it.

    Args:
        step: the SGD step of the save to copy.
        path: where the copy goes.
    """

    def __init__(self, step: int, path: str) -> None:
        self.step, self.path = step, path

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero:
            (last,) = [cb for cb in trainer.callbacks if isinstance(cb, LastCheckpoint)]
            shutil.copyfile(last.last_model_path, self.path)
