"""The ``lit-linear`` / ``python train.py`` command line: LightningCLI over the module and the data.

    python train.py fit --config configs/softmax_sweep.yaml
    python train.py fit --config configs/svm.yaml --model.lr "[1e-3, 5e-3]" --model.reg "[1e-3, 1e-2]"
    python train.py test --config configs/softmax_sweep.yaml --ckpt_path best
    python train.py predict --config configs/softmax_sweep.yaml --ckpt_path best

Besides LightningCLI's own behaviour it: links the data's class count, class names and feature
size into the model; always adds the ``best``/``last`` checkpoints and the predictions writer;
uses a TensorBoard logger without the ``hp_metric`` placeholder (so the HParams dashboard shows
only the sweep's configs); loads checkpoints with ``weights_only=True``; resolves
``--ckpt_path best|last`` to the newest such checkpoint under ``--trainer.default_root_dir``;
and turns :class:`~lit_linear.errors.LitLinearError` into a one-line ``error:`` and exit status.
"""

from __future__ import annotations

import os
import sys

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from lit_linear.checkpointing import BestCheckpoint, LastCheckpoint, find_run_checkpoint
from lit_linear.data import CIFARDataModule
from lit_linear.errors import ConfigError, LitLinearError
from lit_linear.module import LinearClassifierModule, check_fit_settings
from lit_linear.predictions import PredictionWriter


class LinearCLI(LightningCLI):
    """LightningCLI for :class:`LinearClassifierModule` on :class:`CIFARDataModule`."""

    def __init__(self, args=None, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(LinearClassifierModule, CIFARDataModule, args=args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(BestCheckpoint, "best_checkpoint")
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        for attribute in ("num_classes", "class_names", "feature_dim"):
            parser.link_arguments(f"data.{attribute}", f"model.{attribute}", apply_on="instantiate")
        # The training stream has no epochs: validation is counted in steps.
        parser.set_defaults(
            {
                "trainer.val_check_interval": 500,
                "trainer.check_val_every_n_epoch": None,
                "trainer.num_sanity_val_steps": 0,
            }
        )

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ConfigError as e:
            self.parser.error(str(e))

    def instantiate_trainer(self, **kwargs):
        config = self._get(self.config_init, "trainer")
        if config.get("logger") in (None, True):
            root = config.get("default_root_dir") or os.getcwd()
            kwargs["logger"] = TensorBoardLogger(save_dir=root, default_hp_metric=False)
        return super().instantiate_trainer(**kwargs)

    def _prepare_checkpoint(self) -> None:
        """Safe loading, and ``best``/``last`` found among the runs under the root folder."""
        config = self.config_init[self.subcommand]
        if config.get("weights_only") is None:
            config["weights_only"] = True
        ckpt = config.get("ckpt_path")
        if ckpt in ("best", "last"):
            root = self.trainer.default_root_dir
            found = find_run_checkpoint(root, ckpt)
            if found is None:
                raise ConfigError(
                    f"--ckpt_path {ckpt}: no {ckpt}.ckpt in any run under {os.path.abspath(root)}; fit first with the "
                    "same --trainer.default_root_dir, or pass the path of a .ckpt file"
                )
            config["ckpt_path"] = found

    def before_fit(self) -> None:
        m = self.datamodule.hparams.steps_per_batch
        check_fit_settings(self.trainer.max_steps, self.trainer.val_check_interval, m)
        for callback in self.trainer.callbacks:
            if isinstance(callback, LastCheckpoint):
                callback.check_steps_per_batch(m)
        self._prepare_checkpoint()

    def before_validate(self) -> None:
        self._prepare_checkpoint()

    def before_test(self) -> None:
        self._prepare_checkpoint()

    def before_predict(self) -> None:
        self._prepare_checkpoint()


def main(args: list[str] | None = None) -> None:
    """Entry point of ``lit-linear`` and ``train.py``."""
    try:
        cli = LinearCLI(args=args)
    except LitLinearError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ConfigError) else 1)
    if any(getattr(callback, "interrupted", False) for callback in cli.trainer.callbacks):
        sys.exit(130)  # stopped by Ctrl-C (gracefully): the shell's convention for SIGINT
