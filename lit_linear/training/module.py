"""LinearClassifierModule: a whole learning-rate x regularization grid, trained at once by hand.

    trainer = pl.Trainer(max_steps=2000, val_check_interval=500, check_val_every_n_epoch=None)
    trainer.fit(LinearClassifierModule(loss="softmax", lr=[0.1, 0.4], reg=[1e-4, 1e-3]), CIFARDataModule())

Lightning's glue: each hook hands its work to SweepState, TrainStep, StepGrouping or ConfigShards; GridSGD
applies the hand-derived update (Lightning never calls backward).
"""

from __future__ import annotations

import os
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from lit_linear.callbacks.lr_monitor import SweepLearningRateMonitor
from lit_linear.callbacks.progress import StepProgressBar
from lit_linear.data.splits_module import SplitsDataModule
from lit_linear.data.streams import Batch, TrainBlock
from lit_linear.errors import SweepDivergedError
from lit_linear.features.preprocess import preprocess
from lit_linear.maths.optim import GridSGD
from lit_linear.runs.checkpoint_io import use_atomic_checkpoints
from lit_linear.runs.faults import leave_process_group_at_exit
from lit_linear.sweep.checkpoint_keys import flatten_state_dict, nest_state_dict
from lit_linear.sweep.configs import check_model_options, check_same_sweep
from lit_linear.sweep.results import SweepResult
from lit_linear.sweep.shards import ConfigShards, Split, resolve_split
from lit_linear.sweep.state import SweepState
from lit_linear.training.best_config import BestConfigSteps
from lit_linear.training.grouping import StepGrouping, warn_if_shorter_than_logging
from lit_linear.training.precision import own_dtypes, product_dtype
from lit_linear.training.step import TrainStep, check_cuda_graph
from lit_linear.training.trainer_flags import check_fit_settings


