"""TensorBoard views of a sweep: per-config curves, class templates, HParams sessions, text.

``SweepTensorBoard`` writes beside the run's ``TensorBoardLogger``:

- ``<log_dir>/<config name>/`` for each config (e.g. ``lr=0.1,reg=0.001``): scalars ``acc/train``,
  ``acc/val`` and ``loss/train`` at every validation it reaches; its class templates
  (``templates``) where it ends, at the halving that stops it or at the end of the fit (none for
  a diverged config); and its HParams session once its end is known (:mod:`.sessions`);
- in the main run: ``best/templates`` at every validation (for features that are no image, the
  histogram ``best/weights``), the resolved ``config.yaml`` as text ``config`` and the final
  results table as text ``sweep/results``. ``val/acc``, ``train/acc`` and ``train/loss`` of the best
  config are logged there by the module itself.

The names serve TensorBoard's Time Series page, the one that ticks every run however many there
are (Scalars, Images and Text tick none above 40): it sorts the tags by name and opens the first
two groups, here ``acc`` (every config's accuracies) and ``best`` (the best config's templates).

Only rank 0 writes; without a TensorBoardLogger (``--trainer.logger false``) it does nothing. The
main run has no HParams session: the module and data module save their hyperparameters with
``logger=False``, so Lightning never logs them there nor writes its ``hp_metric`` placeholder.
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid

from lit_linear.callbacks.tensorboard.sessions import SweepSessions
from lit_linear.callbacks.tensorboard.summaries import add_markdown, add_png
from lit_linear.callbacks.tensorboard.templates import check_scale, is_image_weight, template_grid
from lit_linear.sweep.configs import config_name
from lit_linear.sweep.results import SweepResult


def _markdown_code(text: str) -> str:
    # TensorBoard renders text as Markdown: indenting keeps YAML's layout.
    return "\n".join("    " + line for line in text.splitlines())


class SweepTensorBoard(Callback):
    """Curves, class templates and HParams sessions of every config of the sweep.

    Args:
        templates: log the best config's class templates at every validation, and each config's
            where it ends (at the halving that stops it, or at the end of fit).
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
        self._sessions: SweepSessions | None = None
        self._last_step: int | None = None
        self._held: tuple[list[int], Tensor] | None = None  # (columns, W) as the validation found them

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
        log_dir, sweep = self._logger.log_dir, pl_module.sweep
        self._writers = [SummaryWriter(os.path.join(log_dir, config_name(lr, reg))) for lr, reg in sweep.configs]
        if self.hparams:
            shared = self._shared_hparams(trainer, pl_module)
            self._sessions = SweepSessions(self._writers, sweep.configs, shared, sweep.halving_factor is not None)
        extractor = getattr(trainer.datamodule, "extractor", None)
        if self.templates and hasattr(extractor, "dictionary_image"):  # k-means: the centroids, as in the paper
            tiles = extractor.dictionary_image()  # (K, 3, ps, ps) in [0, 1]
            grid = make_grid(tiles, nrow=math.ceil(math.sqrt(len(tiles))), padding=1, pad_value=1.0)
            image = (grid * 255).round().to(torch.uint8)
            image = image.repeat_interleave(self.template_scale, 1).repeat_interleave(self.template_scale, 2)
            add_png(self._logger.experiment, "features/dictionary", image, trainer.global_step)
        if self.text:
            config_file = os.path.join(log_dir, "config.yaml")
            if os.path.isfile(config_file):
                with open(config_file, encoding="utf-8") as f:
                    text = _markdown_code(f.read())
                add_markdown(self._logger.experiment, "config", text, trainer.global_step)
                self._logger.experiment.flush()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning runs this before the module's own hook, where a halving takes the configs it stops out
        # of W: holding on to W as it is now lets on_validation_end draw them. On one process a reference,
        # not a copy: the halving makes a new W, and no step changes this one before on_validation_end.
        sweep = pl_module.sweep
        halving = sweep.halving_factor is not None and trainer.state.fn == "fit" and not trainer.sanity_checking
        logged = any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers)  # the same on every rank
        if not (self.templates and halving and logged and trainer.global_step < trainer.max_steps):
            return
        # Split by configs, every rank takes part and rank 0 gets the whole sweep, as one device holds it.
        columns, W = pl_module.shards.gather(sweep.columns, sweep.W.detach().transpose(0, 1))  # W (K_held, D, C)
        if self._logger is not None:
            self._held = (columns.tolist(), W.transpose(0, 1))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results: SweepResult | None = pl_module.sweep.results
        held, self._held = self._held, None
        if self._logger is None or results is None or trainer.sanity_checking or results.step == self._last_step:
            return
        self._last_step = step = results.step
        for k, (writer, config) in enumerate(zip(self._writers, results.configs)):
            if config.status == "stopped" and config.stopped_at != step:
                continue  # stopped by successive halving: its curves end at the step it stopped
            writer.add_scalar("acc/train", config.train_acc, step)
            writer.add_scalar("acc/val", config.val_acc, step)
            if config.train_loss is not None:
                writer.add_scalar("loss/train", config.train_loss, step)
            if config.status == "stopped":  # by this validation's halving: its templates and session now
                self._draw(writer, _column(held, k), pl_module, step)
                if self._sessions is not None:
                    self._sessions.end(k, config, step)
            writer.flush()
        if results.best_index is not None:
            best = pl_module.sweep.weights_of(results.best_index)
            if self.templates and is_image_weight(best):
                image = template_grid(best, pl_module.class_names, self.template_scale)
                add_png(self._logger.experiment, "best/templates", image, step)
            elif best is not None:  # features that are no image: the spread of the best config's weights
                self._logger.experiment.add_histogram("best/weights", best[:-1].detach().float().cpu(), step)
            self._logger.experiment.flush()  # visible now, not at the writer's next periodic flush

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results: SweepResult | None = pl_module.sweep.results
        if self._logger is None:
            return
        if results is not None:  # None: no validation ran (e.g. resumed at max_steps), so nothing ended here
            for k, (writer, config) in enumerate(zip(self._writers, results.configs)):
                if config.status == "ok":  # the configs halving stopped were drawn at their stop
                    self._draw(writer, pl_module.sweep.weights_of(k), pl_module, results.step)
            if self._sessions is not None:
                self._sessions.end_all(results.configs, results.step)
            if self.text:
                add_markdown(self._logger.experiment, "sweep/results", results.markdown(), results.step)
                self._logger.experiment.flush()
        self._close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # An interrupted or crashed fit: its configs' sessions say so (Failure) with what was measured.
        # Best effort: on a full disk these writes fail too, and the fault to report is the first one.
        try:
            results: SweepResult | None = pl_module.sweep.results
            if self._sessions is not None:  # results None: it failed before its first validation
                configs, step = (None, None) if results is None else (results.configs, results.step)
                self._sessions.end_all(configs, step, failed=True)
            self._close()
        except OSError:
            self._writers, self._sessions, self._logger = [], None, None

    def _close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers, self._sessions, self._held = [], None, None
        self._logger = None  # a later validate/test on this trainer writes nothing

    def _draw(self, writer: SummaryWriter, weights: Tensor | None, pl_module: pl.LightningModule, step: int) -> None:
        """A config's class templates, ``templates`` in its own run (None or non-image weights: nothing)."""
        if self.templates and is_image_weight(weights):
            add_png(writer, "templates", template_grid(weights, pl_module.class_names, self.template_scale), step)

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


def _column(held: tuple[list[int], Tensor] | None, k: int) -> Tensor | None:
    """``W_k (D, C)`` of config ``k`` from a held ``(columns, W (D, K_held, C))``; None where none is held."""
    if held is None or k not in held[0]:
        return None
    columns, W = held
    return W[:, columns.index(k), :]
