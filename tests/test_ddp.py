"""Several devices give the same result as one: DDP over two CPU processes (gloo) vs one process."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO, cli_args, run_cli, table_rows

pytestmark = pytest.mark.slow


def last_w(root):
    (ckpt,) = root.glob("lightning_logs/version_0/checkpoints/last.ckpt")
    return torch.load(ckpt, weights_only=True)["state_dict"]["W"]


def test_two_ddp_processes_equal_one_device(cifar10_dir, tmp_path):
    """A search with successive halving: every rank draws the same configs and keeps the same ones."""
    grid = ["--model.lr", "{low: 0.01, high: 0.2}", "--model.reg", "[0.0, 0.01]", "--model.num_configs", "6",
            "--model.halving_factor", "2"]  # fmt: skip
    probe = ["--trainer.callbacks+=ddp_probe.RankProbe", f"--trainer.callbacks.out_dir={tmp_path / 'ranks'}"]
    env = {"PYTHONPATH": str(REPO / "tests")}
    one = run_cli("fit", *grid, *cli_args(cifar10_dir, tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_cli(
        "fit", *grid, *cli_args(cifar10_dir, tmp_path / "two", "--trainer.devices", "2", "--trainer.strategy", "ddp"),
        *probe, env=env, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]

    # Every rank holds the same W: the hand-computed gradient was averaged across ranks.
    rank0, rank1 = (torch.load(tmp_path / "ranks" / f"W_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.equal(rank0, rank1)
    assert rank0.shape == (3073, 3, 10), "halved at step 20: 6 -> 3 configs, the same on both ranks"

    # ... and it is the W of one device with the same global batch.
    w_one, w_two = last_w(tmp_path / "one"), last_w(tmp_path / "two")
    assert torch.equal(w_two, rank0)
    assert torch.allclose(w_two, w_one, rtol=1e-5, atol=1e-7)
    sweep_one, sweep_two = (json.loads(next(r.glob("lightning_logs/version_0/sweep.json")).read_text())
                            for r in (tmp_path / "one", tmp_path / "two"))  # fmt: skip
    assert sweep_two["best"] == pytest.approx(sweep_one["best"])
    for a, b in zip(sweep_one["configs"], sweep_two["configs"]):
        assert (a["lr"], a["reg"], a["status"], a["stopped_at"]) == (b["lr"], b["reg"], b["status"], b["stopped_at"])
        assert (a["train_acc"], a["val_acc"]) == pytest.approx((b["train_acc"], b["val_acc"]), abs=1e-9)


def test_test_and_predict_under_ddp_equal_one_device(cifar10_dir, tmp_path):
    """Each rank scores its shard of the test split; the metric and the CSV gather them all."""
    import re

    root = tmp_path / "run"
    grid = ["--model.lr", "[0.01, 0.1]", "--model.reg", "[0.0, 0.01]"]
    assert run_cli("fit", *grid, *cli_args(cifar10_dir, root)).returncode == 0
    outputs = {}
    for name, devices in (("one", []), ("two", ["--trainer.devices", "2", "--trainer.strategy", "ddp"])):
        test = run_cli("test", *grid, "--ckpt_path", "best", *cli_args(cifar10_dir, root, *devices), timeout=600)
        assert test.returncode == 0, test.stderr[-3000:]
        before = set((root / "lightning_logs").iterdir())
        predict = run_cli("predict", *grid, "--ckpt_path", "best", *cli_args(cifar10_dir, root, *devices), timeout=600)
        assert predict.returncode == 0, predict.stderr[-3000:]
        (run,) = set((root / "lightning_logs").iterdir()) - before
        outputs[name] = (re.search(r"test/acc\s*│?\s*([0-9.]+)", test.stdout).group(1), (run / "predictions.csv").read_text())
    assert outputs["one"] == outputs["two"]
    assert outputs["one"][1].count("\n") == 61


def test_validate_under_ddp_equals_one_device(cifar10_dir, tmp_path):
    """Each rank measures its shard of both splits; the accuracies sum the shards, so the table is the same."""
    root = tmp_path / "run"
    grid = ["--model.lr", "{low: 0.01, high: 0.2}", "--model.reg", "[0.0, 0.01]", "--model.num_configs", "6",
            "--model.halving_factor", "2"]  # fmt: skip
    assert run_cli("fit", *grid, *cli_args(cifar10_dir, root)).returncode == 0
    printed = {}
    for name, devices in (("one", []), ("two", ["--trainer.devices", "2", "--trainer.strategy", "ddp"])):
        result = run_cli("validate", *grid, "--ckpt_path", "last", *cli_args(cifar10_dir, root, *devices), timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        title, rows = table_rows(result.stdout)
        metrics = result.stdout.split("Validate metric")[1]
        printed[name] = (title, rows, metrics)
    assert printed["one"] == printed["two"]
    title, rows, metrics = printed["one"]
    assert title == "softmax sweep: 6 configs after 40 steps"
    assert sum(row[5] == "stopped" for row in rows) == 3, "halved at step 20: 6 -> 3, recorded in the checkpoint"