class LinearClassifierModule(BestConfigSteps, pl.LightningModule):
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
            configs as processes, else ``minibatch``. The result is the same (:mod:`lit_linear.sweep.shards`).
    """

    def __init__(
        self,
        loss: Literal["svm", "softmax", "l2svm"] = "softmax",
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
        self.save_hyperparameters(logger=False)  # no HParams session for the main run: each config has its own
        # seed_everything's seed alone: the same draws on every DDP rank and in a rerun of config.yaml.
        configs, class_names = check_model_options(self.hparams, torch.initial_seed())
        resolve_split(split, len(configs), 1)  # the value; the process count is checked when a fit starts
        self.automatic_optimization = False
        self.class_names = class_names
        w0 = weight_scale * torch.randn(feature_dim, num_classes)  # (D, C), shared by every config
        self.sweep = SweepState(configs, loss, w0, halving_factor)
        self.register_state_dict_post_hook(flatten_state_dict)  # checkpoints keep their keys: W, columns, ...
        self.register_load_state_dict_pre_hook(nest_state_dict)
        # (D-1,) each: X = inputs * scale - offset (features.preprocess), set from the training data when a fit starts.
        self.register_buffer("pixel_mean", torch.zeros(feature_dim - 1))  # the offset, named as checkpoints have it
        self.register_buffer("feature_scale", torch.ones(feature_dim - 1))
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.shards = ConfigShards()  # the processes' share of the configs, set for each stage (setup)
        self.grouping = StepGrouping()
        self.step_fn: TrainStep | None = None  # made with the optimizer
        self._loaded: tuple[int, Tensor | None] | None = None  # the loaded checkpoint's step and diverged configs
        self._product_dtype: torch.dtype | None = None  # the products' dtype when narrower than W's (set in setup)

    # What the sweep holds, under the names users of the module know.
    W = property(lambda self: self.sweep.W, doc="``(D, K_held, C)``: the weights of the configs still training.")
    configs = property(lambda self: self.sweep.configs, doc="``(lr, reg)`` of each config.")
    num_configs = property(lambda self: self.sweep.num_configs)
    results = property(lambda self: self.sweep.results, doc="The sweep's results at the last validation.")
    steps_per_batch = property(lambda self: self.grouping.steps_per_batch)

    # --- setup -------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        trainer, datamodule = self.trainer, self.trainer.datamodule
        # Only a fit splits the configs: validate, test and predict score the whole grid on row shards.
        split = resolve_split(self.hparams.split, self.num_configs, trainer.world_size) if stage == "fit" else None
        self.shards = ConfigShards(split or "minibatch", trainer.strategy)
        if isinstance(datamodule, SplitsDataModule):
            datamodule.shard_rows = not self.shards.splits_configs
        self._product_dtype = product_dtype(trainer.precision)
        leave_process_group_at_exit()
        if stage == "fit":
            check_fit_settings(trainer)
            use_atomic_checkpoints(trainer)
            if getattr(datamodule, "feature_offset", None) is not None:  # test and predict keep the checkpoint's
                self.pixel_mean.copy_(datamodule.feature_offset)
                self.feature_scale.copy_(datamodule.feature_scale)
            self.grouping.start(trainer, global_step=0)
        if hasattr(datamodule, "class_names"):
            self.class_names = list(datamodule.class_names)

    def teardown(self, stage: str) -> None:
        self.grouping.restore(self.trainer)

    def configure_callbacks(self) -> list[pl.Callback]:
        """Lightning's tqdm bar and LearningRateMonitor made to count SGD steps and log each config's rate (same
        arguments); a callback of the user's own kind (another bar, a subclass of the monitor) is theirs to keep."""
        callbacks = self.trainer.callbacks
        return StepProgressBar.replacing(callbacks) + SweepLearningRateMonitor.replacing(callbacks)

    def configure_optimizers(self) -> GridSGD:
        graphs = check_cuda_graph(self.hparams.cuda_graph, self.W.device, self.trainer.world_size)
        self.step_fn = TrainStep(self.hparams.loss, self.hparams.compile, graphs)
        hp = self.hparams
        schedule = {"lr_decay": hp.lr_decay, "lr_decay_every": hp.lr_decay_every}
        return GridSGD([self.W], *self.sweep.axes(), **schedule, compile=hp.compile, cuda_graph=graphs)

    # --- checkpoints: the whole sweep, whatever the number of processes -----------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.shards.sharded:  # the whole sweep, as one device saves it: it resumes on any number of processes
            self.shards.write_whole(self.sweep, self._optimizer(), checkpoint)
        checkpoint["steps_per_batch"] = self.steps_per_batch
        self.sweep.save_to(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_same_sweep(checkpoint.get("hyper_parameters", {}), self.hparams)
        self.sweep.load_from(checkpoint)
        optimizer = (checkpoint.get("optimizer_states") or [{}])[0]
        self._loaded = (int(checkpoint.get("global_step", 0)), GridSGD.diverged_in(optimizer))
        try:
            fitting = self.trainer.state.fn == "fit"
        except RuntimeError:  # load_from_checkpoint: no trainer attached
            fitting = False
        if fitting:
            self.grouping.resume(self.trainer, checkpoint)

    def _optimizer(self) -> GridSGD:
        return self.optimizers(use_pl_optimizer=False)

    # --- training ------------------------------------------------------------------------------
    def _features(self, images: Tensor) -> Tensor:
        """Features ``(N, D)`` in the dtype the products run in (:mod:`lit_linear.training.precision`)."""
        return preprocess(images, self.pixel_mean, self._product_dtype or self.W.dtype, scale=self.feature_scale)

    def on_train_start(self) -> None:
        warn_if_shorter_than_logging(self.trainer, self.trainer.max_steps - self.global_step, self.steps_per_batch)
        # A halving an earlier, shorter fit deferred applies now; a fit split by configs deals them out.
        keep = self.sweep.resumed_halving(self.global_step, self.trainer.max_steps)
        self.shards.hold(self.sweep, self._optimizer(), keep)
        self._loaded = None  # the weights move on from the checkpoint's step

    def training_step(self, batch: TrainBlock, batch_idx: int) -> None:
        """``m`` SGD steps: a :class:`TrainBlock` of ``(m, n)`` rows of the training split and their labels."""
        if batch.step != self.global_step:  # the stream follows global_step (TrainBatches): never replay or skip
            raise RuntimeError(f"the training stream is at step {batch.step}, the weights at {self.global_step}")
        optimizer, sweep, strategy = self.optimizers(), self.sweep, self.trainer.strategy
        # Under DDP split by minibatch, the hand-formed gradient and the loss are averaged across processes.
        reduce = (lambda t: strategy.reduce(t, reduce_op="mean")) if self.shards.splits_minibatch else None
        with own_dtypes(self.device):
            for rows, labels in zip(batch.index, batch.labels):
                closure = self.step_fn.closure(
                    sweep.W,
                    batch.source,
                    rows,
                    labels,
                    self.pixel_mean,
                    dtype=self._product_dtype,
                    reduce=reduce,
                    scale=self.feature_scale,
                )
                # Accumulated on the device and read at validation: per-step logging would sync every step.
                sweep.loss_sum.add_(optimizer.step(closure=closure))  # (K_held,)
        sweep.loss_steps.add_(batch.index.shape[0])

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Lightning validates on its interval and when asked to stop: asking at the last step
        # validates the final weights when max_steps is not a multiple of the interval.
        if self.trainer.max_steps > 0 and self.global_step >= self.trainer.max_steps:
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        # The whole sweep on every rank again: best model, templates, a later test.
        self.shards.hold(self.sweep, self._optimizer(), split=False)

    # --- validation: train and val accuracy of every config ------------------------------------
    def validation_step(self, batch: dict[str, Batch | None], batch_idx: int) -> None:
        """A chunk of the training sample and one of the validation split (None once it is done)."""
        with own_dtypes(self.device):
            for split in ("train", "val"):
                if batch[split] is not None:
                    self.sweep.measure(split, self._features(batch[split].images), batch[split].labels)

    def on_validation_epoch_end(self) -> None:
        sweep = self.sweep
        if self.trainer.sanity_checking:
            sweep.reset_measures()
            return
        step, frozen = self._weights_state()
        # Only a validation on the interval restarts the loss means and halves: one a stop or an off-interval
        # max_steps adds is for the user, so that a fit resumed from it goes on as the uninterrupted one.
        on_interval = self.grouping.validates_at(self.trainer, self.global_step)
        # Under model.split configs each rank measured its own configs: the sweep is ranked as a whole.
        latest = sweep.record(*self.shards.gather(*sweep.measured(frozen, restart_losses=on_interval)))
        if self.trainer.state.fn == "fit" and on_interval:  # the survivors of a halving are dealt out afresh
            self.shards.hold(sweep, self._optimizer(), sweep.halving(latest, self.global_step, self.trainer.max_steps))
        best = int(sweep.best_index)
        if self.shards.sharded and best >= 0:  # for SweepTensorBoard's templates of the best config, on rank 0
            sweep.best_weights = self.shards.column_of(best, sweep)
        self._log_results(sweep.conclude(step, latest, search=self.hparams.num_configs is not None))

    def _log_results(self, results: SweepResult) -> None:
        if self.trainer.barebones:  # Lightning refuses self.log in barebones mode
            return
        for name, value in results.metrics().items():  # equal on every process: sync_dist's mean keeps them
            self.log(name, value, prog_bar=name == "val/acc", sync_dist=True)

    def _weights_state(self) -> tuple[int, Tensor | None]:
        """The weights' SGD step and the configs frozen as diverged ``(K,)`` (None: not known): in a fit, the
        trainer's and the optimizer's; in validate, the checkpoint's (Lightning restores them only for a fit)."""
        if self.trainer.state.fn == "fit":
            optimizer = self._optimizer()
            return self.global_step, optimizer.diverged() if isinstance(optimizer, GridSGD) else None
        return self._loaded or (self.global_step, None)

    def on_validation_end(self) -> None:
        # "step" (the x-axis of the logged metrics) would otherwise stay in callback_metrics, where a
        # ModelCheckpoint reads it to name later files: step=500 for a save at step 1000. Callbacks ran first.
        self.trainer.callback_metrics.pop("step", None)
        # fit prints its table when it ends (on_fit_end); validate, once its one validation ends.
        if self.trainer.state.fn == "validate" and self.trainer.is_global_zero and self.results is not None:
            print(self.results.table(), flush=True)

    # --- results -------------------------------------------------------------------------------
    def on_fit_end(self) -> None:
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank asks
        if self.results is None:
            return
        if self.trainer.is_global_zero:
            print(self.results.table(), flush=True)
            # fast_dev_run writes no files, as everywhere in Lightning.
            if log_dir is not None and not self.trainer.fast_dev_run:
                extractor = getattr(self.trainer.datamodule, "extractor", None)  # best_model.pt reads raw images
                self.sweep.write(
                    log_dir, self.pixel_mean, self.class_names, scale=self.feature_scale, extractor=extractor
                )
                print(f"run written to {os.path.abspath(log_dir)}", flush=True)
        if self.results.best is None:
            raise SweepDivergedError(
                f"every one of the {self.num_configs} configs diverged (non-finite loss or weights), so no "
                f"best_model.pt was written; try learning rates below model.lr = {self.hparams.lr}"
            )
