"""Atomic file writes: a crash or a full disk mid-write leaves the earlier file intact, never half a file.

Every file is written to a temporary name in its own folder, flushed and fsynced, then renamed
over its final name (``os.replace``, atomic on POSIX), as torch's distributed checkpoint writer and
Orbax do; the folder is fsynced too, so that the rename survives a power cut. On any failure the
temporary file is removed and the final name still holds the previous file, if there was one. An
OS error is raised as :class:`~lit_linear.errors.StorageError`, which names the file.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import torch

from lit_linear.errors import StorageError


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit flush, fsync and rename it over ``path``.

    Args:
        path: the file to write.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        kwargs: passed to :func:`open` (``encoding``, ``newline``).

    Raises:
        StorageError: the folder refused the write (full disk, read-only, no permission).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(directory)
    except OSError as error:
        raise StorageError(path, error) from error
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_folder(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, atomically.

    Serialized in memory first: torch's zip writer reports a failed write as a RuntimeError
    without the OS error, while a plain write of the bytes raises the OSError that says why.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())
