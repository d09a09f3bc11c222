"""The ``lit-linear`` / ``python train.py`` command line: LightningCLI over the module and the data.

    python train.py fit --config configs/softmax_sweep.yaml
    python train.py fit --config configs/svm.yaml --model.lr "[1e-3, 5e-3]" --model.reg "[1e-3, 1e-2]"
    python train.py validate --config configs/softmax_sweep.yaml --ckpt_path best
    python train.py test --config configs/softmax_sweep.yaml --ckpt_path best
    python train.py predict --config configs/softmax_sweep.yaml --ckpt_path best

Besides LightningCLI's own behaviour it: links the data's class count, class names and feature
size into the model; always adds the ``best``/``last`` checkpoints and the predictions writer;
offers no ``--optimizer`` or ``--lr_scheduler`` (the update is GridSGD's, set by ``model.lr``,
``model.reg`` and ``model.lr_decay``); loads checkpoints with ``weights_only=True``; resolves
``--ckpt_path best|last`` to the newest such checkpoint under ``--trainer.default_root_dir`` of a
run trained with this run's settings; and turns :class:`~lit_linear.errors.LitLinearError` into a
one-line ``error:`` and exit status.
"""

from __future__ import annotations

import sys
import warnings

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lit_linear.checkpointing import BestCheckpoint, LastCheckpoint
from lit_linear.data import CIFARDataModule
from lit_linear.errors import ConfigError, LitLinearError
from lit_linear.module import LinearClassifierModule
from lit_linear.predictions import PredictionWriter
from lit_linear.runs import find_matching_checkpoint
from lit_linear.shards import resolve_split
from lit_linear.steps import check_fit_settings


class LinearCLI(LightningCLI):
    """LightningCLI for :class:`LinearClassifierModule` on :class:`CIFARDataModule`."""

    def __init__(self, args=None, **kwargs) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        # GridSGD is the update, configured by the model's options: an --optimizer could not apply.
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(LinearClassifierModule, CIFARDataModule, args=args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(BestCheckpoint, "best_checkpoint")
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        for attribute in ("num_classes", "class_names", "feature_dim"):
            parser.link_arguments(f"data.{attribute}", f"model.{attribute}", apply_on="instantiate")
        # The training stream has no epochs: validation is counted in SGD steps.
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
        except (ConfigError, MisconfigurationException) as e:  # Lightning's own refusals of trainer settings too
            self.parser.error(str(e))

    def _prepare_checkpoint(self) -> None:
        """Safe loading, and ``best``/``last`` found among the runs under the root folder."""
        config = self.config_init[self.subcommand]
        if config.get("weights_only") is None:
            config["weights_only"] = True
        ckpt = config.get("ckpt_path")
        if ckpt in ("best", "last"):
            config["ckpt_path"] = find_matching_checkpoint(
                self.trainer.default_root_dir, ckpt, self.model.hparams, self.datamodule.hparams
            )

    def before_fit(self) -> None:
        check_fit_settings(self.trainer)  # before any data is read
        resolve_split(self.model.hparams.split, self.model.num_configs, self.trainer.world_size)
        self.model.uses_cuda_graph(self.trainer.strategy.root_device, self.trainer.world_size)
        self._prepare_checkpoint()

    def before_validate(self) -> None:
        # Without a checkpoint Lightning would validate the initial, untrained weights.
        if self.config_init[self.subcommand].get("ckpt_path") is None:
            raise ConfigError(
                "validate re-measures a fitted sweep: pass --ckpt_path best, last or the path of a .ckpt file"
            )
        self._prepare_checkpoint()

    def before_test(self) -> None:
        self._prepare_checkpoint()

    def before_predict(self) -> None:
        self._prepare_checkpoint()


# Warnings from Lightning's internals that no setting of the user's can act on, matched by message
# and by the module that raises them: Lightning calls torch's deprecated LeafSpec on every run,
# and the prediction loop looks for a sampler's indices that PredictionWriter does not need (it
# takes each row's index from the batch). Warnings about the user's own settings still print.
QUIET = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree"),
    (r"Couldn't infer the batch indices fetched from your dataloader", UserWarning, r"lightning\.pytorch\.loops\.prediction_loop"),
)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``lit-linear`` and ``train.py``."""
    for message, category, module in QUIET:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    try:
        cli = LinearCLI(args=args)
    except LitLinearError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, ConfigError) else 1)
    if any(getattr(callback, "interrupted", False) for callback in cli.trainer.callbacks):
        sys.exit(130)  # stopped by Ctrl-C (gracefully): the shell's convention for SIGINT
