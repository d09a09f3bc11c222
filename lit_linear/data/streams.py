"""The streams a sweep reads: training minibatches drawn by step, evaluation splits in chunks.

A split lives on the training device as one ``(N, 3072)`` uint8 tensor; a minibatch is a list of its
row numbers, gathered as the features are written (:func:`lit_linear.features.preprocess.gather_features`),
never collated per sample. Minibatch order is a pure function of ``(seed, step)``: step ``t`` takes
batch ``t % B`` of a fresh permutation of the training rows for epoch ``t // B`` (``B = N_train //
batch_size``, the tail is dropped). The training stream starts wherever the weights are, the
trainer's ``global_step``, each time Lightning iterates it, and has no length: Lightning runs one
endless epoch that ``max_steps`` ends, so however it counts its batches or epochs after restoring a
checkpoint, a resumed fit continues with exactly the batches it would have seen. Under DDP every
rank draws the same global batch and keeps its own contiguous share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch
from torch import Tensor

from lit_linear.errors import ConfigError, check_count


class Batch(NamedTuple):
    """A minibatch: raw image rows, their labels, and their row numbers in the split."""

    images: Tensor  # (n, 3072) uint8
    labels: Tensor  # (n,) int64
    index: Tensor  # (n,) int64


class TrainBlock(NamedTuple):
    """The minibatches of ``m`` consecutive SGD steps as row numbers into their split, not yet copied out of it.

    What :class:`TrainBatches` yields. The module gathers each step's rows as it turns them into
    features (:func:`lit_linear.features.preprocess.gather_features`), rather than first copying all m
    steps' rows into a block and reading them back.
    """

    source: Tensor  # (N, 3072) uint8, the whole split (a reference, not a copy)
    labels: Tensor  # (m, n) int64
    index: Tensor  # (m, n) int64, the rows of ``source`` of each step
    step: int = 0  # the SGD step of the first row of ``index``

    @property
    def images(self) -> Tensor:
        """``(m, n, 3072)`` uint8: the rows gathered, for a reader other than the module."""
        return self.source.index_select(0, self.index.reshape(-1)).view(*self.index.shape, -1)


class TrainBatches:
    """Training minibatches drawn without replacement, epoch by epoch, up to ``last_step``.

    Iterating yields a :class:`TrainBlock` of the next ``steps_per_batch`` SGD steps (labels and
    index ``(m, n)``), whose rows the module gathers step by step; the block that reaches
    ``last_step`` is cut there. Each iteration starts at ``position()``, the step the weights are
    at, so that the stream never replays or skips a step whatever Lightning's loop does after a
    restore. It has no ``len``: Lightning then counts no epochs and ``max_steps`` ends the fit.

    Args:
        images: ``(N, 3072)`` uint8, on the training device.
        labels: ``(N,)`` int64, same device.
        batch_size: the global minibatch size (all ranks together).
        seed: seeds each epoch's permutation.
        first_step: the step an iteration starts at when there is no ``position``.
        position: called when an iteration starts, returns the step to start at (the data module
            passes the trainer's ``global_step``).
        rank: this process's rank; it keeps rows ``[rank * b, (rank + 1) * b)`` of each global batch.
        world_size: number of ranks; ``b = batch_size // world_size``.
        steps_per_batch: SGD steps per yielded batch.
        last_step: the step the stream ends at (the trainer's ``max_steps``); None: endless.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        seed: int,
        *,
        first_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
        steps_per_batch: int = 1,
        last_step: int | None = None,
        position: Callable[[], int] | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of the {world_size} ranks")
        check_count(batch_size, "data.batch_size")
        if batch_size > len(labels):
            raise ConfigError(
                f"data.batch_size ({batch_size}) is larger than the training split ({len(labels)} images)"
            )
        if batch_size % world_size:
            raise ConfigError(
                f"data.batch_size ({batch_size}) must be divisible by the number of devices ({world_size}) "
                "so that every rank takes an equal share of each minibatch"
            )
        check_count(steps_per_batch, "steps_per_batch")
        self.images, self.labels = images, labels
        self.steps_per_batch = steps_per_batch
        self.batch_size, self.seed, self.first_step = batch_size, seed, first_step
        self.rank, self.world_size = rank, world_size
        self.last_step, self.position = last_step, position
        self.batches_per_epoch = len(labels) // batch_size
        self._epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            # Drawn on the CPU so that every device type sees the same order; one copy per epoch.
            # Reduced mod 2**64 because manual_seed refuses larger values (a negative seed maps to
            # the same generator state as before the reduction).
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**64)
            self._perm = torch.randperm(len(self.labels), generator=generator).to(self.labels.device)
            self._epoch = epoch
        return self._perm

    def global_indices(self, step: int) -> Tensor:
        """Rows of the whole minibatch of ``step``, all ranks together: ``(batch_size,)``."""
        epoch, position = divmod(step, self.batches_per_epoch)
        start = position * self.batch_size
        return self._permutation(epoch)[start : start + self.batch_size]

    def _share(self, step: int) -> Tensor:
        share = self.batch_size // self.world_size
        return self.global_indices(step)[self.rank * share : (self.rank + 1) * share]  # (share,)

    def batch(self, step: int) -> Batch:
        """This rank's share of the minibatch of ``step``: ``(share, 3072)`` images."""
        index = self._share(step)  # (share,)
        return Batch(self.images.index_select(0, index), self.labels.index_select(0, index), index)

    def block(self, step: int, steps: int | None = None) -> TrainBlock:
        """Steps ``step .. step + steps - 1`` (default ``steps_per_batch``): ``(m, share)`` rows and labels.

        Nothing is copied: the rows stay in the split until the module gathers them."""
        steps = self.steps_per_batch if steps is None else steps
        index = torch.stack([self._share(step + j) for j in range(steps)])  # (m, share)
        return TrainBlock(self.images, self.labels.index_select(0, index.view(-1)).view(index.shape), index, step)

    def __iter__(self) -> Iterator[TrainBlock]:
        step = self.first_step if self.position is None else self.position()
        while self.last_step is None or step < self.last_step:
            m = self.steps_per_batch if self.last_step is None else min(self.steps_per_batch, self.last_step - step)
            yield self.block(step, m)
            step += m

    def state_dict(self) -> dict[str, int]:
        """What a resumed fit needs to draw the same minibatches: the position is ``global_step``."""
        return {"seed": self.seed, "batch_size": self.batch_size, "num_rows": len(self.labels)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("batch_size") != self.batch_size or state.get("num_rows") != len(self.labels):
            raise ConfigError(
                f"cannot resume exactly: the checkpoint drew minibatches of {state.get('batch_size')} from "
                f"{state.get('num_rows')} training images, this run draws {self.batch_size} from {len(self.labels)}; "
                "use the same data.batch_size and data.val_ratio as the checkpointed run"
            )
        self.seed = int(state["seed"])
        self._epoch = -1


class EvalBatches:
    """One split in fixed chunks, in row order; under DDP each rank takes a contiguous shard.

    Args:
        images: ``(N, 3072)`` uint8.
        labels: ``(N,)`` int64.
        chunk_size: rows per chunk (bounds the ``(chunk, D)`` float temporary).
        rank: this process's rank.
        world_size: number of ranks.
    """

    def __init__(self, images: Tensor, labels: Tensor, chunk_size: int, rank: int = 0, world_size: int = 1) -> None:
        check_count(chunk_size, "data.eval_batch_size")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of the {world_size} ranks")
        n = len(labels)
        # Rank r takes rows [n*r/W, n*(r+1)/W): contiguous shards that cover every row exactly once.
        self.start, self.stop = n * rank // world_size, n * (rank + 1) // world_size
        self.images, self.labels, self.chunk_size = images, labels, chunk_size

    def __len__(self) -> int:
        return -(-(self.stop - self.start) // self.chunk_size)

    def __iter__(self) -> Iterator[Batch]:
        for lo in range(self.start, self.stop, self.chunk_size):
            hi = min(lo + self.chunk_size, self.stop)
            index = torch.arange(lo, hi, device=self.labels.device)
            yield Batch(self.images[lo:hi], self.labels[lo:hi], index)


# Rows gathered from a map between two releases of its pages: each read fault maps the pages around it too
# (the kernel's fault-around, 64 KiB), so a gather of scattered rows holds ~64 KiB of them for each row.
GATHER_ROWS = 1024


def gather_rows(source: Tensor, index: Tensor, release: Callable[[], None] | None = None) -> Tensor:
    """``source[index]`` ``(n, D)``, gathered ``GATHER_ROWS`` at a time, calling ``release`` after each (a mapped
    ``source`` then holds few of its pages resident however many rows are read)."""
    if release is None:
        return source.index_select(0, index)
    rows = torch.empty((index.shape[0], *source.shape[1:]), dtype=source.dtype)
    for lo in range(0, index.shape[0], GATHER_ROWS):
        torch.index_select(source, 0, index[lo : lo + GATHER_ROWS], out=rows[lo : lo + GATHER_ROWS])
        release()
    return rows


class GatheredBlocks:
    """The blocks of a :class:`TrainBatches` over a memory-mapped split, each block's rows gathered out of the map.

    The rows of the next block are gathered (and, for a GPU, pinned) in a background thread while the
    current block trains, so that reading the map overlaps the steps; the copy to the device is then
    asynchronous. Each yielded :class:`TrainBlock` holds its own rows as ``source`` ``(m * n, D-1)`` and
    ``index = arange(m * n).view(m, n)``: the same minibatches, in the same order, as the split itself
    would give, and the same resume (the iteration starts where the wrapped stream does).

    Args:
        batches: the stream over the mapped split.
        pin: pin each gathered block (for an asynchronous copy to a CUDA device).
        release: called after each gather, to give back the pages of the map read so far.
    """

    def __init__(self, batches: TrainBatches, *, pin: bool = False, release: Callable[[], None] | None = None) -> None:
        self.batches, self.pin, self.release = batches, pin, release

    def _gather(self, block: TrainBlock) -> TrainBlock:
        rows = gather_rows(block.source, block.index.reshape(-1), self.release)  # (m * n, D-1), read from the map
        if self.pin:
            rows = rows.pin_memory()
        index = torch.arange(rows.shape[0]).view(block.index.shape)
        return TrainBlock(rows, block.labels, index, block.step)

    def __iter__(self) -> Iterator[TrainBlock]:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lit_linear-gather") as pool:
            pending = None
            for block in self.batches:
                ahead = pool.submit(self._gather, block)
                if pending is not None:
                    yield pending.result()
                pending = ahead
            if pending is not None:
                yield pending.result()

    def state_dict(self) -> dict[str, int]:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batches.load_state_dict(state)
