"""GracefulStop: Ctrl-C and SIGTERM end a fit at the end of a batch, validated and saved, on any number of processes.

A scheduler (SLURM, Kubernetes, ``timeout``) asks a job to leave with SIGTERM and kills it a grace
period later; a user asks with Ctrl-C (SIGINT). Either way the fit finishes the batch of steps it is
in (at most :data:`lit_linear.training.grouping.MAX_STEPS_PER_BATCH`), validates, saves ``last.ckpt``, writes
``sweep.json`` and ``best_model.pt``, and the CLI exits with 128 + the signal's number: 130 for
Ctrl-C, 143 for SIGTERM, so that a scheduler can tell a stopped job from a finished one and
requeue it. A second Ctrl-C aborts at once.

The signal handler only records the signal: no collective and no I/O runs inside it. Under DDP
the processes agree at the end of every training batch, with one all-reduce of a scalar (the
largest signal any of them received), so that they all stop at the same step, whichever of them
the signal reached (the launching process alone for ``timeout``, every task on SLURM). That
all-reduce also notices a process that has left: it raises on the others, which then end too.
While it is installed (the whole of training, validations included) it replaces Lightning's own
SIGTERM handler, which broadcasts from inside the handler and raises mid-validation.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGUSR1: "SIGUSR1 (SLURM requeue)"}


class GracefulStop(Callback):
    """Stops a fit on SIGINT or SIGTERM (and SLURM's requeue signal) at the end of the current batch.

    The CLI adds it to every run. After a fit, :attr:`stopped_by` is the signal that stopped it
    (None: it ran to ``max_steps``) and :attr:`exit_status` the status the process should exit with.
    """

    def __init__(self) -> None:
        self.stopped_by: signal.Signals | None = None
        self.stopped_at: int | None = None
        self._received: int = 0  # the signal this process received, 0: none
        self._previous: dict[int, Any] = {}
        self._requeue: Any = None  # Lightning's SLURM requeue handler, run once the stop is complete

    @property
    def exit_status(self) -> int | None:
        """128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM, 138 for SIGUSR1); None: not stopped."""
        return None if self.stopped_by is None else 128 + int(self.stopped_by)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stopped_by, self.stopped_at, self._received = None, None, 0
        if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
            return
        signals = [signal.SIGINT, signal.SIGTERM]
        # Under SLURM, Lightning's SLURMEnvironment(auto_requeue=True) handles SIGUSR1 by saving a checkpoint
        # and requeueing the job, from inside the handler: wherever the signal lands, mid-step included.
        # That handler runs here once the stop is complete instead (on_train_end), at the step all processes stopped at.
        if SLURMEnvironment.detect() and signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None):
            signals.append(signal.SIGUSR1)
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        self._requeue = self._previous.get(signal.SIGUSR1)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self._received == signal.SIGINT:  # pressed twice: stop now, the Lightning way
            self._restore()
            raise KeyboardInterrupt
        self._received = self._received or signum

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        received = self._received
        if trainer.world_size > 1:  # every process stops at the same step, whichever received the signal
            flag = torch.tensor(received, device=trainer.strategy.root_device)
            received = int(trainer.strategy.reduce(flag, reduce_op="max"))
        finished = 0 < trainer.max_steps <= trainer.global_step
        if received and self.stopped_by is None and not finished:
            self.stopped_by, self.stopped_at = signal.Signals(received), trainer.global_step
            trainer.should_stop = True
            again = " (Ctrl-C again to abort)" if received == signal.SIGINT else ""
            rank_zero_info(
                f"\n{NAMES[self.stopped_by]}: stopping at step {trainer.global_step}, then validating and saving{again}"
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()
        if self.stopped_by == signal.SIGUSR1 and callable(self._requeue):
            self._requeue(
                signal.SIGUSR1, None
            )  # every process: Lightning saves hpc_ckpt_<n>.ckpt, rank 0 requeues the job

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
