"""The compiled CPU kernels give the PyTorch code's numbers, and everything falls back to PyTorch without them."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from lit_linear import native
from lit_linear.classifier import gather_features, preprocess
from lit_linear.losses import SCORES_GRAD, grid_loss_factored, grid_scores, grid_sq_norms
from lit_linear.optim import GridSGD

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CC") or "cc") is None, reason="no C compiler: the PyTorch fallback is what runs"
)


@pytest.fixture
def pytorch_only(monkeypatch):
    """Run the block with the kernels switched off, as LIT_LINEAR_NATIVE=0 does."""
    monkeypatch.setenv("LIT_LINEAR_NATIVE", "0")


@needs_compiler
def test_kernels_build_and_load_here():
    assert native.available(), native.unavailable_reason()
    assert native.unavailable_reason() is None


def reference(loss, scores, y, K, C):
    N = scores.shape[0]
    data_loss, dscores = SCORES_GRAD[loss](scores.clone().view(N, K, C), y)
    return data_loss, dscores.reshape(N, K * C)


@needs_compiler
@pytest.mark.parametrize("loss", ["softmax", "svm"])
@pytest.mark.parametrize("K,C,N", [(1, 10, 200), (20, 10, 200), (3, 7, 13), (7, 100, 50)])
def test_loss_heads_equal_the_pytorch_heads(loss, K, C, N):
    g = torch.Generator().manual_seed(K * 100 + C)
    D = 40
    W = torch.randn(D, K * C, generator=g)
    X = torch.randn(N, D, generator=g)
    y = torch.randint(0, C, (N,), generator=g)
    scores = grid_scores(W, X)  # K*C <= 64 gives the transposed (strided) layout, wider a contiguous one
    want_loss, want_grad = reference(loss, scores, y, K, C)
    got_loss = native.scores_grad(loss, scores, y, K, C)
    assert got_loss is not None
    assert torch.allclose(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    # dscores ~ 1/N; p_y - 1/N cancels, so its error is a few float32 ulps of 1/N.
    assert torch.allclose(scores, want_grad, rtol=1e-5, atol=1e-7), "dscores are written over the scores"


@needs_compiler
@pytest.mark.parametrize("loss", ["softmax", "svm"])
def test_non_finite_scores_give_a_non_finite_loss_for_that_config_only(loss):
    K, C, N = 3, 10, 8
    scores = torch.randn(N, K * C)
    scores[2, C + 4] = math.nan  # config 1
    scores[5, 2 * C + 1] = math.inf  # config 2
    y = torch.arange(N) % C
    got = native.scores_grad(loss, scores.clone(), y, K, C)
    want, _ = reference(loss, scores, y, K, C)
    assert torch.isfinite(got).tolist() == torch.isfinite(want).tolist()
    assert torch.isfinite(got[0]) and not torch.isfinite(got[1])


@needs_compiler
def test_softmax_head_is_stable_for_huge_scores():
    scores = torch.tensor([[1e4, -1e4, 0.0], [-3e4, 2e4, 5.0]])
    y = torch.tensor([0, 2])
    want_loss, want_grad = reference("softmax", scores, y, 1, 3)
    got = native.scores_grad("softmax", scores, y, 1, 3)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, want_loss, rtol=1e-6)
    assert torch.allclose(scores, want_grad, atol=1e-7)


@needs_compiler
def test_preprocessing_equals_the_pytorch_preprocessing(monkeypatch):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (37, 3, 32, 32), dtype=torch.uint8, generator=g)
    mean = torch.rand(3072, generator=g)
    got = preprocess(images, mean)
    monkeypatch.setenv("LIT_LINEAR_NATIVE", "0")
    want = preprocess(images, mean)
    assert torch.allclose(got, want, rtol=0, atol=1e-7)
    assert torch.equal(got[:, -1], torch.ones(37))


@pytest.mark.parametrize("switch", ["1", "0"], ids=["compiled", "pytorch"])
def test_gathered_features_equal_preprocessing_the_gathered_rows(switch, monkeypatch):
    monkeypatch.setenv("LIT_LINEAR_NATIVE", switch)
    g = torch.Generator().manual_seed(1)
    split = torch.randint(0, 256, (50, 3072), dtype=torch.uint8, generator=g)
    mean, rows = torch.rand(3072, generator=g), torch.randint(0, 50, (17,), generator=g)
    out = torch.full((17, 3073), math.nan)
    got = gather_features(split, rows, mean, out=out)
    assert got is out, "written into the buffer it was given"
    assert torch.equal(got, preprocess(split[rows], mean))


@needs_compiler
@pytest.mark.parametrize("row", [-1, 50])
def test_a_row_outside_the_split_is_refused_not_read(row):
    split, mean = torch.zeros(50, 3072, dtype=torch.uint8), torch.zeros(3072)
    out = torch.zeros(2, 3073)
    with pytest.raises(IndexError, match=r"\[0, 50\)"):
        native.gather_preprocess(split, torch.tensor([3, row]), mean, out)
    assert not out.any(), "nothing written"


def optimizer_state(K, g):
    """GridSGD's per-config state as a step finds it: some configs already frozen."""
    live = (torch.rand(K, generator=g) > 0.2).float()
    return {"lr": torch.rand(K, generator=g), "reg": torch.rand(K, generator=g) * 1e-2, "live": live}


