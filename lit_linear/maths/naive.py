"""The course's losses with explicit loops: the readable references the vectorized losses are checked against.

``svm_loss_naive`` and ``softmax_loss_naive`` take one classifier ``W (D, C)``, a minibatch
``X (N, D)``, labels ``y (N,)`` and an L2 strength, and return ``(loss, dW)`` exactly as
:func:`lit_linear.maths.losses.svm_loss_vectorized` and :func:`lit_linear.maths.losses.softmax_loss_vectorized`
do, one row and one class at a time. Far too slow to train; ``tests/test_losses.py`` checks the
vectorized losses against them, and both against numeric gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_linear.maths.grid import check_batch


def _check_single(W: Tensor, X: Tensor, y: Tensor) -> None:
    if W.dim() != 2:
        raise ValueError(f"W must have shape (D, C) for the naive losses, got {tuple(W.shape)}")
    check_batch(W.shape[0], W.shape[-1], X, y)


def svm_loss_naive(W: Tensor, X: Tensor, y: Tensor, reg: float) -> tuple[Tensor, Tensor]:
    """Multiclass (Weston-Watkins) hinge loss with explicit loops over rows and classes.

    The readable reference and test oracle for :func:`svm_loss_vectorized`; far too slow to train.

    Args:
        W: weights ``(D, C)``.
        X: minibatch ``(N, D)``.
        y: labels ``(N,)``.
        reg: L2 strength; adds ``reg * sum(W**2)``.

    Returns:
        ``(loss, dW)``: a 0-dim tensor and ``(D, C)``.
    """
    _check_single(W, X, y)
    num_train, num_classes = X.shape[0], W.shape[1]
    loss = torch.zeros((), dtype=W.dtype, device=W.device)
    dW = torch.zeros_like(W)
    for i in range(num_train):
        scores = X[i] @ W  # (C,)
        correct = scores[y[i]]
        for j in range(num_classes):
            if j == y[i]:
                continue
            margin = scores[j] - correct + 1
            if margin > 0:
                loss += margin
                dW[:, j] += X[i]
                dW[:, y[i]] -= X[i]
    loss = loss / num_train + reg * torch.sum(W * W)
    dW = dW / num_train + 2 * reg * W
    return loss, dW


def softmax_loss_naive(W: Tensor, X: Tensor, y: Tensor, reg: float) -> tuple[Tensor, Tensor]:
    """Softmax cross-entropy with explicit loops over rows and classes.

    Each row's scores are shifted by their maximum before ``exp`` so that large scores
    cannot overflow; the shift cancels in the probabilities.

    Args:
        W: weights ``(D, C)``.
        X: minibatch ``(N, D)``.
        y: labels ``(N,)``.
        reg: L2 strength; adds ``reg * sum(W**2)``.

    Returns:
        ``(loss, dW)``: a 0-dim tensor and ``(D, C)``.
    """
    _check_single(W, X, y)
    num_train, num_classes = X.shape[0], W.shape[1]
    loss = torch.zeros((), dtype=W.dtype, device=W.device)
    dW = torch.zeros_like(W)
    for i in range(num_train):
        scores = X[i] @ W  # (C,)
        scores = scores - scores.max()
        log_sum_exp = torch.log(torch.exp(scores).sum())
        loss += log_sum_exp - scores[y[i]]
        for j in range(num_classes):
            p_j = torch.exp(scores[j] - log_sum_exp)
            dW[:, j] += (p_j - (1 if j == y[i] else 0)) * X[i]
    loss = loss / num_train + reg * torch.sum(W * W)
    dW = dW / num_train + 2 * reg * W
    return loss, dW


def l2svm_loss_naive(W: Tensor, X: Tensor, y: Tensor, reg: float) -> tuple[Tensor, Tensor]:
    """One-vs-all squared hinge (L2-SVM) with explicit loops over rows and classes: the readable reference.

    Args:
        W: ``(D, C)`` weights.
        X: ``(N, D)`` rows.
        y: ``(N,)`` labels.
        reg: L2 strength; adds ``reg * sum(W**2)``.

    Returns:
        ``(loss, dW)``: a 0-dim tensor and ``(D, C)``.
    """
    _check_single(W, X, y)
    num_train, num_classes = X.shape[0], W.shape[1]
    loss = torch.zeros((), dtype=W.dtype, device=W.device)
    dW = torch.zeros_like(W)
    for i in range(num_train):
        scores = X[i] @ W  # (C,)
        for c in range(num_classes):
            t = 1.0 if c == y[i] else -1.0  # each class is its own binary problem
            margin = 1 - t * scores[c]
            if margin > 0:
                loss += margin * margin
                dW[:, c] -= 2 * t * margin * X[i]
    loss = loss / num_train + reg * torch.sum(W * W)
    dW = dW / num_train + 2 * reg * W
    return loss, dW
