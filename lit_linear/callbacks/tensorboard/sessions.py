"""HParams sessions of a sweep: one per config, written once that config's end is known.

TensorBoard keeps the first session-start record of a run and never a later one, so a session
cannot change its hyperparameters after it is written. Each config's session is therefore written
when the config ends: at the halving that stops it, or when the fit ends (or fails). It carries:

- ``lr``, ``reg`` and ``status`` (``ok``, ``stopped`` or ``diverged``, as in ``sweep.json``), the
  three hyperparameters the dashboard lists, and the sweep's other settings (listed nowhere, but
  part of the session for anyone reading it back: loss, batch_size, max_steps, lr_decay, ...);
- the metric ``steps``, the step the config trained to (a scalar logged with the session), besides
  its curves' last values;
- TensorBoard's own status: Failure for a diverged config or a failed fit, Success otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from torch.utils.tensorboard import SummaryWriter

from lit_linear.callbacks.tensorboard.hparams import (
    STATUS_FAILURE,
    STATUS_SUCCESS,
    discrete_hparam,
    experiment_summary,
    interval_hparam,
    session_end_summary,
    session_start_summary,
)
from lit_linear.sweep.configs import config_name
from lit_linear.sweep.results import ConfigResult

# Tag: display name, in the dashboard's order. The first colours the parallel-coordinates view.
METRICS = {
    "acc/val": "val accuracy",
    "steps": "steps trained",
    "loss/train": "train loss",
    "acc/train": "train accuracy",
}
STATUSES = ("ok", "stopped", "diverged")


def trial_names(configs: Sequence[tuple[float, float]]) -> list[str]:
    """Each config's Trial ID: ``lr, reg`` to 3 significant digits (the dashboard cuts longer IDs short),
    or its run folder's name where two configs of the sweep would read alike.

    Sessions with one Trial ID form one row: configs of the same (lr, reg) in several fits under one
    log folder (a resumed fit) share it, configs that differ never do.
    """
    short = [f"{lr:.3g}, {reg:.3g}" for lr, reg in configs]
    return [name if short.count(name) == 1 else config_name(lr, reg) for name, (lr, reg) in zip(short, configs)]


class SweepSessions:
    """The HParams sessions of one fit: the experiment written at once, each config's session at its end.

    Args:
        writers: one SummaryWriter per config, in config order.
        configs: ``(lr, reg)`` of each config.
        shared: the settings every config shares (name: number or string).
        halving: successive halving runs, so that ``status`` will differ between configs.
    """

    def __init__(
        self,
        writers: Sequence[SummaryWriter],
        configs: Sequence[tuple[float, float]],
        shared: Mapping[str, float | str],
        halving: bool,
    ) -> None:
        self.writers, self.configs, self.shared = list(writers), list(configs), dict(shared)
        self.names = trial_names(self.configs)
        self.start_time = time.time()
        self.open = set(range(len(self.configs)))  # configs whose session is not written yet
        lrs, regs = [lr for lr, _ in self.configs], [reg for _, reg in self.configs]
        experiment = experiment_summary(
            [
                interval_hparam("lr", min(lrs), max(lrs), differs=len(set(lrs)) > 1),
                interval_hparam("reg", min(regs), max(regs), differs=len(set(regs)) > 1),
                discrete_hparam("status", STATUSES, differs=halving),
            ],
            METRICS,
        )
        for writer in self.writers:
            writer.file_writer.add_summary(experiment)
            writer.flush()

    def end(self, k: int, result: ConfigResult | None, step: int | None, failed: bool = False) -> None:
        """Write config ``k``'s session, unless written already: its ``result`` (None: never measured; ``ok``)
        at ``step``, the step it trained to (None: not known). ``failed``: the fit failed."""
        if k not in self.open:
            return
        self.open.discard(k)
        writer, (lr, reg) = self.writers[k], self.configs[k]
        status = "ok" if result is None else result.status
        if step is not None:
            writer.add_scalar("steps", float(step), step)
        hparams = {"lr": lr, "reg": reg, "status": status, **self.shared}
        writer.file_writer.add_summary(session_start_summary(hparams, self.names[k], self.start_time), step)
        ended = STATUS_FAILURE if failed or status == "diverged" else STATUS_SUCCESS
        writer.file_writer.add_summary(session_end_summary(ended), step)
        writer.flush()

    def end_all(self, results: Sequence[ConfigResult] | None, step: int | None, failed: bool = False) -> None:
        """Write the session of every config still open, from the fit's last ``results`` at ``step``."""
        for k in sorted(self.open):
            result = None if results is None else results[k]
            stopped_at = result.stopped_at if result is not None and result.status == "stopped" else None
            self.end(k, result, stopped_at or step, failed)
