"""ConfigShards and model.split: which configs a rank trains, and the refusals of a split that cannot apply."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import cli_args, run_main

from lit_linear.errors import ConfigError
from lit_linear.maths.optim import GridSGD
from lit_linear.sweep.shards import config_share, resolve_split


@pytest.mark.parametrize(
    ("split", "configs", "processes", "resolved"),
    [
        ("auto", 25, 2, "configs"),
        ("auto", 2, 2, "configs"),
        ("auto", 1, 2, "minibatch"),
        ("auto", 3, 1, "configs"),
        ("minibatch", 25, 2, "minibatch"),
        ("configs", 4, 4, "configs"),
    ],
)
def test_auto_splits_the_configs_when_there_are_enough(split, configs, processes, resolved):
    assert resolve_split(split, configs, processes) == resolved


def test_configs_with_fewer_configs_than_processes_is_refused():
    with pytest.raises(
        ConfigError, match=r"model.split configs needs at least as many configs as processes: 3 configs on 4"
    ):
        resolve_split("configs", 3, 4)
    with pytest.raises(ConfigError, match=r"model.split must be one of configs, minibatch, auto, got 'rows'"):
        resolve_split("rows", 3, 1)


@pytest.mark.parametrize("live", [1, 2, 5, 25, 400])
@pytest.mark.parametrize("world_size", [2, 3, 8])
def test_every_live_config_goes_to_one_rank_and_no_rank_holds_more_than_its_share(live, world_size):
    shares = [config_share(live, rank, world_size) for rank in range(world_size)]
    assert sorted(torch.cat(shares).tolist()) == list(range(live))
    assert max(len(s) for s in shares) == math.ceil(live / world_size)


def test_a_rank_left_without_configs_still_counts_the_steps():
    """After halving, fewer configs may live than there are processes: an empty grid steps on."""
    W = torch.nn.Parameter(torch.zeros(5, 0, 3))
    optimizer = GridSGD([W], lr=[], reg=[])
    loss = optimizer.step(lambda: (torch.zeros(0), torch.ones(4, 5), torch.zeros(4, 0)))
    assert loss.shape == (0,) and int(optimizer.state[W]["step"]) == 1


def test_hold_moves_the_per_config_state_to_another_grid():
    W = torch.nn.Parameter(torch.zeros(4, 2, 3))
    optimizer = GridSGD([W], lr=[0.1, 0.2], reg=[0.0, 1.0])
    optimizer.step(lambda: (torch.zeros(2), torch.ones(1, 4), torch.zeros(1, 6)))
    whole = torch.nn.Parameter(torch.zeros(4, 3, 3))
    optimizer.hold(whole, [0.1, 0.3, 0.2], [0.0, 0.5, 1.0], torch.tensor([1.0, 0.0, 1.0]))
    state = optimizer.state[whole]
    assert optimizer.param_groups[0]["params"] == [whole] and W not in optimizer.state
    assert int(state["step"]) == 1  # shared by every config, carried over
    assert state["lr"].tolist() == pytest.approx([0.1, 0.3, 0.2]) and state["live"].tolist() == [1.0, 0.0, 1.0]
    assert optimizer.diverged().tolist() == [False, True, False]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.split", "rows"], "model.split"),
        (
            [
                "--model.split",
                "configs",
                "--model.lr",
                "0.1",
                "--model.reg",
                "0.0",
                "--trainer.devices",
                "2",
                "--trainer.strategy",
                "ddp",
            ],
            "error: model.split configs needs at least as many configs as processes: 1 configs on 2",
        ),
    ],
    ids=["unknown value", "fewer configs than processes"],
)
def test_a_split_that_cannot_apply_is_refused_before_data_is_read(tmp_path, capfd, extra, message):
    # A data folder that does not exist: the refusal must come first, naming the option.
    args = cli_args(tmp_path / "no_data_here", tmp_path, *extra)
    result = run_main(capfd, "fit", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "CIFAR" not in result.stderr
