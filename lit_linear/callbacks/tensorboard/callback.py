"""TensorBoard views of a sweep: per-config curves, class templates, HParams sessions, text.

``SweepTensorBoard`` writes beside the run's ``TensorBoardLogger``:

- ``<log_dir>/<config name>/`` for each config (e.g. ``lr=0.1,reg=0.001``): scalars ``acc/train``,
  ``acc/val`` and ``loss/train`` at every validation, an HParams session (the same hyperparameter
  keys in every run; status FAILURE for a diverged config), and its class templates at the end;
- in the main run: ``templates/best`` at every validation, the resolved ``config.yaml`` and the
  final results table as text. ``val/acc``, ``train/acc`` and ``train/loss`` of the best config
  are logged there by the module itself.

Only rank 0 writes; without a TensorBoardLogger (``--trainer.logger false``) it does nothing. The
main run has no HParams session: the module and data module save their hyperparameters with
``logger=False``, so Lightning never logs them there nor writes its ``hp_metric`` placeholder.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from tensorboard.compat.proto import summary_pb2
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

from lit_linear.callbacks.tensorboard.hparams import (
    STATUS_FAILURE,
    STATUS_SUCCESS,
    STATUS_UNKNOWN,
    experiment_summary,
    session_end_summary,
    session_start_summary,
)
from lit_linear.callbacks.tensorboard.templates import check_scale, is_image_weight, template_grid
from lit_linear.sweep.configs import config_name
from lit_linear.sweep.results import SweepResult

METRICS = {"acc/train": "train accuracy", "acc/val": "val accuracy", "loss/train": "train loss"}


def _add_png(writer: SummaryWriter, tag: str, image: Tensor, step: int) -> None:
    """Log a ``(3, H, W)`` uint8 RGB image as a PNG encoded by PIL at zlib level 1.

    Not ``writer.add_image``: it re-scales through float and encodes at PIL's default compression
    level, noticeably slower per image, and a sweep writes one image per config. Not
    ``torchvision.io.encode_png``: torchvision deprecates its image codecs (0.29) for removal.
    """
    _, height, width = image.shape
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG", compress_level=1)  # (H, W, 3)
    png = summary_pb2.Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=buffer.getvalue())
    writer.file_writer.add_summary(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=png)]), step)


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

    def __init__(
        self, templates: bool = True, template_scale: int = 3, hparams: bool = True, text: bool = True
    ) -> None:
        check_scale(template_scale, "SweepTensorBoard's template_scale")
        self.templates, self.template_scale, self.hparams, self.text = templates, template_scale, hparams, text
        self._logger: TensorBoardLogger | None = None
        self._writers: list[SummaryWriter] = []
        self._last_step: int | None = None
        self._sessions_open = False  # HParams sessions started and not yet ended

    # --- lifecycle -----------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close()  # a callback reused for another fit starts afresh
        self._last_step = None
        self._logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if not trainer.is_global_zero or self._logger is None:
            if self._logger is None:
                rank_zero_info("SweepTensorBoard: no TensorBoardLogger, so no TensorBoard views are written")
            self._logger = None
            return
        log_dir = self._logger.log_dir
        self._writers = [
            SummaryWriter(os.path.join(log_dir, config_name(lr, reg))) for lr, reg in pl_module.sweep.configs
        ]
        if self.hparams:
            self._start_sessions(trainer, pl_module)
        extractor = getattr(trainer.datamodule, "extractor", None)
        if self.templates and hasattr(extractor, "dictionary_image"):  # k-means: the centroids, as in the paper
            tiles = extractor.dictionary_image()  # (K, 3, ps, ps) in [0, 1]
            grid = make_grid(tiles, nrow=math.ceil(math.sqrt(len(tiles))), padding=1, pad_value=1.0)
            image = (grid * 255).round().to(torch.uint8)
            image = image.repeat_interleave(self.template_scale, 1).repeat_interleave(self.template_scale, 2)
            _add_png(self._logger.experiment, "features/dictionary", image, trainer.global_step)
        if self.text:
            config_file = os.path.join(log_dir, "config.yaml")
            if os.path.isfile(config_file):
                with open(config_file, encoding="utf-8") as f:
                    text = _markdown_code(f.read())
                self._logger.experiment.add_text("config", text, global_step=trainer.global_step)
                self._logger.experiment.flush()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results: SweepResult | None = pl_module.sweep.results
        if self._logger is None or results is None or trainer.sanity_checking or results.step == self._last_step:
            return
        self._last_step = step = results.step
        for writer, config in zip(self._writers, results.configs):
            if config.status == "stopped" and config.stopped_at != step:
                continue  # stopped by successive halving: its curves end at the step it stopped
            writer.add_scalar("acc/train", config.train_acc, step)
            writer.add_scalar("acc/val", config.val_acc, step)
            if config.train_loss is not None:
                writer.add_scalar("loss/train", config.train_loss, step)
            writer.flush()
        if results.best_index is not None:
            best = pl_module.sweep.weights_of(results.best_index)
            if self.templates and is_image_weight(best):
                image = template_grid(best, pl_module.class_names, self.template_scale)
                _add_png(self._logger.experiment, "templates/best", image, step)
            elif best is not None:  # features that are no image: the spread of the best config's weights
                self._logger.experiment.add_histogram("weights/best", best[:-1].detach().float().cpu(), step)
            self._logger.experiment.flush()  # visible now, not at the writer's next periodic flush

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results: SweepResult | None = pl_module.sweep.results
        if self._logger is None:
            return
        if results is not None:
            for k, (writer, config) in enumerate(zip(self._writers, results.configs)):
                weights = pl_module.sweep.weights_of(k)  # None for a config that halving stopped: it left W
                if self.templates and config.status == "ok" and is_image_weight(weights):
                    image = template_grid(weights, pl_module.class_names, self.template_scale)
                    _add_png(writer, "templates", image, results.step)
                if self._sessions_open:
                    # A config stopped by halving ran as asked: not a failure.
                    status = STATUS_FAILURE if config.status == "diverged" else STATUS_SUCCESS
                    writer.file_writer.add_summary(session_end_summary(status))
            self._sessions_open = False
            if self.text:
                self._logger.experiment.add_text("sweep/results", results.markdown(), global_step=results.step)
                self._logger.experiment.flush()
        elif self._sessions_open:  # no validation ran (e.g. resumed at max_steps): not left "running"
            for writer in self._writers:
                writer.file_writer.add_summary(session_end_summary(STATUS_UNKNOWN))
        self._close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # An interrupted or crashed fit: end the sessions so the dashboard does not list them as running.
        # Best effort: on a full disk these writes fail too, and the fault to report is the first one.
        try:
            if self._sessions_open:
                for writer in self._writers:
                    writer.file_writer.add_summary(session_end_summary(STATUS_FAILURE))
            self._close()
        except OSError:
            self._writers, self._sessions_open, self._logger = [], False, None

    def _close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers = []
        self._sessions_open = False
        self._logger = None  # a later validate/test on this trainer writes nothing

    # --- HParams -------------------------------------------------------------------------------
    def _start_sessions(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        shared = self._shared_hparams(trainer, pl_module)
        lr0, reg0 = pl_module.sweep.configs[0]
        # lr and reg marked as differing so the dashboard shows them in its default columns.
        experiment = experiment_summary({"lr": lr0, "reg": reg0, **shared}, METRICS, differs=("lr", "reg"))
        for writer, (lr, reg) in zip(self._writers, pl_module.sweep.configs):
            writer.file_writer.add_summary(experiment)
            start = session_start_summary({"lr": lr, "reg": reg, **shared}, config_name(lr, reg))
            writer.file_writer.add_summary(start)
            writer.flush()
        self._sessions_open = True

    @staticmethod
    def _shared_hparams(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
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
