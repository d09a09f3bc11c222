"""BufferPool: output tensors for a gather that runs every batch, reused once nothing else holds them.

Why: a training block of the shipped settings is 50 x 200 rows of 3072 bytes, 30 MB. A fresh
CPU tensor that large is new memory from the kernel: the gather's first write faults on every
4 KB page. Gathering into a buffer that was written before took 1.5 ms against 4.9 ms into a
fresh one, and a 2000-step fit draws 40 blocks. Measured in whole fits (one process, medians of
5 and 3): 0.3 s of a 2.6 s single-config fit and 0.45 s of a 6.7 s sweep.

A buffer is handed out again only when its storage's use count shows that only the pool holds
it. A batch, or a view of one, that a callback or a user keeps is therefore never overwritten.
The count comes from ``torch._C._storage_Use_Count``; where that is missing, and on other devices
than the CPU (CUDA's caching allocator already reuses memory), every call allocates. The count
sees one process only, so the pool must live where the batches are used: Lightning iterates
:class:`~lit_linear.data.TrainBatches` in the training process itself (no loader workers).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

_use_count: Callable[[int], int] | None = getattr(torch._C, "_storage_Use_Count", None)


def storage_use_count(t: Tensor) -> int | None:
    """How many tensors (and storage handles) share ``t``'s memory; None where torch does not say."""
    return None if _use_count is None else int(_use_count(t.untyped_storage()._cdata))


class BufferPool:
    """Up to ``size`` CPU tensors, each handed out again once no tensor outside the pool uses it.

    Args:
        size: buffers kept. Lightning holds two training batches at once (the current one and the
            one it prefetched), so three are enough for the next draw to find a free one.
    """

    def __init__(self, size: int = 3) -> None:
        if size < 1:
            raise ValueError(f"a BufferPool keeps at least one buffer, got size={size}")
        self.size = size
        self._buffers: list[tuple[Tensor, int]] = []  # (buffer, its use count when only the pool holds it)

    def get(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """A tensor of ``shape`` to write into: a view of a free buffer of the pool, else of a new one (uninitialised).

        A view, never the pool's own tensor: it is the view's holders that the use count sees.
        """
        if torch.device(device).type != "cpu" or _use_count is None:
            return torch.empty(shape, dtype=dtype, device=device)
        shape = tuple(shape)
        for buffer, alone in self._buffers:
            if tuple(buffer.shape) == shape and buffer.dtype == dtype and storage_use_count(buffer) == alone:
                return buffer.view(shape)
        buffer = torch.empty(shape, dtype=dtype, device=device)
        self._buffers.append((buffer, storage_use_count(buffer)))
        if len(self._buffers) > self.size:
            # The oldest leaves the pool; whoever still uses it keeps it alive.
            self._buffers.pop(0)
        return buffer.view(shape)

    def gather(self, source: Tensor, rows: Tensor) -> Tensor:
        """``source[rows]``, ``(len(rows), *source.shape[1:])``, written into a buffer of the pool."""
        out = self.get((rows.numel(), *source.shape[1:]), source.dtype, source.device)
        # index_select, not source[rows]: the advanced-indexing gather is ~15x slower on the CPU.
        return torch.index_select(source, 0, rows, out=out)

    def __getstate__(self) -> dict:
        # A copied or pickled pool (a data module sent to DDP workers) starts empty.
        return {"size": self.size, "_buffers": []}
