"""Feature files: good .npy and .pt splits load (mapped or not), and every bad one is one DataError line."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_linear.data.feature_files import (
    FeatureSplit,
    check_labels,
    check_same_dim,
    feature_statistics,
    first_nonfinite_row,
    infer_num_classes,
    load_split,
    read_class_names,
)
from lit_linear.errors import ConfigError, DataError

N, D = 20, 6


class Evil:
    """Pickles as a call to ``Path.touch``: loading it must not run that call."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


ROWS = np.arange(N)[:, None]  # (N, 1), to plant a bad value in one row


def features(n: int = N, d: int = D, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, d)).astype(dtype)


def labels(n: int = N, dtype=np.int64) -> np.ndarray:
    return (np.arange(n) % 3).astype(dtype)


def save(path: Path, value) -> Path:
    """``numpy.save`` for a .npy, ``torch.save`` (of a tensor made from an array) for a .pt."""
    if path.suffix == ".npy":
        np.save(path, value)
    else:
        torch.save(torch.from_numpy(value) if isinstance(value, np.ndarray) else value, path)
    return path


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def good_pair(tmp: Path, suffix: str = ".npy") -> tuple[Path, Path]:
    return save(tmp / f"x{suffix}", features()), save(tmp / f"y{suffix}", labels())


def load(x: Path, y: Path, **kwargs) -> FeatureSplit:
    return load_split(x, y, name="train", **kwargs)


# --- good files ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
@pytest.mark.parametrize("label_dtype", [np.uint8, np.int8, np.int32, np.int64])
def test_a_good_split_loads_with_its_shapes_and_dtypes(tmp_path, suffix, label_dtype):
    x = save(tmp_path / f"x{suffix}", features())
    y = save(tmp_path / f"y{suffix}", labels(dtype=label_dtype))
    split = load(x, y)
    assert (split.num_rows, split.dim, split.mapped) == (N, D, False)
    assert split.features.dtype == torch.float32 and split.labels.dtype == torch.int64
    assert torch.equal(split.features, torch.from_numpy(features()))
    assert torch.equal(split.labels, torch.from_numpy(labels()))
    assert (split.path, split.labels_path, split.name) == (str(x), str(y), "train")


@pytest.mark.parametrize(("suffix", "dtype"), [(".npy", np.float16), (".npy", np.float64), (".pt", torch.bfloat16)])
def test_half_double_and_bfloat16_features_keep_their_dtype(tmp_path, suffix, dtype):
    value = torch.from_numpy(features()).to(dtype) if isinstance(dtype, torch.dtype) else features(dtype=dtype)
    split = load(save(tmp_path / f"x{suffix}", value), save(tmp_path / "y.npy", labels()))
    assert split.features.dtype == (dtype if isinstance(dtype, torch.dtype) else torch.from_numpy(value).dtype)


