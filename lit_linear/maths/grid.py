"""The grid kernels: K configs stored side by side as ``W (D, K, C)``, the ``(D, K*C)`` matrix they form.

What training runs: the scores of every config in one product, the loss heads that turn scores into
``(data loss (K,), dscores)`` in place, the gradient's product, and per-config factors as one row per
column. The course's functions (:mod:`lit_linear.maths.losses`) are built on these. Why the layout:
``docs/design.md``, "The grid in one tensor".
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_batch(D: int, C: int, X: Tensor, y: Tensor) -> None:
    if X.dim() != 2 or X.shape[1] != D:
        raise ValueError(f"X must have shape (N, {D}) to match W, got {tuple(X.shape)}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {tuple(y.shape)}")
    if C < 2:
        raise ValueError(f"W must have at least 2 classes (columns), got {C}")


def per_column(values: float | Tensor, K: int, C: int, like: Tensor, name: str = "reg") -> float | Tensor:
    """A float as is; per-config ``(K,)`` values as one factor per column of the ``(D, K*C)`` grid, ``(1, K*C)``.

    A contiguous row broadcasts over the rows of ``W`` with a vectorised inner loop; a
    ``(1, K, 1)`` tensor broadcast over ``(D, K, C)`` is several times slower on the CPU. The
    output size is given, so that CUDA need not wait for the device to size it.
    """
    if not isinstance(values, Tensor):
        return float(values)
    if values.dim() == 0:
        values = values.expand(K)
    if values.shape != (K,):
        raise ValueError(f"{name} must be a float or a ({K},) tensor for a grid of {K}, got {tuple(values.shape)}")
    return values.to(like.dtype).repeat_interleave(C, output_size=K * C).view(1, K * C)


def grid_sq_norms(W_flat: Tensor, K: int, C: int) -> Tensor:
    """``||W_k||^2`` of every config of a ``(D, K*C)`` grid: ``(K,)``.

    Column sums first: a sum over dim 0 of the row-major ``(D, K*C)`` matrix runs along its
    contiguous rows (several times faster on the CPU than ``vector_norm(W, dim=0)``).
    """
    return torch.mul(W_flat, W_flat).sum(dim=0).view(K, C).sum(dim=1)


def svm_scores_grad(scores: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Hinge loss of a grid's scores and its gradient with respect to them.

    ``L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + 1)``, averaged over the rows. At a margin of
    exactly 0 the subgradient 0 is taken.

    Args:
        scores: ``(N, K, C)``; overwritten (it becomes the margins).
        y: ``(N,)`` int64.

    Returns:
        ``(data_loss (K,), dscores (N, K, C))``.
    """
    N, K, _ = scores.shape
    label_index = y.view(N, 1, 1).expand(N, K, 1)  # (N, K, 1)
    correct = scores.gather(2, label_index)  # (N, K, 1)
    margins = scores.sub_(correct).add_(1).clamp_min_(0)  # (N, K, C), in place: scores are done
    margins.scatter_(2, label_index, 0)  # the true class contributes no margin
    data_loss = margins.sum(dim=(0, 2)) / N  # (K,)
    # dL/ds_j = 1 for every violating j, and -(number of violations) for the true class; / N.
    dscores = margins.gt(0).to(scores.dtype).div_(N)  # (N, K, C)
    dscores.scatter_(2, label_index, -dscores.sum(dim=2, keepdim=True))
    return data_loss, dscores


