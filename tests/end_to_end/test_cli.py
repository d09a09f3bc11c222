"""End to end through the CLI (``python train.py ...`` in a subprocess, CPU): fit, test, predict."""

from __future__ import annotations

import csv
import json
import logging
import re
from importlib.metadata import entry_points
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import REPO, cli_args, run_cli, run_main, table_rows, val_acc_steps

from lit_linear import LinearClassifier, LinearClassifierModule
from lit_linear.cli import main
from lit_linear.data.cifar import load_split
from lit_linear.data.cifar_module import CIFARDataModule

pytestmark = pytest.mark.slow


# The sweep of the ``fitted`` fixture: validate, test and predict name it the same way.
FITTED = [
    "--config",
    str(REPO / "configs" / "softmax.yaml"),
    "--model.lr",
    "[0.01, 0.1]",
    "--model.reg",
    "[0.0, 0.001]",
]


@pytest.fixture(scope="module")
def fitted(cifar10_dir, tmp_path_factory):
    """One 2 x 2 softmax sweep from the command line; its run folder."""
    root = tmp_path_factory.mktemp("run")
    result = run_cli("fit", *FITTED, *cli_args(cifar10_dir, root, steps=100, interval=50))
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def run_dir(root: Path, version: int = 0) -> Path:
    return root / "lightning_logs" / f"version_{version}"


