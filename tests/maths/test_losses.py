"""Tests of the hand-written SVM and softmax losses in :mod:`lit_linear.maths.losses`.

Everything runs in float64 on the CPU unless a test is about dtypes. The independent oracles are
PyTorch's own losses (``F.multi_margin_loss``, ``F.cross_entropy``) and autograd on them.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_linear.maths.losses import l2svm_loss_vectorized, softmax_loss_vectorized, svm_loss_vectorized
from lit_linear.maths.naive import l2svm_loss_naive, softmax_loss_naive, svm_loss_naive

NAIVE = {"svm": svm_loss_naive, "softmax": softmax_loss_naive, "l2svm": l2svm_loss_naive}
VECTORIZED = {"svm": svm_loss_vectorized, "softmax": softmax_loss_vectorized, "l2svm": l2svm_loss_vectorized}
KINDS = ["svm", "softmax", "l2svm"]

# (N, D, C): edge cases C=2, N=1, D=1 (alone and together) and a few ordinary shapes.
SHAPES = [(1, 1, 2), (1, 5, 3), (6, 1, 4), (4, 3, 2), (9, 7, 5), (32, 17, 10)]
# (N, D, C, K): K=1 and K>1 grids; D != K everywhere so a layout mix-up cannot go unnoticed.
GRID_SHAPES = [(1, 1, 2, 1), (1, 3, 2, 4), (5, 1, 3, 2), (8, 6, 4, 1), (20, 9, 10, 3)]
SEEDS = [0, 1]


def make_problem(
    N: int, D: int, C: int, K: int | None = None, *, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor, Tensor]:
    """Random ``W`` (``(D, C)``, or ``(K, D, C)`` when K is given), ``X (N, D)`` and labels ``y (N,)``.

    Weights and data are O(1), so the SVM has a mix of active and inactive margins and the
    softmax probabilities are far from both uniform and one-hot.
    """
    g = torch.Generator().manual_seed(seed)
    shape = (D, C) if K is None else (K, D, C)
    W = torch.randn(shape, generator=g, dtype=dtype)
    X = torch.randn(N, D, generator=g, dtype=dtype)
    y = torch.randint(0, C, (N,), generator=g)
    return W, X, y


def reference_loss(kind: str, W: Tensor, X: Tensor, y: Tensor, reg: float) -> Tensor:
    """The same loss from PyTorch's built-ins, for one ``(D, C)`` W; differentiable by autograd.

    ``F.multi_margin_loss`` divides each row's hinge sum by C as well as averaging over rows, so
    it is multiplied back by C to give the course's (Weston-Watkins) SVM loss.
    """
    scores = X @ W
    if kind == "l2svm":  # one-vs-all targets +-1, squared hinge, summed over classes, mean over rows
        targets = 2.0 * F.one_hot(y, W.shape[1]).to(W.dtype) - 1.0
        data = (F.relu(1 - targets * scores) ** 2).sum(dim=1).mean()
    elif kind == "svm":
        data = F.multi_margin_loss(scores, y, margin=1.0) * W.shape[1]
    else:
        data = F.cross_entropy(scores, y)
    return data + reg * (W * W).sum()


def assert_close(actual: Tensor, expected: Tensor, rtol: float = 1e-10) -> None:
    # The tiny absolute floor only matters for gradient entries that cancel to ~0.
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=1e-12)


# --------------------------------------------------------------------------- 1. naive == vectorized


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_naive_matches_vectorized(kind: str, shape: tuple[int, int, int], seed: int) -> None:
    """The loop reference and the vectorized loss give the same loss and dW (1e-10 relative)."""
    W, X, y = make_problem(*shape, seed=seed)
    reg = 0.37
    loss_n, dW_n = NAIVE[kind](W, X, y, reg)
    loss_v, dW_v = VECTORIZED[kind](W, X, y, reg)
    assert_close(loss_v, loss_n)
    assert_close(dW_v, dW_n)


# --------------------------------------------------------------------------- 2. independent formula


def test_svm_reference_scaling_by_hand() -> None:
    """A hand-computed row pins the SVM definition (sum over j != y, margin 1) and softmax's.

    Scores ``[1, 2, 0.5]`` with label 0: hinge terms ``max(0, 2-1+1) + max(0, 0.5-1+1) = 2.5``;
    this also confirms that ``F.multi_margin_loss * C`` is that sum, not the class mean.
    """
    W = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]], dtype=torch.float64)
    X = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0])
    reg = 0.1
    reg_term = reg * (1.0 + 4.0 + 0.25)
    assert svm_loss_vectorized(W, X, y, reg)[0].item() == pytest.approx(2.5 + reg_term, rel=1e-12)
    assert reference_loss("svm", W, X, y, reg).item() == pytest.approx(2.5 + reg_term, rel=1e-12)
    softmax = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5)) - 1.0
    assert softmax_loss_vectorized(W, X, y, reg)[0].item() == pytest.approx(softmax + reg_term, rel=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_pytorch_loss_and_autograd(kind: str, shape: tuple[int, int, int], seed: int) -> None:
    """Loss equals PyTorch's built-in loss + reg * ||W||^2, and dW equals autograd of that formula."""
    W, X, y = make_problem(*shape, seed=seed)
    reg = 0.25
    loss, dW = VECTORIZED[kind](W, X, y, reg)

    W_ref = W.clone().requires_grad_(True)
    expected = reference_loss(kind, W_ref, X, y, reg)
    expected.backward()
    assert_close(loss, expected.detach())
    assert_close(dW, W_ref.grad)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", GRID_SHAPES)
