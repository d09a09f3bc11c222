"""On a CUDA GPU: the same result as on the CPU, and no host sync inside a training step.

Skipped where no GPU is present (CI has none); run on a GPU machine with ``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
from conftest import cli_args, run_cli
from lightning.pytorch.callbacks import Callback

from lit_linear import CIFARDataModule, LinearClassifierModule
from lit_linear.maths.graphs import CapturedCall
from lit_linear.maths.losses import softmax_loss_vectorized, svm_loss_vectorized

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

GRID = ["--model.lr", "[0.01, 0.1]", "--model.reg", "[0.0, 0.01]"]


@pytest.mark.parametrize("loss_fn", [svm_loss_vectorized, softmax_loss_vectorized])
def test_grid_loss_and_gradient_on_gpu_equal_the_cpu(loss_fn):
    gen = torch.Generator().manual_seed(0)
    W = 1e-3 * torch.randn(3073, 6, 10, generator=gen, dtype=torch.float64)
    X = torch.randn(50, 3073, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (50,), generator=gen)
    reg = torch.linspace(0, 1e-2, 6, dtype=torch.float64)
    loss_cpu, dW_cpu = loss_fn(W, X, y, reg, layout="DKC")
    loss_gpu, dW_gpu = loss_fn(W.cuda(), X.cuda(), y.cuda(), reg.cuda(), layout="DKC")
    assert dW_gpu.is_cuda
    assert torch.allclose(loss_gpu.cpu(), loss_cpu, rtol=1e-10)
    assert torch.allclose(dW_gpu.cpu(), dW_cpu, rtol=1e-10, atol=1e-14)


def test_fit_on_gpu_equals_the_cpu(cifar10_dir, tmp_path):
    runs = {}
    for name, accel in (("cpu", "cpu"), ("gpu", "gpu")):
        fit = run_cli("fit", *GRID, *cli_args(cifar10_dir, tmp_path / name, "--trainer.accelerator", accel))
        assert fit.returncode == 0, fit.stderr[-3000:]
        version = tmp_path / name / "lightning_logs" / "version_0"
        W = torch.load(version / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")["state_dict"]["W"]
        runs[name] = (W, json.loads((version / "sweep.json").read_text()))
    (w_cpu, sweep_cpu), (w_gpu, sweep_gpu) = runs["cpu"], runs["gpu"]
    # float32 on both; cuBLAS and MKL sum in different orders, so equal up to rounding.
    assert torch.allclose(w_gpu, w_cpu, rtol=1e-4, atol=1e-6)
    assert sweep_gpu["best"]["lr"] == sweep_cpu["best"]["lr"] and sweep_gpu["best"]["reg"] == sweep_cpu["best"]["reg"]
    for a, b in zip(sweep_cpu["configs"], sweep_gpu["configs"]):
        assert (a["train_acc"], a["val_acc"]) == pytest.approx((b["train_acc"], b["val_acc"]), abs=0.02)


def test_test_and_predict_on_gpu_equal_the_cpu(cifar10_dir, tmp_path):
    root = tmp_path / "run"
    assert run_cli("fit", *GRID, *cli_args(cifar10_dir, root)).returncode == 0
    outputs = {}
    for accel in ("cpu", "gpu"):
        before = set((root / "lightning_logs").iterdir())
        predict = run_cli(
            "predict", *GRID, "--ckpt_path", "best", *cli_args(cifar10_dir, root, "--trainer.accelerator", accel)
        )
        assert predict.returncode == 0, predict.stderr[-3000:]
        (run,) = set((root / "lightning_logs").iterdir()) - before
        outputs[accel] = (run / "predictions.csv").read_text()
    assert outputs["gpu"] == outputs["cpu"]


class SyncGuard(Callback):
    """Turns any host-device synchronisation inside a training batch into an error."""

    steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        assert batch.source.is_cuda and batch.index.is_cuda and pl_module.W.is_cuda, "the data and W must be on the GPU"
        torch.cuda.set_sync_debug_mode("error")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        torch.cuda.set_sync_debug_mode("default")
        self.steps += 1


def gpu_fit(data_dir, root, callbacks=(), **model_kwargs):
    pl.seed_everything(0)
    model = LinearClassifierModule(
        loss="softmax", lr=[0.01, 0.1], reg=[0.0, 0.01], lr_decay=0.9, lr_decay_every=5, **model_kwargs
    )
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        max_steps=30,
        val_check_interval=10,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        callbacks=list(callbacks),
    )
    trainer.fit(model, CIFARDataModule(data_dir=str(data_dir), download=False, batch_size=20))
    return model, trainer


def test_training_step_never_syncs_with_the_host(cifar10_dir, tmp_path):
    guard = SyncGuard()
    try:
        model, trainer = gpu_fit(cifar10_dir, tmp_path, callbacks=[guard], cuda_graph=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.global_step == 30 and guard.steps == 3  # batches of 10 steps
    assert model.results.best is not None


def test_the_step_replays_as_cuda_graphs_when_asked_and_trains_what_eager_trains(cifar10_dir, tmp_path):
    graphed, trainer = gpu_fit(cifar10_dir, tmp_path / "graphs", cuda_graph=True)
    assert graphed.step_fn.fn.graph is not None and trainer.optimizers[0]._update.graph is not None, "recorded"
    eager, _ = gpu_fit(cifar10_dir, tmp_path / "eager", cuda_graph=False)
    assert torch.allclose(graphed.W, eager.W, rtol=1e-6, atol=1e-9)
    assert graphed.results == eager.results


def test_a_capture_that_fails_falls_back_to_eager_with_one_warning():
    """Reading a value back to the host cannot be captured: the call warns once and runs eagerly."""
    x = torch.arange(4.0, device="cuda")

    def syncs(t):
        return t * float(t.sum().item())  # .item() waits for the device: illegal while capturing

    call = CapturedCall(syncs, warmup=1)
    with pytest.warns(RuntimeWarning, match="could not record syncs in a CUDA graph"):
        results = [call(x) for _ in range(4)]
    assert call.failed and call.graph is None
    assert all(torch.equal(r, syncs(x)) for r in results)


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_on_gpu_trains_w_in_float32_close_to_32_true(cifar10_dir, tmp_path, precision):
    """On CUDA, 16-mixed brings Lightning's GradScaler, which the module removes (it would skip the step)."""
    runs = {}
    for name in ("32-true", precision):
        fit = run_cli(
            "fit",
            *GRID,
            *cli_args(cifar10_dir, tmp_path / name, "--trainer.accelerator", "gpu", "--trainer.precision", name),
        )
        assert fit.returncode == 0, fit.stderr[-3000:]
        version = tmp_path / name / "lightning_logs" / "version_0"
        ckpt = torch.load(version / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
        runs[name] = (ckpt["global_step"], ckpt["state_dict"]["W"], json.loads((version / "sweep.json").read_text()))
    (step_32, w_32, sweep_32), (step_mixed, w_mixed, sweep_mixed) = runs["32-true"], runs[precision]
    assert step_mixed == step_32 == 40 and w_mixed.dtype == torch.float32
    assert not torch.equal(w_mixed, w_32), "the products ran in 16 bits"
    assert torch.allclose(w_mixed, w_32, rtol=2e-2, atol=2e-3)
    assert sweep_mixed["best"]["val_acc"] == pytest.approx(sweep_32["best"]["val_acc"], abs=1 / 60)
