"""Test and predict score the best config only: the steps LinearClassifierModule takes from this mixin."""

from __future__ import annotations

import os

from torch import Tensor

from lit_linear.training.precision import own_dtypes


class BestConfigSteps:
    """``test_step`` and ``predict_step`` of :class:`~lit_linear.training.module.LinearClassifierModule`: the best
    config (by val accuracy at the last validation) scores each chunk of the test split."""

    def _best_scores(self, images: Tensor) -> Tensor:
        with own_dtypes(self.device):
            X = self._features(images)  # (n, D)
            return X @ self.sweep.weights_of(self.sweep.best()).to(X.dtype)  # (n, C)

    def test_step(self, batch, batch_idx: int) -> None:
        self.test_acc.update(self._best_scores(batch.images).argmax(dim=1), batch.labels)
        if not self.trainer.barebones:  # Lightning refuses self.log in barebones mode
            self.log("test/acc", self.test_acc)

    def on_test_end(self) -> None:
        log_dir = self.trainer.log_dir  # a collective under DDP: every rank asks
        if self.trainer.is_global_zero and log_dir is not None and self.trainer.loggers:
            print(f"test results logged to {os.path.abspath(log_dir)}", flush=True)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """``(row index (n,), predicted label (n,), true label (n,))`` of the best config."""
        return batch.index, self._best_scores(batch.images).argmax(dim=1), batch.labels
