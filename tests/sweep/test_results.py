"""The results tables: a search best first (as halving ranked its configs), a grid in its own order."""

from __future__ import annotations

import math

from lit_linear.sweep.results import ConfigResult, SweepResult

# Five configs of a halved search after 60 steps, in the order they were drawn.
CONFIGS = (
    ConfigResult(0.1, 1e-3, 0.40, 0.30, 1.9, "stopped", 20),
    ConfigResult(0.2, 1e-3, 0.50, 0.41, 1.7, "ok"),
    ConfigResult(9e5, 0.0, 0.10, 0.60, math.nan, "diverged"),  # a high accuracy, but never usable
    ConfigResult(0.3, 1e-2, 0.50, 0.45, 1.6, "stopped", 40),  # above the survivors' accuracy, but lost at 40
    ConfigResult(0.4, 1e-2, 0.50, 0.41, 1.6, "ok"),  # ties the best on val accuracy, lower train loss
)


def rows(table: str) -> list[list[str]]:
    return [line.split() for line in table.splitlines()[2:-1]]


def test_a_search_lists_its_configs_as_halving_ranked_them():
    result = SweepResult("softmax", 60, CONFIGS, best_index=1, search=True)
    # further first, then val accuracy, ties by lower train loss; diverged last
    assert result.order() == [4, 1, 3, 0, 2]
    table = rows(result.table())
    assert [row[0] for row in table] == ["4.000e-01", "2.000e-01", "3.000e-01", "1.000e-01", "9.000e+05"]
    assert [row[5:7] for row in table] == [
        ["ok", "-"],
        ["ok", "-"],
        ["stopped", "40"],
        ["stopped", "20"],
        ["diverged", "-"],
    ]
    assert table[1][-2:] == ["<-", "best"]  # the module's choice stays marked
    markdown = result.markdown().splitlines()
    assert markdown[:2] == ["| lr | reg | train acc | val acc | train loss | status | stopped at |", "|---" * 7 + "|"]
    assert markdown[3].endswith("| ok **(best)** | - |") and markdown[4].endswith("| stopped | 40 |")


def test_the_best_of_a_search_is_its_first_row():
    result = SweepResult("softmax", 60, CONFIGS, best_index=4, search=True)
    assert rows(result.table())[0][-2:] == ["<-", "best"] and result.order()[0] == result.best_index


def test_a_config_without_a_train_loss_ranks_last_among_equal_accuracies():
    # validate measures no train loss: the accuracies alone rank, and an unmeasured loss never wins a tie
    configs = (ConfigResult(0.1, 0.0, 0.5, 0.4, None, "ok"), ConfigResult(0.2, 0.0, 0.5, 0.4, 2.0, "ok"))
    assert SweepResult("svm", 10, configs, 1, search=True).order() == [1, 0]


def test_a_grid_keeps_its_lr_by_reg_order_and_its_columns():
    table = SweepResult("softmax", 60, CONFIGS, best_index=1).table()
    assert [row[0] for row in rows(table)] == ["1.000e-01", "2.000e-01", "9.000e+05", "3.000e-01", "4.000e-01"]
    assert table.splitlines()[1].split()[-1] == "status"
    assert rows(table)[0][5:] == ["stopped", "at", "20"] and rows(table)[1][5:] == ["ok", "<-", "best"]


def test_sweep_json_keeps_the_drawn_order_for_a_search(tmp_path):
    SweepResult("softmax", 60, CONFIGS, 1, search=True).write_json(tmp_path / "search.json")
    SweepResult("softmax", 60, CONFIGS, 1).write_json(tmp_path / "grid.json")
    assert (tmp_path / "search.json").read_bytes() == (tmp_path / "grid.json").read_bytes()