def softmax_scores_grad(scores: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax cross-entropy of a grid's scores and its gradient with respect to them.

    Scores are shifted by each row's maximum, and the loss is taken as ``logsumexp(s) - s_y``
    rather than ``-log(p_y)``, so scores of +-1e4 stay finite in float32.

    Args:
        scores: ``(N, K, C)``; overwritten (it becomes the gradient).
        y: ``(N,)`` int64.

    Returns:
        ``(data_loss (K,), dscores (N, K, C))``.
    """
    N, K, _ = scores.shape
    label_index = y.view(N, 1, 1).expand(N, K, 1)  # (N, K, 1)
    # In place where a value is not needed again: each pass over (N, K, C) counts in the step.
    scores.sub_(scores.amax(dim=2, keepdim=True))  # (N, K, C), max 0 per row
    correct = scores.gather(2, label_index)  # (N, K, 1)
    probs = scores.exp_()  # (N, K, C), unnormalised
    sum_exp = probs.sum(dim=2, keepdim=True)  # (N, K, 1), >= 1
    data_loss = (sum_exp.log() - correct).sum(dim=(0, 2)) / N  # (K,)
    # dL/ds = (softmax(s) - onehot(y)) / N.
    probs.div_(sum_exp.mul_(N))
    probs.scatter_add_(2, label_index, torch.full_like(correct, -1.0 / N))
    return data_loss, probs


def l2svm_scores_grad(scores: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """One-vs-all squared hinge (L2-SVM, Coates, Lee & Ng's classifier) of a grid's scores and its gradient.

    Each class is its own binary problem with targets ``t_ic = +1`` if ``c == y_i`` else ``-1``:
    ``L = (1/N) sum_i sum_c max(0, 1 - t_ic s_ic)^2`` and ``dL/ds_ic = -(2/N) t_ic max(0, 1 - t_ic s_ic)``.
    The square makes it differentiable at the margin. The paper's ``0.5 ||theta||^2 + C L`` is, divided by
    C, this loss with ``reg = 1 / (2 C)``: its ``C = 100`` is ``reg = 0.005``.

    Args:
        scores: ``(N, K, C)``; overwritten (it becomes the gradient).
        y: ``(N,)`` int64.

    Returns:
        ``(data_loss (K,), dscores (N, K, C))``.
    """
    N, K, _ = scores.shape
    label_index = y.view(N, 1, 1).expand(N, K, 1)  # (N, K, 1)
    correct = scores.gather(2, label_index)  # (N, K, 1)
    scores.neg_().scatter_(2, label_index, correct)  # t * s: -s for every class, then s for the true one
    margins = scores.neg_().add_(1).clamp_min_(0)  # (N, K, C): max(0, 1 - t s)
    data_loss = torch.mul(margins, margins).sum(dim=(0, 2)) / N  # (K,)
    dscores = margins.mul_(2.0 / N)  # -(2/N) t m: +(2/N) m for the other classes, -(2/N) m for the true one
    dscores.scatter_(2, label_index, dscores.gather(2, label_index).neg_())
    return data_loss, dscores


SCORES_GRAD = {"svm": svm_scores_grad, "softmax": softmax_scores_grad, "l2svm": l2svm_scores_grad}


# Up to this many columns (K*C), the two training products run about twice as fast on the CPU
# (MKL) with their operands swapped, writing a (K*C, n) result instead of an (n, K*C) one: 0.09
# instead of 0.17 ms each for one config at N=200 (measured; no difference from K = 5 on).
NARROW_GRID = 64


def grid_scores(W_flat: Tensor, X: Tensor) -> Tensor:
    """``X @ W_flat``, ``(N, D) @ (D, K*C) -> (N, K*C)``, computed the faster way for its width.

    The product runs in X's dtype and the scores are returned in W's. Under mixed precision X is
    narrower (bfloat16 or float16, :mod:`lit_linear.training.precision`): W is rounded to it for the product.
    """
    if X.dtype != W_flat.dtype:
        # Rounded into nn.Linear's (K*C, D) layout: several times faster than (D, K*C) for 16-bit CPU
        # kernels, and an ordinary transposed operand for cuBLAS.
        W_x = torch.empty(W_flat.shape[::-1], dtype=X.dtype, device=X.device).copy_(W_flat.t())
        return (X @ W_x.t()).to(W_flat.dtype)
    if W_flat.shape[1] <= NARROW_GRID:
        return (W_flat.t() @ X.t()).t()  # a transposed view; the loss heads work on any strides
    return X @ W_flat


def grid_gradient(X: Tensor, dscores: Tensor) -> Tensor:
    """``X.T @ dscores``, ``(D, N) @ (N, K*C) -> (D, K*C)``, computed the faster way for its width.

    The product runs in X's dtype and the result is returned in dscores'. Under mixed precision X
    is narrower than dscores: dscores is rounded to it as ``N * dscores``, whose entries (``p - onehot(y)``
    for softmax, at most C-1 in size for the hinge) float16 holds without underflow, and the product
    is divided by N in dscores' dtype. No loss scale is needed, unlike autograd's.
    """
    if X.dtype == dscores.dtype:
        return _transposed_product(X, dscores)
    N = X.shape[0]
    return _transposed_product(X, (dscores * N).to(X.dtype)).to(dscores.dtype).div_(N)


def _transposed_product(X: Tensor, dscores: Tensor) -> Tensor:
    if dscores.shape[1] <= NARROW_GRID:
        return (dscores.t() @ X).t()  # a transposed view of a (K*C, D) product
    return X.t() @ dscores


def grid_loss_factored(loss: str, W: Tensor, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The data loss of a ``(D, K, C)`` grid and its gradient as a factor: ``dW_data = X.T @ dscores``.

    What training uses. The product ``X.T @ dscores`` is left to the update, which adds it into
    ``W`` in place (:class:`lit_linear.maths.optim.GridSGD`) instead of forming ``dW`` and then reading
    it again. So is the regulariser: ``reg * ||W_k||^2`` and its gradient ``2 reg W`` are taken by
    the update in the pass that scales ``W`` by ``1 - 2 lr reg``.

    Args:
        loss: ``"svm"`` or ``"softmax"``.
        W: ``(D, K, C)``.
        X: ``(N, D)``.
        y: ``(N,)`` int64.

    Returns:
        ``(data_loss (K,), dscores (N, K*C))``: the data term of each config's loss (without the
        regulariser) and its gradient with respect to the scores.
    """
    D, K, C = W.shape
    check_batch(D, C, X, y)
    N = X.shape[0]
    scores = grid_scores(W.view(D, K * C), X)  # (N, K*C)
    data_loss, dscores = SCORES_GRAD[loss](scores.view(N, K, C), y)  # (K,), (N, K, C)
    return data_loss, dscores.view(N, K * C)
