"""A fault ends the job in seconds with one line, and leaves every checkpoint whole and resumable.

Tried where each promise would break: a save that fails on a full disk (mid-fit and at a
validation), on one process, on rank 0 alone and on every rank; a write failing on a child
process alone; a real full file system; SIGTERM on one and two processes; SIGKILL of a child and
of the process the user started. The sweep is a halved search (6 -> 3 -> 2 configs at steps 20
and 40), validated every 20 steps, saved every 10, 60 steps in batches of 10.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, cli_args, group_alive, kill_group, run_cli, start_cli

from lit_linear import LinearClassifier
from lit_linear.cli import main

pytestmark = pytest.mark.slow

SEARCH = [
    "--model.lr",
    "{low: 0.01, high: 0.2}",
    "--model.reg",
    "[0.0, 0.01]",
    "--model.num_configs",
    "6",
    "--model.halving_factor",
    "2",
    "--last_checkpoint.every_n_train_steps",
    "10",
]
TWO = ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--model.split", "configs"]
PROBES = {"PYTHONPATH": str(REPO / "tests" / "end_to_end")}
BOUND = 90  # seconds from the start of a job to its end, whatever failed


def fit_args(data: Path, root: Path, *extra: str) -> list[str]:
    return ["fit", *SEARCH, *cli_args(data, root, *extra, steps=60)]


def run(root: Path, version: int = 0) -> Path:
    return root / "lightning_logs" / f"version_{version}"


def full_disk(step: int, name: str) -> list[str]:
    return [
        "--trainer.plugins",
        "fault_probe.FullDiskAt",
        "--trainer.plugins.step",
        str(step),
        "--trainer.plugins.name",
        name,
    ]


def failing_write(step: int, ranks: str = "null") -> list[str]:
    return [
        "--trainer.callbacks+=fault_probe.FailingWriteAt",
        f"--trainer.callbacks.step={step}",
        f"--trainer.callbacks.ranks={ranks}",
    ]


def signal_at(step: int, signal: str, rank: int) -> list[str]:
    return [
        "--trainer.callbacks+=crash_probe.SignalAt",
        f"--trainer.callbacks.step={step}",
        f"--trainer.callbacks.signal={signal}",
        f"--trainer.callbacks.rank={rank}",
    ]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def assert_every_checkpoint_whole(root: Path) -> int:
    """Every checkpoint under ``root`` loads and no temporary file is left; returns last.ckpt's step."""
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")], "a temporary file was left behind"
    for ckpt in root.rglob("*.ckpt"):
        torch.load(ckpt, weights_only=True)
    return torch.load(run(root) / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


def outputs(folder: Path) -> tuple[dict, dict, LinearClassifier]:
    return (
        torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True),
        json.loads((folder / "sweep.json").read_text()),
        LinearClassifier.load(folder / "best_model.pt"),
    )


def assert_same_end(a: Path, b: Path, exact: bool = True) -> None:
    """Two run folders end with the same W, sweep.json and best_model.pt: to the bit when ``exact``, else to
    float32 tolerance (another process count multiplies matrices of other widths)."""
    (ckpt_a, sweep_a, model_a), (ckpt_b, sweep_b, model_b) = outputs(a), outputs(b)
    assert ckpt_a["global_step"] == ckpt_b["global_step"] == 60
    assert torch.equal(ckpt_a["state_dict"]["columns"], ckpt_b["state_dict"]["columns"])
    if exact:
        assert torch.equal(ckpt_a["state_dict"]["W"], ckpt_b["state_dict"]["W"]) and sweep_a == sweep_b
        assert torch.equal(model_a.weight, model_b.weight)
        return
    assert torch.allclose(ckpt_a["state_dict"]["W"], ckpt_b["state_dict"]["W"], rtol=1e-5, atol=1e-7)
    assert [(c["status"], c["stopped_at"]) for c in sweep_a["configs"]] == [
        (c["status"], c["stopped_at"]) for c in sweep_b["configs"]
    ]
    assert [c["val_acc"] for c in sweep_a["configs"]] == pytest.approx(
        [c["val_acc"] for c in sweep_b["configs"]], abs=1e-9
    )


