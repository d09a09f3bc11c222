"""LinearClassifierModule: a whole learning-rate x regularization grid, trained at once by hand.

Run it through the CLI (``python train.py fit --config configs/softmax_sweep.yaml``) or from Python::

    trainer = pl.Trainer(max_steps=2000, val_check_interval=500, check_val_every_n_epoch=None)
    trainer.fit(LinearClassifierModule(loss="softmax", lr=[0.1, 0.4], reg=[1e-4, 1e-3]), CIFARDataModule())

The K = len(lr) * len(reg) configs live side by side in one ``W (D, K, C)``. Every step, all of
them score the same minibatch in one ``(N, D) @ (D, K*C)`` product and get their hand-derived
gradient from one ``(D, N) @ (N, K*C)`` product (:mod:`lit_linear.losses`), which
:class:`GridSGD` adds straight into ``W``: ``W_k <- W_k - lr_k * dW_k``. Lightning never calls backward
(``automatic_optimization = False``). Config k of a grid therefore follows the path it would
follow trained alone with the same seed (up to float32 rounding of products of other widths).

A Lightning training batch holds several SGD steps (:mod:`lit_linear.steps`); every step goes
through the optimizer, so ``global_step``, ``max_steps`` and the checkpoint intervals count SGD steps.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lit_linear.classifier import LinearClassifier, gather_features, preprocess
from lit_linear.data import Batch, CIFARDataModule, TrainBlock
from lit_linear.errors import ConfigError, LitLinearError, SweepDivergedError
from lit_linear.checkpoint_io import use_atomic_checkpoints
from lit_linear.faults import leave_process_group_at_exit
from lit_linear.graphs import CapturedCall
from lit_linear.losses import SCORES_GRAD, grid_gradient, grid_loss_factored, grid_scores
from lit_linear.lr_monitor import SweepLearningRateMonitor
from lit_linear.metrics import GridAccuracy
from lit_linear.optim import GridSGD
from lit_linear.precision import own_dtypes, product_dtype
from lit_linear.progress import StepProgressBar
from lit_linear.shards import ConfigShards, Split, resolve_split
from lit_linear.settings import check_fit_settings
from lit_linear.steps import BATCH_COUNTED, step_counts, steps_per_batch
from lit_linear.sweep import ConfigResult, SweepResult, as_axis, sweep_configs


def data_term(loss: str, W: Tensor, split: Tensor, rows: Tensor, labels: Tensor, pixel_mean: Tensor,
              out: Tensor | None = None, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """The features of one minibatch and the grid's data loss on it, with its gradient as a factor.

    Args:
        loss: ``"svm"`` or ``"softmax"``.
        W: ``(D, K, C)``.
        split: ``(M, 3072)`` uint8, the training split.
        rows: ``(n,)`` the minibatch's rows of ``split``.
        labels: ``(n,)`` int64.
        pixel_mean: ``(3072,)``.
        out: a ``(n, D)`` buffer for the features, reused from step to step.
        dtype: the features' dtype, which the products run in (:mod:`lit_linear.precision`); default W's.

    Returns:
        ``(data_loss (K,), X (n, D), dscores (n, K*C))``: what :class:`GridSGD` takes.
    """
    X = gather_features(split, rows, pixel_mean, dtype or W.dtype, out=out)  # (n, D)
    data_loss, dscores = grid_loss_factored(loss, W, X, labels)  # (K,), (n, K*C)
    return data_loss, X, dscores


class LinearClassifierModule(pl.LightningModule):
    """A grid of linear classifiers (SVM or softmax) trained together with hand-written SGD.

    Args:
        loss: ``svm`` (multiclass hinge, margin 1) or ``softmax`` (cross-entropy).
        lr: learning rate, or a list of them: one axis of the grid; or a range ``{low: A, high: B}``
            (0 < A < B) to draw from log-uniformly (with ``num_configs``).
        reg: L2 strength (adds ``reg * sum(W**2)``), or a list: the other axis of the grid; or a
            range ``{low: A, high: B}`` drawn log-uniformly.
        num_configs: how many (lr, reg) pairs to draw when lr or reg is a range (each pair drawn
            independently; the draws depend on ``seed_everything`` alone). Only with a range.
        halving_factor: successive halving: at every validation but the last, keep the best
            ``ceil(live / halving_factor)`` configs by val accuracy (ties: lower train loss) and
            stop the rest; they leave the weight tensor, so later steps cost what the kept
            configs need. A number > 1; null: every config trains to the end.
        weight_scale: initial ``W = weight_scale * randn(D, C)``, the same for every config.
        lr_decay: multiply every learning rate by this every ``lr_decay_every`` steps (1.0: constant).
        lr_decay_every: steps between learning-rate decays.
        num_classes: C; linked from the data module by the CLI.
        feature_dim: D, features per image including the bias column; linked from the data module.
        class_names: names of the C classes; linked from the data module.
        compile: run the training step's maths (features, loss, update) through ``torch.compile``
            on any device. The first steps pay for the compilation (see the README).
        cuda_graph: on one CUDA device, record the training step in CUDA graphs and replay them,
            so that Python and kernel launches do not set the pace. Off by default until a GPU run
            has measured it; a step that cannot be recorded runs eagerly, with a warning.
        split: how several processes (DDP) share the sweep: ``configs``, each trains its share of
            the configs on every whole minibatch, with no traffic between steps; ``minibatch``,
            each holds every config and takes a share of each minibatch, the gradient averaged
            across processes at every step; ``auto``: ``configs`` when there are at least as many
            configs as processes, else ``minibatch``. The result is the same (:mod:`lit_linear.shards`).
    """

    def __init__(
        self,
        loss: Literal["svm", "softmax"] = "softmax",
        lr: float | list[float] | dict[str, float] = 0.1,
        reg: float | list[float] | dict[str, float] = 1e-3,
        num_configs: int | None = None,
        halving_factor: float | None = None,
        weight_scale: float = 1e-6,
        lr_decay: float = 1.0,
        lr_decay_every: int = 200,
        num_classes: int = 10,
        feature_dim: int = 3073,
        class_names: list[str] | None = None,
        compile: bool = False,
        cuda_graph: bool = False,
        split: Split = "auto",
    ) -> None:
        super().__init__()
        if loss not in SCORES_GRAD:
            raise ConfigError(f"model.loss must be one of {', '.join(SCORES_GRAD)}; got {loss!r}")
        lr_axis = as_axis(lr, "model.lr", allow_zero=False)
        reg_axis = as_axis(reg, "model.reg", allow_zero=True)
        # seed_everything's seed alone: the same draws on every DDP rank and in a rerun of config.yaml.
        configs = sweep_configs(lr_axis, reg_axis, num_configs, torch.initial_seed())
        if halving_factor is not None:
            if isinstance(halving_factor, bool) or not isinstance(halving_factor, (int, float)) or not halving_factor > 1 \
                    or not math.isfinite(halving_factor):  # fmt: skip
                raise ConfigError(f"model.halving_factor must be a finite number > 1 (e.g. 3), got {halving_factor!r}")
            if len(configs) < 2:
                raise ConfigError("model.halving_factor needs a sweep of at least 2 configs to choose from; this one has 1")
        resolve_split(split, len(configs), 1)  # the value; the process count is checked when a fit starts
        if not (math.isfinite(weight_scale) and weight_scale >= 0):
            raise ConfigError(f"model.weight_scale must be a finite number >= 0, got {weight_scale!r}")
        if not (math.isfinite(lr_decay) and 0 < lr_decay <= 1):
            raise ConfigError(f"model.lr_decay must lie in (0, 1], got {lr_decay!r}")
        if not isinstance(lr_decay_every, int) or lr_decay_every <= 0:
            raise ConfigError(f"model.lr_decay_every must be a positive number of steps, got {lr_decay_every!r}")
        if num_classes < 2 or feature_dim < 2:
            raise ConfigError(f"model.num_classes must be >= 2 and model.feature_dim >= 2, got {num_classes}, {feature_dim}")
        class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        if len(class_names) != num_classes:
            raise ConfigError(f"model.class_names has {len(class_names)} names for {num_classes} classes")
        # logger=False: Lightning would log these to TensorBoard as an HParams session of the main
        # run (with its hp_metric placeholder); SweepTensorBoard gives every config a session of its own.
        self.save_hyperparameters(logger=False)
        self.automatic_optimization = False
        self.configs = configs  # config k = (lr, reg); a grid is lr-major
        self.class_names = class_names
        K = len(self.configs)

        w0 = weight_scale * torch.randn(feature_dim, num_classes)  # (D, C), shared by every config
        # requires_grad only because DDP refuses a module without a trainable parameter.
        self.W = nn.Parameter(w0.unsqueeze(1).repeat(1, K, 1))  # (D, K, C)
        self.register_buffer("pixel_mean", torch.zeros(feature_dim - 1))  # (D-1,), set from the data
        self.register_buffer("best_index", torch.tensor(-1))  # best config by val accuracy; -1: none yet
        # The config of each column of W: successive halving removes the columns of stopped configs.
        self.register_buffer("columns", torch.arange(K))  # (K_live,)
        self.register_buffer("loss_sum", torch.zeros(K))  # (K,) training loss summed since the last validation
        self.register_buffer("loss_steps", torch.tensor(0))
        self.train_acc = GridAccuracy(K)
        self.val_acc = GridAccuracy(K)
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.results: SweepResult | None = None
        self.shards = ConfigShards()  # the processes' share of the configs, set for each stage (setup)
        self._best_weights: Tensor | None = None  # W_best of the last validation, when another rank trains it
        self.stopped: dict[int, ConfigResult] = {}  # configs that left W: their last results
        self._pending_halving: dict[int, ConfigResult] | None = None  # the last validation's results, not yet halved
        self.steps_per_batch = 1  # SGD steps per Lightning batch, chosen when a fit starts (lit_linear.steps)
        self._user_intervals: dict[str, Any] | None = None  # the trainer's intervals in steps, put back after fit
        self._x_buffer: Tensor | None = None  # the (n, D) training features, reused step after step
        self._data_term: Any = None  # data_term, compiled or recorded in a CUDA graph when asked
        self._rows: Tensor | None = None  # a CUDA graph's fixed inputs: the rows and labels of the step
        self._labels: Tensor | None = None
        self._loaded: tuple[int, Tensor | None] | None = None  # the loaded checkpoint's step and diverged configs
        self._product_dtype: torch.dtype | None = None  # the products' dtype when narrower than W's (set in setup)

    @property
    def num_configs(self) -> int:
        return len(self.configs)

    # --- setup -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        # Only a fit splits the configs: validate, test and predict score the whole grid on row shards.
        split = resolve_split(self.hparams.split, self.num_configs, self.trainer.world_size) if stage == "fit" else "minibatch"
        self.shards = ConfigShards(split, self.trainer.strategy)
        if isinstance(datamodule, CIFARDataModule):
            datamodule.shard_rows = not self.shards.splits_configs
        self._product_dtype = product_dtype(self.trainer.precision)
        leave_process_group_at_exit()
        if stage == "fit":
            check_fit_settings(self.trainer)
            use_atomic_checkpoints(self.trainer)
            # The mean of this run's training split; test and predict keep the checkpoint's.
            if getattr(datamodule, "pixel_mean", None) is not None:
                self.pixel_mean.copy_(datamodule.pixel_mean)
            self._group_steps(global_step=0)
        if hasattr(datamodule, "class_names"):
            self.class_names = list(datamodule.class_names)

    def configure_callbacks(self) -> list[pl.Callback]:
        """Lightning's tqdm bar made to count SGD steps (:class:`StepProgressBar`, same refresh rate and position),
        and a LearningRateMonitor made to log each config's rate (:class:`SweepLearningRateMonitor`, same arguments).

        A callback of the user's own kind (another bar, a subclass of the monitor) is theirs to keep."""
        callbacks: list[pl.Callback] = []
        bar = self.trainer.progress_bar_callback
        if type(bar) is TQDMProgressBar:
            callbacks.append(StepProgressBar(bar.refresh_rate, bar.process_position))
        for monitor in self.trainer.callbacks:
            if type(monitor) is LearningRateMonitor:
                callbacks.append(SweepLearningRateMonitor(monitor.logging_interval, monitor.log_momentum, monitor.log_weight_decay))
        return callbacks

    def _group_steps(self, global_step: int) -> None:
        """Choose the SGD steps per Lightning batch (:mod:`lit_linear.steps`) and give the trainer
        its validation and logging intervals in such batches for this fit."""
        trainer, datamodule = self.trainer, self.trainer.datamodule
        self._restore_intervals()  # chosen before: start again from the user's intervals
        m = 1
        if isinstance(datamodule, CIFARDataModule):
            if not trainer.fast_dev_run:
                m = steps_per_batch(step_counts(trainer, global_step))
            datamodule.steps_per_batch = m  # always set: a reused data module keeps no earlier fit's m
        self.steps_per_batch = m
        if m > 1:
            self._user_intervals = {name: getattr(trainer, name) for name in BATCH_COUNTED}
            for name, steps in self._user_intervals.items():
                # m divides each where it matters (steps.step_counts); 0 (logging off) stays 0.
                setattr(trainer, name, max(1, steps // m) if steps else 0)

    def _restore_intervals(self) -> None:
        if self._user_intervals is not None:
            for name, steps in self._user_intervals.items():
                setattr(self.trainer, name, steps)
            self._user_intervals = None

    def teardown(self, stage: str) -> None:
        self._restore_intervals()

    def uses_cuda_graph(self, device: torch.device, world_size: int) -> bool:
        """Whether training on ``device`` in ``world_size`` processes records CUDA graphs (``model.cuda_graph``);
        a ConfigError where it was asked for and cannot apply."""
        if self.hparams.cuda_graph and not (torch.device(device).type == "cuda" and world_size == 1):
            raise ConfigError(
                f"model.cuda_graph true needs one CUDA device (training on {torch.device(device).type} with "
                f"{world_size} processes); set it to false"
            )
        return bool(self.hparams.cuda_graph)

    def configure_optimizers(self) -> GridSGD:
        graphs = self.uses_cuda_graph(self.W.device, self.trainer.world_size)
        fn = torch.compile(data_term, dynamic=False) if self.hparams.compile else data_term
        self._data_term = CapturedCall(fn) if graphs else fn
        return GridSGD(
            [self.W],
            lr=[self.configs[k][0] for k in self.columns.tolist()],
            reg=[self.configs[k][1] for k in self.columns.tolist()],
            lr_decay=self.hparams.lr_decay,
            lr_decay_every=self.hparams.lr_decay_every,
            compile=self.hparams.compile,
            cuda_graph=graphs,
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.shards.sharded:  # the whole sweep, as one device saves it: it resumes on any number of processes
            self.shards.write_whole(self, checkpoint)
        checkpoint["steps_per_batch"] = self.steps_per_batch
        checkpoint["stopped_configs"] = _saved_results(self.stopped)
        if self._pending_halving is not None:
            checkpoint["pending_halving"] = _saved_results(self._pending_halving)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("hyper_parameters", {})
        differ = [k for k in ("loss", "lr", "reg", "num_classes", "feature_dim") if k in saved and saved[k] != self.hparams[k]]
        if differ:
            detail = "; ".join(f"model.{k}: checkpoint {saved[k]!r}, this run {self.hparams[k]!r}" for k in differ)
            raise ConfigError(f"the checkpoint was trained with another grid ({detail}); use the config it was trained with")
        # A sweep saved after halving has fewer columns: shape W and the per-config buffers to
        # match before Lightning loads them (their values come from the checkpoint).
        columns = checkpoint.get("state_dict", {}).get("columns")
        if columns is not None and not torch.equal(columns.cpu(), self.columns.cpu()):
            D, _, C = self.W.shape
            n = columns.numel()
            self.set_columns(columns.to(self.columns.device).clone(), self.W.detach().new_empty(D, n, C),
                              self.loss_sum.new_zeros(n))  # fmt: skip
        self.stopped = _results_by_config(checkpoint.get("stopped_configs", []))
        pending = checkpoint.get("pending_halving")
        self._pending_halving = _results_by_config(pending) if pending is not None else None
        optimizer = (checkpoint.get("optimizer_states") or [{}])[0]
        self._loaded = (int(checkpoint.get("global_step", 0)), GridSGD.diverged_in(optimizer))
        try:
            fitting = self.trainer.state.fn == "fit"
        except RuntimeError:  # load_from_checkpoint: no trainer attached
            fitting = False
        if fitting:
            self._regroup_for_resume(checkpoint)

    def _regroup_for_resume(self, checkpoint: dict[str, Any]) -> None:
        """A resumed fit starts at the checkpoint's step: group steps so that batches start there,
        and restate Lightning's count of batches so far in batches of the new size.

        Lightning validates when its count of batches reaches a multiple of its interval, and a
        resumed trainer continues the count it saved. With other settings than the checkpointed run
        (another interval, say), the batches may hold another number of steps; the count is then
        rewritten in the checkpoint's loop state before Lightning restores it (there is no public
        way to set it; ``tests/test_resume.py`` fails loudly if the format changes).
        """
        step = int(checkpoint.get("global_step", 0))
        before = checkpoint.get("steps_per_batch", self.steps_per_batch)
        self._group_steps(global_step=step)
        if self.steps_per_batch != before:
            progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
            batches = step // self.steps_per_batch
            for counts in (progress["total"], progress["current"]):
                counts.update(ready=batches, started=batches, processed=batches, completed=batches)

    # --- training ------------------------------------------------------------------------------
    def _features(self, images: Tensor) -> Tensor:
        """Features ``(N, D)`` in the dtype the products run in (:mod:`lit_linear.precision`)."""
        return preprocess(images, self.pixel_mean, self._product_dtype or self.W.dtype)

    def training_step(self, batch: TrainBlock, batch_idx: int) -> None:
        """``m`` SGD steps: a :class:`TrainBlock` of ``(m, n)`` rows of the training split and their labels."""
        if batch.step != self.global_step:  # the stream follows global_step (data.TrainBatches): never replay or skip
            raise RuntimeError(f"the training stream is at step {batch.step} but the weights at step {self.global_step}")
        optimizer = self.optimizers()
        with own_dtypes(self.device):
            for rows, labels in zip(batch.index, batch.labels):
                loss = optimizer.step(closure=self._closure(batch.source, rows, labels))  # (K,)
                # Accumulated on the device and read at validation: per-step logging would sync every step.
                self.loss_sum.add_(loss)
        self.loss_steps.add_(batch.index.shape[0])

    def _closure(self, split: Tensor, rows: Tensor, labels: Tensor):
        """What GridSGD calls: the data loss ``(K,)`` and its gradient on the rows ``rows (n,)`` of ``split``."""
        strategy = self.trainer.strategy
        if isinstance(self._data_term, CapturedCall):
            # A CUDA graph reads fixed tensors: the step's rows and labels are copied into them.
            if self._rows is None or self._rows.shape != rows.shape:
                self._rows, self._labels = torch.empty_like(rows), torch.empty_like(labels)
            self._rows.copy_(rows)
            self._labels.copy_(labels)
            rows, labels = self._rows, self._labels

        def closure():
            # The data term; GridSGD adds the regulariser (its loss and its gradient) itself.
            # Eagerly, one (n, D) feature buffer is reused: a fresh 2.4 MB tensor per step costs page faults.
            out = self._x_buffer if self._data_term is data_term else None
            loss, X, dscores = self._data_term(self.hparams.loss, self.W, split, rows, labels, self.pixel_mean, out,
                                               self._product_dtype)  # fmt: skip
            self._x_buffer = X
            if not self.shards.splits_minibatch:
                return loss, X, dscores  # GridSGD adds X.T @ dscores into W in one product
            # DDP only averages gradients that autograd produced; this one is formed and averaged by
            # hand so that every rank applies the same update.
            D, K, C = self.W.shape
            self.W.grad = strategy.reduce(grid_gradient(X, dscores).reshape(D, K, C), reduce_op="mean")
            return strategy.reduce(loss, reduce_op="mean")

        return closure

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Lightning validates on its interval and when asked to stop: asking at the last step
        # validates the final weights when max_steps is not a multiple of the interval.
        if self.trainer.max_steps > 0 and self.global_step >= self.trainer.max_steps:
            self.trainer.should_stop = True

    # --- validation: train and val accuracy of every config ------------------------------------
    def _grid_scores(self, images: Tensor) -> Tensor:
        X = self._features(images)  # (n, D)
        D, K, C = self.W.shape
        W = self.W.view(D, K * C)
        scores = X @ W if X.dtype == W.dtype else grid_scores(W, X)  # mixed precision: W rounded as in training
        return scores.view(X.shape[0], K, C)  # (n, K, C); K may be 0 on a rank (model.split configs)

    def validation_step(self, batch: dict[str, Batch | None], batch_idx: int) -> None:
        """A chunk of the training sample and one of the validation split (None once it is done)."""
        with own_dtypes(self.device):
            for split, accuracy in (("train", self.train_acc), ("val", self.val_acc)):
                if batch[split] is not None:
                    preds = self._grid_scores(batch[split].images).argmax(dim=2)  # (n, K)
                    accuracy.update(preds, batch[split].labels)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.train_acc.reset()
            self.val_acc.reset()
            return
        # (K,), summed over ranks; torchmetrics squeezes a one-element result, hence the view.
        train_acc, val_acc = self.train_acc.compute().view(-1), self.val_acc.compute().view(-1)
        self.train_acc.reset()
        self.val_acc.reset()
        diverged = ~torch.isfinite(self.W).all(dim=2).all(dim=0)  # (K,)
        step, frozen = self._weights_state()
        if frozen is not None:
            diverged |= frozen.to(diverged.device)
        # NaN: no training step since the last validation (validate takes none), so no loss to report.
        train_loss = self.loss_sum / self.loss_steps if self.loss_steps > 0 else torch.full_like(self.loss_sum, math.nan)
        # Only a validation on the interval starts the next mean and halves: one that a graceful stop
        # (Ctrl-C) or an off-interval max_steps adds is for the user, and a fit resumed from it goes
        # on exactly as the uninterrupted fit does.
        on_interval = self.validates_at(self.global_step)
        if on_interval:
            self.loss_sum.zero_()
            self.loss_steps.zero_()
        # Under model.split configs each rank measured its own configs: the sweep is ranked as a whole.
        stats = torch.stack([train_acc, val_acc, train_loss.double(), diverged.double()], dim=1)  # (K_live, 4)
        columns, stats = self.shards.gather(self.columns, stats)
        train_acc, val_acc, train_loss, diverged = stats.unbind(dim=1)
        train_loss = [None if math.isnan(tl) else tl for tl in train_loss.tolist()]  # None: not measured
        diverged = diverged.bool()

        columns = columns.tolist()
        live = {
            k: ConfigResult(*self.configs[k], float(ta), float(va), tl, "diverged" if bad else "ok")
            for k, ta, va, tl, bad in zip(columns, train_acc.tolist(), val_acc.tolist(), train_loss, diverged.tolist())
        }
        usable = val_acc.masked_fill(diverged, -1.0)
        best = columns[int(usable.argmax())] if not bool(diverged.all()) else -1
        self.best_index.fill_(best)
        self._pending_halving = None
        if self.hparams.halving_factor is not None and self.trainer.state.fn == "fit" and on_interval:
            if self.global_step < self.trainer.max_steps:
                self._halve(live)
            else:  # the last validation of this fit; a fit resumed from here halves first (on_train_start)
                self._pending_halving = dict(live)
        if self.shards.sharded and best >= 0:  # for SweepTensorBoard's templates of the best config, on rank 0
            self._best_weights = self.shards.column_of(best, self.columns, self.W)
        results = tuple(live.get(k) or self.stopped[k] for k in range(self.num_configs))
        self.results = SweepResult(self.hparams.loss, step, results, best if best >= 0 else None)
        top = self.results.best
        if self.trainer.barebones:  # Lightning refuses self.log in barebones mode
            return
        # Logged as "step" too, so that the logger plots these at the SGD step they describe. Every
        # process holds the same values (the results are gathered): sync_dist's mean keeps them.
        self.log("step", float(step), sync_dist=True)
        self.log("val/acc", top.val_acc if top else 0.0, prog_bar=True, sync_dist=True)
        if top is not None:
            self.log("train/acc", top.train_acc, sync_dist=True)
            if top.train_loss is not None:
                self.log("train/loss", top.train_loss, sync_dist=True)

    def _weights_state(self) -> tuple[int, Tensor | None]:
        """The SGD step the weights are at, and the configs frozen as diverged ``(K,)`` (None: not known).

        In a fit, the trainer's and the optimizer's; in validate, the loaded checkpoint's: Lightning
        restores the step and the optimizer only to resume a fit."""
        if self.trainer.state.fn == "fit":
            optimizer = self.optimizers(use_pl_optimizer=False)
            return self.global_step, optimizer.diverged() if isinstance(optimizer, GridSGD) else None
        return self._loaded or (self.global_step, None)

    def on_validation_end(self) -> None:
        # fit prints its table when it ends (on_fit_end); validate, once its one validation ends.
        if self.trainer.state.fn == "validate" and self.trainer.is_global_zero and self.results is not None:
            print(self.results.table(), flush=True)

    def validates_at(self, step: int) -> bool:
        """Whether ``val_check_interval`` (counted in SGD steps) schedules a validation at ``step``;
        outside a fit, every validation counts as scheduled."""
        trainer = self.trainer
        interval = trainer.val_check_interval  # in Lightning batches of steps_per_batch steps while fitting
        if trainer.state.fn != "fit" or trainer.fast_dev_run or not isinstance(interval, int):
            return True
        return step % (interval * self.steps_per_batch) == 0

    # --- successive halving ---------------------------------------------------------------------
    def on_train_start(self) -> None:
        # Resumed from the last validation of an earlier, shorter fit: the halving it skipped as its
        # last is due now, so that the sweep goes on as one longer fit would have.
        if self._pending_halving is not None and self.global_step < self.trainer.max_steps:
            self._halve(self._pending_halving)
        self._pending_halving = None
        self._loaded = None  # the weights move on from the checkpoint's step
        if self.shards.splits_configs:
            self.shards.shard(self)

    def on_train_end(self) -> None:
        if self.shards.sharded:  # the whole sweep on every rank again: best model, templates, a later test
            self.shards.unshard(self)

    def _halve(self, live: dict[int, ConfigResult]) -> None:
        """Keep the best ``ceil(n / halving_factor)`` of the n configs still training (val accuracy,
        then lower train loss); the others, and any that diverged, leave W with their last results."""
        training = [k for k, r in live.items() if r.status == "ok"]
        def loss(k: int) -> float:  # None (no step since the last validation) ranks last among equal accuracies
            return math.inf if live[k].train_loss is None else live[k].train_loss

        ranked = sorted(training, key=lambda k: (-live[k].val_acc, loss(k), k))
        keep = set(ranked[: math.ceil(len(training) / self.hparams.halving_factor)])
        if not keep or len(keep) == len(live):  # nothing left to choose from, or nothing to stop
            return
        for k, result in live.items():
            if k not in keep:
                if result.status == "ok":
                    result = dataclasses.replace(result, status="stopped", stopped_at=self.global_step)
                live[k] = self.stopped[k] = result
        resharding = self.shards.sharded  # the survivors are dealt out to the ranks afresh
        if resharding:
            self.shards.unshard(self)
        positions = torch.tensor([j for j, k in enumerate(self.columns.tolist()) if k in keep], device=self.W.device)
        self.keep_columns(positions)
        if resharding:
            self.shards.shard(self)

    def keep_columns(self, positions: Tensor) -> None:
        """Keep only the columns ``positions (K',)`` of W, with their per-config state and GridSGD's."""
        self.set_columns(self.columns[positions], self.W.detach().index_select(1, positions), self.loss_sum[positions])
        self.optimizers(use_pl_optimizer=False).keep(positions, self.W)

    def set_columns(self, columns: Tensor, W: Tensor, loss_sum: Tensor) -> None:
        """Make ``columns (K_live,)`` the configs of W: ``W (D, K_live, C)`` and the per-config state with them."""
        self.columns = columns
        # requires_grad only because DDP refuses a module without a trainable parameter.
        self.W = nn.Parameter(W.contiguous())
        self.loss_sum = loss_sum
        # Split by configs, each rank measures its own configs on every row: nothing to sum across ranks.
        sync = not self.shards.sharded
        self.train_acc = GridAccuracy(columns.numel(), sync_on_compute=sync).to(W.device)
        self.val_acc = GridAccuracy(columns.numel(), sync_on_compute=sync).to(W.device)

    def training_configs(self) -> list[int]:
        """The configs still training: not stopped by halving, nor found diverged at the last validation."""
        diverged = {k for k, r in enumerate(self.results.configs) if r.status == "diverged"} if self.results else set()
        return [k for k in range(self.num_configs) if k not in self.stopped and k not in diverged]

    def weights_of(self, k: int) -> Tensor | None:
        """``W_k (D, C)`` of config ``k``, or None once it has left W (stopped by halving). While a fit is
        split by configs, a config another rank trains is None, but for the best one: its weights at
        the last validation."""
        columns = self.columns.tolist()
        if k in columns:
            return self.W[:, columns.index(k), :]
        return self._best_weights if self.shards.sharded and k == int(self.best_index) else None

    # --- results -------------------------------------------------------------------------------
    def _best(self) -> int:
        """Index of the best config at the last validation; explains why there is none."""
        k = int(self.best_index)
        if k < 0:
            raise LitLinearError(
                "this model has no validated config: load a fitted checkpoint (--ckpt_path best, last or a file), "
                "or every config diverged"
            )
        return k

    def best_classifier(self) -> LinearClassifier:
        """The best config (by val accuracy at the last validation) as a standalone classifier."""
        k = self._best()
        lr, reg = self.configs[k]
        info: dict[str, Any] = {"loss": self.hparams.loss, "lr": lr, "reg": reg}
        if self.results is not None and self.results.best_index == k:
            info.update(train_acc=self.results.best.train_acc, val_acc=self.results.best.val_acc, step=self.results.step)
        return LinearClassifier(self.weights_of(k), self.pixel_mean, self.class_names, info)

    def on_fit_end(self) -> None:
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank asks
        if self.results is None:
            return
        if self.trainer.is_global_zero:
            print(self.results.table(), flush=True)
            # fast_dev_run writes no files, as everywhere in Lightning.
            if log_dir is not None and not self.trainer.fast_dev_run:
                self.results.write_json(os.path.join(log_dir, "sweep.json"))
                if self.results.best is not None:
                    self.best_classifier().save(os.path.join(log_dir, "best_model.pt"))
                print(f"run written to {os.path.abspath(log_dir)}", flush=True)
        if self.results.best is None:
            raise SweepDivergedError(
                f"every one of the {self.num_configs} configs diverged (non-finite loss or weights), so no "
                f"best_model.pt was written; try learning rates below model.lr = {self.hparams.lr}"
            )

    # --- test and predict: the best config only ------------------------------------------------
    def _best_scores(self, images: Tensor) -> Tensor:
        with own_dtypes(self.device):
            X = self._features(images)  # (n, D)
            return X @ self.weights_of(self._best()).to(X.dtype)  # (n, C)

    def test_step(self, batch, batch_idx: int) -> None:
        self.test_acc.update(self._best_scores(batch.images).argmax(dim=1), batch.labels)
        if not self.trainer.barebones:  # Lightning refuses self.log in barebones mode
            self.log("test/acc", self.test_acc)

    def on_test_end(self) -> None:
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank asks
        if self.trainer.is_global_zero and log_dir is not None and self.trainer.loggers:
            print(f"test results logged to {os.path.abspath(log_dir)}", flush=True)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """``(row index (n,), predicted label (n,), true label (n,))`` of the best config."""
        return batch.index, self._best_scores(batch.images).argmax(dim=1), batch.labels


def _saved_results(results: dict[int, ConfigResult]) -> list[dict[str, Any]]:
    """``{config: ConfigResult}`` in its checkpoint form, ``[{"config": k, **fields}, ...]`` by config."""
    return [{"config": k, **dataclasses.asdict(r)} for k, r in sorted(results.items())]


def _results_by_config(saved: list[dict[str, Any]]) -> dict[int, ConfigResult]:
    """``{config: ConfigResult}`` from their checkpoint form, ``[{"config": k, **fields}, ...]``."""
    results = {}
    for entry in saved:
        fields = dict(entry)
        k = fields.pop("config")
        results[k] = ConfigResult(**fields)
    return results
