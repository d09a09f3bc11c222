"""The ``lit-linear`` / ``python train.py`` command line: LightningCLI over the module and the data.

    python train.py fit --config configs/softmax_sweep.yaml
    python train.py fit --config configs/svm.yaml --model.lr "[1e-3, 5e-3]" --model.reg "[1e-3, 1e-2]"
    python train.py validate --config configs/softmax_sweep.yaml --ckpt_path best
    python train.py test --config configs/softmax_sweep.yaml --ckpt_path best
    python train.py predict --config configs/softmax_sweep.yaml --ckpt_path best

Besides LightningCLI's own behaviour it: links the data's class count, class names and feature
size into the model; adds the ``best``/``last`` checkpoints (unless checkpointing is off), the
predictions writer and :class:`~lit_linear.callbacks.interrupts.GracefulStop`; offers
``--float32_matmul_precision``; offers no ``--optimizer`` or ``--lr_scheduler`` (the update is
GridSGD's, set by ``model.lr``, ``model.reg`` and ``model.lr_decay``); refuses, before any data is
read, the Trainer settings a sweep cannot honour (:mod:`lit_linear.training.trainer_flags`); loads checkpoints
with ``weights_only=True``; resolves ``--ckpt_path best|last`` to the newest such checkpoint under
``--trainer.default_root_dir`` of a run trained with this run's settings; refuses a ``--ckpt_path``
file that is no usable checkpoint (:mod:`lit_linear.runs.checkpoint_file`), and a fit from a
checkpoint given model options other than the checkpoint's; and ends the process as
:mod:`lit_linear.runs.faults` says: one ``error:`` line and a status for a user's or the environment's
fault, 130 or 143 after a stop by Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Literal

import torch
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_linear.callbacks.checkpoints import BestCheckpoint, LastCheckpoint
from lit_linear.callbacks.interrupts import NAMES, GracefulStop
from lit_linear.callbacks.predictions import PredictionWriter
from lit_linear.cli import console
from lit_linear.data.splits_module import SplitsDataModule
from lit_linear.errors import ConfigError, DataError
from lit_linear.runs import faults
from lit_linear.runs.atomic import atomic_write_text
from lit_linear.runs.checkpoint_file import RUN_OPTIONS, check_checkpoint, check_resumed_options, names_a_file
from lit_linear.runs.find import find_matching_checkpoint
from lit_linear.sweep.shards import resolve_split
from lit_linear.training.module import LinearClassifierModule
from lit_linear.training.step import check_cuda_graph
from lit_linear.training.trainer_flags import check_fit_settings

MatmulPrecision = Literal["highest", "high", "medium"]


class AtomicSaveConfig(SaveConfigCallback):
    """LightningCLI's ``config.yaml`` in the run folder, written atomically (:mod:`lit_linear.runs.atomic`)."""

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if not self.already_saved:
            self._log_dir = trainer.log_dir  # a broadcast under DDP: every process asks
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        text = self.parser.dump(self.config, skip_none=False)
        atomic_write_text(os.path.join(self._log_dir, self.config_filename), text)


