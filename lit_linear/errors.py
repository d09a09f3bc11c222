"""The errors lit_linear raises for things a user can fix: a bad option, bad data, a failed sweep.

The CLI prints them as one ``error: ...`` line and exits non-zero; anything else keeps its traceback.
"""

from __future__ import annotations

import errno
import os
from typing import Any


class LitLinearError(Exception):
    """Base class: a problem the user can fix, explained by its message."""


class ConfigError(LitLinearError, ValueError):
    """An option has an invalid value. The message names the option and what would be valid."""


def is_count(value: Any) -> bool:
    """A positive int (not a bool): a count of steps, images, configs."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_count(value: Any, option: str, what: str = "integer") -> int:
    """``value`` if it is a positive int; else a ConfigError: ``OPTION must be a positive WHAT, got VALUE``."""
    if not is_count(value):
        raise ConfigError(f"{option} must be a positive {what}, got {value!r}")
    return value


class DataError(LitLinearError):
    """A data file or folder is missing or malformed. The message names the file and the fault."""


class SweepDivergedError(LitLinearError):
    """Every config of the sweep diverged, so there is no model to keep."""


class StorageError(LitLinearError):
    """A file could not be written: a full disk, a read-only folder, a missing permission.

    The message names the file, the OS error and what to do; the file's previous version, if any,
    is intact (every file lit_linear writes is replaced atomically, :mod:`lit_linear.runs.atomic`).

    Args:
        path: the file that could not be written (None: not known).
        error: the OS error.
    """

    def __init__(self, path: str | None, error: OSError) -> None:
        self.path, self.error = path, error
        super().__init__(describe_storage_fault(error, path))


# OS errors that say the file system refused a write: the environment is at fault, not the program.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def is_storage_fault(error: BaseException) -> bool:
    """Whether ``error`` is an OS error of :data:`STORAGE_ERRNOS` or a :class:`StorageError`."""
    return isinstance(error, StorageError) or (isinstance(error, OSError) and error.errno in STORAGE_ERRNOS)


def describe_storage_fault(error: OSError, path: str | None = None) -> str:
    """``cannot write FILE: REASON (ERRNO); WHAT TO DO`` for an OS error that refused a write."""
    path = path or error.filename
    where = f"cannot write {path}" if path else "cannot write a file of this run"
    code = errno.errorcode.get(error.errno, "") if error.errno is not None else ""
    reason = f"{error.strerror or error} ({code})" if code else str(error.strerror or error)
    folder = os.path.dirname(os.path.abspath(path)) if path else "the run folder"
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = f"free space on the disk of {folder} (or set --trainer.default_root_dir to a disk with room)"
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = f"make {folder} writable (or set --trainer.default_root_dir to a writable folder)"
    else:
        fix = f"check {folder}"
    return f"{where}: {reason}; {fix}"
