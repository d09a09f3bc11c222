"""``python train.py ARGS`` as a real process that starts without importing Lightning again.

Most of a launched run's time was the interpreter importing torch and Lightning, seconds for every
process the tests start. Here a fork server (:mod:`multiprocessing`'s ``forkserver``, a clean process
that has imported the package and run nothing) forks one process for each run. That process is a real
one, with its own pid and session (``start_new_session``), signals, file descriptors and exit
status; it runs ``train.py`` as ``__main__`` with the run's ``sys.argv``, environment and working
folder, and ends as the interpreter would: non-daemon threads joined, ``atexit`` handlers run, the
exit status of ``sys.exit`` or of the signal that killed it. The device processes Lightning's
launcher starts from it are fresh interpreters, as in any run, and so is ``torchrun``'s test.

:class:`ForkedRun` has the part of :class:`subprocess.Popen`'s interface the tests use.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing import reduction
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "train.py"

_context = multiprocessing.get_context("forkserver")
# Imported once by the server; every forked run finds them loaded.
_context.set_forkserver_preload(["lit_linear.cli.linear_cli", "forked_cli"])
_started: list[ForkedRun] = []


def start_server() -> None:
    """Start the fork server now, so that its imports overlap with whatever runs before the first launch."""
    from multiprocessing import forkserver

    forkserver.ensure_running()


def end_every_run() -> None:
    """Kill whatever is left of every run started here (a test that failed half-way leaves its run going, and
    multiprocessing would wait for it when this interpreter exits)."""
    for run in _started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.pid, signal.SIGKILL)
        run._process.join(10)
    _started.clear()


class _Fd:
    """A file descriptor sent to the forked process (over the server's socket, as multiprocessing sends pipes)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self):
        return _received_fd, (reduction.DupFd(self.fd),)


def _received_fd(dup) -> int:
    return dup.detach()


def _run(args: list[str], env: dict[str, str], cwd: str, stdout: int, stderr: int) -> None:
    """The forked process: become ``python train.py ARGS`` and end as it would (``stdout`` and ``stderr`` are
    the descriptors received for them)."""
    os.setsid()
    for target, fd in ((1, stdout), (2, stderr)):
        os.dup2(fd, target)
        os.close(fd)
    for stream in (sys.stdout, sys.stderr):  # each line reaches the pipe at once, as under PYTHONUNBUFFERED
        stream.reconfigure(line_buffering=True)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [str(SCRIPT.parent), *extra, *(p for p in sys.path if p not in ("", str(SCRIPT.parent)))]
    sys.argv = [str(SCRIPT), *args]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 0
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    except SystemExit as exit_info:
        if exit_info.code is None or isinstance(exit_info.code, int):
            code = exit_info.code or 0
        else:
            print(exit_info.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    threading._shutdown()  # the interpreter's own order at exit: threads, then atexit
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if code < 0:  # as CPython does for an uncaught KeyboardInterrupt: die by the signal
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


class ForkedRun:
    """A forked ``python train.py ARGS``, used as a :class:`subprocess.Popen` of it.

    Args:
        args: the command line after ``train.py``.
        env: the whole environment of the run.
        cwd: its working folder.
        stdout: ``subprocess.PIPE`` or ``subprocess.DEVNULL``.
        stderr: ``subprocess.PIPE``, ``subprocess.STDOUT`` or ``subprocess.DEVNULL``.
    """

    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path, stdout: int, stderr: int) -> None:
        self.args = [sys.executable, str(SCRIPT), *args]
        self.returncode: int | None = None
        ends, keep, self._chunks, self._readers = {}, [], {}, []
        devnull = os.open(os.devnull, os.O_WRONLY)
        keep.append(devnull)
        for name, how in (("stdout", stdout), ("stderr", stderr)):
            if how == subprocess.PIPE:
                read, write = os.pipe()
                keep.append(write)
                ends[name] = write
                self._chunks[name] = []
                reader = threading.Thread(target=self._read, args=(read, self._chunks[name]), daemon=True)
                self._readers.append(reader)
            elif how == subprocess.STDOUT and name == "stderr":
                ends[name] = ends["stdout"]
            else:
                ends[name] = devnull
        self._process = _context.Process(
            target=_run, args=(args, env, str(cwd), _Fd(ends["stdout"]), _Fd(ends["stderr"])), daemon=False
        )
        try:
            self._process.start()
        finally:
            for fd in keep:  # the forked process holds its own copies now
                os.close(fd)
        for reader in self._readers:
            reader.start()
        self.pid = self._process.pid
        _started.append(self)

    @staticmethod
    def _read(fd: int, chunks: list[bytes]) -> None:
        with open(fd, "rb", closefd=True) as pipe:
            while data := pipe.read1(65536):
                chunks.append(data)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def poll(self) -> int | None:
        if self.returncode is None and self._process.exitcode is not None:
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        """Wait for the end of the output (every process holding the pipes has closed them, as with
        :meth:`subprocess.Popen.communicate`) and of the process; returns ``(stdout, stderr)`` as text."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for reader in self._readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        out, err = (b"".join(self._chunks[n]).decode() if n in self._chunks else None for n in ("stdout", "stderr"))
        return out, err
