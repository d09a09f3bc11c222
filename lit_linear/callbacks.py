"""TensorBoard views of a sweep: per-config curves, class templates, HParams sessions, text.

``SweepTensorBoard`` writes beside the run's ``TensorBoardLogger``:

- ``<log_dir>/<config name>/`` for each config (e.g. ``lr=0.1,reg=0.001``): scalars ``acc/train``,
  ``acc/val`` and ``loss/train`` at every validation, an HParams session (the same hyperparameter
  keys in every run; status FAILURE for a diverged config), and its class templates at the end;
- in the main run: ``templates/best`` at every validation, the resolved ``config.yaml`` and the
  final results table as text. ``val/acc``, ``train/acc`` and ``train/loss`` of the best config
  are logged there by the module itself.

Only rank 0 writes; without a TensorBoardLogger (``--trainer.logger false``) it does nothing.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.tensorboard import SummaryWriter

from lit_linear.hparams import STATUS_FAILURE, STATUS_SUCCESS, experiment_summary, session_end_summary, session_start_summary
from lit_linear.sweep import SweepResult, config_name
from lit_linear.templates import template_grid

METRICS = {"acc/train": "train accuracy", "acc/val": "val accuracy", "loss/train": "train loss"}


def _markdown_code(text: str) -> str:
    # TensorBoard renders text as Markdown: indenting keeps YAML's layout.
    return "\n".join("    " + line for line in text.splitlines())


class SweepTensorBoard(Callback):
    """Curves, class templates and HParams sessions of every config of the sweep.

    Args:
        templates: log the best config's class templates at every validation, and every
            config's at the end of fit.
        template_scale: each 32x32 template is drawn this many times larger.
        hparams: one HParams session per config, so TensorBoard's HParams dashboard lists them.
        text: the resolved config and the final results table as text.
    """

    def __init__(self, templates: bool = True, template_scale: int = 3, hparams: bool = True, text: bool = True) -> None:
        self.templates, self.template_scale, self.hparams, self.text = templates, template_scale, hparams, text
        self._logger: TensorBoardLogger | None = None
        self._writers: list[SummaryWriter] = []
        self._last_step: int | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if not trainer.is_global_zero or self._logger is None:
            if self._logger is None:
                rank_zero_info("SweepTensorBoard: no TensorBoardLogger, so no TensorBoard views are written")
            self._logger = None
            return
        log_dir = self._logger.log_dir
        self._writers = [SummaryWriter(os.path.join(log_dir, config_name(lr, reg))) for lr, reg in pl_module.configs]
        if self.hparams:
            self._start_sessions(trainer, pl_module)
        if self.text:
            config_file = os.path.join(log_dir, "config.yaml")
            if os.path.isfile(config_file):
                with open(config_file, encoding="utf-8") as f:
                    self._logger.experiment.add_text("config", _markdown_code(f.read()), global_step=trainer.global_step)

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        results: SweepResult | None = getattr(pl_module, "results", None)
        if self._logger is None or results is None or trainer.sanity_checking or results.step == self._last_step:
            return
        self._last_step = step = results.step
        for writer, config in zip(self._writers, results.configs):
            writer.add_scalar("acc/train", config.train_acc, step)
            writer.add_scalar("acc/val", config.val_acc, step)
            writer.add_scalar("loss/train", config.train_loss, step)
            writer.flush()
        if self.templates and results.best_index is not None:
            image = template_grid(pl_module.W[:, results.best_index, :], pl_module.class_names, self.template_scale)
            self._logger.experiment.add_image("templates/best", image, step)

    def on_fit_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        results: SweepResult | None = getattr(pl_module, "results", None)
        if self._logger is None:
            return
        if results is not None:
            for k, (writer, config) in enumerate(zip(self._writers, results.configs)):
                if self.templates and config.status == "ok":
                    writer.add_image("templates", template_grid(pl_module.W[:, k, :], pl_module.class_names, self.template_scale), results.step)
                if self.hparams:
                    status = STATUS_SUCCESS if config.status == "ok" else STATUS_FAILURE
                    writer.file_writer.add_summary(session_end_summary(status))
            if self.text:
                self._logger.experiment.add_text("sweep/results", results.markdown(), global_step=results.step)
                self._logger.experiment.flush()
        self._close()

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers = []

    # --- HParams -------------------------------------------------------------------------------
    def _start_sessions(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        shared = self._shared_hparams(trainer, pl_module)
        lr0, reg0 = pl_module.configs[0]
        experiment = experiment_summary({"lr": lr0, "reg": reg0, **shared}, METRICS)
        for writer, (lr, reg) in zip(self._writers, pl_module.configs):
            writer.file_writer.add_summary(experiment)
            writer.file_writer.add_summary(session_start_summary({"lr": lr, "reg": reg, **shared}, config_name(lr, reg)))
            writer.flush()

    @staticmethod
    def _shared_hparams(trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> dict[str, Any]:
        """Hyperparameters every config shares; the same keys in every session."""
        hp = pl_module.hparams
        data = getattr(trainer.datamodule, "hparams", {})
        return {
            "loss": hp.loss,
            "batch_size": float(data.get("batch_size", float("nan"))),
            "max_steps": float(trainer.max_steps),
            "lr_decay": float(hp.lr_decay),
            "lr_decay_every": float(hp.lr_decay_every),
            "weight_scale": float(hp.weight_scale),
            "dataset": str(data.get("dataset", "")),
        }
