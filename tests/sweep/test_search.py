"""Search, not only grids: log-uniform draws of (lr, reg) and successive halving inside the one tensor."""

from __future__ import annotations

import json
import math

import lightning.pytorch as pl
import pytest
import torch
from conftest import REPO, cli_args, run_main, table_rows, val_acc_steps

from lit_linear import LinearClassifier, LinearClassifierModule
from lit_linear.cli import main
from lit_linear.sweep.configs import LogUniform, as_axis, sweep_configs

SEARCH = [
    "--model.lr",
    "{low: 0.001, high: 0.5}",
    "--model.reg",
    "{low: 1.0e-4, high: 0.1}",
    "--model.num_configs",
    "9",
]


# --- drawing configs ---------------------------------------------------------------------------
def test_ranges_are_drawn_log_uniformly_from_the_seed_alone():
    lr, reg = LogUniform(1e-3, 1.0), LogUniform(1e-4, 1e-1)
    configs = sweep_configs(lr, reg, 2000, seed=7)
    assert len(configs) == 2000 and configs == sweep_configs(lr, reg, 2000, seed=7)
    assert configs != sweep_configs(lr, reg, 2000, seed=8)
    lrs = torch.tensor([c[0] for c in configs], dtype=torch.float64)
    assert bool((lrs >= 1e-3).all() and (lrs <= 1.0).all())
    # Log-uniform: each decade of [1e-3, 1] holds about a third of the draws.
    decades = torch.histc(lrs.log10(), bins=3, min=-3, max=0) / len(configs)
    assert torch.allclose(decades, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.05), decades


def test_one_axis_a_range_the_other_a_list_or_a_number():
    configs = sweep_configs(LogUniform(0.01, 0.1), [0.0, 1e-3], 50, seed=0)
    assert {reg for _, reg in configs} == {0.0, 1e-3}
    assert all(0.01 <= lr <= 0.1 for lr, _ in configs)
    assert {
        reg for _, reg in sweep_configs(as_axis(0.5, "model.lr", allow_zero=False), LogUniform(1e-4, 1e-2), 5, 0)
    } != {0.5}
    assert {lr for lr, _ in sweep_configs([0.5], LogUniform(1e-4, 1e-2), 5, 0)} == {0.5}


def test_a_grid_stays_a_grid():
    assert sweep_configs([0.1, 0.2], [0.0, 1e-3], None, seed=0) == [(0.1, 0.0), (0.1, 1e-3), (0.2, 0.0), (0.2, 1e-3)]


def test_the_module_draws_from_seed_everything(tmp_path):
    pl.seed_everything(3)
    a = LinearClassifierModule(lr={"low": 0.01, "high": 1.0}, reg=1e-3, num_configs=6)
    torch.randn(100)  # other draws in between do not matter
    pl.seed_everything(3)
    b = LinearClassifierModule(lr={"low": 0.01, "high": 1.0}, reg=1e-3, num_configs=6)
    assert a.configs == b.configs and len(a.configs) == 6 and a.W.shape == (3073, 6, 10)


# --- successive halving --------------------------------------------------------------------------
def fit_search(data_dir, root, *extra, steps=60, interval=20):
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "softmax_search.yaml"),
            *SEARCH,
            "--model.halving_factor",
            "3",
            *cli_args(data_dir, root, *extra, steps=steps, interval=interval),
        ]
    )
    return root / "lightning_logs" / "version_0"


def per_config_val_acc(run) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves = {}
    for folder in sorted(p for p in run.iterdir() if p.is_dir() and p.name.startswith("lr=")):
        accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        accumulator.Reload()
        curves[folder.name] = {e.step: e.value for e in accumulator.Scalars("acc/val")}
    return curves


@pytest.mark.slow
def test_halving_keeps_the_best_third_at_each_validation_but_the_last(cifar10_dir, tmp_path):
    run = fit_search(cifar10_dir, tmp_path)  # 9 configs, validations at 20, 40, 60: 9 -> 3 -> 1
    sweep = json.loads((run / "sweep.json").read_text())
    statuses = [(c["status"], c["stopped_at"]) for c in sweep["configs"]]
    assert sorted(statuses, key=str) == sorted([("stopped", 20)] * 6 + [("stopped", 40)] * 2 + [("ok", None)], key=str)
    assert val_acc_steps(run) == [20, 40, 60]
    # The kept configs had the best val accuracy at the halving (curves in TensorBoard end where a config stopped).
    curves = per_config_val_acc(run)
    names = [f"lr={c['lr']:.6g},reg={c['reg']:.6g}" for c in sweep["configs"]]
    for step in (20, 40):
        stopped = [curves[n][step] for n, c in zip(names, sweep["configs"]) if c["stopped_at"] == step]
        kept = [
            curves[n][step]
            for n, c in zip(names, sweep["configs"])
            if c["stopped_at"] is None or c["stopped_at"] > step
        ]
        assert min(kept) >= max(stopped), (step, kept, stopped)
    for name, config in zip(names, sweep["configs"]):
        assert max(curves[name]) == (config["stopped_at"] or 60), "a stopped config's curves end where it stopped"
        # It keeps its last metrics.
        assert config["val_acc"] == pytest.approx(curves[name][max(curves[name])], abs=1e-6)
    # The best is the one config that reached the last validation; its weights are all that is left.
    (survivor,) = [c for c in sweep["configs"] if c["status"] == "ok"]
    assert (sweep["best"]["lr"], sweep["best"]["reg"]) == (survivor["lr"], survivor["reg"])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"]["W"].shape == (3073, 1, 10)
    assert LinearClassifier.load(run / "best_model.pt").info["lr"] == survivor["lr"]


