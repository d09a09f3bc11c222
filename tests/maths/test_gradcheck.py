"""Tests of :func:`lit_linear.maths.gradcheck.grad_check_sparse`: it passes right gradients, fails wrong
ones, and leaves its input as it found it.

About the thresholds: the relative error of a centred difference carries a rounding term of about
``eps * |f| / h``, which is large *relative* to gradient entries near zero. The strict "< 1e-7"
checks therefore use ``h = 1e-5`` (errors ~1e-11 to 1e-9), and the default ``h = 1e-7`` is held
to a looser bar. The problems are fixed by seed, so the tests are deterministic.
"""

from __future__ import annotations

import re
import statistics

import pytest
import torch
from torch import Tensor

from lit_linear.maths.gradcheck import grad_check_sparse
from lit_linear.maths.losses import l2svm_loss_vectorized, softmax_loss_vectorized, svm_loss_vectorized

LOSSES = {"svm": svm_loss_vectorized, "softmax": softmax_loss_vectorized, "l2svm": l2svm_loss_vectorized}

# (N, D, C, K); K=None means a single (D, C) W. Includes the N=1, D=1, C=2 corner.
PROBLEMS = [(1, 1, 2, None), (10, 5, 3, None), (40, 12, 10, None), (10, 5, 3, 3)]


def make_problem(
    N: int, D: int, C: int, K: int | None = None, *, seed: int = 0, w_scale: float = 0.1
) -> tuple[Tensor, Tensor, Tensor]:
    """Random float64 ``W`` (``(D, C)`` or ``(K, D, C)``), ``X (N, D)`` and labels ``y (N,)``."""
    g = torch.Generator().manual_seed(seed)
    W = w_scale * torch.randn((D, C) if K is None else (K, D, C), generator=g, dtype=torch.float64)
    X = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (N,), generator=g)
    return W, X, y


def loss_fn(kind: str, X: Tensor, y: Tensor, reg: float):
    """``W -> scalar loss``; for a grid the sum over configs, whose gradient is the grid's dW."""
    return lambda W: LOSSES[kind](W, X, y, reg)[0].sum()


# --------------------------------------------------------------------------- right gradients pass


@pytest.mark.parametrize("kind", ["svm", "softmax", "l2svm"])
@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("seed", [0, 1])
def test_correct_gradient_passes_strictly(kind: str, problem: tuple, seed: int) -> None:
    """The vectorized losses' own gradients (reg > 0, single and grid W) check below 1e-7."""
    W, X, y = make_problem(*problem, seed=seed)
    reg = 0.1
    _, dW = LOSSES[kind](W, X, y, reg)
    errors = grad_check_sparse(loss_fn(kind, X, y, reg), W, dW, num_checks=20, h=1e-5, seed=seed)
    assert len(errors) == 20
    assert max(errors) < 1e-7, errors


@pytest.mark.parametrize("kind", ["svm", "softmax"])
@pytest.mark.parametrize("problem", PROBLEMS)
def test_correct_gradient_passes_with_default_step(kind: str, problem: tuple) -> None:
    """With the default h = 1e-7 errors are typically ~1e-8, and all below 1e-4.

    The bar is loose on purpose: rounding makes a tiny gradient entry's relative error large
    (e.g. 3.6e-5 at an entry of 1.4e-4 with loss 9.3 in the (40, 12, 10) problem).
    """
    W, X, y = make_problem(*problem, seed=0)
    _, dW = LOSSES[kind](W, X, y, 0.1)
    errors = grad_check_sparse(loss_fn(kind, X, y, 0.1), W, dW, num_checks=20)
    assert statistics.median(errors) < 1e-7, errors
    assert max(errors) < 1e-4, errors


# --------------------------------------------------------------------------- wrong gradients fail


@pytest.mark.parametrize("kind", ["svm", "softmax"])
def test_gradient_without_regulariser_fails(kind: str) -> None:
    """Dropping the 2 * reg * W term (a classic bug) gives errors far above 1e-3."""
    W, X, y = make_problem(10, 5, 3, w_scale=1.0)
    reg = 0.5
    _, dW = LOSSES[kind](W, X, y, reg)
    wrong = dW - 2 * reg * W
    errors = grad_check_sparse(loss_fn(kind, X, y, reg), W, wrong, num_checks=20, h=1e-5)
    assert max(errors) > 1e-1, errors
    assert statistics.median(errors) > 1e-3, errors


@pytest.mark.parametrize("kind", ["svm", "softmax"])
def test_slightly_scaled_gradient_fails_everywhere(kind: str) -> None:
    """A gradient only 1% too large is flagged (> 1e-3) at every sampled entry."""
    W, X, y = make_problem(10, 5, 3)
    _, dW = LOSSES[kind](W, X, y, 0.1)
    errors = grad_check_sparse(loss_fn(kind, X, y, 0.1), W, 1.01 * dW, num_checks=20, h=1e-5)
    assert min(errors) > 1e-3, errors


