"""lit_linear: linear classifiers (SVM, softmax) on CIFAR, with hand-written gradients, swept at once."""

from lit_linear.callbacks import SweepTensorBoard
from lit_linear.checkpointing import BestCheckpoint, LastCheckpoint
from lit_linear.classifier import LinearClassifier, preprocess
from lit_linear.data import CIFARDataModule
from lit_linear.errors import ConfigError, DataError, LitLinearError, SweepDivergedError
from lit_linear.gradcheck import grad_check_sparse
from lit_linear.losses import softmax_loss_vectorized, svm_loss_vectorized
from lit_linear.module import LinearClassifierModule
from lit_linear.naive import softmax_loss_naive, svm_loss_naive
from lit_linear.optim import GridSGD
from lit_linear.predictions import PredictionWriter

__all__ = [
    "BestCheckpoint",
    "CIFARDataModule",
    "ConfigError",
    "DataError",
    "GridSGD",
    "LastCheckpoint",
    "LinearClassifier",
    "LinearClassifierModule",
    "LitLinearError",
    "PredictionWriter",
    "SweepDivergedError",
    "SweepTensorBoard",
    "grad_check_sparse",
    "preprocess",
    "softmax_loss_naive",
    "softmax_loss_vectorized",
    "svm_loss_naive",
    "svm_loss_vectorized",
]
