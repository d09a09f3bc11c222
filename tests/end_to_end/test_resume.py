"""A fit stopped and resumed from its last checkpoint ends exactly where a straight fit ends."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch
from conftest import REPO, cli_args, run_cli, start_cli, val_acc_steps, wait_for

from lit_linear import LinearClassifier
from lit_linear.cli import main

pytestmark = pytest.mark.slow

GRID = ["--model.lr", "[0.01, 0.1]", "--model.reg", "[0.0, 0.01]", "--last_checkpoint.every_n_train_steps", "20"]


def outputs(run):
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt, json.loads((run / "sweep.json").read_text()), LinearClassifier.load(run / "best_model.pt")


def assert_same_end(run_a, run_b):
    """Two runs end with the same final W, sweep.json and best_model.pt, to the bit."""
    ckpt_a, sweep_a, model_a = outputs(run_a)
    ckpt_b, sweep_b, model_b = outputs(run_b)
    assert ckpt_b["global_step"] == ckpt_a["global_step"]
    assert torch.equal(ckpt_a["state_dict"]["W"], ckpt_b["state_dict"]["W"])
    assert sweep_a == sweep_b
    assert torch.equal(model_a.weight, model_b.weight) and model_a.info == model_b.info


@pytest.mark.parametrize(
    "blocks", [[], ["--trainer.val_check_interval", "5"]], ids=["20 steps a batch", "5 steps a batch"]
)
def test_resume_from_last_checkpoint_is_exact(cifar10_dir, tmp_path, blocks):
    main(["fit", *GRID, *cli_args(cifar10_dir, tmp_path / "straight", *blocks, steps=80)])
    main(["fit", *GRID, *cli_args(cifar10_dir, tmp_path / "resumed", *blocks, steps=40)])
    main(["fit", *GRID, "--ckpt_path", "last", *cli_args(cifar10_dir, tmp_path / "resumed", *blocks, steps=80)])

    straight_run, resumed_run = (
        tmp_path / "straight" / "lightning_logs" / "version_0",
        tmp_path / "resumed" / "lightning_logs" / "version_1",
    )
    assert_same_end(straight_run, resumed_run)
    ckpt = outputs(resumed_run)[0]
    assert ckpt["global_step"] == 80

    # The sampler's state is in the checkpoint (the position is the global step).
    loader_state = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader_state == {"seed": 0, "batch_size": 20, "num_rows": 240}


def test_resume_with_other_intervals_validates_at_the_new_steps(cifar10_dir, tmp_path):
    """Steps grouped 20 a batch before the resume and 10 after: validations still fall on the new interval.

    Fails loudly if Lightning's checkpoint format for its batch count changes (the module rewrites it)."""
    every = ("--last_checkpoint.every_n_train_steps", "20", "--trainer.log_every_n_steps", "20")
    main(["fit", *cli_args(cifar10_dir, tmp_path, *every, steps=40)])
    ckpt = torch.load(tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["steps_per_batch"] == 20
    assert ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 2
    every = ("--last_checkpoint.every_n_train_steps", "30", "--trainer.log_every_n_steps", "30")
    main(["fit", "--ckpt_path", "last", *cli_args(cifar10_dir, tmp_path, *every, steps=90, interval=30)])
    assert val_acc_steps(tmp_path / "lightning_logs" / "version_1") == [60, 90]


def test_ctrl_c_stops_gracefully_with_a_usable_last_checkpoint(cifar10_dir, tmp_path):
    root = tmp_path / "run"
    args = cli_args(cifar10_dir, root, "--last_checkpoint.every_n_train_steps", "20", steps=1_000_000)
    proc = start_cli("fit", *args, stderr=subprocess.STDOUT)
    last = root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not last.exists():  # training is under way
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    output = wait_for(proc, 120, "a fit stopped by Ctrl-C").stdout
    assert proc.returncode == 130, output[-3000:]
    assert "Interrupted by Ctrl-C at step" in output and "resume with --ckpt_path last" in output
    ckpt = torch.load(last, weights_only=True)
    step = ckpt["global_step"]
    assert step > 0
    # A consistent state: the step counters agree, and the sweep up to that step was written.
    batches = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"]
    assert batches * ckpt["steps_per_batch"] == step
    sweep = json.loads((last.parent.parent / "sweep.json").read_text())
    assert sweep["step"] == step

    # Usable: training continues from it and finishes the sweep at the next validation.
    target = (step // 20 + 1) * 20
    main(["fit", "--ckpt_path", "last", *cli_args(cifar10_dir, root, steps=target)])
    sweep = json.loads((root / "lightning_logs" / "version_1" / "sweep.json").read_text())
    assert sweep["step"] == target


# --- a crash or Ctrl-C at any step --------------------------------------------------------------
# Saves every 10 steps, validations (and halvings) every 20, 80 steps: Lightning gets batches of 10 steps.
SWEEPS = {
    "search": [
        "--model.lr",
        "{low: 0.01, high: 0.2}",
        "--model.reg",
        "[0.0, 0.01]",
        "--model.num_configs",
        "6",
        "--model.halving_factor",
        "2",
    ],  # (6 -> 3 -> 2 -> 1 configs at steps 20, 40, 60)
}
PROBES = {"PYTHONPATH": str(REPO / "tests" / "end_to_end")}


def probed_args(cifar10_dir, root, sweep, *extra):
    """An 80-step fit of ``sweep`` with every batch's minibatch rows logged to ``root/rows.jsonl``."""
    log = ["--trainer.callbacks+=crash_probe.RowLog", f"--trainer.callbacks.path={root / 'rows.jsonl'}"]
    every = ("--last_checkpoint.every_n_train_steps", "10")
    return ["fit", *SWEEPS[sweep], *cli_args(cifar10_dir, root, *every, steps=80), *log, *extra]


def rows_by_step(root) -> dict[int, list[int]]:
    """``{SGD step: minibatch rows}`` of every step the fits under ``root`` trained (a step seen twice fails)."""
    seen: dict[int, list[int]] = {}
    for line in (root / "rows.jsonl").read_text().splitlines():
        entry = json.loads(line)
        for j, rows in enumerate(entry["rows"]):
            assert entry["step"] + j not in seen, f"step {entry['step'] + j} trained twice"
            seen[entry["step"] + j] = rows
    return seen


@pytest.fixture(scope="module")
def straight_runs(cifar10_dir, tmp_path_factory):
    """One uninterrupted fit per sweep, made on first use."""
    runs = {}

    def get(sweep):
        if sweep not in runs:
            root = tmp_path_factory.mktemp(f"straight-{sweep}")
            main(probed_args(cifar10_dir, root, sweep))
            runs[sweep] = root
        return runs[sweep]

    return get


@pytest.mark.parametrize(
    "sweep, signal, at, resumes_from",
    [
        # killed before its second save: resumes from the first, before the first halving
        ("search", "SIGKILL", 20, 10),
        ("search", "SIGINT", 50, 50),  # Ctrl-C between two validations, the halvings at 40 and 60
        ("search", "SIGKILL", 70, 60),  # late: resumes from the save right after the last halving
    ],
)
def test_a_fit_stopped_at_any_step_resumes_exactly(
    cifar10_dir, tmp_path, straight_runs, sweep, signal, at, resumes_from
):
    """A real SIGKILL (no save at the crash) or Ctrl-C (graceful stop: validates and saves), then
    ``--ckpt_path last``: the same minibatch at every step, and the same end as one uninterrupted fit."""
    probe = [
        "--trainer.callbacks+=crash_probe.SignalAt",
        f"--trainer.callbacks.step={at}",
        f"--trainer.callbacks.signal={signal}",
    ]
    stopped = run_cli(*probed_args(cifar10_dir, tmp_path, sweep, *probe), env=PROBES)  # a real process, real signals
    assert stopped.returncode == (-9 if signal == "SIGKILL" else 130), stopped.stderr[-3000:]
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == resumes_from

    # The steps after the checkpoint were trained before the crash: they are logged again on resume.
    (tmp_path / "rows.jsonl").write_text(
        "".join(
            line + "\n"
            for line in (tmp_path / "rows.jsonl").read_text().splitlines()
            if json.loads(line)["step"] < resumes_from
        )
    )
    main(probed_args(cifar10_dir, tmp_path, sweep, "--ckpt_path", "last"))

    straight = straight_runs(sweep)
    assert rows_by_step(tmp_path) == rows_by_step(straight)  # every step once, each with its own minibatch
    assert_same_end(straight / "lightning_logs" / "version_0", tmp_path / "lightning_logs" / "version_1")
