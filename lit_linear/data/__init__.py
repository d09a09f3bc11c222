"""Data: CIFAR files, the minibatch streams, and the data modules that put a dataset on the training device."""

from lit_linear.data.cifar_module import CIFARDataModule

__all__ = ["CIFARDataModule"]
