"""Callbacks: checkpoints, graceful stops, the progress bar, the learning-rate monitor, predictions, TensorBoard."""

from lit_linear.callbacks.checkpoints import BestCheckpoint, LastCheckpoint
from lit_linear.callbacks.predictions import PredictionWriter
from lit_linear.callbacks.tensorboard import SweepTensorBoard

__all__ = ["BestCheckpoint", "LastCheckpoint", "PredictionWriter", "SweepTensorBoard"]
