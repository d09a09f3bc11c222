"""SweepState: the sweep while it trains, and what it has decided.

One unit holds what describes a sweep between two steps:

- its configs, ``configs[k] = (lr, reg)``;
- the weights of the configs still training, ``W (D, K_held, C)``, and which config each column
  block is, ``columns (K_held,)`` (successive halving removes the columns of stopped configs);
- per live config, the training loss summed since the last validation (``loss_sum``, over
  ``loss_steps`` steps) and the accuracies being measured (``train_acc``, ``val_acc``);
- the results of the last validation (``results``), the configs halving stopped with their last
  results (``stopped``), a halving due when a resumed fit starts (``pending_halving``), and the best
  config (``best_index``).

The module hands it what Lightning measures and applies what it decides; ConfigShards moves its
columns between processes; the checkpoint hooks save and restore it; SweepTensorBoard reads it.
Its tensors keep the names earlier versions saved them under (``W``, ``columns``, ``loss_sum``, ...),
at the top of the module's state dict, so that a checkpoint of any version loads.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lit_linear.errors import LitLinearError
from lit_linear.features.classifier import LinearClassifier
from lit_linear.maths.grid import grid_scores
from lit_linear.maths.optim import GridSGD
from lit_linear.sweep.metrics import GridAccuracy
from lit_linear.sweep.results import ConfigResult, SweepResult


class SweepState(nn.Module):
    """The sweep's configs, the weights of those still training, their statistics and the sweep's decisions.

    Args:
        configs: ``(lr, reg)`` of each config.
        loss: ``svm`` or ``softmax`` (for the results).
        w0: ``(D, C)``, every config's initial weights.
        halving_factor: successive halving keeps the best ``ceil(n / halving_factor)`` at each
            validation but the last; None: no halving.
    """

    def __init__(
        self, configs: Sequence[tuple[float, float]], loss: str, w0: Tensor, halving_factor: float | None
    ) -> None:
        super().__init__()
        self.configs = list(configs)
        self.loss, self.halving_factor = loss, halving_factor
        K = len(self.configs)
        # requires_grad only because DDP refuses a module without a trainable parameter.
        self.W = nn.Parameter(w0.unsqueeze(1).repeat(1, K, 1))  # (D, K, C)
        self.register_buffer("best_index", torch.tensor(-1))  # best config by val accuracy; -1: none yet
        self.register_buffer("columns", torch.arange(K))  # (K_held,) the config of each column of W
        self.register_buffer("loss_sum", torch.zeros(K))  # (K_held,) training loss summed since the last validation
        self.register_buffer("loss_steps", torch.tensor(0))
        self.train_acc, self.val_acc = GridAccuracy(K), GridAccuracy(K)
        self.results: SweepResult | None = None
        self.stopped: dict[int, ConfigResult] = {}  # configs that left W: their last results
        self.pending_halving: dict[int, ConfigResult] | None = None  # the last validation's results, not yet halved
        self.best_weights: Tensor | None = None  # W_best of the last validation, when another process trains it

    @property
    def num_configs(self) -> int:
        return len(self.configs)

    # --- the configs W holds ----------------------------------------------------------------------
    def hold(
        self,
        columns: Tensor,
        W: Tensor,
        loss_sum: Tensor,
        *,
        optimizer: GridSGD | None = None,
        active: Tensor | None = None,
        sync: bool = True,
    ) -> None:
        """Make ``columns (K',)`` the configs W holds: ``W (D, K', C)``, their loss sums ``(K',)`` and, given
        ``optimizer``, its state for them (``active (K',)``: 1 training, 0 frozen as diverged).

        The one place where the configs W holds change: halving, the processes' shares (which
        :meth:`ConfigShards.hold <lit_linear.sweep.shards.ConfigShards.hold>` decides) and resume all
        come here. ``sync``: the accuracies are summed across processes (not when each measures its own configs).
        """
        self.columns = columns
        self.W = nn.Parameter(W.contiguous())
        self.loss_sum = loss_sum
        self.train_acc = GridAccuracy(columns.numel(), sync_on_compute=sync).to(W.device)
        self.val_acc = GridAccuracy(columns.numel(), sync_on_compute=sync).to(W.device)
        if optimizer is not None:
            optimizer.hold(self.W, *self.axes(), active)

    def axes(self, columns: Tensor | None = None) -> tuple[list[float], list[float]]:
        """The learning rates and L2 strengths of the configs ``columns`` (default: the live ones), in their order."""
        ks = (self.columns if columns is None else columns).tolist()
        return [self.configs[k][0] for k in ks], [self.configs[k][1] for k in ks]

    def weights_of(self, k: int) -> Tensor | None:
        """``W_k (D, C)`` of config ``k``, or None once it has left W (stopped by halving). While a fit is
        split by configs, a config another process trains is None, but for the best one: its weights at
        the last validation."""
        columns = self.columns.tolist()
        if k in columns:
            return self.W[:, columns.index(k), :]
        return self.best_weights if k == int(self.best_index) else None

    def training_configs(self) -> list[int]:
        """The configs still training: not stopped by halving, nor found diverged at the last validation."""
        diverged = {k for k, r in enumerate(self.results.configs) if r.status == "diverged"} if self.results else set()
        return [k for k in range(self.num_configs) if k not in self.stopped and k not in diverged]

    # --- a validation --------------------------------------------------------------------------------
    def measure(self, split: str, X: Tensor, labels: Tensor) -> None:
        """Count the rows each live config labels right: features ``X (n, D)`` and ``labels (n,)`` of ``split``
        (``train`` or ``val``). Under mixed precision X is narrower than W, which is rounded as in training."""
        D, K, C = self.W.shape
        W = self.W.view(D, K * C)
        scores = X @ W if X.dtype == W.dtype else grid_scores(W, X)  # (n, K*C); K may be 0 on a rank
        accuracy = self.train_acc if split == "train" else self.val_acc
        accuracy.update(scores.view(X.shape[0], K, C).argmax(dim=2), labels)

    def measured(self, frozen: Tensor | None, restart_losses: bool) -> tuple[Tensor, Tensor]:
        """This process's live configs and their statistics: ``(columns (K_held,), (K_held, 4))``, the columns
        train accuracy, val accuracy, mean train loss (NaN: no step since the last validation) and diverged.

        ``frozen (K_held,)``: the configs GridSGD froze as diverged (None: not known). ``restart_losses``:
        start the next loss mean (a validation on the interval)."""
        # torchmetrics squeezes a one-element result, hence the view.
        train_acc, val_acc = self.train_acc.compute().view(-1), self.val_acc.compute().view(-1)
        self.reset_measures()
        diverged = ~torch.isfinite(self.W).all(dim=2).all(dim=0)  # (K_held,)
        if frozen is not None:
            diverged |= frozen.to(diverged.device)
        train_loss = (
            self.loss_sum / self.loss_steps if self.loss_steps > 0 else torch.full_like(self.loss_sum, math.nan)
        )
        if restart_losses:
            self.loss_sum.zero_()
            self.loss_steps.zero_()
        return self.columns, torch.stack([train_acc, val_acc, train_loss.double(), diverged.double()], dim=1)

    def reset_measures(self) -> None:
        self.train_acc.reset()
        self.val_acc.reset()

    def record(self, columns: Tensor, stats: Tensor) -> dict[int, ConfigResult]:
        """Every live config's results from the whole sweep's statistics (``columns (K_held,)``, ``stats (K_held, 4)``
        in config order, as :meth:`measured` gives them, gathered); chooses the best config."""
        train_acc, val_acc, train_loss, diverged = stats.unbind(dim=1)
        losses = [None if math.isnan(tl) else tl for tl in train_loss.tolist()]  # None: not measured
        diverged = diverged.bool()
        latest = {
            k: ConfigResult(*self.configs[k], float(ta), float(va), tl, "diverged" if bad else "ok")
            for k, ta, va, tl, bad in zip(
                columns.tolist(), train_acc.tolist(), val_acc.tolist(), losses, diverged.tolist()
            )
        }
        usable = val_acc.masked_fill(diverged, -1.0)
        self.best_index.fill_(int(columns[int(usable.argmax())]) if not bool(diverged.all()) else -1)
        self.pending_halving = None
        return latest

    def conclude(self, step: int, latest: dict[int, ConfigResult], *, search: bool = False) -> SweepResult:
        """The sweep's results at ``step``: the ``latest`` of the configs W holds, the last of those stopped
        (``search``: configs drawn from a range, which the results' tables list best first)."""
        best = int(self.best_index)
        configs = tuple(self.stopped.get(k) or latest[k] for k in range(self.num_configs))
        self.results = SweepResult(self.loss, step, configs, best if best >= 0 else None, search=search)
        return self.results

    def halving(self, latest: dict[int, ConfigResult], step: int, max_steps: int) -> set[int] | None:
        """After a validation on the interval at ``step``: the configs to keep (None: none stopped). The last
        validation of a fit does not halve; a fit resumed from it with more steps does (:meth:`resumed_halving`)."""
        if self.halving_factor is None:
            return None
        if step < max_steps:
            return self.survivors(latest, step)
        self.pending_halving = dict(latest)
        return None

    def resumed_halving(self, step: int, max_steps: int) -> set[int] | None:
        """When a fit starts: the halving that the last validation of an earlier, shorter fit skipped is due now,
        so that the sweep goes on as one longer fit would have (None: nothing to stop)."""
        pending, self.pending_halving = self.pending_halving, None
        return self.survivors(pending, step) if pending is not None and step < max_steps else None

    def survivors(self, latest: dict[int, ConfigResult], step: int) -> set[int] | None:
        """Successive halving at ``step``: the best ``ceil(n / halving_factor)`` of the n configs of ``latest`` still
        training (val accuracy, then lower train loss). The others, and any that diverged, are recorded in
        :attr:`stopped` with their results. None: nothing to stop."""
        training = [k for k, r in latest.items() if r.status == "ok"]

        def loss(k: int) -> float:  # None (no step since the last validation) ranks last among equal accuracies
            return math.inf if latest[k].train_loss is None else latest[k].train_loss

        ranked = sorted(training, key=lambda k: (-latest[k].val_acc, loss(k), k))
        keep = set(ranked[: math.ceil(len(training) / self.halving_factor)])
        if not keep or len(keep) == len(latest):  # nothing left to choose from, or nothing to stop
            return None
        for k, result in latest.items():
            if k not in keep:
                ok = result.status == "ok"
                self.stopped[k] = dataclasses.replace(result, status="stopped", stopped_at=step) if ok else result
        return keep

    def best(self) -> int:
        """Index of the best config at the last validation; explains why there is none."""
        k = int(self.best_index)
        if k < 0:
            raise LitLinearError(
                "this model has no validated config: load a fitted checkpoint (--ckpt_path best, last or a file), "
                "or every config diverged"
            )
        return k

    def classifier(self, k: int, pixel_mean: Tensor, class_names: Sequence[str], **inputs: Any) -> LinearClassifier:
        """Config ``k`` as a standalone classifier, with its results of the last validation when it was the best;
        ``pixel_mean`` and ``inputs`` (``feature_scale``, ``extractor``): how it reads its inputs
        (:class:`LinearClassifier`)."""
        lr, reg = self.configs[k]
        info: dict[str, Any] = {"loss": self.loss, "lr": lr, "reg": reg}
        if self.results is not None and self.results.best_index == k:
            info.update(
                train_acc=self.results.best.train_acc, val_acc=self.results.best.val_acc, step=self.results.step
            )
        return LinearClassifier(self.weights_of(k), pixel_mean, class_names, info, **inputs)

    def write(
        self,
        folder: str,
        pixel_mean: Tensor,
        class_names: Sequence[str],
        *,
        scale: Tensor | None = None,
        extractor: nn.Module | None = None,
    ) -> None:
        """``sweep.json`` and, unless every config diverged, the best config's ``best_model.pt`` into ``folder``;
        ``pixel_mean``, ``scale`` and ``extractor``: how the inputs become features (:class:`LinearClassifier`)."""
        self.results.write_json(os.path.join(folder, "sweep.json"))
        if self.results.best is not None:
            inputs = {"feature_scale": scale, "extractor": extractor}
            best = self.classifier(self.best(), pixel_mean, class_names, **inputs)
            best.save(os.path.join(folder, "best_model.pt"))

    # --- checkpoints ---------------------------------------------------------------------------------
    def save_to(self, checkpoint: dict[str, Any]) -> None:
        """The sweep's decisions, beside its tensors (which the state dict holds)."""
        checkpoint["stopped_configs"] = _saved_results(self.stopped)
        if self.pending_halving is not None:
            checkpoint["pending_halving"] = _saved_results(self.pending_halving)

    def load_from(self, checkpoint: dict[str, Any]) -> None:
        """Shape W and the per-config buffers as the checkpoint's (a halved sweep has fewer columns) before
        Lightning loads their values, and restore the sweep's decisions."""
        columns = checkpoint.get("state_dict", {}).get("columns")
        if columns is not None and not torch.equal(columns.cpu(), self.columns.cpu()):
            D, _, C = self.W.shape
            n = columns.numel()
            self.hold(
                columns.to(self.columns.device).clone(), self.W.detach().new_empty(D, n, C), self.loss_sum.new_zeros(n)
            )
        self.stopped = _results_by_config(checkpoint.get("stopped_configs", []))
        pending = checkpoint.get("pending_halving")
        self.pending_halving = _results_by_config(pending) if pending is not None else None


def _saved_results(results: dict[int, ConfigResult]) -> list[dict[str, Any]]:
    """``{config: ConfigResult}`` in its checkpoint form, ``[{"config": k, **fields}, ...]`` by config."""
    return [{"config": k, **dataclasses.asdict(r)} for k, r in sorted(results.items())]


def _results_by_config(saved: list[dict[str, Any]]) -> dict[int, ConfigResult]:
    """``{config: ConfigResult}`` from their checkpoint form, ``[{"config": k, **fields}, ...]``."""
    results = {}
    for entry in saved:
        fields = dict(entry)
        k = fields.pop("config")
        results[k] = ConfigResult(**fields)
    return results
