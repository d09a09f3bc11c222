"""Shared test fixtures: tiny CIFAR-format folders written on the fly, CPU only.

The images are learnable on purpose: each class has its own mean image and every image is that
mean plus noise, so a linear classifier beats chance by far within a few dozen steps.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import signal
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from forked_cli import ForkedRun, end_every_run, start_server

REPO = Path(__file__).resolve().parent.parent

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_images(num: int, num_classes: int, rng: np.random.Generator, noise: float = 30.0):
    """``(num, 3072)`` uint8 rows and balanced int labels: class mean image + Gaussian noise."""
    means = 128 + np.random.default_rng(1234).uniform(-5, 5, size=(num_classes, 3072))
    labels = np.arange(num) % num_classes
    rng.shuffle(labels)
    images = means[labels] + rng.normal(0.0, noise, size=(num, 3072))
    return np.clip(images, 0, 255).astype(np.uint8), labels.tolist()


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


def write_cifar10(root: Path, per_batch: int = 60, num_test: int = 60, seed: int = 0, noise: float = 30.0) -> Path:
    """Write ``root/cifar-10-batches-py`` (5 training batches of ``per_batch``, pixel noise of std ``noise``).

    Returns ``root``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for b in range(1, 6):
        x, y = make_images(per_batch, 10, rng, noise)
        _dump(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "data": x, "labels": y})
    x, y = make_images(num_test, 10, rng, noise)
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": x, "labels": y})
    _dump(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return root


def write_cifar100(root: Path, num_train: int = 400, num_test: int = 100, seed: int = 0) -> Path:
    """Write ``root/cifar-100-python`` (train, test, meta; fine and coarse labels); return ``root``."""
    from lit_linear.data.cifar import CIFAR100_CLASSES

    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", num_train), ("test", num_test)):
        x, y = make_images(n, 100, rng)
        _dump(folder / name, {"data": x, "fine_labels": y, "coarse_labels": [v // 5 for v in y]})
    _dump(
        folder / "meta",
        {"fine_label_names": list(CIFAR100_CLASSES), "coarse_label_names": [f"c{i}" for i in range(20)]},
    )
    return root


@pytest.fixture(scope="session", autouse=True)
def fork_server():
    """The server that :func:`start_cli` forks runs from, started first: its imports overlap the first tests."""
    start_server()
    yield
    end_every_run()


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory) -> Path:
    """A tiny CIFAR-10 folder shared by the tests that only read it: 300 train, 60 test images."""
    return write_cifar10(tmp_path_factory.mktemp("cifar10"))


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory) -> Path:
    return write_cifar100(tmp_path_factory.mktemp("cifar100"))


def free_port() -> int:
    """A free TCP port below the kernel's range of ephemeral ports, which outgoing connections (gloo's
    among them) draw from: a port found free there cannot be taken by one of them before it is used."""
    low, _ = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port below the ephemeral range")


def start_cli(
    *args: str, env: dict | None = None, stdout: int = subprocess.PIPE, stderr: int = subprocess.PIPE
) -> ForkedRun:
    """``python train.py ARGS`` started in a session and process group of its own (its DDP processes join it),
    with a free MASTER_PORT for Lightning's launcher; forked from a server that has imported the package
    (:mod:`forked_cli`), a real process all the same. Its output is text."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "MASTER_PORT": str(free_port()), **(env or {})}
    return ForkedRun(list(args), env=full_env, cwd=REPO, stdout=stdout, stderr=stderr)


def wait_for(proc: ForkedRun, timeout: float, what: str) -> subprocess.CompletedProcess:
    """Wait for ``proc`` at most ``timeout`` s; then end whatever is left of its process group. A process
    still running then fails the test, saying so and showing the end of its output."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        pytest.fail(
            f"{what} did not end within {timeout:.0f} s; the end of its output:\n"
            f"{(out or '')[-2000:]}\n{(err or '')[-3000:]}"
        )
    kill_group(proc)  # nothing of a finished job may run on into the next test
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_group(proc: ForkedRun) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def group_alive(proc: ForkedRun) -> bool:
    """Whether any process of ``proc``'s group (its DDP processes included) is still running."""
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python train.py ARGS`` in a subprocess on the CPU (see :func:`start_cli`); returns the completed process.

    A run that outlives ``timeout`` is killed with all its processes and fails the test with its output."""
    return wait_for(start_cli(*args, env=env), timeout, f"python train.py {args[0]}")


def run_main(capfd, *args: str) -> subprocess.CompletedProcess:
    """``main(ARGS)`` in this process, as :func:`run_cli` runs it in another: its exit status and what it
    printed (``capfd``, since Lightning's logging writes to the file descriptors). For runs where a
    separate process is not the point: it saves Lightning's start-up, seconds a run."""
    from lit_linear.cli.linear_cli import main

    capfd.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else int(exit_info.code is not None)
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(["main", *args], code, out, err)


def cli_args(data_dir: Path, root: Path, *extra: str, steps: int = 40, interval: int = 20) -> list[str]:
    """Arguments of a small, fast CPU fit: 2 x 2 softmax grid, batch 20, no progress bar."""
    return [
        "--data.data_dir",
        str(data_dir),
        "--data.download",
        "false",
        "--data.batch_size",
        "20",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.max_steps",
        str(steps),
        "--trainer.val_check_interval",
        str(interval),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.default_root_dir",
        str(root),
        "--seed_everything",
        "0",
        *extra,
    ]


def val_acc_steps(run: Path) -> list[int]:
    """The steps at which a run folder's main TensorBoard run logged ``val/acc`` (what TensorBoard plots)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars("val/acc")]


def table_rows(output: str) -> tuple[str, list[list[str]]]:
    """The results table that fit and validate print (``SweepResult.table``): its title line and,
    per config, its fields split on spaces (lr, reg, train acc, val acc, loss, status words...)."""
    lines = output.splitlines()
    start = max(i for i, line in enumerate(lines) if " sweep: " in line and " configs after " in line)
    num_configs = int(lines[start].split(" sweep: ")[1].split()[0])
    return lines[start], [line.split() for line in lines[start + 2 : start + 2 + num_configs]]
