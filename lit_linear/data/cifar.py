"""CIFAR-10/100 files in the official Python layout -> uint8 image rows and int64 labels.

No Lightning here. The official archives unpack to ``cifar-10-batches-py/`` (``data_batch_1..5``,
``test_batch``, ``batches.meta``) and ``cifar-100-python/`` (``train``, ``test``, ``meta``; fine
labels). Each batch file is a pickle of a dict whose ``data`` is an ``(N, 3072)`` uint8 array,
one image per row: 1024 red, then 1024 green, then 1024 blue values, row-major.
Every fault is reported as a :class:`~lit_linear.errors.DataError` that names the file.

The pickles are read by an unpickler that only resolves the numpy (and codec) names that array
data needs, so a damaged or foreign file fails with a message instead of importing or running
whatever it names.
"""

from __future__ import annotations

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lit_linear.errors import DataError

PIXELS = 3 * 32 * 32  # 3072 values per image row

CIFAR10_CLASSES = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())
CIFAR100_CLASSES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
    "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile "
    "cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp "
    "lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom "
    "oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine "
    "possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake "
    "spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor "
    "train trout tulip turtle wardrobe whale willow_tree wolf woman worm".split()
)

DatasetName = Literal["cifar10", "cifar100"]


@dataclass(frozen=True)
class CIFARSpec:
    """Where one CIFAR variant keeps what, in its official Python layout."""

    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def all_files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)


SPECS: dict[str, CIFARSpec] = {
    "cifar10": CIFARSpec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        class_names=CIFAR10_CLASSES,
    ),
    "cifar100": CIFARSpec(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        class_names=CIFAR100_CLASSES,
    ),
}


def get_spec(dataset: str) -> CIFARSpec:
    """The spec of ``dataset`` (``cifar10`` or ``cifar100``); a :class:`DataError` for any other name."""
    try:
        return SPECS[dataset]
    except KeyError:
        raise DataError(f"unknown dataset {dataset!r}; valid: {', '.join(SPECS)}") from None


def find_folder(data_dir: str | Path, spec: CIFARSpec) -> Path | None:
    """The batches folder under ``data_dir`` (or ``data_dir`` itself if it is one), else None."""
    data_dir = Path(data_dir)
    for candidate in (data_dir / spec.folder, data_dir):
        if all((candidate / name).is_file() for name in spec.all_files):
            return candidate
    return None


def incomplete_folder(data_dir: str | Path, spec: CIFARSpec) -> tuple[Path, list[str]] | None:
    """A folder where :func:`find_folder` looks that holds some, but not all, of the dataset's files.

    Returns the folder and the names it lacks, else None. Such a copy (an interrupted unpack, a
    deleted batch) is reported rather than downloaded over: a present copy is never replaced.
    ``data_dir`` itself counts only when it has the official folder name, because CIFAR-100's file
    names (``train``, ``test``, ``meta``) are too generic to identify an arbitrary folder.
    """
    data_dir = Path(data_dir)
    candidates = (data_dir / spec.folder, data_dir) if data_dir.name == spec.folder else (data_dir / spec.folder,)
    for candidate in candidates:
        missing = [name for name in spec.all_files if not (candidate / name).is_file()]
        if 0 < len(missing) < len(spec.all_files):
            return candidate, missing
    return None


def download(data_dir: str | Path, spec: CIFARSpec) -> None:
    """Fetch and unpack the official archive into ``data_dir``, verifying its MD5.

    Uses torchvision's download-and-verify helper and the URL and checksum torchvision keeps for
    its own CIFAR datasets (read when called, so tests can point them at a local server).
    A failed download, a checksum mismatch or a broken archive is a :class:`DataError`.
    """
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive

    source = CIFAR10 if spec.folder == SPECS["cifar10"].folder else CIFAR100
    try:
        download_and_extract_archive(source.url, str(data_dir), filename=source.filename, md5=source.tgz_md5)
    except (OSError, RuntimeError, tarfile.TarError) as e:
        # torchvision raises RuntimeError("File not found or corrupted.") when the MD5 differs,
        # urllib raises URLError (an OSError) when the server cannot be reached.
        raise DataError(
            f"downloading {spec.title} from {source.url} into {data_dir} failed ({type(e).__name__}: {e}); "
            f"the archive must match MD5 {source.tgz_md5}. Check the connection, or unpack {source.filename} "
            f"yourself and point --data.data_dir at the folder that holds {spec.folder}/"
        ) from e


