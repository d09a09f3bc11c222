"""TensorBoard: per-config curves, class templates and HParams sessions of a sweep."""

from lit_linear.callbacks.tensorboard.callback import SweepTensorBoard

__all__ = ["SweepTensorBoard"]
