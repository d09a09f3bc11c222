"""FeaturesDataModule: a probe's features go through the CIFAR path's engine, in memory or memory-mapped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO, cli_args, run_main

from lit_linear import CIFARDataModule, FeaturesDataModule, LinearClassifier
from lit_linear.cli import main

STEPS = ["--trainer.max_steps", "40", "--trainer.val_check_interval", "20"]
GRID = ["--model.lr", "[0.05, 0.2]", "--model.reg", "[0.0, 0.01]"]


def pixel_features(cifar10_dir, folder):
    """The tiny CIFAR folder's splits written as the CIFAR path's features (pixels / 255 - mean): train, val and
    test ``.npy`` files; returns their paths by name."""
    dm = CIFARDataModule(data_dir=str(cifar10_dir), download=False)
    dm.setup("fit")
    dm.setup("test")
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    splits = {"train": dm.train_images, "val": dm.val_images, "test": dm.test_images}
    labels = {"train": dm.train_labels, "val": dm.val_labels, "test": dm.test_labels}
    for name, rows in splits.items():
        # The op preprocess runs on uint8 pixels, so the float32 values are the CIFAR path's own.
        x = torch.add(dm.pixel_mean.neg(), rows.float(), alpha=1.0 / 255.0)
        np.save(folder / f"{name}_x.npy", x.numpy())
        np.save(folder / f"{name}_y.npy", labels[name].numpy())
        paths[name], paths[f"{name}_labels"] = folder / f"{name}_x.npy", folder / f"{name}_y.npy"
    return paths


def feature_args(paths, root, *extra):
    args = ["--data", "lit_linear.FeaturesDataModule"]
    for key in ("train", "train_labels", "val", "val_labels", "test", "test_labels"):
        if key in paths:
            args += [f"--data.{key}", str(paths[key])]
    args += ["--data.batch_size", "20", "--trainer.accelerator", "cpu", "--trainer.devices", "1"]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    return [*args, "--trainer.default_root_dir", str(root), "--seed_everything", "0", *STEPS, *GRID, *extra]


def run_folder(root):
    return root / "lightning_logs" / "version_0"


def configs(root):
    return json.loads((run_folder(root) / "sweep.json").read_text())["configs"]


def last_weights(root):
    return torch.load(run_folder(root) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["W"]


def test_pixels_written_as_features_train_exactly_as_the_cifar_path(cifar10_dir, tmp_path):
    paths = pixel_features(cifar10_dir, tmp_path / "features")
    main(["fit", *cli_args(cifar10_dir, tmp_path / "cifar", *STEPS[:0], *GRID)])
    main(["fit", *feature_args(paths, tmp_path / "probe", "--data.normalize", "none")])
    assert configs(tmp_path / "probe") == configs(tmp_path / "cifar")
    assert torch.equal(last_weights(tmp_path / "probe"), last_weights(tmp_path / "cifar"))


@pytest.fixture(scope="module")
def probe_files(cifar10_dir, tmp_path_factory):
    return pixel_features(cifar10_dir, tmp_path_factory.mktemp("probe_files"))


def test_a_memory_mapped_split_trains_as_one_in_memory_and_says_which(probe_files, tmp_path, capfd):
    main(["fit", *feature_args(probe_files, tmp_path / "memory", "--data.mmap", "false")])
    assert "on the cpu" in capfd.readouterr().out
    main(["fit", *feature_args(probe_files, tmp_path / "mapped", "--data.mmap", "true")])
    assert "memory-mapped from disk" in capfd.readouterr().out
    assert torch.equal(last_weights(tmp_path / "mapped"), last_weights(tmp_path / "memory"))
    assert configs(tmp_path / "mapped") == configs(tmp_path / "memory")


def test_a_mapped_fit_resumes_exactly_from_a_mid_fit_checkpoint(probe_files, tmp_path):
    mapped = ["--data.mmap", "true", "--model.halving_factor", "2"]
    main(["fit", *feature_args(probe_files, tmp_path / "straight", *mapped)])
    main(["fit", *feature_args(probe_files, tmp_path / "first", *mapped, "--trainer.max_steps", "30")])
    early = run_folder(tmp_path / "first") / "checkpoints" / "last.ckpt"
    main(["fit", *feature_args(probe_files, tmp_path / "first", *mapped, "--ckpt_path", str(early))])
    resumed = tmp_path / "first" / "lightning_logs" / "version_1"
    W = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["W"]
    assert torch.equal(W, last_weights(tmp_path / "straight"))
    assert (resumed / "sweep.json").read_text() == (run_folder(tmp_path / "straight") / "sweep.json").read_text()


def test_standardized_features_keep_their_statistics_in_the_checkpoint_and_best_model(probe_files, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"class{c}\n" for c in range(10)))
    main(["fit", *feature_args(probe_files, tmp_path, "--data.class_names", str(names))])
    train = torch.from_numpy(np.load(probe_files["train"]))
    mean, std = train.double().mean(0), train.double().std(0)
    state = torch.load(run_folder(tmp_path) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.allclose(state["feature_scale"].double(), 1 / std, rtol=1e-5)
    assert torch.allclose(state["pixel_mean"].double(), mean / std, rtol=1e-4, atol=1e-5)
    model = LinearClassifier.load(run_folder(tmp_path) / "best_model.pt")
    assert model.class_names == [f"class{c}" for c in range(10)]
    test = torch.from_numpy(np.load(probe_files["test"]))
    X = torch.cat([(test.double() - mean) / std, torch.ones(len(test), 1, dtype=torch.float64)], 1)
    expected = (X @ model.weight.double()).argmax(1)
    assert (model.predict(test) == expected).float().mean() > 0.99  # float32 rounding may flip a near tie


def test_test_and_predict_read_the_test_features(probe_files, tmp_path, capfd):
    main(["fit", *feature_args(probe_files, tmp_path)])
    main(["predict", *feature_args(probe_files, tmp_path), "--ckpt_path", "best"])
    (csv,) = tmp_path.rglob("predictions.csv")
    rows = csv.read_text().splitlines()
    assert rows[0].startswith("index,predicted_label") and len(rows) == 1 + len(np.load(probe_files["test"]))


def save(path, value):
    np.save(path, value)
    return path


def bad_case(tmp, case):
    """Files for one bad input: (paths, the text the error line must hold)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)).astype(np.float32), np.arange(40) % 4
    paths = {"train": save(tmp / "x.npy", x), "train_labels": save(tmp / "y.npy", y)}
    if case == "missing file":
        paths["train"] = tmp / "nowhere.npy"
        return paths, "nowhere.npy not found"
    if case == "rows differ":
        paths["train_labels"] = save(tmp / "y.npy", y[:30])
        return paths, "has 30 rows but train features"
    if case == "NaN":
        x[17, 2] = np.nan
        paths["train"] = save(tmp / "x.npy", x)
        return paths, "NaN or infinite value in row 17"
    if case == "label out of range":
        paths["val"], paths["val_labels"] = save(tmp / "vx.npy", x[:10]), save(tmp / "vy.npy", y[:10] + 4)
        return paths, "vy.npy hold 4 in row 0, out of range [0, 4)"
    if case == "sizes differ":
        paths["val"], paths["val_labels"] = save(tmp / "vx.npy", x[:10, :5]), save(tmp / "vy.npy", y[:10])
        return paths, "have D=6 but val features"
    if case == "pickle":
        paths["train"] = save(tmp / "x.npy", np.array([{"a": 1}] * 40, dtype=object))
        return paths, "pickle is never allowed"
    raise AssertionError(case)


