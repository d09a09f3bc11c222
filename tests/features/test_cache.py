"""The feature cache: reused when it holds the key, rebuilt when a setting or the data changes or a file is cut."""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch

from lit_linear.features import cache


def build_counter(calls: list[int], value: float = 1.0):
    def build():
        calls.append(1)
        return torch.full((6, 3), value), {"centroids": torch.arange(4.0)}

    return build


KEY = {"extractor": "kmeans", "options": {"num_centroids": 4}, "images": "abc", "train_rows": 5}


def test_a_second_call_reads_the_entry_without_building(tmp_path):
    calls: list[int] = []
    first = cache.cached(tmp_path, KEY, 6, build_counter(calls))
    second = cache.cached(tmp_path, KEY, 6, build_counter(calls))
    assert calls == [1] and first[2] and not second[2]
    assert torch.equal(first[0], second[0]) and torch.equal(second[1]["centroids"], torch.arange(4.0))


@pytest.mark.parametrize("change", ["options", "images", "train_rows"])
def test_another_setting_or_other_data_is_another_entry(tmp_path, change):
    calls: list[int] = []
    cache.cached(tmp_path, KEY, 6, build_counter(calls))
    other = {**KEY, change: {"num_centroids": 8} if change == "options" else "other"}
    features, _, built = cache.cached(tmp_path, other, 6, build_counter(calls, 2.0))
    assert built and calls == [1, 1] and float(features[0, 0]) == 2.0


@pytest.mark.parametrize("damage", ["truncated features", "missing key", "foreign key", "corrupt extractor"])
def test_a_damaged_entry_is_never_trusted_and_is_rebuilt(tmp_path, damage):
    calls: list[int] = []
    cache.cached(tmp_path, KEY, 6, build_counter(calls))
    path = cache.entry(tmp_path, KEY)
    if damage == "truncated features":
        data = (path / "features.npy").read_bytes()
        (path / "features.npy").write_bytes(data[: len(data) // 2])
    elif damage == "missing key":
        os.remove(path / "key.json")
    elif damage == "foreign key":
        (path / "key.json").write_text('{"extractor": "kmeans"}')
    else:
        (path / "extractor.pt").write_bytes(b"not a torch file")
    features, state, built = cache.cached(tmp_path, KEY, 6, build_counter(calls, 3.0))
    assert built and calls == [1, 1] and float(features[0, 0]) == 3.0
    assert cache.load(path, KEY, 6) is not None, "the rebuilt entry is whole"


def _build_in_another_process(folder, start, done):
    def build():
        start.set()
        done.wait(30)
        return torch.ones(6, 3), {}

    cache.cached(folder, KEY, 6, build)


def test_a_process_waiting_for_another_builder_loads_its_entry(tmp_path):
    """Two processes, one entry: the second waits on the lock, then loads what the first built."""
    context = multiprocessing.get_context("fork")
    start, done = context.Event(), context.Event()
    builder = context.Process(target=_build_in_another_process, args=(tmp_path, start, done))
    builder.start()
    assert start.wait(30)
    calls: list[int] = []
    done.set()
    features, _, built = cache.cached(tmp_path, KEY, 6, build_counter(calls, 5.0))
    builder.join(30)
    assert not built and calls == [] and float(features[0, 0]) == 1.0


def test_a_builder_that_dies_leaves_the_lock_to_the_next_process(tmp_path):
    context = multiprocessing.get_context("fork")
    start, done = context.Event(), context.Event()
    builder = context.Process(target=_build_in_another_process, args=(tmp_path, start, done))
    builder.start()
    assert start.wait(30)
    builder.kill()  # dies while it holds the lock, before writing anything
    builder.join(30)
    calls: list[int] = []
    features, _, built = cache.cached(tmp_path, KEY, 6, build_counter(calls, 7.0))
    assert built and calls == [1] and float(features[0, 0]) == 7.0
