"""What the console shows besides Lightning's own lines: no line a user cannot act on.

Some of Lightning's messages concern its internals or the package's own wiring, and no setting of
the user's can act on them. They are silenced narrowly, each by its message and by the module
that emits it, so that the same words from anywhere else, and every warning about the user's own
settings, still print:

- ``LeafSpec`` deprecation (Lightning calls torch's deprecated API on every run);
- the prediction loop's search for a sampler's batch indices (PredictionWriter takes each row's
  index from the batch);
- torch's deprecation of the all_gather that Lightning's ``all_gather`` calls under DDP;
- "The dirpath has changed from ... won't be reloaded" (the checkpoint callbacks' bookkeeping, on
  every test or predict from a checkpoint and every resume into another run folder: each run
  writes its checkpoints into its own folder, and ``--ckpt_path best|last`` finds them there);
- the tip to install ``litlogger`` (an advertisement, printed on every command);
- "callbacks returned in configure_callbacks will override ..." (the module's own progress bar
  and learning-rate monitor, which take the place of Lightning's: see the module);
- the hint to call ``torch.set_float32_matmul_precision``, which the command line cannot; it is
  replaced by :func:`hint_tensor_cores`, which names the option that can.
"""

from __future__ import annotations

import logging
import warnings

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info

# (message regex, category, module regex) of warnings.
MODEL_CHECKPOINT = r"lightning\.pytorch\.callbacks\.model_checkpoint"
QUIET_WARNINGS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree"),
    (
        r"Couldn't infer the batch indices fetched from your dataloader",
        UserWarning,
        r"lightning\.pytorch\.loops\.prediction_loop",
    ),
    (
        r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
        FutureWarning,
        r"lightning\.fabric\.utilities\.distributed",
    ),
    (r"The dirpath has changed from ", UserWarning, r"lightning\.pytorch\.callbacks\.model_checkpoint"),
    # A user's ModelCheckpoint: the module's steps end with the update, so a save after it is the right state.
    (
        r"Using ModelCheckpoint with manual optimization",
        UserWarning,
        r"lightning\.pytorch\.callbacks\.model_checkpoint",
    ),
)

# (start of the message, module that logs it) of Lightning's info lines.
QUIET_INFO = (
    ("💡 Tip: For seamless cloud logging", "logger_connector"),
    ("The following callbacks returned in `LightningModule.configure_callbacks` will override", "callback_connector"),
    ("You are using a CUDA device", "cuda"),
)

# Lightning's info lines go through these loggers (lightning_utilities' rank_zero_info, set up by each package).
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _QuietInfo(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(start) and record.module == module for start, module in QUIET_INFO)


def quiet() -> None:
    """Silence the lines listed in the module's doc (idempotent)."""
    for message, category, module in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietInfo) for f in logger.filters):
            logger.addFilter(_QuietInfo())


def hint_tensor_cores(trainer: pl.Trainer) -> None:
    """On a CUDA GPU with Tensor Cores and full-precision float32 products, name the options that trade precision
    for speed."""
    device = trainer.strategy.root_device
    if (
        device.type != "cuda"
        or str(trainer.precision) != "32-true"
        or torch.get_float32_matmul_precision() != "highest"
    ):
        return
    if torch.cuda.get_device_capability(device)[0] >= 8:  # Ampere and later
        rank_zero_info(
            f"{torch.cuda.get_device_name(device)} has Tensor Cores: --float32_matmul_precision high runs the float32 "
            "products as TF32, --trainer.precision bf16-mixed in bfloat16 (faster, less precise; see the README)"
        )
