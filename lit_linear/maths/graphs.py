"""CapturedCall: a function of fixed tensors, recorded once in a CUDA graph and replayed.

On a GPU a training step is a few dozen small kernels; launched one by one from Python, the host
sets the pace and the device waits. Recorded in a CUDA graph (``torch.cuda.graph``), the same
kernels are launched by one call. A graph replays the exact memory it was recorded with, so the
function must read and write the same tensors at every call (its caller refills them in place).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


class CapturedCall:
    """``fn(*args, **kwargs)``, run eagerly for ``warmup`` calls, then recorded in a CUDA graph and replayed.

    Every call does the work of one call of ``fn``: the recording call replays the graph once
    after recording it. A call with other tensors (another memory address) or other plain
    arguments than the recorded ones warms up and records again. The returned tensors are the
    graph's own outputs, overwritten by the next replay.

    Recording is a speed-up, never a condition of training: if it fails (an operation that cannot
    be captured, no CUDA device, a driver that refuses), this warns once, saying why, and every
    call from then on, that one included, runs ``fn`` eagerly.

    Args:
        fn: a function of tensors (and plain values) that launches only CUDA work, with no
            value read back to the host and no Python state that must change from call to call.
        warmup: eager calls before recording (on a side stream, as ``torch.cuda.graph`` asks).
    """

    def __init__(self, fn: Callable[..., Any], warmup: int = 3) -> None:
        self.fn, self.warmup = fn, warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False  # recording failed: fn runs eagerly from then on
        self._key: tuple | None = None
        self._calls = 0
        self._out: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed:
            return self.fn(*args, **kwargs)
        key = _key((args, kwargs))
        if key != self._key:
            self.graph, self._key, self._calls = None, key, 0
        if self.graph is not None:
            self.graph.replay()
            return self._out
        if self._calls < self.warmup:
            self._calls += 1
            try:
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
            except Exception as error:  # no usable CUDA stream: nothing has run yet
                return self._fall_back(error, args, kwargs)
            with torch.cuda.stream(stream):
                out = self.fn(*args, **kwargs)  # an error of fn itself is not a recording failure: it propagates
            torch.cuda.current_stream().wait_stream(stream)
            return out
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._out = self.fn(*args, **kwargs)  # recorded, not run: nothing has changed yet
        except Exception as error:
            return self._fall_back(error, args, kwargs)
        self.graph = graph
        graph.replay()
        return self._out

    def _fall_back(self, error: Exception, args: tuple, kwargs: dict) -> Any:
        self.failed, self.graph, self._out = True, None, None
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        warnings.warn(
            f"could not record {name} in a CUDA graph ({type(error).__name__}: {error}); it runs eagerly from here on",
            RuntimeWarning,
            stacklevel=3,
        )
        return self.fn(*args, **kwargs)


def _key(value: Any) -> Any:
    """What a recorded graph depends on in ``value``: each tensor's address, shape and dtype, and every plain value,
    through tuples, lists and dicts."""
    if isinstance(value, Tensor):
        return (value.data_ptr(), value.shape, value.dtype)
    if isinstance(value, dict):
        return tuple((k, _key(v)) for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return tuple(_key(v) for v in value)
    return value
