"""Several devices give the same result as one: DDP over two CPU processes (gloo) vs one process."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, cli_args, free_port, kill_group, run_cli, run_main, table_rows
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_linear import LinearClassifier
from lit_linear.cli import main
from lit_linear.sweep.configs import config_name

pytestmark = pytest.mark.slow


def last_w(root):
    (ckpt,) = root.glob("lightning_logs/version_0/checkpoints/last.ckpt")
    return torch.load(ckpt, weights_only=True)["state_dict"]["W"]


TWO = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
PROBES = {"PYTHONPATH": str(REPO / "tests" / "end_to_end")}


def probes(out_dir):
    """CLI arguments adding tests/ddp_probe.py's RankProbe and CollectiveCounter, writing into ``out_dir``."""
    return [
        "--trainer.callbacks+=ddp_probe.RankProbe",
        f"--trainer.callbacks.out_dir={out_dir}",
        "--trainer.callbacks+=ddp_probe.CollectiveCounter",
        f"--trainer.callbacks.out_dir={out_dir}",
    ]


def collectives(out_dir, rank):
    return json.loads((out_dir / f"collectives_rank{rank}.json").read_text())


def sweep_json(root, version=0):
    return json.loads((root / "lightning_logs" / f"version_{version}" / "sweep.json").read_text())


def assert_same_sweep(a, b):
    """Two sweep.json: the same configs, statuses, accuracies and best config."""
    assert a["best"] == pytest.approx(b["best"])
    for x, y in zip(a["configs"], b["configs"], strict=True):
        assert (x["lr"], x["reg"], x["status"], x["stopped_at"]) == (y["lr"], y["reg"], y["status"], y["stopped_at"])
        assert (x["train_acc"], x["val_acc"]) == pytest.approx((y["train_acc"], y["val_acc"]), abs=1e-9)
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5)


