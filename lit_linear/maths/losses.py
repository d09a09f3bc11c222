"""Multiclass SVM and softmax losses with hand-derived gradients.

Pure PyTorch maths: no autograd, no Lightning. The course's functions return ``(loss, dW)``.
Training calls the same code one level down: :func:`grid_loss_factored` is the data loss of
:func:`svm_loss_vectorized` / :func:`softmax_loss_vectorized` with its gradient left as its two
factors, ``dW_data = X.T @ dscores``, so that the SGD update can fold the product into ``W``
(``addmm_``); the update also takes the regulariser. The vectorized functions are that call
plus ``dW = X.T @ dscores + 2 reg W``.

Shapes (D features including the bias column, C classes, N rows, K configs):

- ``W``: ``(D, C)`` for one classifier, or a grid of K classifiers as ``(K, D, C)``
  (``layout="KDC"``, the default) or ``(D, K, C)`` (``layout="DKC"``);
- ``X``: ``(N, D)``, the same dtype and device as ``W``;
- ``y``: ``(N,)`` int64 labels in ``[0, C)``;
- ``reg``: a float, or for a grid a ``(K,)`` tensor of per-config strengths.

Returns ``loss`` as a 0-dim tensor for ``(D, C)`` and ``(K,)`` for a grid, and ``dW`` in the
shape and layout of ``W``. Both losses are averaged over the N rows and add ``reg * sum(W**2)``
(no 1/2, so the regulariser's gradient is ``2 * reg * W``), as in EECS 498 A2 / CS231n A1.

Why the ``DKC`` layout: the K configs share the minibatch, so the scores of the whole grid are
one product ``X (N, D) @ W (D, K*C)`` and the gradient one product ``X.T (D, N) @ dS (N, K*C)``.
A ``(D, K, C)`` tensor *is* that ``(D, K*C)`` matrix (a free view), while ``(K, D, C)`` must be
transposed into it and back at every call. Training code keeps its grid in ``DKC``.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from lit_linear.maths.grid import grid_gradient, grid_loss_factored, grid_sq_norms, per_column

Layout = Literal["KDC", "DKC"]


# --------------------------------------------------------------------------- vectorized (grid)


def _to_dkc(W: Tensor, layout: Layout) -> tuple[Tensor, bool]:
    """View any accepted W as a ``(D, K, C)`` grid; also say whether W was a single ``(D, C)``."""
    if W.dim() == 2:
        return W.unsqueeze(1), True
    if W.dim() != 3:
        raise ValueError(f"W must have shape (D, C), (K, D, C) or (D, K, C), got {tuple(W.shape)}")
    if layout == "KDC":
        return W.permute(1, 0, 2), False
    if layout == "DKC":
        return W, False
    raise ValueError(f"layout must be 'KDC' or 'DKC', got {layout!r}")


def _from_dkc(dW: Tensor, layout: Layout, single: bool) -> Tensor:
    if single:
        return dW.squeeze(1).contiguous()
    return (dW.permute(1, 0, 2) if layout == "KDC" else dW).contiguous()


def _vectorized(
    name: str, W: Tensor, X: Tensor, y: Tensor, reg: float | Tensor, layout: Layout
) -> tuple[Tensor, Tensor]:
    Wg, single = _to_dkc(W, layout)  # (D, K, C)
    D, K, C = Wg.shape
    # A free view in DKC layout; in KDC layout the one copy that layout costs.
    Wg = Wg.contiguous()
    W_flat = Wg.view(D, K * C)  # (D, K*C)
    data_loss, dscores = grid_loss_factored(name, Wg, X, y)  # (K,), (N, K*C)
    dW = grid_gradient(X, dscores)  # (D, K*C)
    reg_row = per_column(reg, K, C, W_flat)
    if isinstance(reg_row, Tensor):
        loss = data_loss + reg_row.view(K, C)[:, 0] * grid_sq_norms(W_flat, K, C)
        dW.addcmul_(W_flat, reg_row, value=2.0)
    else:
        loss = data_loss + reg_row * grid_sq_norms(W_flat, K, C)
        dW.add_(W_flat, alpha=2.0 * reg_row)
    dW = _from_dkc(dW.view(D, K, C), layout, single)
    return (loss.squeeze(0) if single else loss), dW


def svm_loss_vectorized(
    W: Tensor, X: Tensor, y: Tensor, reg: float | Tensor, *, layout: Layout = "KDC"
) -> tuple[Tensor, Tensor]:
    """Multiclass hinge loss and its gradient, no Python loop over rows, classes or configs.

    ``L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + 1)`` with ``s = X W``, averaged over the rows,
    plus ``reg * sum(W**2)``. At a margin of exactly 0 the subgradient 0 is taken.

    Args:
        W: ``(D, C)``, or a grid ``(K, D, C)`` / ``(D, K, C)`` as chosen by ``layout``.
        X: ``(N, D)``.
        y: ``(N,)`` int64.
        reg: float, or ``(K,)`` tensor for a grid.
        layout: how a 3-dim ``W`` is laid out: ``"KDC"`` or ``"DKC"`` (faster; see module doc).

    Returns:
        ``(loss, dW)``: ``loss`` 0-dim (single) or ``(K,)`` (grid); ``dW`` shaped like ``W``.
    """
    return _vectorized("svm", W, X, y, reg, layout)


def softmax_loss_vectorized(
    W: Tensor, X: Tensor, y: Tensor, reg: float | Tensor, *, layout: Layout = "KDC"
) -> tuple[Tensor, Tensor]:
    """Softmax cross-entropy and its gradient, no Python loop over rows, classes or configs.

    Scores are shifted by each row's maximum, and the loss is taken as
    ``logsumexp(s) - s_y`` rather than ``-log(p_y)``, so scores of +-1e4 stay finite in float32.

    Args:
        W: ``(D, C)``, or a grid ``(K, D, C)`` / ``(D, K, C)`` as chosen by ``layout``.
        X: ``(N, D)``.
        y: ``(N,)`` int64.
        reg: float, or ``(K,)`` tensor for a grid.
        layout: how a 3-dim ``W`` is laid out: ``"KDC"`` or ``"DKC"`` (faster; see module doc).

    Returns:
        ``(loss, dW)``: ``loss`` 0-dim (single) or ``(K,)`` (grid); ``dW`` shaped like ``W``.
    """
    return _vectorized("softmax", W, X, y, reg, layout)


def l2svm_loss_vectorized(
    W: Tensor, X: Tensor, y: Tensor, reg: float | Tensor, *, layout: Layout = "KDC"
) -> tuple[Tensor, Tensor]:
    """One-vs-all squared hinge (L2-SVM) and its gradient, no Python loop over rows, classes or configs.

    ``L_i = sum_c max(0, 1 - t_ic s_ic)^2`` with ``t_ic = +1`` for the true class and ``-1`` for the
    others, averaged over the rows, plus ``reg * sum(W**2)``: Coates, Lee & Ng's classifier
    (their ``C`` is ``reg = 1 / (2 C)``, :func:`~lit_linear.maths.grid.l2svm_scores_grad`).

    Args:
        W: ``(D, C)``, or a grid ``(K, D, C)`` / ``(D, K, C)`` as chosen by ``layout``.
        X: ``(N, D)``.
        y: ``(N,)`` int64.
        reg: float, or ``(K,)`` tensor for a grid.
        layout: how a 3-dim ``W`` is laid out: ``"KDC"`` or ``"DKC"`` (faster; see module doc).

    Returns:
        ``(loss, dW)``: ``loss`` 0-dim (single) or ``(K,)`` (grid); ``dW`` shaped like ``W``.
    """
    return _vectorized("l2svm", W, X, y, reg, layout)
