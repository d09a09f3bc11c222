"""CIFAR-10/100 files in the official Python layout -> uint8 image rows and int64 labels.

No Lightning here. The official archives unpack to ``cifar-10-batches-py/`` (``data_batch_1..5``,
``test_batch``, ``batches.meta``) and ``cifar-100-python/`` (``train``, ``test``, ``meta``; fine
labels). Each batch file is a pickle of a dict whose ``data`` is an ``(N, 3072)`` uint8 array,
one image per row: 1024 red, then 1024 green, then 1024 blue values, row-major.
Every fault is reported as a :class:`~lit_linear.errors.DataError` that names the file.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lit_linear.errors import DataError

IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32  # 3072 values per image row

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip

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


def download(data_dir: str | Path, spec: CIFARSpec) -> None:
    """Fetch and unpack the official archive into ``data_dir``, verifying its MD5.

    Uses torchvision's download-and-verify helper and the URL and checksum torchvision keeps for
    its own CIFAR datasets.
    """
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive

    source = CIFAR10 if spec.folder == SPECS["cifar10"].folder else CIFAR100
    download_and_extract_archive(source.url, str(data_dir), filename=source.filename, md5=source.tgz_md5)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            # latin1 reads both the original (Python 2) release and Python 3 re-encodes.
            obj = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, MemoryError, OverflowError, UnicodeDecodeError) as e:  # fmt: skip
        raise DataError(f"{path}: not a readable CIFAR pickle (truncated or corrupted?): {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return obj


def _field(obj: dict, key: str, path: Path):
    if key not in obj:
        raise DataError(f"{path}: missing key {key!r} (keys present: {sorted(map(str, obj))})")
    return obj[key]


def load_class_names(folder: Path, spec: CIFARSpec) -> list[str]:
    """Class names from the meta file; their count must be the dataset's class count."""
    path = folder / spec.meta_file
    names = _field(_unpickle(path), spec.names_key, path)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
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
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: {spec.label_key!r} is not a list of integers: {e}") from e
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {spec.label_key!r} has shape {labels.shape}, expected ({data.shape[0]},): one label per image")
    bad = np.flatnonzero((labels < 0) | (labels >= spec.num_classes))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{path}: label {int(labels[i])} at row {i} is outside [0, {spec.num_classes}) for {spec.title} "
            f"({bad.size} such labels)"
        )
    return torch.from_numpy(np.ascontiguousarray(data)), torch.from_numpy(labels)


def load_split(folder: Path, spec: CIFARSpec, split: Literal["train", "test"]) -> tuple[Tensor, Tensor]:
    """All batch files of a split, concatenated in file order: ``(N, 3072) uint8``, ``(N,) int64``."""
    files = spec.train_files if split == "train" else spec.test_files
    parts = [load_batch(folder / name, spec) for name in files]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
