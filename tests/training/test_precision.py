"""Mixed precision by hand: the two products in 16 bits with float32 accumulation, everything else in float32."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from lit_linear import CIFARDataModule, LinearClassifierModule
from lit_linear.data.streams import TrainBatches
from lit_linear.errors import ConfigError
from lit_linear.maths.grid import grid_gradient, grid_scores, softmax_scores_grad
from lit_linear.maths.optim import sgd_update
from lit_linear.training.precision import product_dtype

LOW = [torch.bfloat16, torch.float16]


def grid_data(K=25, C=10, N=200, D=3073, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = 1e-3 * torch.randn(D, K * C, generator=g)
    X = torch.rand(N, D, generator=g) - 0.5
    X[:, -1] = 1.0
    y = torch.randint(C, (N,), generator=g)
    return W, X, y


@pytest.mark.parametrize("K", [1, 25], ids=["narrow grid", "wide grid"])
@pytest.mark.parametrize("low", LOW, ids=str)
def test_products_run_on_rounded_operands_and_return_ws_dtype(low, K):
    W, X, _ = grid_data(K)
    scores = grid_scores(W, X.to(low))
    assert scores.dtype == torch.float32
    expected = (X.to(low) @ W.to(low)).float()
    assert torch.allclose(scores, expected, rtol=1e-2, atol=1e-4)
    dscores = torch.randn(X.shape[0], W.shape[1]) / X.shape[0]
    grad = grid_gradient(X.to(low), dscores)
    assert grad.dtype == torch.float32
    assert torch.allclose(grad, X.t() @ dscores, rtol=2e-2, atol=2e-3)


def test_float16_gradient_keeps_what_a_plain_cast_would_flush_to_zero():
    """dscores = (p - onehot) / N with small probabilities: entries far below float16's smallest normal."""
    W, X, y = grid_data(K=25)
    _, dscores = softmax_scores_grad((X @ (30 * W)).view(len(y), 25, 10), y)  # confident scores: small probabilities
    dscores = dscores.reshape(len(y), -1) * 1e-3  # and a small learning rate folded in, as in a plain cast
    exact = X.double().t() @ dscores.double()
    ours = grid_gradient(X.half(), dscores)
    plain = (X.half().t() @ dscores.half()).float()
    assert (dscores.abs() < 6e-5).float().mean() > 0.5, "most entries are float16 subnormals or zero"
    error = lambda G: ((G.double() - exact).norm() / exact.norm()).item()  # noqa: E731
    assert error(ours) < 2e-3 < error(plain)


def test_mixed_update_keeps_w_float32_and_applies_the_rounded_gradient():
    W, X, y = grid_data(K=25)
    D, KC = W.shape
    grid = W.clone().view(D, 25, 10)
    reg = torch.full((25,), 1e-3)
    data_loss, dscores = softmax_scores_grad((X.bfloat16() @ W.bfloat16()).float().view(200, 25, 10), y)
    dscores = dscores.reshape(200, KC)
    expected = W * (1 - 2 * 0.5 * 1e-3) - 0.5 * ((X.bfloat16().t() @ (200 * dscores).bfloat16()).float() / 200)
    state = {"step": torch.zeros(()), "lr": torch.ones(25) * 0.5, "reg": reg, "live": torch.ones(25)}
    sgd_update(grid, state, data_loss, schedule=(1.0, 1), X=X.bfloat16(), dscores=dscores.clone())
    assert grid.dtype == torch.float32
    assert torch.allclose(grid.view(D, KC), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "precision, dtype",
    [
        ("bf16-mixed", torch.bfloat16),
        ("16-mixed", torch.float16),
        ("32-true", None),
        ("64-true", None),
        ("bf16-true", None),
    ],
)
def test_the_products_dtype_of_each_precision(precision, dtype):
    assert product_dtype(precision) == dtype


def fit(data_dir, root, precision=None, plugins=None, steps=20):
    pl.seed_everything(0)
    model = LinearClassifierModule(lr=[0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2], reg=[1e-3])  # K*C = 70: the wide path
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        val_check_interval=10,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        precision=precision,
        plugins=plugins,
    )
    trainer.fit(model, CIFARDataModule(data_dir=str(data_dir), download=False, batch_size=20))
    return model, trainer


def test_float16_products_train_without_lightnings_grad_scaler(cifar10_dir, tmp_path):
    """MixedPrecision('16-mixed') brings a GradScaler, which would call optimizer.step() without the
    closure (no step at all); the module removes it and trains with float16 products."""
    plugin = MixedPrecision("16-mixed", "cpu")
    assert plugin.scaler is not None
    model, trainer = fit(cifar10_dir, tmp_path / "fp16", plugins=[plugin])
    reference, _ = fit(cifar10_dir, tmp_path / "fp32")
    assert plugin.scaler is None and trainer.global_step == 20
    assert model.W.dtype == torch.float32
    assert torch.allclose(model.W, reference.W, rtol=1e-2, atol=1e-3)
    assert not torch.equal(model.W, reference.W), "the products ran in float16"


def test_the_step_states_its_dtypes_whatever_autocast_is_active(cifar10_dir, tmp_path):
    """Lightning runs training_step under autocast for bf16-mixed; the module's step turns it off, so a
    step taken under an outer autocast equals one taken without."""
    model, trainer = fit(cifar10_dir, tmp_path, precision="bf16-mixed", steps=10)
    dm = trainer.datamodule
    block = TrainBatches(dm.train_images, dm.train_labels, 20, seed=0).block(model.global_step, 1)
    W0 = model.W.detach().clone()
    results = []
    for autocast in (False, True):
        model.W.data.copy_(W0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model.training_step(block, 0)
        results.append(model.W.detach().clone())
    assert results[0].dtype == torch.float32 and not torch.equal(results[0], W0)
    assert torch.equal(results[0], results[1])


def test_a_fit_in_16_bit_weights_is_refused(cifar10_dir, tmp_path):
    with pytest.raises(ConfigError, match="bf16-true would keep W in 16 bits"):
        fit(cifar10_dir, tmp_path, precision="bf16-true")