@pytest.mark.parametrize("kind", ["svm", "softmax"])
def test_transposed_or_swapped_gradient_fails(kind: str) -> None:
    """A transposed dW (square D == C) or a grid dW with configs swapped is flagged (> 1e-3)."""
    W, X, y = make_problem(10, 4, 4, w_scale=1.0)
    _, dW = LOSSES[kind](W, X, y, 0.1)
    errors = grad_check_sparse(loss_fn(kind, X, y, 0.1), W, dW.t().contiguous(), num_checks=20, h=1e-5)
    assert max(errors) > 1e-3, errors

    W, X, y = make_problem(10, 5, 3, 2, w_scale=1.0)
    _, dW = LOSSES[kind](W, X, y, 0.1)
    errors = grad_check_sparse(loss_fn(kind, X, y, 0.1), W, dW.flip(0), num_checks=20, h=1e-5)
    assert max(errors) > 1e-3, errors


def test_relative_error_formula() -> None:
    """Error is |num - ana| / (|num| + |ana|): f = 3 * sum(x) with claimed gradient 1 gives 2/4."""
    x = torch.linspace(-1, 1, 6, dtype=torch.float64).view(2, 3)
    errors = grad_check_sparse(lambda v: 3 * v.sum(), x, torch.ones_like(x), num_checks=5)
    assert errors == pytest.approx([0.5] * 5, rel=1e-6)
    exact = grad_check_sparse(lambda v: 3 * v.sum(), x, torch.full_like(x, 3.0), num_checks=5)
    assert max(exact) < 1e-8


def test_zero_gradient_of_constant_is_zero_error() -> None:
    """A constant f with a zero gradient reports error 0, not NaN (0 / 0 is guarded)."""
    x = torch.randn(3, 4, dtype=torch.float64)
    errors = grad_check_sparse(lambda v: torch.tensor(2.0, dtype=torch.float64), x, torch.zeros_like(x))
    assert errors == [0.0] * 10


def test_accepts_python_float_from_f() -> None:
    """``f`` may return a Python float instead of a 0-dim tensor."""
    x = torch.randn(5, dtype=torch.float64)
    errors = grad_check_sparse(lambda v: float((v * v).sum()), x, 2 * x, num_checks=5)
    assert max(errors) < 1e-7


# --------------------------------------------------------------------------- input handling


def test_restores_x_exactly() -> None:
    """x is perturbed in place while checking (f sees x +- h) but is bit-for-bit restored after."""
    W, X, y = make_problem(10, 5, 3)
    before = W.clone()
    seen: list[float] = []

    def f(v: Tensor) -> Tensor:
        seen.append((v - before).abs().max().item())
        return softmax_loss_vectorized(v, X, y, 0.1)[0]

    _, dW = softmax_loss_vectorized(W, X, y, 0.1)
    grad_check_sparse(f, W, dW, num_checks=7, h=1e-5)
    assert torch.equal(W, before)
    assert len(seen) == 14 and all(d == pytest.approx(1e-5, rel=1e-6) for d in seen)


def test_restores_x_when_f_raises() -> None:
    """If f raises on a perturbed x, the error propagates and x is still restored."""
    x = torch.randn(4, 3, dtype=torch.float64)
    before = x.clone()
    calls = 0

    def f(v: Tensor) -> Tensor:
        nonlocal calls
        calls += 1
        if calls == 4:  # the f(x - h) call of the second sampled entry
            raise RuntimeError("boom")
        return v.sum()

    with pytest.raises(RuntimeError, match="boom"):
        grad_check_sparse(f, x, torch.ones_like(x))
    assert torch.equal(x, before)


def test_samples_entries_reproducibly_by_seed() -> None:
    """The same seed samples the same entries, another seed other ones; num_checks sets how many."""
    x = torch.zeros(6, 7, dtype=torch.float64)

    def sampled(seed: int, num_checks: int) -> list[tuple[int, ...]]:
        picked: list[tuple[int, ...]] = []

        def f(v: Tensor) -> Tensor:
            if v.max() > 0:  # only the x + h call: record where the step went
                picked.append(tuple(torch.nonzero(v)[0].tolist()))
            return v.sum()

        grad_check_sparse(f, x, torch.ones_like(x), num_checks=num_checks, seed=seed)
        return picked

    first = sampled(0, 12)
    assert len(first) == 12
    assert sampled(0, 12) == first
    assert sampled(1, 12) != first
    assert len(set(first)) > 1  # really random entries, not one entry repeated


def test_verbose_prints_one_line_per_check(capsys: pytest.CaptureFixture[str]) -> None:
    """verbose=True prints one course-style line per sampled entry; verbose=False prints nothing."""
    W, X, y = make_problem(10, 5, 3)
    _, dW = svm_loss_vectorized(W, X, y, 0.1)
    f = loss_fn("svm", X, y, 0.1)

    errors = grad_check_sparse(f, W, dW, num_checks=4, verbose=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    pattern = r"numerical: -?\d+\.\d+ analytic: -?\d+\.\d+, relative error: (\S+)"
    for line, error in zip(lines, errors):
        match = re.fullmatch(pattern, line)
        assert match, line
        assert float(match.group(1)) == pytest.approx(error, rel=1e-5)

    grad_check_sparse(f, W, dW, num_checks=4)
    assert capsys.readouterr().out == ""


def test_gradient_shape_mismatch_is_value_error() -> None:
    """An analytic gradient not shaped like x is a ValueError, not a silent misindexing."""
    W, X, y = make_problem(10, 5, 3)
    _, dW = svm_loss_vectorized(W, X, y, 0.1)
    with pytest.raises(ValueError, match=r"analytic_grad has shape \(3, 5\), expected \(5, 3\)"):
        grad_check_sparse(loss_fn("svm", X, y, 0.1), W, dW.t())
