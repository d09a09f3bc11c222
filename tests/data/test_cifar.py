"""lit_linear.data.cifar: the official CIFAR layouts, the pickle encodings found in the wild, and DataErrors.

Every fault must surface as a DataError that names the file and what is wrong with it.
"""

from __future__ import annotations

import io
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CIFAR10_NAMES, write_cifar10, write_cifar100

from lit_linear.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    PIXELS,
    SPECS,
    find_folder,
    get_spec,
    incomplete_folder,
    load_batch,
    load_class_names,
    load_split,
)
from lit_linear.errors import DataError

C10, C100 = SPECS["cifar10"], SPECS["cifar100"]


# --- writing pickles the way others wrote them ----------------------------------------------------
class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table can be extended
    """Writes ``str`` and ``bytes`` as Python 2 ``str`` (BINSTRING opcodes), as cPickle did for the release."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def py2_dumps(obj) -> bytes:
    """``obj`` pickled as Python 2 + numpy 1 wrote the official release: protocol 2, byte-string keys
    and array data, ``numpy.core.multiarray._reconstruct``."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def dump(path: Path, obj, protocol: int = 4) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, PIXELS), dtype=np.uint8)


def labels(n: int, num_classes: int = 10) -> list[int]:
    return [i % num_classes for i in range(n)]


# --- the official layouts -------------------------------------------------------------------------
def test_cifar10_layout_loads_in_file_order(cifar10_dir):
    folder = find_folder(cifar10_dir, C10)
    assert folder == cifar10_dir / "cifar-10-batches-py"
    assert find_folder(folder, C10) == folder  # pointing at the batches folder itself works too

    x, y = load_split(folder, C10, "train")
    assert x.shape == (300, PIXELS) and x.dtype == torch.uint8
    assert y.shape == (300,) and y.dtype == torch.int64
    expected = [pickle.loads((folder / f"data_batch_{i}").read_bytes()) for i in range(1, 6)]
    assert torch.equal(x, torch.from_numpy(np.concatenate([e["data"] for e in expected])))
    assert y.tolist() == sum((e["labels"] for e in expected), [])

    xt, yt = load_split(folder, C10, "test")
    assert xt.shape == (60, PIXELS) and yt.shape == (60,)
    assert load_class_names(folder, C10) == CIFAR10_NAMES == list(CIFAR10_CLASSES)


def test_cifar100_fine_labels(cifar100_dir):
    folder = find_folder(cifar100_dir, C100)
    assert folder == cifar100_dir / "cifar-100-python"
    assert C100.num_classes == 100
    x, y = load_split(folder, C100, "train")
    assert x.shape == (400, PIXELS) and y.dtype == torch.int64
    fine = pickle.loads((folder / "train").read_bytes())["fine_labels"]
    assert y.tolist() == fine and int(y.max()) > 19  # fine (100), not coarse (20) labels
    assert load_split(folder, C100, "test")[0].shape == (100, PIXELS)
    assert load_class_names(folder, C100) == list(CIFAR100_CLASSES)


def test_find_folder_and_incomplete_folder(tmp_path, cifar10_dir):
    assert find_folder(tmp_path, C10) is None and incomplete_folder(tmp_path, C10) is None
    assert find_folder(cifar10_dir, C100) is None  # a CIFAR-10 folder is not CIFAR-100
    partial = write_cifar10(tmp_path / "p", per_batch=2, num_test=2) / "cifar-10-batches-py"
    (partial / "data_batch_3").unlink()
    assert find_folder(partial.parent, C10) is None
    assert incomplete_folder(partial.parent, C10) == (partial, ["data_batch_3"])
    assert incomplete_folder(partial, C10) == (partial, ["data_batch_3"])


def test_get_spec_unknown():
    with pytest.raises(DataError, match="'mnist'.*cifar10, cifar100"):
        get_spec("mnist")


