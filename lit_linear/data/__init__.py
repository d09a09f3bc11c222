"""Data: CIFAR files, the minibatch streams, and the data modules that put a dataset on the training device."""

from lit_linear.data.cifar_module import CIFARDataModule
from lit_linear.data.features_module import FeaturesDataModule

__all__ = ["CIFARDataModule", "FeaturesDataModule"]
