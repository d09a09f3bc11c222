"""lit_linear.buffers: training batches are gathered into reused buffers, never into one still in use."""

from __future__ import annotations

import pickle

import pytest
import torch

import lit_linear.buffers as buffers
from lit_linear.buffers import BufferPool
from lit_linear.data import TrainBatches

needs_use_count = pytest.mark.skipif(buffers._use_count is None, reason="this torch does not report storage use counts")


def split(n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3072), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, 10, (n,), generator=generator)


@needs_use_count
@pytest.mark.parametrize("steps_per_batch", [1, 4])
def test_a_released_batch_buffer_is_reused(steps_per_batch):
    images, labels = split()
    stream = iter(TrainBatches(images, labels, 20, seed=0, steps_per_batch=steps_per_batch))
    addresses = set()
    for _ in range(6):
        batch = next(stream)
        addresses.add(batch.images.data_ptr())
        del batch
    assert len(addresses) == 1


@pytest.mark.parametrize("steps_per_batch", [1, 4])
@pytest.mark.parametrize("keep", ["batch", "view"])
def test_a_held_batch_is_never_overwritten(steps_per_batch, keep):
    images, labels = split()
    batches = TrainBatches(images, labels, 20, seed=0, steps_per_batch=steps_per_batch)
    stream = iter(batches)
    first = next(stream)
    held = first.images if keep == "batch" else first.images.reshape(-1)[:3072]  # a view outlives its batch
    expected = held.clone()
    del first
    later = [next(stream) for _ in range(5)]  # the pool is full of busy buffers: new ones are made
    for _ in range(5):
        next(stream)
    assert torch.equal(held, expected)
    for batch in later:  # and each batch holds its own rows
        assert torch.equal(batch.images.reshape(-1, 3072), images[batch.index.reshape(-1)])


@needs_use_count
def test_pool_hands_out_views_and_keeps_at_most_size_buffers():
    pool = BufferPool(size=2)
    a = pool.get((4, 8), torch.uint8, torch.device("cpu"))
    b = pool.get((4, 8), torch.uint8, torch.device("cpu"))  # a is held: a second buffer
    c = pool.get((4, 8), torch.uint8, torch.device("cpu"))  # both held: a third, the oldest leaves the pool
    assert len({a.data_ptr(), b.data_ptr(), c.data_ptr()}) == 3
    assert len(pool._buffers) == 2
    a_address = a.data_ptr()
    del a  # left the pool: never handed out again
    del b
    assert pool.get((4, 8), torch.uint8, torch.device("cpu")).data_ptr() != a_address
    assert pool.get((2, 8), torch.uint8, torch.device("cpu")).shape == (2, 8)  # another shape: its own buffer


def test_a_pickled_pool_starts_empty():
    pool = BufferPool()
    kept = pool.get((4, 8), torch.uint8, torch.device("cpu"))
    copy = pickle.loads(pickle.dumps(pool))
    assert copy._buffers == [] and copy.size == pool.size
    assert kept.shape == (4, 8)


def test_without_use_counts_every_call_allocates(monkeypatch):
    monkeypatch.setattr(buffers, "_use_count", None)
    pool = BufferPool()
    first = pool.get((4, 8), torch.uint8, torch.device("cpu"))
    address = first.data_ptr()
    del first
    assert pool._buffers == []
    assert pool.get((4, 8), torch.uint8, torch.device("cpu")).shape == (4, 8)
    assert buffers.storage_use_count(torch.zeros(1)) is None
    del address


def test_size_must_be_positive():
    with pytest.raises(ValueError, match="size=0"):
        BufferPool(size=0)