def test_two_ddp_processes_equal_one_device(cifar10_dir, tmp_path):
    """Split by minibatch, a search with successive halving: every rank draws the same configs and
    keeps the same ones, and the gradient is averaged across them at every step."""
    grid = [
        "--model.lr",
        "{low: 0.01, high: 0.2}",
        "--model.reg",
        "[0.0, 0.01]",
        "--model.num_configs",
        "6",
        "--model.halving_factor",
        "2",
    ]
    main(["fit", *grid, *cli_args(cifar10_dir, tmp_path / "one")])
    two = run_cli(
        "fit",
        *grid,
        *cli_args(cifar10_dir, tmp_path / "two", *TWO, "--model.split", "minibatch"),
        *probes(tmp_path / "ranks"),
        env=PROBES,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    # Two all-reduces per SGD step (the gradient and the loss): what model.split configs does without.
    assert collectives(tmp_path / "ranks", 0)["calls"]["c10d::allreduce_"] == 2 * 40

    # Every rank holds the same W: the hand-computed gradient was averaged across ranks.
    rank0, rank1 = (torch.load(tmp_path / "ranks" / f"W_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(rank0, rank1)
    assert rank0.shape == (3073, 3, 10), "halved at step 20: 6 -> 3 configs, the same on both ranks"

    # ... and it is the W of one device with the same global batch.
    w_one, w_two = last_w(tmp_path / "one"), last_w(tmp_path / "two")
    assert torch.equal(w_two, rank0)
    assert torch.allclose(w_two, w_one, rtol=1e-5, atol=1e-7)
    assert_same_sweep(sweep_json(tmp_path / "one"), sweep_json(tmp_path / "two"))


def test_split_by_configs_equals_one_device_with_no_traffic_while_training(cifar10_dir, tmp_path):
    """Each rank trains its own configs on whole minibatches, with no collective in any training
    batch; the sweep (results, best config, checkpoint, TensorBoard runs) is the one device's.

    A search of 7 halved at 20 and 40 (7 -> 4 -> 2 configs): the shares are uneven and change at each
    halving, which covers a plain grid's fixed, even shares too."""
    grid = ["--model.lr", "{low: 0.01, high: 0.2}", "--model.reg", "[0.0, 0.01]", "--model.num_configs", "7"]
    grid += ["--model.halving_factor", "2"]
    tensorboard = ["--trainer.callbacks+=lit_linear.SweepTensorBoard"]
    main(["fit", *grid, *cli_args(cifar10_dir, tmp_path / "one", *tensorboard, steps=60)])
    two = run_cli(
        "fit",
        *grid,
        *cli_args(cifar10_dir, tmp_path / "two", *TWO, *tensorboard, "--model.split", "configs", steps=60),
        *probes(tmp_path / "ranks"),
        env=PROBES,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]

    for rank in (0, 1):
        counted = collectives(tmp_path / "ranks", rank)
        assert counted == {"steps": 60, "calls": {}}, f"rank {rank} ran collectives while training: {counted}"
    # Each rank held only its share of the configs live at each step: together all of them, neither more than half.
    sweep = sweep_json(tmp_path / "two")

    def live_at(step):
        return sum(1 for c in sweep["configs"] if not (c["status"] == "stopped" and c["stopped_at"] < step))

    shapes = [json.loads((tmp_path / "ranks" / f"shapes_rank{r}.json").read_text()) for r in (0, 1)]
    for (step, shape0), (_, shape1) in zip(*shapes, strict=True):
        assert shape0[1] + shape1[1] == live_at(step) and max(shape0[1], shape1[1]) <= math.ceil(live_at(step) / 2)

    # The whole grid again at the end, on both ranks, and in the checkpoint as one device writes it.
    rank0, rank1 = (torch.load(tmp_path / "ranks" / f"W_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(rank0, rank1)
    w_one, w_two = last_w(tmp_path / "one"), last_w(tmp_path / "two")
    assert w_two.shape == w_one.shape and torch.equal(w_two, rank0)
    assert torch.allclose(w_two, w_one, rtol=1e-5, atol=1e-7)
    ckpt_one, ckpt_two = (
        torch.load(r / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
        for r in (tmp_path / "one", tmp_path / "two")
    )
    assert torch.equal(ckpt_one["state_dict"]["columns"], ckpt_two["state_dict"]["columns"])
    assert ckpt_one["optimizer_states"][0]["param_groups"] == ckpt_two["optimizer_states"][0]["param_groups"]
    for key, value in ckpt_one["optimizer_states"][0]["state"][0].items():
        assert torch.equal(value, ckpt_two["optimizer_states"][0]["state"][0][key]), key
    assert_same_sweep(sweep_json(tmp_path / "one"), sweep)
    model_one, model_two = (
        LinearClassifier.load(r / "lightning_logs/version_0/best_model.pt")
        for r in (tmp_path / "one", tmp_path / "two")
    )
    assert torch.allclose(model_one.weight, model_two.weight, rtol=1e-5, atol=1e-7)
    assert model_one.info.keys() == model_two.info.keys()
    for key, value in model_one.info.items():
        assert value == (pytest.approx(model_two.info[key]) if isinstance(value, float) else model_two.info[key]), key

    # Every config's TensorBoard run: the same curves, and its templates where it ended (its halving or the end).
    for config in sweep["configs"]:
        runs = []
        for root in (tmp_path / "one", tmp_path / "two"):
            run = root / "lightning_logs" / "version_0" / config_name(config["lr"], config["reg"])
            accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
            accumulator.Reload()
            runs.append(accumulator)
        curves = [[(e.step, e.value) for e in a.Scalars("acc/val")] for a in runs]
        assert curves[0] == curves[1]
        drawn = [[e.step for e in a.Images("templates")] if "templates" in a.Tags()["images"] else [] for a in runs]
        assert drawn[0] == drawn[1] == ([] if config["status"] == "diverged" else [config["stopped_at"] or 60])


def test_test_and_predict_under_ddp_equal_one_device(cifar10_dir, tmp_path, capfd):
    """Each rank scores its shard of the test split; the metric and the CSV gather them all."""
    import re

    root = tmp_path / "run"
    grid = ["--model.lr", "[0.01, 0.1]", "--model.reg", "[0.0, 0.01]"]
    main(["fit", *grid, *cli_args(cifar10_dir, root)])
    outputs = {}
    for name, devices in (("one", []), ("two", ["--trainer.devices", "2", "--trainer.strategy", "ddp"])):
        run = functools.partial(run_main, capfd) if name == "one" else run_cli
        test = run("test", *grid, "--ckpt_path", "best", *cli_args(cifar10_dir, root, *devices))
        assert test.returncode == 0, test.stderr[-3000:]
        before = set((root / "lightning_logs").iterdir())
        predict = run("predict", *grid, "--ckpt_path", "best", *cli_args(cifar10_dir, root, *devices))
        assert predict.returncode == 0, predict.stderr[-3000:]
        (run,) = set((root / "lightning_logs").iterdir()) - before
        outputs[name] = (
            re.search(r"test/acc\s*│?\s*([0-9.]+)", test.stdout).group(1),
            (run / "predictions.csv").read_text(),
        )
    assert outputs["one"] == outputs["two"]
    assert outputs["one"][1].count("\n") == 61


def test_validate_under_ddp_equals_one_device(cifar10_dir, tmp_path, capfd):
    """Each rank measures its shard of both splits; the accuracies sum the shards, so the table is the same."""
    root = tmp_path / "run"
    grid = [
        "--model.lr",
        "{low: 0.01, high: 0.2}",
        "--model.reg",
        "[0.0, 0.01]",
        "--model.num_configs",
        "6",
        "--model.halving_factor",
        "2",
    ]
    main(["fit", *grid, *cli_args(cifar10_dir, root)])
    printed = {}
    for name, devices in (("one", []), ("two", ["--trainer.devices", "2", "--trainer.strategy", "ddp"])):
        run = functools.partial(run_main, capfd) if name == "one" else run_cli
        result = run("validate", *grid, "--ckpt_path", "last", *cli_args(cifar10_dir, root, *devices))
        assert result.returncode == 0, result.stderr[-3000:]
        title, rows = table_rows(result.stdout)
        metrics = result.stdout.split("Validate metric")[1]
        printed[name] = (title, rows, metrics)
    assert printed["one"] == printed["two"]
    title, rows, metrics = printed["one"]
    assert title == "softmax sweep: 6 configs after 40 steps"
    assert sum(row[5] == "stopped" for row in rows) == 3, "halved at step 20: 6 -> 3, recorded in the checkpoint"


SEARCH = [
    "--model.lr",
    "{low: 0.01, high: 0.2}",
    "--model.reg",
    "[0.0, 0.01]",
    "--model.num_configs",
    "7",
    "--model.halving_factor",
    "2",
    "--last_checkpoint.every_n_train_steps",
    "20",
]
SPLIT_TWO = [*TWO, "--model.split", "configs"]  # two processes, each training its share of the configs


def fit_on(processes: int, *args: str) -> None:
    """``fit ARGS``: one process in this one, two as a real job."""
    if processes == 1:
        main(["fit", *args])
        return
    result = run_cli("fit", *args)
    assert result.returncode == 0, result.stderr[-3000:]


def assert_same_end(straight: Path, resumed: Path, version: int = 0) -> None:
    """A resumed fit's last checkpoint and sweep.json (run ``version``) are the straight fit's, to float32 tolerance."""
    a = torch.load(straight / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    b = torch.load(resumed / f"lightning_logs/version_{version}/checkpoints/last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 80
    assert torch.equal(a["state_dict"]["columns"], b["state_dict"]["columns"])
    assert torch.allclose(a["state_dict"]["W"], b["state_dict"]["W"], rtol=1e-5, atol=1e-7)
    assert_same_sweep(sweep_json(straight), sweep_json(resumed, version=version))


def test_a_fit_checkpointed_on_one_process_resumes_on_two_as_a_straight_fit(cifar10_dir, tmp_path):
    """The checkpoint holds the whole sweep in config order, whatever the process count that reads it.

    Halved at 20 and 40 (7 -> 4 -> 2 configs; the halving at 40, the first fit's last validation,
    is done by the resumed fit), then at 60 to 1 config: one of the two processes is left with none.
    Two processes end as one does (the other tests of this file), so the straight fit runs in this one."""
    fit_on(1, *SEARCH, *cli_args(cifar10_dir, tmp_path / "straight", steps=80))
    fit_on(1, *SEARCH, *cli_args(cifar10_dir, tmp_path / "resumed", steps=40))
    fit_on(2, *SEARCH, "--ckpt_path", "last", *cli_args(cifar10_dir, tmp_path / "resumed", *SPLIT_TWO, steps=80))
    assert_same_end(tmp_path / "straight", tmp_path / "resumed", version=1)
    last = torch.load(tmp_path / "resumed/lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    assert last["state_dict"]["columns"].numel() == 1


def test_checkpoints_of_two_processes_resume_on_one_as_a_straight_fit(cifar10_dir, tmp_path):
    """Two processes split by configs fit 40 steps, saving every 10. Their checkpoint at step 30 (between two
    validations, after the halving at 20), as a crash right after that save would leave it, and their last one
    (step 40, whose halving the resumed fit does) each resume on one process and end as a straight fit on one."""
    every = ["--last_checkpoint.every_n_train_steps", "10"]
    fit_on(1, *SEARCH, *cli_args(cifar10_dir, tmp_path / "straight", *every, steps=80))
    copy = tmp_path / "step30.ckpt"
    probe = [
        "--trainer.callbacks+=crash_probe.CopyLastAt",
        "--trainer.callbacks.step=30",
        f"--trainer.callbacks.path={copy}",
    ]
    two = run_cli(
        "fit",
        *SEARCH,
        *cli_args(cifar10_dir, tmp_path / "two", *SPLIT_TWO, *every, steps=40),
        *probe,
        env=PROBES,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert torch.load(copy, weights_only=True)["global_step"] == 30
    fit_on(1, *SEARCH, "--ckpt_path", str(copy), *cli_args(cifar10_dir, tmp_path / "mid", *every, steps=80))
    assert_same_end(tmp_path / "straight", tmp_path / "mid")
    fit_on(1, *SEARCH, "--ckpt_path", "last", *cli_args(cifar10_dir, tmp_path / "two", *every, steps=80))
    assert_same_end(tmp_path / "straight", tmp_path / "two", version=1)


def test_two_nodes_launched_by_torchrun_equal_one_device(cifar10_dir, tmp_path):
    """2 nodes x 1 process on this machine, each started by torchrun as on a cluster without SLURM."""
    grid = ["--model.lr", "[0.01, 0.05, 0.1]", "--model.reg", "[0.0, 0.01]"]
    main(["fit", *grid, *cli_args(cifar10_dir, tmp_path / "one")])
    port = free_port()
    # Each node's output goes to a file: a pipe that is not read while the other node runs could fill and block it.
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    nodes = []
    for rank, log in enumerate(logs):
        with open(log, "w") as out:
            nodes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "torch.distributed.run",
                        "--nnodes",
                        "2",
                        "--nproc-per-node",
                        "1",
                        "--node_rank",
                        str(rank),
                        "--master_addr",
                        "127.0.0.1",
                        "--master_port",
                        str(port),
                        str(REPO / "train.py"),
                        "fit",
                        *grid,
                        *cli_args(cifar10_dir, tmp_path / "two", "--trainer.num_nodes", "2"),
                    ],
                    cwd=REPO,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    try:
        for rank, (node, log) in enumerate(zip(nodes, logs)):
            try:
                status = node.wait(timeout=300)
            except subprocess.TimeoutExpired:
                pytest.fail(f"torchrun node {rank} did not end within 300 s; its log ends:\n{log.read_text()[-3000:]}")
            assert status == 0, f"torchrun node {rank} exited with {status}; its log ends:\n{log.read_text()[-3000:]}"
    finally:
        for node in nodes:
            kill_group(node)
    assert "sweep: 6 configs" in logs[0].read_text()
    assert torch.allclose(last_w(tmp_path / "two"), last_w(tmp_path / "one"), rtol=1e-5, atol=1e-7)
    assert_same_sweep(sweep_json(tmp_path / "one"), sweep_json(tmp_path / "two"))


def test_mapped_features_split_by_configs_over_two_processes_equal_one_device(tmp_path):
    """A probe's memory-mapped features: every process maps the same files and trains its configs on them."""
    import numpy as np

    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, 16))
    files = []
    for name, rows in (("train", 200), ("val", 60)):
        labels = np.arange(rows) % 4
        np.save(tmp_path / f"{name}_x.npy", (means[labels] + rng.normal(0, 2.0, size=(rows, 16))).astype(np.float32))
        np.save(tmp_path / f"{name}_y.npy", labels)
        files += [f"--data.{name}={tmp_path / f'{name}_x.npy'}", f"--data.{name}_labels={tmp_path / f'{name}_y.npy'}"]
    probe = ["--data", "lit_linear.FeaturesDataModule", *files, "--model.lr", "[0.01, 0.05, 0.1]"]
    common = ["--model.reg", "[0.0, 0.01]", "--data.batch_size", "20", "--trainer.max_steps", "40"]
    common += ["--trainer.val_check_interval", "20", "--trainer.accelerator", "cpu", "--seed_everything", "0"]
    common += ["--trainer.enable_progress_bar", "false"]
    main(["fit", *probe, *common, "--data.mmap", "false", "--trainer.default_root_dir", str(tmp_path / "one")])
    two = run_cli(
        "fit",
        *probe,
        *common,
        *TWO,
        "--data.mmap",
        "true",
        "--model.split",
        "configs",
        "--trainer.default_root_dir",
        str(tmp_path / "two"),
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("memory-mapped from disk") == 1, "one line, from rank 0"
    assert torch.allclose(last_w(tmp_path / "two"), last_w(tmp_path / "one"), rtol=1e-5, atol=1e-7)
    assert_same_sweep(sweep_json(tmp_path / "one"), sweep_json(tmp_path / "two"))
