"""GridSGD: the hand-applied update, its step-based decay, and freezing of diverged configs."""

import copy
import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from lit_linear.maths.optim import GridSGD


def make(lrs, decay=1.0, every=1, D=4, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.nn.Parameter(torch.randn(D, len(lrs), C, generator=g, dtype=torch.float64))
    return W, GridSGD([W], lr=lrs, lr_decay=decay, lr_decay_every=every)


def test_step_applies_w_minus_lr_times_grad_per_config():
    W, opt = make([0.1, 0.5])
    before = W.detach().clone()
    grad = torch.randn_like(W)
    W.grad = grad.clone()
    opt.step()
    expected = before - torch.tensor([0.1, 0.5], dtype=torch.float64).view(1, 2, 1) * grad
    assert torch.allclose(W.detach(), expected, rtol=1e-14, atol=1e-15)


def test_learning_rate_decays_by_step_count():
    """lr_k(t) = lr_k * decay ** (t // every): a function of the step, not of the run length."""
    W, opt = make([1.0], decay=0.5, every=2)
    moves = []
    for _ in range(5):
        before = W.detach().clone()
        W.grad = torch.ones_like(W)
        opt.step()
        moves.append(float((before - W.detach()).mean()))
    assert moves == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25])


def test_non_finite_loss_freezes_only_that_config():
    W, opt = make([0.1, 0.1, 0.1])
    grad = torch.randn_like(W)
    grad[:, 1] = 1e3  # a diverging config's gradient

    def closure():
        W.grad = grad.clone()
        return torch.tensor([1.0, math.inf, 2.0], dtype=torch.float64)

    before = W.detach().clone()
    loss = opt.step(closure)
    assert torch.equal(loss, torch.tensor([1.0, math.inf, 2.0], dtype=torch.float64))
    assert torch.equal(W.detach()[:, 1], before[:, 1]), "a frozen config's learning rate is 0"
    assert torch.allclose(W.detach()[:, 0], before[:, 0] - 0.1 * grad[:, 0], rtol=1e-14, atol=1e-15)
    assert opt.diverged().tolist() == [False, True, False]

    # Later steps with a finite loss do not revive it, and its NaNs never reach the others.
    W.grad = torch.ones_like(W)
    W.grad[:, 1] = math.nan
    opt.step(lambda: torch.zeros(3, dtype=torch.float64))
    assert torch.isfinite(W.detach()[:, [0, 2]]).all()
    assert opt.diverged().tolist() == [False, True, False]


def test_state_round_trips_through_state_dict():
    """A resumed optimizer continues the schedule and keeps frozen configs frozen."""
    W, opt = make([0.2, 0.2], decay=0.5, every=1)
    W.grad = torch.ones_like(W)
    opt.step(lambda: torch.tensor([0.0, math.nan], dtype=torch.float64))
    state = copy.deepcopy(opt.state_dict())  # as read back from a checkpoint file: no tensor shared

    W2 = torch.nn.Parameter(W.detach().clone())
    opt2 = GridSGD([W2], lr=[0.2, 0.2], lr_decay=0.5, lr_decay_every=1)
    opt2.load_state_dict(state)
    for w, o in ((W, opt), (W2, opt2)):
        w.grad = torch.ones_like(w)
        o.step(lambda: torch.zeros(2, dtype=torch.float64))
    assert torch.equal(W.detach(), W2.detach())
    assert opt2.diverged().tolist() == [False, True]
    # validate reads it from a checkpoint's optimizer state, with no optimizer built.
    assert GridSGD.diverged_in(state).tolist() == [False, True]
    assert GridSGD.diverged_in(make([0.2, 0.2])[1].state_dict()) is None, "no step taken: nothing known yet"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32 (compiled on the CPU)"])
@pytest.mark.parametrize("K", [1, 8], ids=["narrow grid", "wide grid"])
def test_factored_gradient_and_reg_give_the_textbook_update(K, dtype):
    """(data_loss, X, dscores) from the closure: W <- W - lr * (X.T @ dscores + 2 reg W), the product never formed."""
    g = torch.Generator().manual_seed(1)
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    D, C, N = 30, 10, 7  # K*C = 10 takes the swapped-operand path, 80 the addmm_ path
    lrs, regs = torch.linspace(0.1, 0.9, K, dtype=dtype), torch.linspace(0.0, 0.3, K, dtype=dtype)
    W = torch.nn.Parameter(torch.randn(D, K, C, generator=g, dtype=dtype))
    X = torch.randn(N, D, generator=g, dtype=dtype)
    dscores = torch.randn(N, K * C, generator=g, dtype=dtype)
    given = dscores.clone()  # the closure's scratch: the step scales it by lr in place
    before = W.detach().clone()
    opt = GridSGD([W], lr=lrs.tolist(), reg=regs.tolist())
    data_loss = torch.ones(K, dtype=dtype)
    loss = opt.step(lambda: (data_loss, X, given))
    # The optimizer adds the regulariser to the data loss, with the norms of W before the step.
    assert torch.allclose(loss, data_loss + regs * before.square().sum(dim=(0, 2)), **tol)
    assert torch.allclose(given, dscores * lrs.repeat_interleave(C), **tol)
    grad = (X.t() @ dscores).view(D, K, C) + 2 * regs.view(1, K, 1) * before
    expected = before - lrs.view(1, K, 1) * grad
    assert torch.allclose(W.detach(), expected, **tol)
    # The same update from a dense data gradient in W.grad.
    W2 = torch.nn.Parameter(before.clone())
    W2.grad = (X.t() @ dscores).view(D, K, C)
    assert torch.allclose(GridSGD([W2], lr=lrs.tolist(), reg=regs.tolist()).step(lambda: data_loss), loss, **tol)
    assert torch.allclose(W2.detach(), expected, **tol)


def test_reg_needs_one_value_per_learning_rate():
    W = torch.nn.Parameter(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match="reg has 1 values for 2 learning rates"):
        GridSGD([W], lr=[0.1, 0.2], reg=[0.1])


def test_step_hooks_and_the_profiler_range_run_as_for_any_torch_optimizer():
    """GridSGD steps outside torch's wrapper only while no hook is registered and no profiler runs."""
    W, opt = make([0.1, 0.2])
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    handle = register_optimizer_step_post_hook(lambda o, args, kwargs: calls.append("global"))
    try:
        W.grad = torch.ones_like(W)
        before = W.detach().clone()
        opt.step()
    finally:
        handle.remove()
    assert calls == ["pre", "post", "global"]
    assert torch.allclose(W.detach(), before - torch.tensor([0.1, 0.2], dtype=W.dtype).view(1, 2, 1))
    _, bare = make([0.1])
    bare.param_groups[0]["params"][0].grad = torch.ones(4, 1, 3, dtype=torch.float64)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        bare.step()
    assert "Optimizer.step#GridSGD.step" in {e.name for e in prof.events()}