@pytest.mark.slow
def test_a_search_resumed_between_halvings_ends_as_a_straight_fit(cifar10_dir, tmp_path):
    extra = ("--model.halving_factor", "2", "--last_checkpoint.every_n_train_steps", "20")
    straight = fit_search(cifar10_dir, tmp_path / "straight", *extra, steps=80)
    fit_search(cifar10_dir, tmp_path / "resumed", *extra, steps=40)  # its last validation, at 40, halves on resume
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "softmax_search.yaml"),
            *SEARCH,
            *extra,
            "--ckpt_path",
            "last",
            *cli_args(cifar10_dir, tmp_path / "resumed", steps=80, interval=20),
        ]
    )
    resumed = tmp_path / "resumed" / "lightning_logs" / "version_1"
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert torch.equal(a["state_dict"]["W"], b["state_dict"]["W"]) and torch.equal(
        a["state_dict"]["columns"], b["state_dict"]["columns"]
    )
    assert json.loads((straight / "sweep.json").read_text()) == json.loads((resumed / "sweep.json").read_text())
    model_a, model_b = (
        LinearClassifier.load(straight / "best_model.pt"),
        LinearClassifier.load(resumed / "best_model.pt"),
    )
    assert torch.equal(model_a.weight, model_b.weight) and model_a.info == model_b.info


@pytest.mark.slow
def test_validate_keeps_what_halving_recorded_and_remeasures_the_rest(cifar10_dir, tmp_path, capsys):
    run = fit_search(cifar10_dir, tmp_path)  # 9 configs, validations at 20, 40, 60: 9 -> 3 -> 1
    fit_title, fit_rows = table_rows(capsys.readouterr().out)
    main(
        [
            "validate",
            "--config",
            str(REPO / "configs" / "softmax_search.yaml"),
            *SEARCH,
            "--model.halving_factor",
            "3",
            "--ckpt_path",
            "last",
            *cli_args(cifar10_dir, tmp_path),
        ]
    )
    title, rows = table_rows(capsys.readouterr().out)
    assert title == fit_title == "softmax sweep: 9 configs after 60 steps"
    sweep = json.loads((run / "sweep.json").read_text())
    # A search's table is best first in validate too: the survivor, then those stopped at 40, then at 20.
    assert [row[:2] for row in rows] == [row[:2] for row in fit_rows]
    assert [row[5] for row in rows] == ["ok"] + ["stopped"] * 8 and rows[0][-2:] == ["<-", "best"]
    assert [row[6] for row in rows[1:]] == ["40"] * 2 + ["20"] * 6
    for row, fit_row in zip(rows, fit_rows):
        config = next(c for c in sweep["configs"] if [f"{c['lr']:.3e}", f"{c['reg']:.3e}"] == row[:2])
        if config["status"] == "stopped":  # left W at a halving: its recorded results, loss included
            assert row == fit_row and row[6] == str(config["stopped_at"])
        else:  # the survivor, measured again
            assert row[:4] + row[5:] == fit_row[:4] + fit_row[5:] and row[4] == "-"
    assert sum(row[-2:] == ["<-", "best"] for row in rows) == 1


@pytest.mark.slow
def test_test_and_predict_use_the_survivor_of_a_halved_search(cifar10_dir, tmp_path, capfd):
    run = fit_search(cifar10_dir, tmp_path)
    result = run_main(
        capfd,
        "test",
        "--config",
        str(REPO / "configs" / "softmax_search.yaml"),
        *SEARCH,
        "--model.halving_factor",
        "3",
        "--ckpt_path",
        "best",
        *cli_args(cifar10_dir, tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert math.isfinite(float(json.loads((run / "sweep.json").read_text())["best"]["val_acc"]))
