"""Shared pieces of the benchmarks: data loading, the plain loops they compare against, output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from lightning.pytorch.callbacks import Callback

from lit_linear.data import CIFARDataModule
from lit_linear.data.streams import TrainBatches
from lit_linear.features.preprocess import preprocess
from lit_linear.maths.losses import softmax_loss_vectorized, svm_loss_vectorized
from lit_linear.maths.optim import GridSGD
from lit_linear.training.step import data_term

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The course's 20-config softmax grid (EECS 498 A2).
COURSE_LRS = [1e-2, 5e-2, 1e-1, 3.5e-1]
COURSE_REGS = [1e-4, 3e-4, 1e-3, 1e-2, 5e-2]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def load_data(data_dir: str, batch_size: int = 200) -> CIFARDataModule:
    """CIFAR-10 set up on the CPU, as the module sees it."""
    dm = CIFARDataModule(data_dir=data_dir, download=False, batch_size=batch_size)
    dm.setup("fit")
    return dm


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def accuracy(
    W: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, pixel_mean: torch.Tensor, chunk: int = 1000
) -> torch.Tensor:
    """Accuracy ``(K,)`` of a grid ``W (D, K, C)`` on a split, in chunks (as the module does)."""
    D, K, C = W.shape
    W = W.reshape(D, K * C)
    correct = torch.zeros(K, dtype=torch.long, device=W.device)
    for lo in range(0, len(labels), chunk):
        X = preprocess(images[lo : lo + chunk], pixel_mean)
        preds = (X @ W).view(-1, K, C).argmax(dim=2)
        correct += (preds == labels[lo : lo + chunk, None]).sum(dim=0)
    return correct.double() / len(labels)


def plain_loop(
    dm: CIFARDataModule,
    loss: str,
    lrs: list[float],
    regs: list[float],
    steps: int,
    lr_decay: float,
    lr_decay_every: int,
    W0: torch.Tensor,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The plain PyTorch loop: K configs side by side in ``W (D, K, C)`` (K = 1 for one config).

    Same minibatches (the package's sampler), same loss and the same update as the module on
    one device (:func:`data_term`, :class:`GridSGD`), but no Lightning: the reference
    the Lightning run is measured against. ``dtype``: the products' dtype (mixed precision), default W's.
    """
    K = len(lrs) * len(regs)
    W = W0.unsqueeze(1).repeat(1, K, 1)  # (D, K, C)
    optimizer = GridSGD(
        [W],
        [a for a in lrs for _ in regs],
        [b for _ in lrs for b in regs],
        lr_decay=lr_decay,
        lr_decay_every=lr_decay_every,
    )
    batches = TrainBatches(dm.train_images, dm.train_labels, dm.hparams.batch_size, seed)
    X = None
    for t in range(steps):
        rows = batches.global_indices(t)  # (N,)
        X = sgd_step(
            optimizer, loss, W, dm.train_images, rows, dm.train_labels.index_select(0, rows), dm.pixel_mean, X, dtype
        )
    return W


def course_loop(
    dm: CIFARDataModule,
    loss: str,
    lr: float,
    reg: float,
    steps: int,
    lr_decay: float,
    lr_decay_every: int,
    W0: torch.Tensor,
    seed: int = 0,
) -> torch.Tensor:
    """The course's training loop for one config: ``loss, dW = <loss>_loss_vectorized(W, X, y, reg)``,
    then ``W -= lr * dW``; returns ``W (D, C)``.

    Plain PyTorch and the package's vectorized loss, as a student writes it; the same minibatches
    (the package's sampler) and learning-rate schedule as the module, so that it trains the same
    config (up to float32 rounding: the regulariser's gradient is added in another order).
    """
    loss_fn = {"softmax": softmax_loss_vectorized, "svm": svm_loss_vectorized}[loss]
    W = W0.clone()
    batches = TrainBatches(dm.train_images, dm.train_labels, dm.hparams.batch_size, seed)
    for t in range(steps):
        b = batches.batch(t)
        _, dW = loss_fn(W, preprocess(b.images, dm.pixel_mean), b.labels, reg)
        W -= (lr * lr_decay ** (t // lr_decay_every)) * dW
    return W


def sgd_step(
    optimizer: GridSGD,
    loss: str,
    W: torch.Tensor,
    split: torch.Tensor,
    rows: torch.Tensor,
    labels: torch.Tensor,
    pixel_mean: torch.Tensor,
    X: torch.Tensor | None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One training step's maths as the module runs it: :func:`lit_linear.training.step.data_term` (features
    of the rows ``rows`` of the uint8 ``split``, written into ``X`` when it fits, and the data loss)
    and ``GridSGD.step``; returns the features buffer for the next step."""
    out = {}

    def closure():
        value, out["X"], dscores = data_term(
            loss, W, split, rows, labels, pixel_mean, out=X, dtype=dtype
        )  # GridSGD adds the regulariser
        return value, out["X"], dscores

    optimizer.step(closure)
    return out["X"]


class FitTimer(Callback):
    """Wall time from the start of fit to its end: the training loop, its validations, checkpoints and logs."""

    def on_fit_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_fit_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.start


def to_device(dm: CIFARDataModule, device: str) -> CIFARDataModule:
    """Move a set-up data module's splits to ``device`` (what ``setup`` does under a Trainer)."""
    for name in (
        "train_images",
        "train_labels",
        "val_images",
        "val_labels",
        "train_eval_images",
        "train_eval_labels",
        "pixel_mean",
    ):
        setattr(dm, name, getattr(dm, name).to(device))
    return dm


def sync(device: str | torch.device) -> None:
    """Wait for queued device work, so that a wall-clock time covers it (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def shipped_fit(config: str, data_dir: str, root: str, steps: int, *extra: str, accelerator: str = "cpu"):
    """``Trainer.fit`` with a shipped config's settings (progress bar off), data loaded before the clock.

    Returns ``(seconds from fit start to fit end, the fitted module)``.
    """
    from lit_linear.cli.linear_cli import LinearCLI

    interval = min(500, steps)  # validate every 500 SGD steps, as the shipped configs do
    with warnings.catch_warnings():
        # The script's own options are in sys.argv; the fit's are these args, on purpose.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = LinearCLI(
            args=[
                "--config",
                os.path.join(REPO, "configs", config),
                "--data.data_dir",
                data_dir,
                "--data.download",
                "false",
                "--trainer.max_steps",
                str(steps),
                "--trainer.default_root_dir",
                root,
                "--trainer.val_check_interval",
                str(interval),
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.enable_model_summary",
                "false",
                "--trainer.accelerator",
                accelerator,
                "--trainer.devices",
                "1",
                *extra,
            ],
            run=False,
        )
    timer = FitTimer()
    cli.trainer.callbacks.append(timer)
    cli.datamodule.setup("fit")  # read the files outside the timed region, as the plain loops do
    to_device(cli.datamodule, cli.trainer.strategy.root_device)  # where setup under the Trainer would put them
    cli.trainer.fit(cli.model, cli.datamodule)
    return timer.seconds, cli.model


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_json(path: str | None, payload: dict) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {path}")