class LinearCLI(LightningCLI):
    """LightningCLI for :class:`LinearClassifierModule` on a data module: ``CIFARDataModule`` unless ``--data``
    names another (``--data lit_linear.FeaturesDataModule``)."""

    def __init__(self, args=None, **kwargs) -> None:
        kwargs.setdefault("save_config_callback", AtomicSaveConfig)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True, "save_to_log_dir": False})
        # GridSGD is the update, configured by the model's options: an --optimizer could not apply.
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("subclass_mode_data", True)
        super().__init__(LinearClassifierModule, SplitsDataModule, args=args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Arguments, not Lightning's always-added callbacks: instantiate_trainer adds them unless
        # checkpointing is off (Lightning refuses a ModelCheckpoint under enable_checkpointing false).
        parser.add_class_arguments(BestCheckpoint, "best_checkpoint", fail_untyped=False, sub_configs=True)
        parser.add_class_arguments(LastCheckpoint, "last_checkpoint", fail_untyped=False, sub_configs=True)
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_argument(
            "--float32_matmul_precision",
            type=MatmulPrecision,
            default="highest",
            help="torch.set_float32_matmul_precision for the float32 products: highest (float32, torch's default), "
            "high (TF32 on CUDA GPUs with Tensor Cores) or medium (bfloat16 where the device supports it)",
        )
        # CIFAR unless --data (or a config's data.class_path) names another data module.
        parser.set_defaults({"data": {"class_path": "lit_linear.CIFARDataModule"}})
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

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        torch.set_float32_matmul_precision(config["float32_matmul_precision"])

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        # Refusals of a setting, Lightning's and jsonargparse's included (a missing optional package too).
        # A data file found bad when the data module reads it (features) is one line too, before anything runs.
        except (ConfigError, DataError, MisconfigurationException, ValueError, TypeError, ImportError) as e:
            self.parser.error(" ".join(str(e).split()))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, with :class:`GracefulStop` and, unless checkpointing is off, ``best.ckpt`` and ``last.ckpt``."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer = config["trainer"]
        callbacks = trainer.get("callbacks") or []
        callbacks = [*(callbacks if isinstance(callbacks, list) else [callbacks]), GracefulStop()]
        if trainer.get("enable_checkpointing") is not False and not trainer.get("barebones"):
            callbacks += [config["best_checkpoint"], config["last_checkpoint"]]
        return super().instantiate_trainer(**{**kwargs, "callbacks": callbacks + kwargs.get("callbacks", [])})

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
        check_cuda_graph(self.model.hparams.cuda_graph, self.trainer.strategy.root_device, self.trainer.world_size)
        self._prepare_checkpoint()
        console.hint_tensor_cores(self.trainer)

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

    # --- --ckpt_path FILE, before LightningCLI reads it ---------------------------------------------
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self._args = args  # parsed again without defaults by _given_model_options
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path FILE``: the file checked (:func:`check_checkpoint`) before LightningCLI puts the model
        options it was trained with in place of this run's; a fit refuses given model options other than those."""
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not names_a_file(ckpt):  # best and last are found and checked by _prepare_checkpoint
            return
        saved = check_checkpoint(ckpt).get("hyper_parameters") or {}
        given = self._given_model_options(subcommand)
        if subcommand == "fit":  # validate, test and predict measure the checkpoint's sweep, whatever was given
            check_resumed_options(str(ckpt), saved, given)
        super()._parse_ckpt_path()
        for key in RUN_OPTIONS:  # how this run runs the sweep is this run's to say
            if key in given:
                self.config[f"{subcommand}.model.{key}"] = given[key]

    def _given_model_options(self, subcommand: str) -> dict[str, Any]:
        """The ``--model.*`` options that the command line and its configs give, defaults left out."""
        args = self._args
        if isinstance(args, (dict, Namespace)):
            given = self.parser.parse_object(args, defaults=False)
        else:
            given = self.parser.parse_args(args, defaults=False)
        model = given.get(f"{subcommand}.model")
        options = model.as_dict() if isinstance(model, Namespace) else {}
        return {key: value for key, value in options.items() if not key.startswith("__")}


def main(args: list[str] | None = None) -> None:
    """Entry point of ``lit-linear`` and ``train.py``: runs the CLI; :mod:`lit_linear.runs.faults` says how it ends."""
    console.quiet()
    faults.mark_launcher()
    subcommand = next((a for a in (sys.argv[1:] if args is None else args) if not a.startswith("-")), None)
    try:
        cli = LinearCLI(args=args)
    except SIGTERMException:  # a SIGTERM Lightning caught before training started: nothing to save yet
        faults.exit_now(143, "SIGTERM: stopped before training started")
    except Exception as error:
        ending = faults.ending(error, subcommand)
        if ending is None:
            raise
        faults.exit_now(*ending)
    stop = next((c for c in cli.trainer.callbacks if isinstance(c, GracefulStop)), None)
    if stop is None or stop.exit_status is None:
        return
    if cli.trainer.is_global_zero:
        print(_stopped_line(cli.trainer, stop), flush=True)
    faults.leave_process_group()
    faults.wait_for_launcher()
    sys.exit(stop.exit_status)


def _stopped_line(trainer: Trainer, stop: GracefulStop) -> str:
    """What a stop by a signal left behind, and how to go on."""
    head = f"Interrupted by {NAMES[stop.stopped_by]} at step {stop.stopped_at}"
    if stop.stopped_by == signal.SIGUSR1:
        checkpoint = f"{trainer.default_root_dir}/hpc_ckpt_<n>.ckpt"
        return f"{head}; the job is requeued, and its next run resumes from {checkpoint} by itself"
    last = next((c for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint)), None)
    if last is None or not last.last_model_path:
        return (
            f"{head}; checkpointing is off, so this fit cannot be resumed "
            "(sweep.json and best_model.pt hold its last validation)"
        )
    return f"{head}; resume with --ckpt_path last ({last.last_model_path})"