def test_a_mapped_npy_is_a_view_of_the_file_and_loads_without_a_warning(tmp_path):
    x, y = good_pair(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "not writable" warning must not reach the user
        split = load(x, y, mmap=True)
    assert split.mapped
    assert torch.equal(split.features[5], torch.from_numpy(features()[5]))
    writer = np.load(x, mmap_mode="r+")  # a write to the file shows in the tensor: nothing was copied
    writer[5, 0] = 123.0
    writer.flush()
    assert split.features[5, 0].item() == 123.0


def test_a_mapped_pt_loads(tmp_path):
    split = load(*good_pair(tmp_path, ".pt"), mmap=True)
    assert split.mapped and torch.equal(split.features, torch.from_numpy(features()))


def test_auto_mode_maps_the_features_file_when_it_is_larger_than_the_threshold(tmp_path):
    x, y = good_pair(tmp_path)
    size = x.stat().st_size
    assert load(x, y, mmap_threshold=size - 1).mapped
    assert not load(x, y, mmap_threshold=size).mapped
    assert not load(x, y, mmap=False, mmap_threshold=0).mapped


# --- bad files: one DataError line naming the file and the fault ------------------------------------------------------


def _missing(tmp):
    return tmp / "nope.npy", save(tmp / "y.npy", labels()), "nope.npy", "not found"


def _missing_labels(tmp):
    return save(tmp / "x.npy", features()), tmp / "nope.pt", "nope.pt", "not found"


def _folder(tmp):
    (tmp / "dir.npy").mkdir()
    return tmp / "dir.npy", save(tmp / "y.npy", labels()), "dir.npy", "is a folder"


def _extension(tmp):
    (tmp / "x.csv").write_text("1,2\n")
    return tmp / "x.csv", save(tmp / "y.npy", labels()), "x.csv", "extension '.csv'"


def _truncated(suffix):
    def build(tmp):
        return truncate(save(tmp / f"x{suffix}", features(200))), save(tmp / "y.npy", labels(200)), "x", "truncated"

    return build


def _not_npy(tmp):
    (tmp / "x.npy").write_text("just some text")
    return tmp / "x.npy", save(tmp / "y.npy", labels()), "x.npy", "truncated or unreadable"


def _objects(tmp):
    x = save(tmp / "x.npy", np.array([[{}, 1]] * N, dtype=object))
    return x, save(tmp / "y.npy", labels()), "x.npy", "pickle is never allowed"


def _pt_holding(value, fault):
    def build(tmp):
        return save(tmp / "x.pt", value), save(tmp / "y.npy", labels()), "x.pt", fault

    return build


def _features(value, fault, suffix=".npy"):
    def build(tmp):
        return save(tmp / f"x{suffix}", value), save(tmp / "y.npy", labels(len(value))), f"x{suffix}", fault

    return build


def _labels(value, fault, suffix=".npy"):
    def build(tmp):
        return save(tmp / "x.npy", features()), save(tmp / f"y{suffix}", value), f"y{suffix}", fault

    return build


BAD = {
    "missing features": _missing,
    "missing labels": _missing_labels,
    "folder": _folder,
    "extension": _extension,
    "truncated npy": _truncated(".npy"),
    "truncated pt": _truncated(".pt"),
    "text as npy": _not_npy,
    "object npy": _objects,
    "pt dict": _pt_holding({"a": torch.zeros(N, D)}, "holds a dict with keys ['a']; it must hold one tensor"),
    "pt list": _pt_holding([torch.zeros(N, D)], "holds a list; it must hold one tensor"),
    "features 1-D": _features(np.zeros(N, np.float32), "shape (20,); expected (N, D)"),
    "features 3-D": _features(np.zeros((N, 2, 3), np.float32), "shape (20, 2, 3); expected (N, D)"),
    "features int npy": _features(np.zeros((N, D), np.int32), "dtype int32; expected float16"),
    "features int pt": _features(np.zeros((N, D), np.int64), "dtype torch.int64; expected float16", ".pt"),
    "features big-endian": _features(features().astype(">f4"), "byte order >f4; save it in the machine's native"),
    "features no rows": _features(np.zeros((0, D), np.float32), "is empty: shape (0, 6)"),
    "features no columns": _features(np.zeros((N, 0), np.float32), "is empty: shape (20, 0)"),
    "features NaN": _features(np.where(ROWS == 13, np.nan, features()), "NaN or infinite value in row 13"),
    "features inf": _features(np.where(ROWS == 2, -np.inf, features()), "NaN or infinite value in row 2"),
    "labels 2-D": _labels(labels().reshape(N, 1), "shape (20, 1); expected (N,)"),
    "labels float npy": _labels(labels().astype(np.float32), "dtype float32; expected integer"),
    "labels float pt": _labels(labels().astype(np.float32), "dtype torch.float32; expected integer", ".pt"),
    "labels bool": _labels(labels() > 0, "dtype bool; expected integer"),
    "row counts differ": _labels(labels(N - 1), "has 19 rows but train features"),
}  # fmt: skip


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_file_is_one_data_error_line_naming_the_file_and_the_fault(tmp_path, case, mmap):
    x, y, file_name, fault = BAD[case](tmp_path)
    with pytest.raises(DataError) as caught:
        load(x, y, mmap=mmap)
    message = str(caught.value)
    assert "\n" not in message
    assert file_name in message and str(tmp_path) in message
    assert fault in message


def test_a_pt_holding_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "ran"
    x = save(tmp_path / "x.pt", Evil(marker))
    with pytest.raises(DataError, match=r"x\.pt holds Python objects .*refuses, so nothing in it may run") as caught:
        load(x, save(tmp_path / "y.npy", labels()))
    assert "\n" not in str(caught.value)
    assert not marker.exists()


# --- NaN scan -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_row", [0, 7, 8, 15, 16, 99])
@pytest.mark.parametrize("chunk_rows", [None, 1, 8, 1000])
def test_the_nan_scan_names_the_first_bad_row_in_any_chunk(bad_row, chunk_rows):
    values = torch.zeros(100, 3)
    values[bad_row, 2] = float("nan")
    values[min(bad_row + 3, 99), 0] = float("inf")  # a later bad row must not be the one named
    assert first_nonfinite_row(values, chunk_rows=chunk_rows) == bad_row
    assert first_nonfinite_row(torch.zeros(100, 3), chunk_rows=chunk_rows) is None


@pytest.mark.parametrize("mmap", [False, True])
def test_a_mapped_split_is_scanned_in_chunks_and_a_bad_row_in_a_later_chunk_is_named(tmp_path, mmap):
    values = features(100, D)
    values[77, 4] = np.nan
    x, y = save(tmp_path / "x.npy", values), save(tmp_path / "y.npy", labels(100))
    with pytest.raises(DataError, match="row 77;"):
        load(x, y, mmap=mmap, scan_bytes=10 * D * 4)  # 10 rows a chunk: row 77 is in the 8th


# --- labels, sizes, class names ---


def test_labels_out_of_range_name_the_file_the_value_and_the_first_row(tmp_path):
    x, y = good_pair(tmp_path)
    split = load(x, y)
    check_labels(split, 3)
    assert infer_num_classes([split]) == 3
    with pytest.raises(DataError, match=r"y\.npy hold 2 in row 2, out of range \[0, 2\)"):
        check_labels(split, 2)
    bad = labels(dtype=np.int8)
    bad[[4, 9]] = -1
    negative = load(x, save(tmp_path / "neg.npy", bad))
    with pytest.raises(DataError, match=r"neg\.npy hold -1 in row 4, out of range \[0, 3\)"):
        check_labels(negative, 3)


def test_feature_sizes_that_differ_name_both_files(tmp_path):
    train = load(*good_pair(tmp_path))
    val = load_split(save(tmp_path / "vx.npy", features(d=D + 1)), save(tmp_path / "vy.npy", labels()), name="val")
    check_same_dim({"train": train, "test": train})
    with pytest.raises(DataError) as caught:
        check_same_dim({"train": train, "val": val})
    assert f"{train.path} have D=6 but val features {val.path} have D=7" in str(caught.value)


def test_class_names_from_a_list_a_file_or_none(tmp_path):
    assert read_class_names(["cat", "dog"], 2) == ["cat", "dog"]
    assert read_class_names(None, 3) == ["0", "1", "2"]
    (tmp_path / "names.txt").write_text("cat\ndog\nbird\n\n\n")
    assert read_class_names(str(tmp_path / "names.txt"), 3) == ["cat", "dog", "bird"]
    with pytest.raises(ConfigError, match=r"data\.class_names has 2 names but there are 3 classes"):
        read_class_names(["cat", "dog"], 3)
    with pytest.raises(ConfigError, match=r"data\.class_names \(file .*names\.txt\) has 3 names but there are 4"):
        read_class_names(tmp_path / "names.txt", 4)
    with pytest.raises(DataError, match=r"data\.class_names file .*missing\.txt not found"):
        read_class_names(str(tmp_path / "missing.txt"), 3)


# --- statistics ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 7, 50, 1000])
def test_statistics_in_chunks_equal_those_of_the_whole(tmp_path, chunk_rows):
    values = features(50, D) * np.arange(1, D + 1) + 1e4  # a large offset: a naive sum of squares would cancel
    values[:, 3] = 2.5  # a constant column: std 1 so standardizing never divides by 0
    split = load(*[save(tmp_path / "x.npy", values), save(tmp_path / "y.npy", labels(50))], mmap=True)
    mean, std = feature_statistics(split.features, chunk_rows=chunk_rows)
    whole = torch.from_numpy(values).double()
    assert mean.dtype == std.dtype == torch.float32 and mean.shape == std.shape == (D,)
    torch.testing.assert_close(mean.double(), whole.mean(dim=0), rtol=1e-6, atol=1e-6)
    expected = whole.std(dim=0)
    expected[3] = 1.0
    torch.testing.assert_close(std.double(), expected, rtol=1e-6, atol=1e-6)
