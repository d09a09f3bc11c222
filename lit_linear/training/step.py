"""One SGD step's maths as training runs it: the features and data loss of a minibatch, and the closure GridSGD calls.

:func:`data_term` is the data side of a step: the minibatch's features and the grid's data loss
with its gradient left as two factors (:func:`lit_linear.maths.grid.grid_loss_factored`); GridSGD adds
the regulariser and applies the update. :class:`TrainStep` runs it eagerly, through
``torch.compile`` or replayed from a CUDA graph, as the model's options ask, and makes the
closure of each step, averaging the gradient by hand when several processes share each minibatch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lit_linear.errors import ConfigError
from lit_linear.features.preprocess import gather_features
from lit_linear.maths.graphs import CapturedCall
from lit_linear.maths.grid import grid_gradient, grid_loss_factored


def data_term(
    loss: str,
    W: Tensor,
    split: Tensor,
    rows: Tensor,
    labels: Tensor,
    offset: Tensor,
    *,
    out: Tensor | None = None,
    dtype: torch.dtype | None = None,
    scale: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The features of one minibatch and the grid's data loss on it, with its gradient as a factor.

    Args:
        loss: ``"svm"`` or ``"softmax"``.
        W: ``(D, K, C)``.
        split: ``(M, D-1)``, the training split: uint8 pixels or float features.
        rows: ``(n,)`` the minibatch's rows of ``split``.
        labels: ``(n,)`` int64.
        offset: ``(D-1,)`` and scale ``(D-1,)``: the normalization (:func:`~lit_linear.features.preprocess.preprocess`).
        out: a ``(n, D)`` buffer for the features, reused from step to step.
        dtype: the features' dtype, which the products run in (:mod:`lit_linear.training.precision`); default W's.

    Returns:
        ``(data_loss (K,), X (n, D), dscores (n, K*C))``: what :class:`GridSGD` takes.
    """
    X = gather_features(split, rows, offset, dtype=dtype or W.dtype, out=out, scale=scale)  # (n, D)
    data_loss, dscores = grid_loss_factored(loss, W, X, labels)  # (K,), (n, K*C)
    return data_loss, X, dscores


def check_cuda_graph(cuda_graph: bool, device: torch.device, world_size: int) -> bool:
    """Whether training on ``device`` in ``world_size`` processes records CUDA graphs (``model.cuda_graph``);
    a ConfigError where it was asked for and cannot apply."""
    if cuda_graph and not (torch.device(device).type == "cuda" and world_size == 1):
        raise ConfigError(
            f"model.cuda_graph true needs one CUDA device (training on {torch.device(device).type} with "
            f"{world_size} processes); set it to false"
        )
    return bool(cuda_graph)


class TrainStep:
    """:func:`data_term`, eager, compiled or recorded in a CUDA graph, and the closures of training steps.

    Args:
        loss: ``svm`` or ``softmax``.
        compile: run it through ``torch.compile``.
        cuda_graph: record it in a CUDA graph and replay it (:class:`~lit_linear.maths.graphs.CapturedCall`).
    """

    def __init__(self, loss: str, compile: bool = False, cuda_graph: bool = False) -> None:
        self.loss = loss
        fn = torch.compile(data_term, dynamic=False) if compile else data_term
        self.fn: Any = CapturedCall(fn) if cuda_graph else fn
        self._x_buffer: Tensor | None = None  # the (n, D) training features, reused step after step
        self._rows: Tensor | None = None  # a CUDA graph's fixed inputs: the rows and labels of the step
        self._labels: Tensor | None = None

    def closure(
        self,
        W: nn.Parameter,
        split: Tensor,
        rows: Tensor,
        labels: Tensor,
        offset: Tensor,
        *,
        dtype: torch.dtype | None,
        reduce: Callable[[Tensor], Tensor] | None = None,
        scale: Tensor | None = None,
    ) -> Callable[[], Any]:
        """What GridSGD calls: the data loss ``(K,)`` and its gradient on the rows ``rows (n,)`` of ``split``.

        ``reduce``: under DDP split by minibatch, the mean across processes; the gradient is then formed
        and averaged by hand (DDP averages only what autograd produced) and placed in ``W.grad``.
        """
        if isinstance(self.fn, CapturedCall):
            # A CUDA graph reads fixed tensors: the step's rows and labels are copied into them.
            if self._rows is None or self._rows.shape != rows.shape:
                self._rows, self._labels = torch.empty_like(rows), torch.empty_like(labels)
            self._rows.copy_(rows)
            self._labels.copy_(labels)
            rows, labels = self._rows, self._labels

        def closure():
            # The data term; GridSGD adds the regulariser (its loss and its gradient) itself.
            # Eagerly, one (n, D) feature buffer is reused: a fresh 2.4 MB tensor per step costs page faults.
            out = self._x_buffer if self.fn is data_term else None
            loss, X, dscores = self.fn(self.loss, W, split, rows, labels, offset, out=out, dtype=dtype, scale=scale)
            self._x_buffer = X
            if reduce is None:
                return loss, X, dscores  # GridSGD adds X.T @ dscores into W in one product
            W.grad = reduce(grid_gradient(X, dscores).reshape(W.shape))
            return reduce(loss)

        return closure
