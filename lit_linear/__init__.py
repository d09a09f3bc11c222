"""lit_linear: linear classifiers (SVM, softmax) on CIFAR, with hand-written gradients, swept at once."""

from lit_linear.callbacks.checkpoints import BestCheckpoint, LastCheckpoint
from lit_linear.callbacks.predictions import PredictionWriter
from lit_linear.callbacks.tensorboard.callback import SweepTensorBoard
from lit_linear.data.cifar_module import CIFARDataModule
from lit_linear.data.features_module import FeaturesDataModule
from lit_linear.errors import ConfigError, DataError, LitLinearError, SweepDivergedError
from lit_linear.features.classifier import LinearClassifier
from lit_linear.features.preprocess import preprocess
from lit_linear.maths.gradcheck import grad_check_sparse
from lit_linear.maths.losses import l2svm_loss_vectorized, softmax_loss_vectorized, svm_loss_vectorized
from lit_linear.maths.naive import l2svm_loss_naive, softmax_loss_naive, svm_loss_naive
from lit_linear.maths.optim import GridSGD
from lit_linear.training.module import LinearClassifierModule

__all__ = [
    "BestCheckpoint",
    "CIFARDataModule",
    "ConfigError",
    "DataError",
    "FeaturesDataModule",
    "GridSGD",
    "LastCheckpoint",
    "LinearClassifier",
    "LinearClassifierModule",
    "LitLinearError",
    "PredictionWriter",
    "SweepDivergedError",
    "SweepTensorBoard",
    "grad_check_sparse",
    "l2svm_loss_naive",
    "l2svm_loss_vectorized",
    "preprocess",
    "softmax_loss_naive",
    "softmax_loss_vectorized",
    "svm_loss_naive",
    "svm_loss_vectorized",
]
