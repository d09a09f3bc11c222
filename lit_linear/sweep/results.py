"""A sweep's results: each config's last validation, the table printed at the end, and ``sweep.json``."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

from lit_linear.runs.atomic import atomic_write_text


@dataclass(frozen=True)
class ConfigResult:
    """One config's latest validation: accuracies are fractions in [0, 1]."""

    lr: float
    reg: float
    train_acc: float
    val_acc: float
    train_loss: float | None  # mean since the previous validation; None without a training step since (validate)
    status: str  # "ok", "diverged", or "stopped" (by successive halving)
    stopped_at: int | None = None  # the step at which halving stopped it

    def describe(self) -> str:
        """The status as the results table shows it, e.g. ``stopped at 500``."""
        return f"stopped at {self.stopped_at}" if self.status == "stopped" else self.status

    def loss_text(self, spec: str) -> str:
        """The train loss formatted with ``spec`` (e.g. ``9.4f``), or ``-`` where none was measured."""
        return "-" if self.train_loss is None else format(self.train_loss, spec)


@dataclass(frozen=True)
class SweepResult:
    """All configs of a sweep after a validation, and which one is best (None if all diverged).

    ``search``: the configs were drawn from a range, so their order says nothing: the tables list
    them best first (:meth:`order`). A grid's tables keep its lr x reg order. ``sweep.json`` keeps
    the configs' own order either way.
    """

    loss: str
    step: int
    configs: tuple[ConfigResult, ...]
    best_index: int | None
    search: bool = False

    @property
    def best(self) -> ConfigResult | None:
        return None if self.best_index is None else self.configs[self.best_index]

    def metrics(self) -> dict[str, float]:
        """What the module logs at a validation: ``step`` (the logger plots them at their SGD step) and the best
        config's ``val/acc``, ``train/acc`` and ``train/loss`` (those it has)."""
        top = self.best
        logged = {"step": float(self.step), "val/acc": top.val_acc if top else 0.0}
        if top is not None:
            logged["train/acc"] = top.train_acc
            if top.train_loss is not None:
                logged["train/loss"] = top.train_loss
        return logged

    def to_dict(self) -> dict:
        best = self.best
        return {
            "loss": self.loss,
            "step": self.step,
            "best": None
            if best is None
            else {"lr": best.lr, "reg": best.reg, "train_acc": best.train_acc, "val_acc": best.val_acc},
            "configs": [asdict(c) for c in self.configs],
        }

    def write_json(self, path: str | os.PathLike) -> None:
        """Write ``sweep.json`` atomically (non-finite losses of diverged configs become null)."""

        def finite(x):
            return x if not isinstance(x, float) or math.isfinite(x) else None

        data = self.to_dict()
        for c in data["configs"]:
            c.update({k: finite(v) for k, v in c.items()})
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")

    def order(self) -> list[int]:
        """The configs in the tables' order: a grid's own; a search's best first.

        A search ranks its configs as successive halving did: those that trained further first
        (a config stopped at a halving lost to every config kept there), then by val accuracy,
        then by lower train loss (none measured: last); diverged configs come last. The best
        config is therefore the first row.
        """
        if not self.search:
            return list(range(len(self.configs)))

        def rank(k: int) -> tuple:
            c = self.configs[k]
            reached = c.stopped_at if c.status == "stopped" else self.step
            loss = math.inf if c.train_loss is None or math.isnan(c.train_loss) else c.train_loss
            return (c.status == "diverged", -reached, -c.val_acc, loss, k)

        return sorted(range(len(self.configs)), key=rank)

    def table(self) -> str:
        """The results as aligned text, one config per line, the best one marked, as the course prints.

        A search's table is best first and shows ``status`` and ``stopped at`` apart; a grid's
        reads ``stopped at 500`` in its status column."""
        lines = [f"{self.loss} sweep: {len(self.configs)} configs after {self.step} steps"]
        header = f"  {'lr':>10}  {'reg':>10}  {'train acc':>9}  {'val acc':>7}  {'loss':>9}  status"
        lines.append(header + ("    stopped at  (best first)" if self.search else ""))
        for k in self.order():
            c = self.configs[k]
            status = f"{c.status:<8}  {_or_dash(c.stopped_at):>10}" if self.search else c.describe()
            mark = "  <- best" if k == self.best_index else ""
            lines.append(
                f"  {c.lr:10.3e}  {c.reg:10.3e}  {100 * c.train_acc:8.2f}%  {100 * c.val_acc:6.2f}%"
                f"  {c.loss_text('9.4f'):>9}  {status}{mark}"
            )
        best = self.best
        if best is None:
            lines.append("no usable config: every config diverged")
        else:
            lines.append(f"best validation accuracy: {100 * best.val_acc:.2f}% (lr {best.lr:.3e}, reg {best.reg:.3e})")
        return "\n".join(lines)

    def markdown(self) -> str:
        """The results as a Markdown table (for TensorBoard's text dashboard), in :meth:`table`'s order and columns."""
        header = "| lr | reg | train acc | val acc | train loss | status |" + (" stopped at |" if self.search else "")
        rows = [header, "|---" * header.count(" |") + "|"]
        for k in self.order():
            c = self.configs[k]
            star = " **(best)**" if k == self.best_index else ""
            status = f"{c.status}{star} | {_or_dash(c.stopped_at)}" if self.search else f"{c.describe()}{star}"
            rows.append(
                f"| {c.lr:.3e} | {c.reg:.3e} | {100 * c.train_acc:.2f}% | {100 * c.val_acc:.2f}% "
                f"| {c.loss_text('.4f')} | {status} |"
            )
        return "\n".join(rows)


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)