# The globals a CIFAR pickle may name: numpy's array, dtype and scalar reconstructors under their
# numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) names, and the codec that Python 3 uses
# to store bytes at protocol 2. Anything else is not CIFAR data, and resolving it could run code.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


class _CIFARUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR file never contains")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """The dict pickled in ``path``, with bytes keys decoded to str."""
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the `with` below, apart from open's own errors)
    except OSError as e:
        raise DataError(f"{path}: cannot open: {e.strerror or e}") from e
    try:
        with f:
            # latin1 reads both the original (Python 2) release and Python 3 re-encodes.
            obj = _CIFARUnpickler(f, encoding="latin1").load()
    except Exception as e:
        # A damaged pickle can fail in almost any way (EOFError, UnpicklingError, ValueError, numpy's
        # own errors, MemoryError for a garbled length...): all of them are the file's fault.
        raise DataError(
            f"{path}: not a readable CIFAR pickle (truncated or corrupted?): {type(e).__name__}: {e}"
        ) from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    # Python 3 re-encodes of a file loaded with encoding="bytes" (a common recipe) have bytes keys
    # (b"data", b"labels"); the original Python 2 release, read as latin1, has str keys.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(obj: dict, key: str, path: Path):
    if key not in obj:
        raise DataError(f"{path}: missing key {key!r} (keys present: {sorted(map(str, obj))})")
    return obj[key]


def load_class_names(folder: Path, spec: CIFARSpec) -> list[str]:
    """Class names from the meta file; their count must be the dataset's class count."""
    path = folder / spec.meta_file
    names = _field(_unpickle(path), spec.names_key, path)
    if not isinstance(names, (list, tuple, np.ndarray)) or getattr(names, "ndim", 1) != 1:
        raise DataError(f"{path}: {spec.names_key!r} should be a list of class names, found {type(names).__name__}")
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    if len(names) != spec.num_classes:
        raise DataError(
            f"{path}: lists {len(names)} class names, but {spec.title} has {spec.num_classes} classes "
            f"(is this the right folder for --data.dataset?)"
        )
    return names


def load_batch(path: Path, spec: CIFARSpec) -> tuple[Tensor, Tensor]:
    """One batch file -> ``images (N, 3072) uint8`` and ``labels (N,) int64``, both validated."""
    obj = _unpickle(path)
    data = _field(obj, "data", path)
    labels = _field(obj, spec.label_key, path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"{path}: 'data' is {dtype} with shape {shape}; expected uint8 rows of shape (N, {PIXELS})")
    try:
        labels = np.asarray(labels)
    except (TypeError, ValueError, OverflowError) as e:
        raise DataError(f"{path}: {spec.label_key!r} is not a list of integers: {e}") from e
    # Reject floats, strings and objects rather than let a cast truncate them into valid labels.
    if labels.dtype.kind not in "iu" and labels.size:
        raise DataError(f"{path}: {spec.label_key!r} holds {labels.dtype} values; expected integer class labels")
    labels = labels.astype(np.int64)  # uint64 beyond int64 wraps negative and is caught below
    if labels.shape != (data.shape[0],):
        raise DataError(
            f"{path}: {spec.label_key!r} has shape {labels.shape}, expected ({data.shape[0]},): one label per image"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= spec.num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{path}: label {int(labels[i])} at row {i} is outside [0, {spec.num_classes}) for {spec.title} "
            f"({bad.size} such labels)"
        )
    data = np.ascontiguousarray(data)
    if not data.flags.writeable:  # e.g. a protocol-5 buffer; torch.from_numpy warns on read-only arrays
        data = data.copy()
    return torch.from_numpy(data), torch.from_numpy(labels)


def load_split(folder: Path, spec: CIFARSpec, split: Literal["train", "test"]) -> tuple[Tensor, Tensor]:
    """All batch files of a split, concatenated in file order: ``(N, 3072) uint8``, ``(N,) int64``."""
    files = spec.train_files if split == "train" else spec.test_files
    parts = [load_batch(folder / name, spec) for name in files]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
