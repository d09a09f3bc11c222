"""End to end through the CLI (``python train.py ...`` in a subprocess, CPU): fit, test, predict."""

from __future__ import annotations

import csv
import json
import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from conftest import REPO, cli_args, run_cli

from lit_linear import LinearClassifier
from lit_linear.cifar import load_split
from lit_linear.data import CIFARDataModule

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fitted(cifar10_dir, tmp_path_factory):
    """One 2 x 2 softmax sweep from the command line; its run folder."""
    root = tmp_path_factory.mktemp("run")
    result = run_cli(
        "fit", "--config", str(REPO / "configs" / "softmax.yaml"),
        "--model.lr", "[0.01, 0.1]", "--model.reg", "[0.0, 0.001]",
        *cli_args(cifar10_dir, root, steps=100, interval=1),  # softmax.yaml: 50 steps a batch, so every 50 steps
    )  # fmt: skip
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


def test_test_subcommand_scores_the_best_config(fitted, cifar10_dir):
    root, _ = fitted
    for ckpt_path in ("best", "last", str(run_dir(root) / "checkpoints" / "best.ckpt")):
        result = run_cli(
            "test", "--config", str(REPO / "configs" / "softmax.yaml"),
            "--model.lr", "[0.01, 0.1]", "--model.reg", "[0.0, 0.001]",
            "--ckpt_path", ckpt_path, *cli_args(cifar10_dir, root),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        match = re.search(r"test/acc\s*│?\s*([0-9.]+)", result.stdout)
        assert match, result.stdout
        model = LinearClassifier.load(run_dir(root) / "best_model.pt")
        images, labels = load_split(cifar10_dir / "cifar-10-batches-py", CIFARDataModule().spec, "test")
        expected = (model.predict(images) == labels).double().mean().item()
        assert float(match.group(1)) == pytest.approx(expected, abs=1e-4)


def test_predict_subcommand_writes_predictions_csv(fitted, cifar10_dir):
    root, _ = fitted
    before = set((root / "lightning_logs").iterdir())
    result = run_cli(
        "predict", "--config", str(REPO / "configs" / "softmax.yaml"),
        "--model.lr", "[0.01, 0.1]", "--model.reg", "[0.0, 0.001]",
        "--ckpt_path", "best", *cli_args(cifar10_dir, root),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (new_run,) = set((root / "lightning_logs").iterdir()) - before
    with open(new_run / "predictions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "label", "class_name"]
    model = LinearClassifier.load(run_dir(root) / "best_model.pt")
    images, _ = load_split(cifar10_dir / "cifar-10-batches-py", CIFARDataModule().spec, "test")
    expected = model.predict(images).tolist()
    assert [int(r[0]) for r in rows[1:]] == list(range(len(expected)))
    assert [int(r[1]) for r in rows[1:]] == expected
    assert [r[2] for r in rows[1:]] == [model.class_names[y] for y in expected]


def test_test_without_a_checkpoint_explains_what_is_missing(cifar10_dir, tmp_path):
    result = run_cli("test", *cli_args(cifar10_dir, tmp_path))
    assert result.returncode != 0
    assert "--ckpt_path" in result.stderr and "Traceback" not in result.stderr


def test_ckpt_path_best_without_a_fit_names_where_it_looked(cifar10_dir, tmp_path):
    result = run_cli("test", "--ckpt_path", "best", *cli_args(cifar10_dir, tmp_path))
    assert result.returncode == 2
    assert "no best.ckpt" in result.stderr and str(tmp_path) in result.stderr


def test_help_documents_every_model_and_data_option():
    result = run_cli("fit", "--help")
    assert result.returncode == 0
    for option, words in {
        "--model.loss": "svm",
        "--model.lr": "learning rate",
        "--model.reg": "L2 strength",
        "--model.lr_decay": "every",
        "--data.data_dir": "cifar-10-batches-py",
        "--data.val_ratio": "validation",
        "--last_checkpoint.every_n_train_steps": "steps between saves",
    }.items():
        entry = f"\n  {option} "
        assert entry in result.stdout, option
        block = result.stdout[result.stdout.index(entry) :][:400]
        assert words in block, (option, words)
    assert "--model.num_classes" not in result.stdout, "linked from the data module, not an option"


def test_console_script_is_installed():
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "lit-linear"]
    assert script.value == "lit_linear.cli:main"
