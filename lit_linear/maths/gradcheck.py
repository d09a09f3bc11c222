"""Numeric gradient checking: centred differences at sampled entries, as in the course."""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch import Tensor


def grad_check_sparse(
    f: Callable[[Tensor], Tensor | float],
    x: Tensor,
    analytic_grad: Tensor,
    num_checks: int = 10,
    h: float = 1e-7,
    *,
    seed: int | None = 0,
    verbose: bool = False,
) -> list[float]:
    """Compare ``analytic_grad`` with centred differences of ``f`` at random entries of ``x``.

    At each sampled index ``i`` the numeric derivative is ``(f(x + h e_i) - f(x - h e_i)) / 2h``
    and the relative error ``|num - ana| / (|num| + |ana| + 1e-12)``. ``x`` is perturbed in
    place and restored (also when ``f`` raises), so ``f`` must read ``x`` when called.

    Use float64. Rounding in ``f`` adds about ``eps * |f| / h`` to the numeric derivative, so
    small gradient entries get large relative errors: with the default h = 1e-7 a correct
    gradient of an O(1) loss typically gives 1e-9 to 1e-8, with a tail past 1e-6 at entries near
    zero; h = 1e-5 gives ~1e-11 to 1e-9 (on the SVM unless a step crosses a kink). A wrong
    gradient typically gives 1e-3 or more. In float32, ``x + 1e-7`` often rounds back to ``x``
    and the errors are meaningless (~1).

    Args:
        f: maps ``x`` to a scalar (a 0-dim tensor or a float), e.g. ``lambda W: loss(W, X, y, reg)[0]``.
        x: the point, any shape.
        analytic_grad: the gradient to check, shaped like ``x``.
        num_checks: how many entries to sample.
        h: the finite-difference step.
        seed: seeds the choice of entries (``None``: Python's global RNG).
        verbose: print one line per sampled entry, like the course's checker.

    Returns:
        the relative error at each sampled entry.
    """
    if analytic_grad.shape != x.shape:
        raise ValueError(f"analytic_grad has shape {tuple(analytic_grad.shape)}, expected {tuple(x.shape)} like x")
    rng = random.Random(seed) if seed is not None else random
    errors = []
    with torch.no_grad():
        for _ in range(num_checks):
            ix = tuple(rng.randrange(m) for m in x.shape)
            old = x[ix].item()
            try:
                x[ix] = old + h
                f_plus = float(f(x))
                x[ix] = old - h
                f_minus = float(f(x))
            finally:
                # x is usually the caller's weights: never leave them off by h, even if f raised.
                x[ix] = old
            numeric = (f_plus - f_minus) / (2 * h)
            analytic = analytic_grad[ix].item()
            rel_error = abs(numeric - analytic) / (abs(numeric) + abs(analytic) + 1e-12)
            errors.append(rel_error)
            if verbose:
                print(f"numerical: {numeric:f} analytic: {analytic:f}, relative error: {rel_error:e}")
    return errors
