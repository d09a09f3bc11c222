"""How a run ends when something goes wrong: one line and an exit status, and never a wait on a process that left.

The rules, for one process and for several:

- An exception's own path runs no collective. Lightning calls ``on_exception`` on each process
  separately, and a process that failed alone never joins a collective the others enter, so a
  save or a gather there could wait forever (:class:`~lit_linear.callbacks.checkpoints.LastCheckpoint`
  keeps its last good file instead). The failing process leaves at once; the others notice at
  their next collective (at most one batch of steps away: :class:`~lit_linear.callbacks.interrupts.GracefulStop`
  agrees once per batch), through the closed connection, and leave too.
- A process leaves its process group before it exits, on a fault and at a normal end alike: gloo
  aborts a process that exits with connections to a peer that has gone.
- A fault of the environment (a full disk, a read-only folder, a missing permission) is one
  ``error:`` line naming the file, the OS error and what to do; a process that stops because
  another one left says so in one line; a bug keeps its traceback.
- A stop asked by a signal exits with 128 + its number. A process that Lightning's launcher
  started for a device leaves after the launching process: Lightning's launcher kills the
  launching process (SIGKILL) as soon as one of its children exits with a non-zero status, which
  would cut short its last writes and replace its exit status with the kill's.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import time

import torch.distributed as dist
from lightning.fabric.utilities.exceptions import MisconfigurationException

from lit_linear.errors import ConfigError, LitLinearError, StorageError, describe_storage_fault, is_storage_fault

# Set by the process the user started, inherited by the processes Lightning's launcher starts.
LAUNCHER_PID = "LIT_LINEAR_LAUNCHER_PID"

# What gloo and the TCP transport say when a peer's connection is gone.
LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def mark_launcher() -> None:
    """Record this process as the launcher of any device processes Lightning starts from it."""
    if "LOCAL_RANK" not in os.environ:
        os.environ[LAUNCHER_PID] = str(os.getpid())


def _root_cause(error: BaseException) -> BaseException:
    """The first storage fault among ``error`` and the exceptions it was raised while handling, else ``error``.

    A full disk fails the save, and then often the loggers' final flush in Lightning's exception
    path: the earliest fault is the one to report.
    """
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    storage = [e for e in chain if is_storage_fault(e)]
    if not storage:
        return chain[0]
    first = storage[-1]
    # A StorageError is raised from its OSError, and it names the file.
    wrapper = next((e for e in storage if isinstance(e, StorageError) and e.error is first), None)
    return wrapper or first


def is_lost_peer(error: BaseException) -> bool:
    """Whether ``error`` says that another process of the job has gone."""
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(marker in str(error) for marker in LOST_PEER)
    )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def ending(error: BaseException, subcommand: str | None) -> tuple[int, str] | None:
    """The exit status and the one line for ``error``, or None for a bug (it keeps its traceback)."""
    cause = _root_cause(error)
    if is_storage_fault(cause):
        message = str(cause) if isinstance(cause, StorageError) else describe_storage_fault(cause)
        resume = "then resume with --ckpt_path last" if subcommand == "fit" else f"then run {subcommand} again"
        return 1, f"error: {message}; {resume}"
    if isinstance(error, LitLinearError):
        return (2 if isinstance(error, ConfigError) else 1), f"error: {_one_line(error)}"
    if isinstance(error, MisconfigurationException):  # Lightning's refusal of a setting, found once the run started
        return 2, f"error: {_one_line(error)}"
    if is_lost_peer(error):
        rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "?"))
        said = next((marker for marker in LOST_PEER if marker in str(error)), type(error).__name__)
        return 1, f"process {rank} stopped: another process of this job has ended ({said})"
    return None


_leaves_at_exit = False  # leave_process_group is registered to run at exit


def leave_process_group_at_exit() -> None:
    """Leave the process group when this process exits, whatever way it exits normally.

    Lightning does so for NCCL only. Left to the interpreter's teardown, gloo's process group
    aborts the process (SIGABRT, "terminate called without an active exception") when its peer
    has already closed the connections, which the process that exits last finds: a job whose
    processes all finished then fails, and under torchrun the other node's agent waits minutes
    for this one at its exit barrier.
    """
    global _leaves_at_exit
    if not _leaves_at_exit and dist.is_available() and dist.is_initialized():
        atexit.register(leave_process_group)
        _leaves_at_exit = True


def leave_process_group() -> None:
    """Leave the process group, if any, so that this process can exit at once (see the module's doc)."""
    if dist.is_available() and dist.is_initialized():
        # A group whose peers have gone may refuse; exiting is all that is left to do.
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def wait_for_launcher(timeout: float = 60.0) -> None:
    """In a device process started by Lightning's launcher, wait (at most ``timeout`` s) until the launching
    process has exited."""
    launcher = os.environ.get(LAUNCHER_PID)
    if "LOCAL_RANK" not in os.environ or launcher is None or str(os.getppid()) != launcher:
        return
    deadline = time.monotonic() + timeout
    while str(os.getppid()) == launcher and time.monotonic() < deadline:
        time.sleep(0.05)


def exit_now(status: int, line: str | None = None) -> None:
    """Print ``line`` (to stderr) and leave with ``status``, having left the process group."""
    if line:
        print(line, file=sys.stderr, flush=True)
    leave_process_group()
    sys.exit(status)
