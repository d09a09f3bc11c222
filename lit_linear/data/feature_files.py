"""Feature files: one split of user features ``(N, D)`` and labels ``(N,)`` read from ``.npy`` or ``.pt`` files.

Every fault a user can make in such a file is one :class:`DataError` line that names the file, what is wrong and
what would be valid. Nothing in a file may run code: ``.npy`` files load with ``allow_pickle=False`` and ``.pt``
files with ``weights_only=True``. Large feature files are memory-mapped, so a split is never read whole to check it
or to measure its statistics: both walk it in chunks of rows.
"""

from __future__ import annotations

import mmap as mmap_module
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lit_linear.errors import ConfigError, DataError

SUFFIXES = (".npy", ".pt")
FEATURE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
SCAN_BYTES = 16 << 20  # how much of a mapped split the NaN scan reads at a time (bounds its temporaries)
NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors with == is elementwise, not a bool
class FeatureSplit:
    """One split of a feature data set.

    Attributes:
        features: ``(N, D)`` float tensor; when ``mapped``, a read-only view of the file (never write to it).
        labels: ``(N,)`` int64 class indices, read whole.
        path: the features file.
        labels_path: the labels file.
        name: the split's name in messages (``train``, ``val``, ...).
        mapped: whether ``features`` is memory-mapped rather than read into memory.
        mapping: the map of a mapped ``.npy`` file, whose pages :meth:`release` gives back.
    """

    features: Tensor
    labels: Tensor
    path: str
    labels_path: str
    name: str
    mapped: bool
    mapping: mmap_module.mmap | None = field(default=None, repr=False)

    def release(self) -> None:
        """Give back the pages of the file read so far: a mapped split read in full (its statistics, a long fit)
        would otherwise stay resident, counted in the process's memory, although the file is the copy."""
        if self.mapping is not None:
            self.mapping.madvise(mmap_module.MADV_DONTNEED)

    @property
    def num_rows(self) -> int:
        """N, the number of examples."""
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        """D, the number of features per example."""
        return self.features.shape[1]


def _reason(error: BaseException) -> str:
    """The first line of an exception's message, short enough for a one-line error."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _read_npy(path: Path, what: str, mapped: bool) -> tuple[np.ndarray, mmap_module.mmap | None]:
    try:
        with open(path, "rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:  # numpy would call any other file "pickled data"
                raise ValueError("it does not start with the .npy magic bytes")
        array = np.load(path, mmap_mode="r" if mapped else None, allow_pickle=False)
        if not mapped or array.dtype.hasobject:
            return array, None
        # Mapped again with Python's mmap, whose madvise lets FeatureSplit.release give pages back.
        with open(path, "rb") as f:
            mapping = mmap_module.mmap(f.fileno(), 0, access=mmap_module.ACCESS_READ)
        order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
        view = np.frombuffer(mapping, dtype=array.dtype, count=array.size, offset=array.offset)
        return view.reshape(array.shape, order=order), mapping
    except (ValueError, EOFError, OSError) as error:
        if "allow_pickle" in str(error) or "Python objects" in str(error):  # an object array, mapped or not
            raise DataError(
                f"{what} {path} holds Python objects that need pickle to load, and pickle is never allowed; "
                "save a numeric array with numpy.save"
            ) from None
        raise DataError(f"{what} {path} is truncated or unreadable: {_reason(error)}") from None


def _read_pt(path: Path, what: str, mapped: bool) -> Tensor:
    try:
        value = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
    except Exception as error:  # a corrupt file fails in many ways (RuntimeError, KeyError, BadZipFile, ...)
        # weights_only refuses every global it does not know before running it; a file that is not a whole zip
        # archive (torch.save's format) fails the same way, so only an intact archive counts as unsafe content.
        if isinstance(error, pickle.UnpicklingError) and zipfile.is_zipfile(path):
            found = re.search(r"GLOBAL (\S+)", str(error))
            held = f" ({found.group(1)})" if found else ""
            raise DataError(
                f"{what} {path} holds Python objects{held} that weights_only loading refuses, so nothing in it may "
                "run; it must hold one tensor, saved with torch.save(tensor, path)"
            ) from error
        raise DataError(f"{what} {path} is truncated or unreadable: {_reason(error)}") from error
    if not isinstance(value, Tensor):
        kind = type(value).__name__
        held = f"a {kind} with keys {sorted(map(str, value))[:5]}" if isinstance(value, dict) else f"a {kind}"
        raise DataError(f"{what} {path} holds {held}; it must hold one tensor, saved with torch.save(tensor, path)")
    return value


def _read(
    path: str | os.PathLike, what: str, mapped: bool, numpy_dtype_ok, dtype_text: str
) -> tuple[Tensor, mmap_module.mmap | None]:
    """The tensor a ``.npy`` or ``.pt`` file holds, and the map of a mapped ``.npy``; ``numpy_dtype_ok`` screens a
    ``.npy``'s dtype before torch sees it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {path} not found; give a .npy or .pt file")
    if path.is_dir():
        raise DataError(f"{what} {path} is a folder; give a .npy or .pt file")
    if path.suffix not in SUFFIXES:
        raise DataError(f"{what} {path} has the extension {path.suffix or '(none)'!r}; give a .npy or .pt file")
    if path.suffix == ".pt":
        return _read_pt(path, what, mapped), None
    array, mapping = _read_npy(path, what, mapped)
    if not numpy_dtype_ok(array.dtype):  # e.g. float128 or strings, which torch.from_numpy cannot take
        raise DataError(f"{what} {path} has dtype {array.dtype}; expected {dtype_text}")
    if not array.dtype.isnative:  # torch has no byte-swapped tensors
        raise DataError(f"{what} {path} has byte order {array.dtype.str}; save it in the machine's native byte order")
    with warnings.catch_warnings():  # a mapped array is read-only on purpose: FeatureSplit says not to write it
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array), mapping


