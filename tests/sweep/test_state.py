"""SweepState: the sweep's configs, live columns, statistics and decisions, in one unit; old checkpoints still load."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import cli_args

from lit_linear.cli import main
from lit_linear.maths.optim import GridSGD
from lit_linear.sweep.results import ConfigResult
from lit_linear.sweep.state import SweepState

FIXTURE = Path(__file__).parent.parent / "fixtures" / "search_step30_e8583c9.ckpt"
# The search the fixture was saved from, at commit e8583c9 (before SweepState): 4 configs halved to 2 at step
# 20, saved at step 30 of 60 (last.ckpt copied by crash_probe.CopyLastAt), on write_cifar10's default data.
FIXTURE_RUN = [
    "--model.lr",
    "{low: 0.01, high: 0.2}",
    "--model.reg",
    "[0.0, 0.01]",
    "--model.num_configs",
    "4",
    "--model.halving_factor",
    "2",
    "--last_checkpoint.every_n_train_steps",
    "10",
]


def state(K=4, D=7, C=3, halving_factor=2.0):
    configs = [(0.1 * (k + 1), 0.0) for k in range(K)]
    return SweepState(configs, "softmax", torch.zeros(D, C), halving_factor)


def result(k, val_acc, train_loss, status="ok"):
    return ConfigResult(0.1 * (k + 1), 0.0, 1.0, val_acc, train_loss, status)


def test_halving_keeps_the_best_by_val_accuracy_then_lower_loss_and_stops_the_rest():
    sweep = state()
    latest = {0: result(0, 0.5, 1.0), 1: result(1, 0.7, 2.0), 2: result(2, 0.5, 0.5), 3: result(3, 0.7, None)}
    given = dict(latest)
    assert sweep.survivors(latest, step=20) == {1, 3}, "equal accuracies: the lower loss first, an unmeasured one last"
    assert latest == given, "the caller's results are not changed"
    assert sweep.survivors({0: result(0, 0.5, 1.0), 1: result(1, 0.5, 1.0, "diverged")}, step=20) == {0}
    assert {k: (r.status, r.stopped_at) for k, r in sweep.stopped.items()} == {
        0: ("stopped", 20),
        2: ("stopped", 20),
        1: ("diverged", None),
    }


def test_the_best_config_is_never_a_diverged_one():
    sweep = state()
    stats = torch.tensor(
        [[1.0, 0.9, 1.0, 1.0], [1.0, 0.6, 1.0, 0.0], [1.0, 0.8, math.nan, 0.0], [1.0, 0.1, 1.0, 0.0]],
        dtype=torch.float64,
    )
    live = sweep.record(torch.arange(4), stats)
    assert int(sweep.best_index) == 2 and live[0].status == "diverged" and live[2].train_loss is None
    sweep.record(torch.arange(4), stats.index_fill(1, torch.tensor([3]), 1.0))
    assert int(sweep.best_index) == -1


def test_holding_fewer_columns_shrinks_w_its_statistics_and_the_optimizers_state():
    sweep = state()
    sweep.W.data = torch.arange(7 * 4 * 3, dtype=torch.float32).view(7, 4, 3)
    sweep.loss_sum.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    optimizer = GridSGD([sweep.W], *sweep.axes())
    before = sweep.W.detach().clone()
    keep = torch.tensor([1, 3])
    sweep.hold(keep, before[:, keep], sweep.loss_sum[keep], optimizer=optimizer, active=torch.tensor([1.0, 0.0]))
    assert sweep.columns.tolist() == [1, 3] and torch.equal(sweep.W, before[:, [1, 3]])
    assert sweep.loss_sum.tolist() == [2.0, 4.0] and optimizer.param_groups[0]["params"][0] is sweep.W
    assert optimizer.param_groups[0]["lr"] == pytest.approx([0.2, 0.4])
    assert optimizer.state[sweep.W]["lr"].tolist() == pytest.approx([0.2, 0.4]) and optimizer.active().tolist() == [
        1.0,
        0.0,
    ]
    assert sweep.weights_of(0) is None and torch.equal(sweep.weights_of(3), before[:, 3])


def test_checkpoints_keep_the_tensor_names_of_earlier_versions(cifar10_dir, tmp_path):
    main(["fit", *FIXTURE_RUN, *cli_args(cifar10_dir, tmp_path, steps=20)])
    (ckpt,) = tmp_path.rglob("last.ckpt")
    keys = set(torch.load(ckpt, weights_only=True)["state_dict"])
    old = set(torch.load(FIXTURE, weights_only=True)["state_dict"])
    assert old == {"W", "pixel_mean", "best_index", "columns", "loss_sum", "loss_steps"}
    assert keys == old | {"feature_scale"}, "the old names stay; feature_scale (features' normalization) is new"


def test_a_checkpoint_saved_before_sweepstate_resumes_as_a_straight_fit(cifar10_dir, tmp_path):
    """Saved by the earlier code mid-fit, after a halving; float32, so the comparison allows another CPU's rounding."""
    main(["fit", *FIXTURE_RUN, *cli_args(cifar10_dir, tmp_path / "straight", steps=60)])
    old = tmp_path / "old.ckpt"
    shutil.copyfile(FIXTURE, old)
    main(["fit", *FIXTURE_RUN, "--ckpt_path", str(old), *cli_args(cifar10_dir, tmp_path / "resumed", steps=60)])
    runs = [tmp_path / name / "lightning_logs" / "version_0" for name in ("straight", "resumed")]
    (a, b) = (torch.load(run / "checkpoints" / "last.ckpt", weights_only=True) for run in runs)
    assert a["global_step"] == b["global_step"] == 60
    assert torch.equal(a["state_dict"]["columns"], b["state_dict"]["columns"])
    assert torch.allclose(a["state_dict"]["W"], b["state_dict"]["W"], rtol=1e-5, atol=1e-7)
    sweeps = [json.loads((run / "sweep.json").read_text()) for run in runs]
    assert [(c["status"], c["stopped_at"]) for c in sweeps[0]["configs"]] == [
        (c["status"], c["stopped_at"]) for c in sweeps[1]["configs"]
    ]
    assert sweeps[0]["best"] == pytest.approx(sweeps[1]["best"], abs=1 / 60)