@needs_compiler
@pytest.mark.parametrize("K,C,transposed", [(1, 10, False), (25, 10, False), (4, 3, True)])
def test_optimizer_work_equals_its_pytorch_definition(K, C, transposed):
    """Learning rates, the regulariser's norms and shrink, freezing and the scaled dscores: one call."""
    g = torch.Generator().manual_seed(K)
    W = torch.randn(3073, K * C, generator=g)
    data_loss = torch.rand(K, generator=g)
    data_loss[K // 2] = math.inf if K > 1 else data_loss[0]  # a config that diverges in this step
    dscores = torch.randn(K * C, 64, generator=g).t() if transposed else torch.randn(64, K * C, generator=g)
    state = optimizer_state(K, g)
    want = [W.clone(), dscores.clone(), {k: v.clone() for k, v in state.items()}]
    want_loss, want_lr = GridSGD._prepare(want[0], want[2], 0.5, data_loss, want[1], K, C)

    loss, lr = native.grid_sgd_prepare(W, state["lr"], state["reg"], state["live"], 0.5, data_loss, dscores, K, C)
    assert torch.equal(W, want[0]), "the shrink is the same multiplication"
    assert torch.equal(lr, want_lr) and torch.equal(state["live"], want[2]["live"])
    assert torch.equal(dscores, want[1])
    assert torch.allclose(loss, want_loss, rtol=1e-5) and torch.isinf(loss).tolist() == torch.isinf(want_loss).tolist()
    if K > 1:
        assert state["live"][K // 2] == 0 and lr[K // 2] == 0, "a non-finite loss freezes its config"


@needs_compiler
def test_optimizer_work_without_a_loss_or_factors_only_shrinks():
    g = torch.Generator().manual_seed(5)
    W = torch.randn(300, 40, generator=g)
    state = optimizer_state(4, g)
    live = state["live"].clone()
    want = W.clone()
    _, want_lr = GridSGD._prepare(want, {k: v.clone() for k, v in state.items()}, 1.0, None, None, 4, 10)
    norms, lr = native.grid_sgd_prepare(W, state["lr"], state["reg"], state["live"], 1.0, None, None, 4, 10)
    assert torch.equal(W, want) and torch.equal(lr, want_lr)
    assert torch.equal(state["live"], live), "no loss: nothing is frozen"
    assert torch.allclose(norms, grid_sq_norms(want, 4, 10) / (1 - 2 * want_lr * state["reg"]) ** 2, rtol=1e-4)


@needs_compiler
def test_results_do_not_depend_on_the_number_of_threads():
    g = torch.Generator().manual_seed(3)
    W0 = torch.randn(3073, 200, generator=g) * 1e-3
    scores0 = torch.randn(200, 200, generator=g)  # the products' own rounding may depend on threads; not tested here
    y = torch.randint(0, 10, (200,), generator=g)
    state = optimizer_state(20, g)
    threads = torch.get_num_threads()
    out = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            scores, W, live = scores0.clone(), W0.clone(), state["live"].clone()
            data_loss = native.scores_grad("softmax", scores, y, 20, 10)
            loss, lr = native.grid_sgd_prepare(W, state["lr"], state["reg"], live, 0.9, data_loss, scores, 20, 10)
            out.append((data_loss, scores, loss, lr, W))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*out):
        assert torch.equal(a, b)


@pytest.mark.parametrize("loss", ["softmax", "svm"])
def test_training_maths_agrees_with_and_without_the_kernels(loss, monkeypatch):
    """What the kernels replace, end to end: three regularised GridSGD steps on factored losses."""
    g = torch.Generator().manual_seed(7)
    W0 = torch.randn(300, 6, 10, generator=g) * 1e-2
    X, y = torch.randn(64, 300, generator=g), torch.randint(0, 10, (64,), generator=g)
    results = []
    for switch in ("1", "0"):
        monkeypatch.setenv("LIT_LINEAR_NATIVE", switch)
        W = W0.clone()
        opt = GridSGD([W], lr=[0.1, 0.5, 1.0, 0.1, 0.5, 1.0], reg=[1e-3] * 3 + [1e-1] * 3, lr_decay=0.5, lr_decay_every=2)

        def closure():
            data_loss, dscores = grid_loss_factored(loss, W, X, y)
            return data_loss, X, dscores

        losses = [opt.step(closure) for _ in range(3)]
        results.append((torch.stack(losses), W))
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


@needs_compiler
@pytest.mark.parametrize("label", [-1, 10])
def test_a_label_outside_the_classes_is_refused_not_read_past_the_row(label):
    y = torch.tensor([0, label, 3])
    with pytest.raises(ValueError, match=r"labels outside \[0, 10\)"):
        native.scores_grad("softmax", torch.randn(3, 20), y, 2, 10)


def test_switched_off_by_the_environment(pytorch_only):
    assert not native.available()
    assert native.unavailable_reason() == "LIT_LINEAR_NATIVE=0"
    scores = torch.randn(4, 10)
    assert native.scores_grad("softmax", scores, torch.zeros(4, dtype=torch.long), 1, 10) is None


def test_not_used_for_other_dtypes_devices_or_autograd():
    y = torch.zeros(4, dtype=torch.long)
    assert native.scores_grad("softmax", torch.randn(4, 10, dtype=torch.float64), y, 1, 10) is None
    W, state = torch.randn(5, 10, requires_grad=True), optimizer_state(1, torch.Generator().manual_seed(0))
    assert native.grid_sgd_prepare(W, *state.values(), 1.0, None, None, 1, 10) is None, "autograd must see the PyTorch ops"
    W64 = torch.randn(5, 10, dtype=torch.float64)
    assert native.grid_sgd_prepare(W64, *state.values(), 1.0, None, None, 1, 10) is None
    with pytest.raises(ValueError, match="loss must be one of softmax, svm"):
        native.scores_grad("hinge", torch.randn(4, 10), y, 1, 10)


def test_a_missing_compiler_falls_back_with_one_warning(tmp_path):
    """A fresh process with no compiler and an empty cache: it warns once and trains with PyTorch ops."""
    code = (
        "import torch; from lit_linear import native; from lit_linear.losses import grid_loss_factored\n"
        "W, X, y = torch.randn(20, 2, 3), torch.randn(5, 20), torch.tensor([0, 1, 2, 0, 1])\n"
        "loss, d = grid_loss_factored('softmax', W, X, y)\n"
        "assert torch.isfinite(loss).all() and not native.available()\n"
        "print(native.unavailable_reason())\n"
    )
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "LIT_LINEAR_CACHE": str(tmp_path / "cache")}
    env.pop("LIT_LINEAR_NATIVE", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "no C compiler" in done.stdout
    assert done.stderr.count("compiled CPU kernels unavailable") == 1


@needs_compiler
def test_a_fresh_cache_builds_once_and_is_reused(tmp_path):
    code = "from lit_linear import native; assert native.available(), native.unavailable_reason()"
    env = {**os.environ, "LIT_LINEAR_CACHE": str(tmp_path)}
    env.pop("LIT_LINEAR_NATIVE", None)
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
    built = list(tmp_path.glob("kernels-*.so"))
    assert len(built) == 1 and not list(tmp_path.glob("tmp*")), "one library, no half-written leftovers"