def first_nonfinite_row(
    features: Tensor, *, chunk_rows: int | None = None, release: Callable[[], None] | None = None
) -> int | None:
    """Index of the first row of ``features (N, D)`` holding a NaN or infinity, or None.

    ``chunk_rows``: scan that many rows at a time (a mapped split: memory stays bounded); None: one vectorized check.
    ``release``: called after each chunk (:meth:`FeatureSplit.release`).
    """
    step = features.shape[0] if chunk_rows is None else chunk_rows
    for start in range(0, features.shape[0], max(step, 1)):
        bad = (~torch.isfinite(features[start : start + step]).all(dim=1)).nonzero()
        if release is not None:
            release()
        if len(bad):
            return start + int(bad[0, 0])
    return None


def load_split(
    features_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    *,
    name: str,
    mmap: bool | None = None,
    mmap_threshold: int = 1 << 30,
    scan_bytes: int = SCAN_BYTES,
) -> FeatureSplit:
    """Read and check one split: features ``(N, D)`` and labels ``(N,)``.

    Args:
        features_path, labels_path: ``.npy`` (``numpy.save``) or ``.pt`` (``torch.save`` of one tensor) files.
        name: the split's name in messages.
        mmap: memory-map the features; None: when the features file is larger than ``mmap_threshold`` bytes.
        scan_bytes: how much of a mapped split the NaN scan reads at a time.

    Raises:
        DataError: a file missing, unreadable or of the wrong shape, dtype or content (one line naming the file).
    """
    what, label_what = f"{name} features", f"{name} labels"
    path = Path(features_path)
    mapped = (path.is_file() and path.stat().st_size > mmap_threshold) if mmap is None else bool(mmap)
    features, mapping = _read(
        path, what, mapped, lambda d: d.kind == "f" and d.itemsize <= 8, "float16, float32 or float64"
    )
    if features.dtype not in FEATURE_DTYPES:
        raise DataError(f"{what} {path} has dtype {features.dtype}; expected float16, float32, float64 or bfloat16")
    if features.ndim != 2:
        raise DataError(f"{what} {path} has shape {tuple(features.shape)}; expected (N, D): one row per example")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise DataError(f"{what} {path} is empty: shape {tuple(features.shape)}; expected N >= 1 and D >= 1")

    lpath = Path(labels_path)
    labels, _ = _read(lpath, label_what, False, lambda d: d.kind in "iu", "integer class indices")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise DataError(f"{label_what} {lpath} has dtype {labels.dtype}; expected integer class indices")
    if labels.ndim != 1:
        raise DataError(f"{label_what} {lpath} has shape {tuple(labels.shape)}; expected (N,): one label per row")
    if labels.shape[0] != features.shape[0]:
        raise DataError(
            f"{label_what} {lpath} has {labels.shape[0]} rows but {what} {path} has {features.shape[0]}; "
            "they need one label per feature row"
        )

    # A mapped split is scanned in slices of about scan_bytes, so checking it never reads it into memory whole.
    chunk = max(1, scan_bytes // (features.shape[1] * features.element_size())) if mapped else None
    split = FeatureSplit(features, labels.to(torch.int64), str(path), str(lpath), name, mapped, mapping)
    row = first_nonfinite_row(features, chunk_rows=chunk, release=split.release)
    if row is not None:
        raise DataError(f"{what} {path} has a NaN or infinite value in row {row}; every feature must be finite")
    return split


def check_labels(split: FeatureSplit, num_classes: int) -> None:
    """Raise DataError when a label of ``split`` is outside ``[0, num_classes)``, naming the first bad row."""
    bad = ((split.labels < 0) | (split.labels >= num_classes)).nonzero()
    if len(bad):
        row = int(bad[0, 0])
        raise DataError(
            f"{split.name} labels {split.labels_path} hold {int(split.labels[row])} in row {row}, out of range "
            f"[0, {num_classes}); labels must be class indices 0 to {num_classes - 1}"
        )


def infer_num_classes(splits: Iterable[FeatureSplit]) -> int:
    """C = the largest label of ``splits`` (the training labels) + 1."""
    splits = list(splits)
    num_classes = max(int(s.labels.max()) for s in splits) + 1
    if num_classes < 1:
        raise DataError(f"{splits[0].name} labels {splits[0].labels_path} are all negative; expected 0, 1, ...")
    return num_classes


def check_same_dim(splits: dict[str, FeatureSplit]) -> None:
    """Raise DataError when two splits have different feature sizes D, naming both files."""
    first, *rest = splits.values()
    for other in rest:
        if other.dim != first.dim:
            raise DataError(
                f"{first.name} features {first.path} have D={first.dim} but {other.name} features {other.path} have "
                f"D={other.dim}; every split needs the same feature size"
            )


def read_class_names(value: list[str] | str | os.PathLike | None, num_classes: int | None) -> list[str]:
    """The C class names: ``value`` as given, read from a text file (one per line), or None: ``"0"`` to ``"C-1"``.

    ``num_classes``: C, which the names must number; None: as many as ``value`` holds."""
    if value is None:
        return [str(c) for c in range(num_classes)]
    source = "data.class_names"
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise DataError(f"data.class_names file {path} not found; give a text file with one name per line")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"data.class_names file {path} is unreadable: {_reason(error)}") from None
        while lines and not lines[-1].strip():  # an editor's trailing blank lines are not names
            lines.pop()
        value, source = [line.strip() for line in lines], f"data.class_names (file {path})"
    names = [str(v) for v in value]
    if num_classes is not None and len(names) != num_classes:
        raise ConfigError(f"{source} has {len(names)} names but there are {num_classes} classes; give {num_classes}")
    return names