def test_grid_matches_pytorch_autograd(kind: str, shape: tuple[int, int, int, int]) -> None:
    """A (K, D, C) grid with per-config reg matches autograd of the built-in loss, config by config."""
    N, D, C, K = shape
    W, X, y = make_problem(N, D, C, K, seed=3)
    reg = torch.linspace(0.0, 1.0, K, dtype=torch.float64)
    loss, dW = VECTORIZED[kind](W, X, y, reg)

    W_ref = W.clone().requires_grad_(True)
    expected = torch.stack([reference_loss(kind, W_ref[k], X, y, reg[k].item()) for k in range(K)])
    # The configs are independent, so the gradient of the sum is every config's own gradient.
    expected.sum().backward()
    assert_close(loss, expected.detach())
    assert_close(dW, W_ref.grad)


# --------------------------------------------------------------------------- 3. grids and layouts


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", GRID_SHAPES)
@pytest.mark.parametrize("reg_kind", ["float", "tensor"])
def test_grid_equals_separate_calls(kind: str, shape: tuple[int, int, int, int], reg_kind: str) -> None:
    """Loss and dW of a (K, D, C) grid equal K separate (D, C) calls, reg a float or a (K,) tensor."""
    N, D, C, K = shape
    W, X, y = make_problem(N, D, C, K, seed=1)
    regs = [0.1 * (k + 1) for k in range(K)] if reg_kind == "tensor" else [0.3] * K
    reg = torch.tensor(regs, dtype=torch.float64) if reg_kind == "tensor" else 0.3
    loss, dW = VECTORIZED[kind](W, X, y, reg)

    singles = [VECTORIZED[kind](W[k], X, y, regs[k]) for k in range(K)]
    assert loss.shape == (K,) and dW.shape == (K, D, C)
    assert_close(loss, torch.stack([s[0] for s in singles]))
    assert_close(dW, torch.stack([s[1] for s in singles]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", GRID_SHAPES)
@pytest.mark.parametrize("reg_kind", ["float", "tensor"])
def test_dkc_layout_equals_kdc(kind: str, shape: tuple[int, int, int, int], reg_kind: str) -> None:
    """``layout="DKC"`` on a (D, K, C) grid gives the KDC results, with dW returned as (D, K, C)."""
    N, D, C, K = shape
    W, X, y = make_problem(N, D, C, K, seed=2)
    reg = torch.arange(1, K + 1, dtype=torch.float64) / 10 if reg_kind == "tensor" else 0.2
    loss_kdc, dW_kdc = VECTORIZED[kind](W, X, y, reg, layout="KDC")
    W_dkc = W.permute(1, 0, 2).contiguous()
    loss_dkc, dW_dkc = VECTORIZED[kind](W_dkc, X, y, reg, layout="DKC")

    assert dW_dkc.shape == (D, K, C)
    assert_close(loss_dkc, loss_kdc)
    assert_close(dW_dkc, dW_kdc.permute(1, 0, 2))


# --------------------------------------------------------------------------- 5. initial loss


def test_initial_loss_of_small_random_weights() -> None:
    """With W ~ 1e-4 randn on CIFAR-sized inputs, softmax starts at ~log 10 and SVM at ~C-1 = 9.

    The classic first sanity check of the course: near-zero scores make every class equally
    likely (softmax) and every hinge term ~1 (SVM).
    """
    g = torch.Generator().manual_seed(0)
    N, C = 200, 10
    W = 1e-4 * torch.randn(3073, C, generator=g, dtype=torch.float64)
    pixels = torch.rand(N, 3072, generator=g, dtype=torch.float64) - 0.5  # centred data in [-0.5, 0.5]
    X = torch.cat([pixels, torch.ones(N, 1, dtype=torch.float64)], dim=1)  # bias column
    y = torch.randint(0, C, (N,), generator=g)

    softmax_loss, _ = softmax_loss_vectorized(W, X, y, 0.0)
    svm_loss, _ = svm_loss_vectorized(W, X, y, 0.0)
    assert abs(softmax_loss.item() - math.log(10)) < 0.01
    assert abs(svm_loss.item() - 9.0) < 0.1


# --------------------------------------------------------------------------- 6. stability


@pytest.mark.parametrize("naive", [False, True], ids=["vectorized", "naive"])
def test_softmax_stable_for_huge_scores(naive: bool) -> None:
    """Scores of +-1e4 (where a plain exp overflows even float64) give a finite softmax loss and
    gradient in float32 and float64, and the float32 loss agrees with the float64 one."""
    fn = softmax_loss_naive if naive else softmax_loss_vectorized
    W64, X64, y = make_problem(12, 6, 5, seed=4)
    scores = X64 @ W64
    W64 = W64 * (1e4 / scores.abs().max())  # the largest |score| is now exactly 1e4
    assert (X64 @ W64).abs().max().item() == pytest.approx(1e4)
    # The premise: an unshifted exp of these scores is inf in both dtypes.
    assert torch.isinf(torch.exp(torch.tensor(1e4, dtype=torch.float64)))

    results = {}
    for dtype in (torch.float32, torch.float64):
        loss, dW = fn(W64.to(dtype), X64.to(dtype), y, 1e-6)
        assert torch.isfinite(loss).all(), dtype
        assert torch.isfinite(dW).all(), dtype
        results[dtype] = (loss, dW)
    loss32, dW32 = results[torch.float32]
    loss64, dW64 = results[torch.float64]
    assert loss64.item() > 100  # the scores really are huge, not washed out
    assert loss32.item() == pytest.approx(loss64.item(), rel=1e-5)
    torch.testing.assert_close(dW32.double(), dW64, rtol=1e-4, atol=1e-5)


def test_svm_finite_for_huge_scores() -> None:
    """The SVM loss is also finite and float32/float64-consistent for scores of +-1e4."""
    W64, X64, y = make_problem(12, 6, 5, seed=4)
    W64 = W64 * (1e4 / (X64 @ W64).abs().max())
    loss32, dW32 = svm_loss_vectorized(W64.float(), X64.float(), y, 0.0)
    loss64, dW64 = svm_loss_vectorized(W64, X64, y, 0.0)
    assert torch.isfinite(loss32) and torch.isfinite(dW32).all()
    assert loss32.item() == pytest.approx(loss64.item(), rel=1e-5)
    torch.testing.assert_close(dW32.double(), dW64, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- 7. dtype, device, shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("impl", ["naive", "vectorized"])
def test_single_output_dtype_device_shape(dtype: torch.dtype, kind: str, impl: str) -> None:
    """For one (D, C) W: loss is a 0-dim tensor, dW is (D, C), both in W's dtype and device."""
    fn = NAIVE[kind] if impl == "naive" else VECTORIZED[kind]
    W, X, y = make_problem(5, 4, 3, dtype=dtype)
    loss, dW = fn(W, X, y, 0.1)
    assert loss.shape == () and dW.shape == W.shape
    assert loss.dtype == dtype and dW.dtype == dtype
    assert loss.device == W.device and dW.device == W.device


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["KDC", "DKC"])
@pytest.mark.parametrize("reg_dtype", [None, torch.float32, torch.float64])
def test_grid_output_dtype_device_shape(
    dtype: torch.dtype, kind: str, layout: str, reg_dtype: torch.dtype | None
) -> None:
    """For a grid: loss is (K,), dW is shaped like W, both in W's dtype (whatever reg's dtype)."""
    K, D, C = 3, 4, 5
    W, X, y = make_problem(6, D, C, K, dtype=dtype)
    if layout == "DKC":
        W = W.permute(1, 0, 2).contiguous()
    reg = 0.1 if reg_dtype is None else torch.full((K,), 0.1, dtype=reg_dtype)
    loss, dW = VECTORIZED[kind](W, X, y, reg, layout=layout)
    assert loss.shape == (K,) and dW.shape == W.shape
    assert loss.dtype == dtype and dW.dtype == dtype
    assert loss.device == W.device and dW.device == W.device


@pytest.mark.parametrize("kind", KINDS)
def test_does_not_modify_inputs(kind: str) -> None:
    """The losses leave W, X and y untouched (training code reuses them)."""
    W, X, y = make_problem(7, 4, 3, 2, seed=5)
    copies = (W.clone(), X.clone(), y.clone())
    VECTORIZED[kind](W, X, y, torch.tensor([0.1, 0.2], dtype=torch.float64))
    VECTORIZED[kind](W.permute(1, 0, 2), X, y, 0.1, layout="DKC")
    NAIVE[kind](W[0], X, y, 0.1)
    for before, after in zip(copies, (W, X, y)):
        assert torch.equal(before, after)


# --------------------------------------------------------------------------- 8. errors


@pytest.mark.parametrize("fn", [svm_loss_naive, softmax_loss_naive, svm_loss_vectorized, softmax_loss_vectorized])
def test_error_x_columns_mismatch(fn) -> None:
    """X with a column count other than W's D is a ValueError naming the expected shape."""
    W, X, y = make_problem(5, 4, 3)
    with pytest.raises(ValueError, match=r"X must have shape \(N, 4\)"):
        fn(W, X[:, :3], y, 0.1)


@pytest.mark.parametrize("fn", [svm_loss_naive, softmax_loss_naive, svm_loss_vectorized, softmax_loss_vectorized])
def test_error_y_length_mismatch(fn) -> None:
    """y with a length other than X's N is a ValueError naming the expected shape."""
    W, X, y = make_problem(5, 4, 3)
    with pytest.raises(ValueError, match=r"y must have shape \(5,\)"):
        fn(W, X, y[:4], 0.1)


@pytest.mark.parametrize("fn", [svm_loss_vectorized, softmax_loss_vectorized])
@pytest.mark.parametrize("layout", ["KDC", "DKC"])
def test_error_reg_tensor_wrong_length(fn, layout: str) -> None:
    """A reg tensor whose length is not K is a ValueError, in either layout and for a single W."""
    W, X, y = make_problem(5, 4, 3, 2)
    if layout == "DKC":
        W = W.permute(1, 0, 2)
    with pytest.raises(ValueError, match=r"reg must be a float or a \(2,\) tensor"):
        fn(W, X, y, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), layout=layout)
    with pytest.raises(ValueError, match=r"reg must be"):
        fn(W[0] if layout == "KDC" else W[:, 0], X, y, torch.tensor([0.1, 0.2], dtype=torch.float64))


@pytest.mark.parametrize("fn", [svm_loss_naive, softmax_loss_naive, svm_loss_vectorized, softmax_loss_vectorized])
def test_error_single_class(fn) -> None:
    """C=1 is rejected: neither loss means anything with one class (C=2 is the smallest valid)."""
    W, X, y = make_problem(5, 4, 1)
    with pytest.raises(ValueError, match="at least 2 classes"):
        fn(W, X, y, 0.1)


@pytest.mark.parametrize("fn", [svm_loss_naive, softmax_loss_naive])
def test_error_naive_rejects_grid(fn) -> None:
    """The naive references take one (D, C) W only; a grid is a ValueError, not a wrong answer."""
    W, X, y = make_problem(5, 4, 3, 2)
    with pytest.raises(ValueError, match=r"W must have shape \(D, C\)"):
        fn(W, X, y, 0.1)


@pytest.mark.parametrize("fn", [svm_loss_vectorized, softmax_loss_vectorized])
def test_error_bad_layout_and_rank(fn) -> None:
    """An unknown layout for a grid, or a W that is neither 2- nor 3-dim, is a ValueError."""
    W, X, y = make_problem(5, 4, 3, 2)
    with pytest.raises(ValueError, match="layout must be"):
        fn(W, X, y, 0.1, layout="CKD")
    with pytest.raises(ValueError, match="W must have shape"):
        fn(W.unsqueeze(0), X, y, 0.1)
