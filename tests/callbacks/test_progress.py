"""The progress bar counts SGD steps: the user's max_steps as its total, a resumed fit from its step."""

from __future__ import annotations

import re

import pytest
from conftest import cli_args, run_cli, run_main

pytestmark = pytest.mark.slow


def bar_states(output: str) -> list[str]:
    """The training bar's counts as drawn, e.g. ``["0/80", "40/80", ...]`` (tqdm redraws with carriage returns)."""
    return re.findall(r"Training:[^|\r\n]*\|[^|\r\n]*\| (\d+/\d+|\d+/\?) ", output)


def test_the_bar_counts_sgd_steps_and_a_resumed_fit_counts_from_its_step(cifar10_dir, tmp_path, capfd):
    # 10 steps a Lightning batch: a bar in batches would read 4/4, then 4/4 again after the resume.
    bar = ("--trainer.enable_progress_bar", "true", "--last_checkpoint.every_n_train_steps", "20")
    first = run_cli("fit", *cli_args(cifar10_dir, tmp_path, *bar, steps=40))
    assert first.returncode == 0, first.stderr[-3000:]
    # A warning about the user's own settings still prints (the quiet console silences only Lightning's internals).
    assert "This fit runs 40 SGD steps, fewer than trainer.log_every_n_steps (50)" in first.stderr
    states = bar_states(first.stdout)
    assert states[-1] == "40/40" and "20/40" in states
    assert set(states) <= {f"{step}/40" for step in range(0, 41, 10)}, states  # never a count of batches
    last_line = [line for line in re.split(r"[\r\n]", first.stdout) if "40/40" in line][-1]
    assert "step/s" in last_line and "val/acc=" in last_line

    # The resumed fit in this process: the console's settings are the first process's, shown above.
    resumed = run_main(capfd, "fit", "--ckpt_path", "last", *cli_args(cifar10_dir, tmp_path, *bar, steps=80))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    states = bar_states(resumed.stdout)
    assert states[-1] == "80/80" and "0/80" not in states
    assert set(states) <= {f"{step}/80" for step in range(40, 81, 10)}, states