CASES = ["missing file", "rows differ", "NaN", "label out of range", "sizes differ", "pickle"]


@pytest.mark.parametrize("case", CASES)
def test_a_bad_feature_file_is_one_error_line_before_anything_is_written(tmp_path, capfd, case):
    paths, message = bad_case(tmp_path, case)
    result = run_main(capfd, "fit", *feature_args(paths, tmp_path / "run"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_normalize_takes_its_three_values_only(tmp_path):
    paths, _ = bad_case(tmp_path, "NaN")  # the option is checked before any file is read
    with pytest.raises(ValueError, match="data.normalize must be one of none, center, standardize"):
        FeaturesDataModule(str(paths["train"]), str(paths["train_labels"]), normalize="whiten")


def test_the_shipped_probe_config_runs_on_a_users_files(probe_files, tmp_path):
    config = str(REPO / "configs" / "probe_sweep.yaml")
    files = [f"--data.{key}={probe_files[key]}" for key in ("train", "train_labels", "val", "val_labels")]
    short = [
        "--trainer.max_steps",
        "20",
        "--trainer.val_check_interval",
        "10",
        "--trainer.enable_progress_bar",
        "false",
    ]
    root = ["--trainer.default_root_dir", str(tmp_path), "--trainer.accelerator", "cpu"]
    main(["fit", "--config", config, *files, *short, *root, "--data.batch_size", "20"])
    results = json.loads((run_folder(tmp_path) / "sweep.json").read_text())
    assert len(results["configs"]) == 25 and results["best"] is not None
