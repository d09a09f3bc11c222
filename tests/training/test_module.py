"""LinearClassifierModule trained in-process on tiny data: the grid, the hand update, the artifacts."""

from __future__ import annotations

import csv
import json
import os

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from lit_linear import CIFARDataModule, LinearClassifier, LinearClassifierModule
from lit_linear.features.preprocess import preprocess
from lit_linear.maths.optim import sgd_update
from lit_linear.training import grouping as steps_module
from lit_linear.training.step import data_term


def fit(data_dir, root, lr, reg, *, loss="softmax", steps=40, interval=20, precision="64-true", **model_kwargs):
    """Fit on the tiny data set (batch 20) with logging off: artifacts land in ``root``."""
    pl.seed_everything(0)
    datamodule = CIFARDataModule(data_dir=str(data_dir), download=False, batch_size=20)
    model = LinearClassifierModule(loss=loss, lr=lr, reg=reg, **model_kwargs)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        val_check_interval=interval,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        precision=precision,
    )
    trainer.fit(model, datamodule)
    return model, trainer, datamodule


@pytest.mark.parametrize("loss", ["svm", "softmax", "l2svm"])
def test_config_trained_in_a_grid_equals_it_trained_alone(cifar10_dir, tmp_path, loss):
    """All configs start from the same W and see the same minibatches: a grid is K separate runs."""
    lrs, regs = [1e-3, 3e-2], [0.0, 1e-2]
    grid_model, _, _ = fit(cifar10_dir, tmp_path / "grid", lrs, regs, loss=loss, lr_decay=0.9, lr_decay_every=7)
    for k, (lr, reg) in enumerate(grid_model.configs):
        alone, _, _ = fit(cifar10_dir, tmp_path / f"k{k}", lr, reg, loss=loss, lr_decay=0.9, lr_decay_every=7)
        assert torch.allclose(grid_model.W[:, k, :], alone.W[:, 0, :], rtol=1e-10, atol=1e-13), (lr, reg)
    # ... and the configs really differ from each other.
    assert not torch.allclose(grid_model.W[:, 0, :], grid_model.W[:, 3, :])


@pytest.mark.parametrize("limit, batches", [(1, 40), (4, 10), (50, 2)])
def test_grouping_steps_into_batches_does_not_change_the_result(cifar10_dir, tmp_path, monkeypatch, limit, batches):
    """The package groups SGD steps into Lightning batches for speed; the weights and the
    validations are those of one step a batch, to the bit (float64)."""
    kwargs = {"lr_decay": 0.9, "lr_decay_every": 7, "steps": 40, "interval": 20}
    monkeypatch.setattr(steps_module, "MAX_STEPS_PER_BATCH", 1)
    one, one_trainer, _ = fit(cifar10_dir, tmp_path / "one", [1e-3, 3e-2], [0.0, 1e-2], **kwargs)
    monkeypatch.setattr(steps_module, "MAX_STEPS_PER_BATCH", limit)
    grouped, trainer, _ = fit(cifar10_dir, tmp_path / "grouped", [1e-3, 3e-2], [0.0, 1e-2], **kwargs)
    assert trainer.global_step == one_trainer.global_step == 40
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == batches
    assert trainer.val_check_interval == 20  # the user's setting, in steps, after the fit
    assert torch.equal(grouped.W, one.W)
    assert grouped.results == one.results  # validated at the same steps, with the same loss averages


class StepProbe(pl.Callback):
    """Logs the SGD step count at every training batch's end; Lightning keeps those on its logging interval."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pl_module.log("probe", float(trainer.global_step))


def logged_fit(cifar10_dir, tmp_path, log_every_n_steps: int, callbacks=()):
    """A 40-step fit (validation every 20) with a CSV logger and this logging interval: ``(model, trainer)``."""
    pl.seed_everything(0)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=40,
        val_check_interval=20,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=log_every_n_steps,
        logger=CSVLogger(tmp_path),
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    model = LinearClassifierModule(lr=0.1, reg=0.0)
    trainer.fit(model, CIFARDataModule(data_dir=str(cifar10_dir), download=False, batch_size=20))
    return model, trainer


def test_logging_interval_is_counted_in_sgd_steps(cifar10_dir, tmp_path, recwarn):
    """``log_every_n_steps`` means SGD steps, as in any Lightning fit, although the module hands
    Lightning batches of several steps: per-batch logs land every n steps, and Lightning does not
    warn about a logging interval longer than the (grouped) batches of the run."""
    model, trainer = logged_fit(cifar10_dir, tmp_path, log_every_n_steps=10, callbacks=[StepProbe()])
    assert model.steps_per_batch > 1  # the grouping is on
    with open(os.path.join(trainer.logger.log_dir, "metrics.csv"), encoding="utf-8") as f:
        probes = [float(row["probe"]) for row in csv.DictReader(f) if row.get("probe")]
    assert probes == [10.0, 20.0, 30.0, 40.0]
    assert trainer.log_every_n_steps == 10  # the user's setting, in steps, after the fit
    assert not [w for w in recwarn if "logging interval" in str(w.message)]


def test_a_fit_shorter_than_its_logging_interval_is_warned_about_in_sgd_steps(cifar10_dir, tmp_path, recwarn):
    """A fit shorter than its logging interval is warned about once, in the steps the user set
    (40 and 50), not in Lightning's batches of 10 steps, which the user never set."""
    model, _ = logged_fit(cifar10_dir, tmp_path, log_every_n_steps=50)
    assert model.steps_per_batch == 10
    said = [str(w.message) for w in recwarn if "log_every_n_steps" in str(w.message)]
    assert said == [
        "This fit runs 40 SGD steps, fewer than trainer.log_every_n_steps (50): set a lower value to see "
        "the metrics logged in per-batch hooks during the fit."
    ]