@pytest.fixture(scope="module")
def straight(cifar10_dir, tmp_path_factory):
    """The run folder of an uninterrupted fit on 1 or 2 processes, made on first use."""
    folders = {}

    def get(devices: int) -> Path:
        if devices not in folders:
            root = tmp_path_factory.mktemp(f"straight{devices}")
            if devices == 1:
                main(fit_args(cifar10_dir, root))
            else:
                result = run_cli(*fit_args(cifar10_dir, root, *TWO), timeout=300)
                assert result.returncode == 0, result.stderr[-3000:]
            folders[devices] = run(root)
        return folders[devices]

    return get


def resume_on_one_process(data: Path, root: Path) -> Path:
    """``--ckpt_path last`` in this process, the fault removed; returns the resumed run's folder."""
    main(fit_args(data, root, "--ckpt_path", "last"))
    return run(root, 1)


# --- a failed save ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, step, kept", [("last.ckpt", 30, 20), ("best.ckpt", 20, 10)], ids=["mid-fit save", "validation save"]
)
def test_a_full_disk_at_a_save_on_one_process(cifar10_dir, tmp_path, capsys, straight, name, step, kept):
    with pytest.raises(SystemExit) as exit_info:
        main([*fit_args(cifar10_dir, tmp_path), *full_disk(step, name)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    (line,) = error_lines(err)
    assert f"{name}: No space left on device" in line and "--ckpt_path last" in line and "Traceback" not in err
    assert assert_every_checkpoint_whole(tmp_path) == kept
    assert_same_end(straight(1), resume_on_one_process(cifar10_dir, tmp_path))


def test_a_full_disk_at_a_validation_save_on_rank_0_ends_both_processes(cifar10_dir, tmp_path, straight):
    """Rank 0 alone writes: its failed save would leave rank 1 waiting for it in the save's barrier. (A full disk at
    rank 0's mid-fit save is the real full file system's test below.)"""
    result = run_cli(*fit_args(cifar10_dir, tmp_path, *TWO), *full_disk(20, "best.ckpt"), env=PROBES, timeout=BOUND)
    assert result.returncode != 0
    (line,) = error_lines(result.stderr)
    assert "best.ckpt: No space left on device" in line and "Traceback" not in result.stderr
    assert assert_every_checkpoint_whole(tmp_path) == 10
    assert_same_end(straight(1), resume_on_one_process(cifar10_dir, tmp_path), exact=False)


@pytest.mark.parametrize("hook_step, kept", [(30, 20), (40, 30)], ids=["mid-fit", "at a validation"])
def test_a_write_failing_on_every_process_ends_the_job(cifar10_dir, tmp_path, straight, hook_step, kept):
    """At 30 the fault comes before the save due at 30; at 40, before the validation that the save at 40 waits for."""
    result = run_cli(*fit_args(cifar10_dir, tmp_path, *TWO), *failing_write(hook_step), env=PROBES, timeout=BOUND)
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert lines and all("No space left on device" in line for line in lines) and "Traceback" not in result.stderr
    assert assert_every_checkpoint_whole(tmp_path) == kept


def test_a_write_failing_on_a_child_process_alone_ends_the_job(cifar10_dir, tmp_path):
    result = run_cli(*fit_args(cifar10_dir, tmp_path, *TWO), *failing_write(30, "[1]"), env=PROBES, timeout=BOUND)
    assert result.returncode != 0
    (line,) = error_lines(result.stderr)
    assert "No space left on device" in line and "Traceback" not in result.stderr
    assert assert_every_checkpoint_whole(tmp_path) == 20


@pytest.fixture
def tiny_disk(tmp_path):
    """A tmpfs of 64 MB mounted at ``tmp_path/disk`` (root only), unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_real_full_disk_under_two_processes_ends_in_seconds_with_one_line(cifar10_dir, tiny_disk, straight):
    """The run folder's file system fills up at step 30 (a real ENOSPC from the kernel): the job ends
    well within its bound, every checkpoint left loads, and once space is freed the fit resumes."""
    start = time.monotonic()
    fill = ["--trainer.callbacks+=fault_probe.FillDiskAt", "--trainer.callbacks.step=30"]
    result = run_cli(*fit_args(cifar10_dir, tiny_disk, *TWO), *fill, env=PROBES, timeout=BOUND)
    assert time.monotonic() - start < BOUND
    assert result.returncode != 0
    (line,) = error_lines(result.stderr)
    assert "No space left on device" in line and "free space" in line and "Traceback" not in result.stderr
    assert assert_every_checkpoint_whole(tiny_disk) == 20
    (tiny_disk / "filler").unlink()
    assert_same_end(straight(1), resume_on_one_process(cifar10_dir, tiny_disk), exact=False)


# --- signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("devices", [1, 2], ids=["1 process", "2 processes"])
def test_sigterm_saves_says_how_to_resume_and_exits_143(cifar10_dir, tmp_path, straight, devices):
    """SIGTERM reaches the process the user started (as from timeout or kill) at step 30; on two
    processes the other one learns of it at the end of the batch. The resume on as many processes is exact."""
    extra = TWO if devices == 2 else []
    stopped = run_cli(*fit_args(cifar10_dir, tmp_path, *extra), *signal_at(30, "SIGTERM", 0), env=PROBES, timeout=BOUND)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "Interrupted by SIGTERM at step 30; resume with --ckpt_path last" in stopped.stdout
    assert assert_every_checkpoint_whole(tmp_path) == 30
    if devices == 1:
        resumed = resume_on_one_process(cifar10_dir, tmp_path)
    else:
        result = run_cli(*fit_args(cifar10_dir, tmp_path, *TWO, "--ckpt_path", "last"), timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        resumed = run(tmp_path, 1)
    assert_same_end(straight(devices), resumed)


@pytest.mark.parametrize("rank", [1, 0], ids=["a child", "the process the user started"])
def test_sigkill_of_one_process_ends_the_whole_job(cifar10_dir, tmp_path, rank):
    job = start_cli(
        *fit_args(cifar10_dir, tmp_path, *TWO),
        *signal_at(30, "SIGKILL", rank),
        env=PROBES,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    start = time.monotonic()
    try:
        status = job.wait(timeout=BOUND)
        while group_alive(job) and time.monotonic() - start < BOUND:  # no process of the job may live on
            time.sleep(0.2)
        alive = group_alive(job)
    except subprocess.TimeoutExpired:
        status, alive = None, True
    finally:
        kill_group(job)
    assert status not in (None, 0) and not alive, f"the job did not end within {BOUND} s of the kill of rank {rank}"


def test_a_slurm_requeue_saves_where_every_process_stopped_and_resumes_exactly(
    cifar10_dir, tmp_path, monkeypatch, straight
):
    """Under SLURM, Lightning's SLURMEnvironment(auto_requeue=True) saves hpc_ckpt_<n>.ckpt and requeues the job
    from inside its SIGUSR1 handler, wherever the signal lands (mid-step, it was measured to resume inexactly).
    The fit stops at the end of the batch first; the requeued run resumes from that checkpoint by itself."""
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    slurm = {
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "sweep",
        "SLURM_JOB_ID": "4242",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "127.0.0.1",
        "PATH": f"{scontrol.parent}:{os.environ['PATH']}",
    }
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main([*fit_args(cifar10_dir, root), *signal_at(30, "SIGUSR1", 0)])
    assert exit_info.value.code == 128 + 10
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert torch.load(root / "hpc_ckpt_1.ckpt", weights_only=True)["global_step"] == 30
    main(fit_args(cifar10_dir, root))  # the requeued job: the same command, resumed by Lightning from hpc_ckpt_1.ckpt
    assert_same_end(straight(1), root / "lightning_logs" / "version_4242")


def test_a_read_only_run_folder_is_one_line(cifar10_dir, tmp_path, capsys):
    """A folder the run cannot write (a read-only mount: root writes through permissions) ends the fit in one line."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(fit_args(cifar10_dir, folder / "run"))
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    (line,) = error_lines(err)
    assert "Read-only file system (EROFS)" in line and "writable" in line and "Traceback" not in err