# --- encodings: Python 2 release, Python 3 re-encodes ---------------------------------------------
def _write_folder(root: Path, dumps) -> tuple[np.ndarray, list[int]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i, name in enumerate([*C10.train_files, *C10.test_files]):
        x, y = images(4, seed=i), labels(4)
        xs.append(x), ys.extend(y)
        batch = {"batch_label": f"batch {i}", "labels": y, "data": x, "filenames": ["a.png"] * 4}
        (folder / name).write_bytes(dumps(batch))
    meta = {"label_names": CIFAR10_NAMES, "num_cases_per_batch": 4, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(dumps(meta))
    return np.concatenate(xs), ys


def test_python2_release_format_loads(tmp_path):
    x, y = _write_folder(tmp_path, py2_dumps)
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    # It really is the Python 2 structure: protocol 2, keys as byte strings, numpy 1 module names.
    assert raw.startswith(b"\x80\x02}") and b"U\x04data" in raw and b"cnumpy.core.multiarray\n_reconstruct" in raw
    folder = find_folder(tmp_path, C10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy.core deprecation noise either
        train_x, train_y = load_split(folder, C10, "train")
        names = load_class_names(folder, C10)
    assert torch.equal(train_x, torch.from_numpy(x[:20])) and train_y.tolist() == y[:20]
    assert names == CIFAR10_NAMES


def test_bytes_keys_and_names_load(tmp_path):
    """Python 3 re-encodes of files read with encoding="bytes" have b"data", b"labels", b"label_names"."""

    def bytes_keys(obj):
        out = {k.encode(): v for k, v in obj.items()}
        if b"label_names" in out:
            out[b"label_names"] = [n.encode() for n in out[b"label_names"]]
        return pickle.dumps(out, protocol=4)

    x, y = _write_folder(tmp_path, bytes_keys)
    folder = find_folder(tmp_path, C10)
    train_x, train_y = load_split(folder, C10, "train")
    assert torch.equal(train_x, torch.from_numpy(x[:20])) and train_y.tolist() == y[:20]
    assert load_class_names(folder, C10) == CIFAR10_NAMES


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("label_kind", ["list", "array", "numpy_scalars"])
def test_python3_protocols_and_label_types(tmp_path, protocol, label_kind):
    x, y = images(6), labels(6)
    stored = {"list": y, "array": np.array(y, dtype=np.uint8), "numpy_scalars": [np.int64(v) for v in y]}[label_kind]
    dump(tmp_path / "b", {"data": np.asfortranarray(x), "labels": stored}, protocol)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch.from_numpy on a read-only buffer
        got_x, got_y = load_batch(tmp_path / "b", C10)
    assert got_x.dtype == torch.uint8 and got_x.is_contiguous() and torch.equal(got_x, torch.from_numpy(x))
    assert got_y.dtype == torch.int64 and got_y.tolist() == y


# --- faults: DataError naming the file and the fault ----------------------------------------------
def _good(n: int = 4) -> dict:
    return {"data": images(n), "labels": labels(n)}


BAD_BATCHES = {
    "not a pickle": (b"this is not a pickle at all", "not a readable CIFAR pickle"),
    "empty": (b"", "not a readable CIFAR pickle"),
    "list, not dict": (pickle.dumps([1, 2, 3]), "expected a pickled dict, found list"),
    "no data key": (pickle.dumps({"labels": [1]}), "missing key 'data'"),
    "no labels key": (pickle.dumps({"data": images(1), "fine_labels": [1]}), "missing key 'labels'"),
    "3071 columns": (pickle.dumps({"data": images(2)[:, :-1], "labels": [0, 1]}), r"shape \(2, 3071\).*\(N, 3072\)"),
    "image-shaped": (
        pickle.dumps({"data": images(2).reshape(2, 3, 32, 32), "labels": [0, 1]}),
        r"shape \(2, 3, 32, 32\)",
    ),
    "float pixels": (pickle.dumps({"data": images(2).astype(np.float32), "labels": [0, 1]}), "float32"),
    "a list of rows": (pickle.dumps({"data": images(2).tolist(), "labels": [0, 1]}), "'data' is list"),
    "label 10": (pickle.dumps({"data": images(3), "labels": [0, 10, 2]}), r"label 10 at row 1 is outside \[0, 10\)"),
    "label -1": (pickle.dumps({"data": images(3), "labels": [0, 1, -1]}), r"label -1 at row 2 is outside"),
    "huge label": (pickle.dumps({"data": images(2), "labels": [0, 2**70]}), "labels"),
    "float labels": (pickle.dumps({"data": images(2), "labels": [0.0, 1.5]}), "float64 values; expected integer"),
    "string labels": (pickle.dumps({"data": images(2), "labels": ["0", "1"]}), "expected integer"),
    "too few labels": (pickle.dumps({"data": images(3), "labels": [0, 1]}), r"shape \(2,\), expected \(3,\)"),
    "labels not a list": (pickle.dumps({"data": images(3), "labels": 7}), r"shape \(\), expected \(3,\)"),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_bad_batch_file_is_a_data_error_naming_it(tmp_path, case):
    blob, fault = BAD_BATCHES[case]
    path = tmp_path / "data_batch_3"
    path.write_bytes(blob)
    with pytest.raises(DataError, match=fault) as info:
        load_batch(path, C10)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.5, 0.99])
@pytest.mark.parametrize("writer", ["py3", "py2"])
def test_truncated_batch_file(tmp_path, fraction, writer):
    blob = (pickle.dumps if writer == "py3" else lambda o, protocol=None: py2_dumps(o))(_good(), protocol=4)
    path = tmp_path / "data_batch_1"
    path.write_bytes(blob[: int(len(blob) * fraction)])
    with pytest.raises(DataError, match="truncated or corrupted") as info:
        load_batch(path, C10)
    assert str(path) in str(info.value)


def test_corrupted_header_bytes(tmp_path):
    """Garbled structure (not pixel values, which no format can check) never escapes as a raw error."""
    blob = pickle.dumps(_good(), protocol=4)
    rng = np.random.default_rng(0)
    path = tmp_path / "data_batch_2"
    for _ in range(200):
        b = bytearray(blob)
        for i in rng.integers(2, 60, size=3):  # the dict/key/global opcodes before the array payload
            b[i] = int(rng.integers(0, 256))
        path.write_bytes(bytes(b))
        try:
            load_batch(path, C10)
        except DataError as e:
            assert str(path) in str(e)


def test_pickle_naming_other_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "data_batch_1"
    dump(path, {"data": Evil(), "labels": [0]})
    with pytest.raises(DataError, match=r"refers to pathlib.*Path.touch.*never contains"):
        load_batch(path, C10)
    assert not marker.exists()


def test_unreadable_file(tmp_path):
    path = tmp_path / "data_batch_1"
    path.mkdir()  # open() fails: a folder where a file should be
    with pytest.raises(DataError, match="cannot open") as info:
        load_batch(path, C10)
    assert str(path) in str(info.value)


def test_meta_class_count_must_match_dataset(tmp_path):
    """A CIFAR-100 meta in a CIFAR-10 folder: the class counts of the files disagree."""
    folder = write_cifar10(tmp_path, per_batch=2, num_test=2) / "cifar-10-batches-py"
    dump(folder / "batches.meta", {"label_names": list(CIFAR100_CLASSES)})
    with pytest.raises(DataError, match=r"batches.meta: lists 100 class names, but CIFAR-10 has 10") as info:
        load_class_names(folder, C10)
    assert str(folder / "batches.meta") in str(info.value)


@pytest.mark.parametrize("names", ["airplane", 10, None])
def test_meta_names_not_a_list(tmp_path, names):
    folder = write_cifar10(tmp_path, per_batch=2, num_test=2) / "cifar-10-batches-py"
    dump(folder / "batches.meta", {"label_names": names})
    with pytest.raises(DataError, match="'label_names' should be a list of class names"):
        load_class_names(folder, C10)


def test_cifar100_labels_beyond_100(tmp_path):
    folder = write_cifar100(tmp_path, num_train=4, num_test=4) / "cifar-100-python"
    dump(folder / "train", {"data": images(2), "fine_labels": [0, 100], "coarse_labels": [0, 0]})
    with pytest.raises(DataError, match=r"train: label 100 at row 1 is outside \[0, 100\) for CIFAR-100"):
        load_split(folder, C100, "train")


def test_cifar10_file_in_cifar100_folder_lacks_fine_labels(tmp_path):
    folder = write_cifar100(tmp_path, num_train=4, num_test=4) / "cifar-100-python"
    dump(folder / "test", {"data": images(2), "labels": [0, 1]})
    with pytest.raises(DataError, match=r"test: missing key 'fine_labels'"):
        load_split(folder, C100, "test")