def test_training_never_calls_backward_and_counts_sgd_steps(cifar10_dir, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("autograd backward was called")

    monkeypatch.setattr(torch.Tensor, "backward", refuse)
    monkeypatch.setattr(torch.autograd, "backward", refuse)
    pl.seed_everything(0)
    w0 = LinearClassifierModule(lr=0.1, reg=0.0).W.detach().clone()
    model, trainer, _ = fit(cifar10_dir, tmp_path, 0.1, 0.0, steps=30, interval=10)
    assert not model.automatic_optimization
    assert trainer.global_step == 30
    assert trainer.optimizers[0].state[model.W]["step"] == 30
    assert not torch.allclose(model.W.detach().float(), w0), "W must have been trained"


def test_every_config_starts_from_the_same_small_random_w():
    torch.manual_seed(0)
    model = LinearClassifierModule(lr=[0.1, 0.2], reg=[0.0, 1e-3, 1e-2], weight_scale=1e-6)
    assert model.W.shape == (3073, 6, 10)
    assert all(torch.equal(model.W[:, k], model.W[:, 0]) for k in range(6))
    assert 0 < model.W.abs().max() < 1e-4
    assert model.configs == [(0.1, 0.0), (0.1, 1e-3), (0.1, 1e-2), (0.2, 0.0), (0.2, 1e-3), (0.2, 1e-2)]


def test_precision_chooses_the_training_dtype(cifar10_dir, tmp_path):
    default, _, _ = fit(cifar10_dir, tmp_path / "a", 0.1, 0.0, steps=20, precision="32-true")
    double, _, _ = fit(cifar10_dir, tmp_path / "b", 0.1, 0.0, steps=20, precision="64-true")
    assert default.W.dtype == torch.float32 and double.W.dtype == torch.float64
    assert torch.allclose(default.W.double(), double.W, rtol=1e-4, atol=1e-6)


def test_sweep_json_and_best_model(cifar10_dir, tmp_path, capsys):
    model, trainer, datamodule = fit(cifar10_dir, tmp_path, [1e-3, 3e-2], [0.0, 1e-2], loss="svm", precision="32-true")
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert sweep["loss"] == "svm" and len(sweep["configs"]) == 4
    assert [(c["lr"], c["reg"]) for c in sweep["configs"]] == model.configs
    for c in sweep["configs"]:
        assert 0.0 <= c["train_acc"] <= 1.0 and 0.0 <= c["val_acc"] <= 1.0 and c["status"] == "ok"
    best = max(sweep["configs"], key=lambda c: c["val_acc"])
    assert sweep["best"]["val_acc"] == best["val_acc"]
    assert (sweep["best"]["lr"], sweep["best"]["reg"]) in model.configs

    # The saved classifier reproduces the best config's validation accuracy from raw images.
    classifier = LinearClassifier.load(tmp_path / "best_model.pt")
    assert classifier.class_names == datamodule.class_names
    val_acc = (classifier.predict(datamodule.val_images) == datamodule.val_labels).double().mean().item()
    assert val_acc == pytest.approx(sweep["best"]["val_acc"], abs=1e-12)
    train_acc = (classifier.predict(datamodule.train_images) == datamodule.train_labels).double().mean().item()
    assert train_acc == pytest.approx(sweep["best"]["train_acc"], abs=1e-12)

    printed = capsys.readouterr().out
    assert "svm sweep: 4 configs after 40 steps" in printed and "<- best" in printed


def test_validation_accuracy_matches_a_direct_computation(cifar10_dir, tmp_path):
    model, _, datamodule = fit(cifar10_dir, tmp_path, [1e-2, 1e-1], [1e-3], precision="32-true")
    X = preprocess(datamodule.val_images, model.pixel_mean)
    for k, config in enumerate(model.results.configs):
        preds = (X @ model.W[:, k, :]).argmax(1)
        assert config.val_acc == pytest.approx((preds == datamodule.val_labels).double().mean().item(), abs=1e-12)
    assert torch.allclose(model.pixel_mean, datamodule.pixel_mean)


@pytest.mark.slow
def test_compiled_step_trains_what_the_eager_step_trains(cifar10_dir, tmp_path):
    """``model.compile``: the same maths through torch.compile (on the CPU: C++ from inductor).

    One loss (the SVM): compiling costs tens of seconds on a small CPU, and the update is shared."""
    loss = "svm"
    lrs, regs = [1e-3, 3e-2], [1e-4, 1e-2]
    kwargs = {"loss": loss, "precision": "32-true", "lr_decay": 0.9, "lr_decay_every": 7}
    eager, _, _ = fit(cifar10_dir, tmp_path / "eager", lrs, regs, **kwargs)
    compiled, trainer, _ = fit(cifar10_dir, tmp_path / "compiled", lrs, regs, compile=True, **kwargs)
    optimizer = trainer.optimizers[0]
    assert compiled.step_fn.fn is not data_term and optimizer._update is not sgd_update  # torch.compile's wrappers
    assert torch.allclose(compiled.W, eager.W, rtol=1e-4, atol=1e-6)
    assert compiled.results.best_index == eager.results.best_index
    for a, b in zip(compiled.results.configs, eager.results.configs):
        assert a.val_acc == pytest.approx(b.val_acc, abs=1 / 60)  # at most one of the 60 val images differs