def test_fit_writes_the_run_under_the_root_folder(fitted):
    root, result = fitted
    run = run_dir(root)
    for name in ("config.yaml", "sweep.json", "best_model.pt", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert {p.name for p in root.iterdir()} == {"lightning_logs"}, "everything lands under --trainer.default_root_dir"
    sweep = json.loads((run / "sweep.json").read_text())
    assert [(c["lr"], c["reg"]) for c in sweep["configs"]] == [(0.01, 0.0), (0.01, 0.001), (0.1, 0.0), (0.1, 0.001)]
    assert set(sweep["best"]) == {"lr", "reg", "train_acc", "val_acc"}
    # The results table is printed, best marked.
    assert "softmax sweep: 4 configs after 100 steps" in result.stdout
    assert re.search(r"<- best", result.stdout)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 100
    assert f"run written to {run}" in result.stdout
    assert "LeafSpec" not in result.stderr, "Lightning's internal deprecation is silenced"


def test_test_subcommand_scores_the_best_config(fitted, cifar10_dir, capfd):
    root, _ = fitted
    for ckpt_path in ("best", "last", str(run_dir(root) / "checkpoints" / "best.ckpt")):
        result = run_main(capfd, "test", *FITTED, "--ckpt_path", ckpt_path, *cli_args(cifar10_dir, root))
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"test results logged to {root / 'lightning_logs'}" in result.stdout
        match = re.search(r"test/acc\s*│?\s*([0-9.]+)", result.stdout)
        assert match, result.stdout
        model = LinearClassifier.load(run_dir(root) / "best_model.pt")
        images, labels = load_split(cifar10_dir / "cifar-10-batches-py", CIFARDataModule().spec, "test")
        expected = (model.predict(images) == labels).double().mean().item()
        assert float(match.group(1)) == pytest.approx(expected, abs=1e-4)


def test_predict_subcommand_writes_predictions_csv(fitted, cifar10_dir, capfd):
    root, _ = fitted
    before = set((root / "lightning_logs").iterdir())
    result = run_main(capfd, "predict", *FITTED, "--ckpt_path", "best", *cli_args(cifar10_dir, root))
    assert result.returncode == 0, result.stderr[-3000:]
    (new_run,) = set((root / "lightning_logs").iterdir()) - before
    assert f"predictions written to {new_run / 'predictions.csv'}" in result.stdout
    assert "Couldn't infer the batch indices" not in result.stderr and "LeafSpec" not in result.stderr
    with open(new_run / "predictions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "predicted_label", "predicted_class", "true_label", "true_class"]
    model = LinearClassifier.load(run_dir(root) / "best_model.pt")
    images, labels = load_split(cifar10_dir / "cifar-10-batches-py", CIFARDataModule().spec, "test")
    expected = model.predict(images).tolist()
    assert [int(r[0]) for r in rows[1:]] == list(range(len(expected)))
    assert [int(r[1]) for r in rows[1:]] == expected
    assert [r[2] for r in rows[1:]] == [model.class_names[y] for y in expected]
    assert [int(r[3]) for r in rows[1:]] == labels.tolist()
    assert [r[4] for r in rows[1:]] == [model.class_names[y] for y in labels.tolist()]


def files_of(run: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(run)): (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*") if p.is_file()}


def lightning_metrics(stdout: str) -> dict[str, list[str]]:
    """Lightning's printed ``Validate metric`` table: each metric's values, one per loader column."""
    rows = [line.replace("│", " ").split() for line in stdout.split("Validate metric")[1].splitlines()[2:]]
    return {row[0]: row[1:] for row in rows if row and "─" not in row[0]}


def test_validate_remeasures_the_checkpoints_configs(fitted, cifar10_dir, capfd):
    root, fit = fitted
    run = run_dir(root)
    before = files_of(run)
    _, fit_rows = table_rows(fit.stdout)
    for ckpt_path in ("best", "last", str(run / "checkpoints" / "last.ckpt")):
        result = run_main(capfd, "validate", *FITTED, "--ckpt_path", ckpt_path, *cli_args(cifar10_dir, root))
        assert result.returncode == 0, result.stderr[-3000:]
        name = "best" if ckpt_path == "best" else "last"
        step = torch.load(run / "checkpoints" / f"{name}.ckpt", weights_only=True)["global_step"]
        assert step > 0
        title, rows = table_rows(result.stdout)
        assert title == f"softmax sweep: 4 configs after {step} steps"
        assert [row[4] for row in rows] == ["-"] * 4, "no training ran: no train loss to show"
        (best,) = [row for row in rows if row[-2:] == ["<-", "best"]]
        if name == "last":  # the fit's final validation, measured again: the same accuracies, status and best
            assert [row[:4] + row[5:] for row in rows] == [row[:4] + row[5:] for row in fit_rows]
        # Lightning's own table: one column, the checkpoint's step, each metric once, nothing unmeasured.
        metrics = lightning_metrics(result.stdout)
        assert metrics.keys() == {"step", "train/acc", "val/acc"} and "nan" not in result.stdout
        assert metrics["step"] == [f"{float(step)}"]
        assert float(metrics["val/acc"][0]) == pytest.approx(float(best[3].rstrip("%")) / 100, abs=1e-6)
        assert float(metrics["train/acc"][0]) == pytest.approx(float(best[2].rstrip("%")) / 100, abs=1e-6)
    assert files_of(run) == before, "validate writes nothing into the fit's run folder"


def test_validate_keeps_the_recorded_status_of_a_diverged_config(cifar10_dir, tmp_path, capsys):
    grid = ["--model.lr", "[0.05, 1.0e30]", "--model.reg", "0.0"]
    main(["fit", *grid, *cli_args(cifar10_dir, tmp_path)])
    sweep = json.loads((run_dir(tmp_path) / "sweep.json").read_text())
    assert [c["status"] for c in sweep["configs"]] == ["ok", "diverged"]
    W = torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["W"]
    assert torch.isfinite(W).all(), "frozen by its non-finite loss, not by its weights: only the optimizer knows"
    capsys.readouterr()
    main(["validate", *grid, "--ckpt_path", "last", *cli_args(cifar10_dir, tmp_path)])
    _, rows = table_rows(capsys.readouterr().out)
    assert [row[5:] for row in rows] == [["ok", "<-", "best"], ["diverged"]]
    assert float(rows[0][3].rstrip("%")) == pytest.approx(100 * sweep["configs"][0]["val_acc"], abs=0.006)


def test_validate_without_a_checkpoint_is_refused_before_reading_data(tmp_path, capfd):
    result = run_main(capfd, "validate", *cli_args(tmp_path / "no_data", tmp_path / "runs"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "--ckpt_path" in line and "not found" not in result.stderr
    assert not (tmp_path / "runs").exists(), "nothing validated, nothing logged"


def test_test_without_a_checkpoint_explains_what_is_missing(cifar10_dir, tmp_path, capfd):
    result = run_main(capfd, "test", *cli_args(cifar10_dir, tmp_path))
    assert result.returncode != 0
    assert "--ckpt_path" in result.stderr and "Traceback" not in result.stderr


def test_ckpt_path_best_without_a_fit_names_where_it_looked(cifar10_dir, tmp_path, capfd):
    result = run_main(capfd, "test", "--ckpt_path", "best", *cli_args(cifar10_dir, tmp_path))
    assert result.returncode == 2
    assert "no best.ckpt" in result.stderr and str(tmp_path) in result.stderr


def test_ckpt_path_best_takes_the_newest_run_of_this_config(cifar10_dir, tmp_path, capfd, caplog):
    """fit softmax, then fit svm: test --config softmax --ckpt_path best takes the softmax run."""
    for config in ("softmax.yaml", "svm.yaml"):
        fit = run_main(
            capfd, "fit", "--config", str(REPO / "configs" / config), *cli_args(cifar10_dir, tmp_path, steps=20)
        )
        assert fit.returncode == 0, fit.stderr[-3000:]
    # Lightning names the checkpoint it restores in a log record (its stream handler is not capfd's).
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        result = run_main(
            capfd,
            "test",
            "--config",
            str(REPO / "configs" / "softmax.yaml"),
            "--ckpt_path",
            "best",
            *cli_args(cifar10_dir, tmp_path),
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"checkpoint path at {run_dir(tmp_path, 0) / 'checkpoints' / 'best.ckpt'}" in caplog.text
    other = run_main(
        capfd,
        "test",
        "--config",
        str(REPO / "configs" / "softmax.yaml"),
        "--ckpt_path",
        "last",
        "--model.reg",
        "0.5",
        *cli_args(cifar10_dir, tmp_path),
    )
    assert other.returncode == 2
    (line,) = [line for line in other.stderr.splitlines() if line.startswith("error:")]
    assert "lightning_logs/version_0: model.reg 0.001 (this run 0.5)" in line
    assert "lightning_logs/version_1: model.loss 'svm' (this run 'softmax')" in line


def assert_documented(text: str, options: dict[str, str]) -> None:
    for option, words in options.items():
        entry = f"\n  {option} "
        assert entry in text, option
        block = text[text.index(entry) :][:400]
        assert words in block, (option, words)


def test_help_documents_every_model_and_data_option(capfd):
    result = run_main(capfd, "fit", "--help")
    assert result.returncode == 0
    assert_documented(
        result.stdout,
        {
            "--model.loss": "svm",
            "--model.lr": "learning rate",
            "--model.reg": "L2 strength",
            "--model.lr_decay": "every",
            "--data": "lit_linear.CIFARDataModule",
            "--last_checkpoint.every_n_train_steps": "steps between saves",
        },
    )
    cifar = run_main(capfd, "fit", "--data.help", "CIFARDataModule")
    assert_documented(cifar.stdout, {"--data.data_dir": "cifar-10-batches-py", "--data.val_ratio": "validation"})
    features = run_main(capfd, "fit", "--data.help", "FeaturesDataModule")
    assert_documented(features.stdout, {"--data.train": ".npy", "--data.normalize": "standardize"})
    assert "--model.num_classes" not in result.stdout, "linked from the data module, not an option"
    assert "--optimizer" not in result.stdout and "--lr_scheduler" not in result.stdout, "GridSGD is the update"
    assert "steps_per_batch" not in result.stdout, "the package groups steps itself"


def test_an_optimizer_option_is_refused_in_one_line(tmp_path, capfd):
    result = run_main(capfd, "fit", *cli_args(tmp_path, tmp_path / "run"), "--optimizer", "Adam")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--optimizer" in result.stderr


def test_console_script_is_installed():
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "lit-linear"]
    assert script.value == "lit_linear.cli:main"


# --- Lightning's own options keep their meaning: counts in SGD steps, debugging switches, the bar ---
@pytest.mark.parametrize("config", ["softmax.yaml", "softmax_sweep.yaml", "svm.yaml", "svm_sweep.yaml"])
def test_every_shipped_config_counts_steps_and_validation_in_sgd_steps(cifar10_dir, tmp_path, config):
    main(["fit", "--config", str(REPO / "configs" / config), *cli_args(cifar10_dir, tmp_path, steps=300, interval=100)])
    run = run_dir(tmp_path)
    assert val_acc_steps(run) == [100, 200, 300]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 300
    assert json.loads((run / "sweep.json").read_text())["step"] == 300


def test_a_max_steps_off_the_interval_still_validates_the_final_weights(cifar10_dir, tmp_path):
    main(["fit", *cli_args(cifar10_dir, tmp_path, steps=50, interval=20)])
    assert val_acc_steps(run_dir(tmp_path)) == [20, 40, 50]
    assert json.loads((run_dir(tmp_path) / "sweep.json").read_text())["step"] == 50


def test_last_checkpoint_interval_counts_sgd_steps(cifar10_dir, tmp_path, monkeypatch):
    saved = []
    save = pl.Trainer.save_checkpoint

    def record(trainer, path, *args, **kwargs):
        if Path(path).name == "last.ckpt":
            saved.append(trainer.global_step)
        return save(trainer, path, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "save_checkpoint", record)
    main(
        ["fit", *cli_args(cifar10_dir, tmp_path, "--last_checkpoint.every_n_train_steps", "30", steps=90, interval=20)]
    )
    assert saved == [30, 60, 90]


@pytest.mark.parametrize("value, steps", [("true", 1), ("5", 5)])
def test_fast_dev_run_trains_that_many_steps_validates_once_and_writes_nothing(
    cifar10_dir, tmp_path, monkeypatch, capsys, value, steps
):
    validations = []
    end = LinearClassifierModule.on_validation_epoch_end
    monkeypatch.setattr(
        LinearClassifierModule,
        "on_validation_epoch_end",
        lambda self: (validations.append(self.global_step), end(self)),
    )
    main(["fit", *cli_args(cifar10_dir, tmp_path / "root"), "--trainer.fast_dev_run", value])
    assert validations == [steps]
    assert f"1 configs after {steps} steps" in capsys.readouterr().out
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").rglob("*")), "no logs, no checkpoints"
