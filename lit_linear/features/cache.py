"""The feature cache: features extracted once, kept on disk next to the data, never trusted when stale.

An entry is a folder named by a hash of its key (the extractor's settings, a fingerprint of the images,
a format version). It holds ``features.npy`` (``(N, F)`` float32), ``extractor.pt`` (the extractor's
learned tensors, loaded with ``weights_only``) and ``key.json`` (the key in full). It is written into
a temporary folder and renamed into place, so an entry exists whole or not at all; one that does not
load (truncated, corrupt, another key) is removed and built again.

Processes that share the folder (DDP, several runs) take an exclusive ``fcntl.flock`` to build: one
builds, the others wait on the lock and then load its entry. A builder that dies releases the lock with
its process and the next waiter builds: no collective, and nothing waits on a process that left.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_linear.runs.atomic import atomic_torch_save, atomic_write_text

VERSION = 1  # bumped when what an entry holds changes: older entries are then another key, never read


def fingerprint(*arrays: Tensor | np.ndarray) -> str:
    """A short SHA-256 of the arrays' shapes, dtypes and bytes: which images the features were extracted from."""
    digest = hashlib.sha256()
    for array in arrays:
        data = array.numpy() if isinstance(array, Tensor) else np.asarray(array)
        digest.update(f"{data.shape}{data.dtype}".encode())
        digest.update(np.ascontiguousarray(data).data)
    return digest.hexdigest()[:16]


def entry(folder: str | os.PathLike, key: dict[str, Any]) -> Path:
    """The entry folder of ``key`` under ``folder``: ``<extractor>-<hash of the key>``."""
    text = json.dumps({**key, "version": VERSION}, sort_keys=True)
    return Path(folder) / f"{key.get('extractor', 'features')}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def load(path: Path, key: dict[str, Any], rows: int) -> tuple[Tensor, dict[str, Tensor]] | None:
    """The features ``(rows, F)`` and the extractor's tensors of the entry at ``path``, or None if it is missing,
    holds another key, or does not load whole (it is then removed)."""
    if not path.is_dir():
        return None
    try:
        saved = json.loads((path / "key.json").read_text(encoding="utf-8"))
        if saved != {**key, "version": VERSION}:
            raise ValueError("another key")
        features = np.load(path / "features.npy", allow_pickle=False)
        if features.ndim != 2 or features.shape[0] != rows or not np.isfinite(features).all():
            raise ValueError(f"features of shape {features.shape}")
        state = torch.load(path / "extractor.pt", map_location="cpu", weights_only=True)
        return torch.from_numpy(features), state
    except Exception:  # truncated, corrupt or foreign: never trusted, built again
        shutil.rmtree(path, ignore_errors=True)
        return None


def cached(
    folder: str | os.PathLike,
    key: dict[str, Any],
    rows: int,
    build: Callable[[], tuple[Tensor, dict[str, Tensor]]],
) -> tuple[Tensor, dict[str, Tensor], bool]:
    """``(features (rows, F), extractor tensors, built)``: the entry of ``key``, built by ``build()`` if needed.

    ``build`` returns the features and the extractor's ``state_dict``; ``built`` says whether it ran.
    """
    path = entry(folder, key)
    found = load(path, key, rows)
    if found is not None:
        return (*found, False)
    os.makedirs(folder, exist_ok=True)
    with open(Path(folder) / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when this process closes it, or dies
        try:
            found = load(path, key, rows)  # another process may have built it while this one waited
            if found is not None:
                return (*found, False)
            features, state = build()
            _write(path, key, features, state)
            return features, state, True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write(path: Path, key: dict[str, Any], features: Tensor, state: dict[str, Tensor]) -> None:
    """The entry, written into a temporary folder beside ``path`` and renamed into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        np.save(tmp / "features.npy", features.float().numpy())
        atomic_torch_save({k: v.cpu() for k, v in state.items()}, tmp / "extractor.pt")
        atomic_write_text(tmp / "key.json", json.dumps({**key, "version": VERSION}, sort_keys=True))
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