def feature_statistics(
    features: Tensor, *, chunk_rows: int, release: Callable[[], None] | None = None
) -> tuple[Tensor, Tensor]:
    """Per-column mean and std ``(D,)`` (float32) of ``features (N, D)``, read ``chunk_rows`` rows at a time.

    Each chunk's mean and sum of squared deviations are merged in float64 (Chan et al.), which stays accurate where
    the sum of squares minus the squared sum would cancel. The std is unbiased (as ``torch.std``); a column whose
    std is below float32's resolution of its mean is constant, and gets std 1 so that standardizing only centers it.
    """
    if features.shape[0] == 0 or chunk_rows < 1:
        raise ValueError(f"need N >= 1 rows and chunk_rows >= 1, got N={features.shape[0]}, chunk_rows={chunk_rows}")
    count, mean = 0, torch.zeros(features.shape[1], dtype=torch.float64)
    m2 = torch.zeros_like(mean)
    for start in range(0, features.shape[0], chunk_rows):
        x = features[start : start + chunk_rows].to(torch.float64)
        n, chunk_mean = x.shape[0], x.mean(dim=0)
        delta = chunk_mean - mean
        total = count + n
        mean += delta * (n / total)
        m2 += ((x - chunk_mean) ** 2).sum(dim=0) + delta**2 * (count * n / total)
        count = total
        if release is not None:
            release()
    std = (m2 / max(count - 1, 1)).sqrt()
    constant = std <= torch.clamp(mean.abs() * torch.finfo(torch.float32).eps, min=torch.finfo(torch.float32).tiny)
    return mean.float(), torch.where(constant, 1.0, std).float()
