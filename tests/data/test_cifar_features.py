"""CIFARDataModule's extracted features: fitted on the training split, cached, and carried into best_model.pt."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import cli_args

from lit_linear import LinearClassifier
from lit_linear.cli import main
from lit_linear.data.cifar import get_spec, load_split

KMEANS = ["--data.features", "kmeans", "--data.kmeans.num_centroids", "8", "--data.kmeans.num_patches", "2000"]
KMEANS += ["--data.kmeans.iterations", "3", "--data.kmeans.patch_size", "5"]


def run(root, version=0):
    return root / "lightning_logs" / f"version_{version}"


@pytest.mark.parametrize("features", [KMEANS, ["--data.features", "hog_color"]], ids=["kmeans", "hog_color"])
def test_best_model_predicts_raw_images_as_predict_does(cifar10_dir, tmp_path, features):
    cache = ["--data.feature_cache", str(tmp_path / "cache")]
    main(["fit", *cli_args(cifar10_dir, tmp_path, *features, *cache, steps=20)])
    # best_model.pt is the best config at the last validation: last.ckpt's weights.
    main(["predict", *cli_args(cifar10_dir, tmp_path, *features, *cache, steps=20), "--ckpt_path", "last"])
    (path,) = tmp_path.rglob("predictions.csv")
    with open(path) as f:
        predicted = [int(row["predicted_label"]) for row in csv.DictReader(f)]
    model = LinearClassifier.load(run(tmp_path) / "best_model.pt")
    images, _ = load_split(cifar10_dir / "cifar-10-batches-py", get_spec("cifar10"), "test")
    assert model.extractor is not None and model.weight.shape[0] == model.extractor.out_features + 1
    agree = (model.predict(images) == torch.tensor(predicted)).float().mean()
    assert agree > 0.98  # float32 rounding of the standardized features may flip a near tie


def test_a_second_fit_reads_the_cache_and_another_setting_builds_anew(cifar10_dir, tmp_path, capfd):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cache = ["--data.feature_cache", str(tmp_path / "cache")]
    board = ["--trainer.callbacks+=lit_linear.SweepTensorBoard"]
    main(["fit", *cli_args(cifar10_dir, tmp_path / "a", *KMEANS, *cache, *board, steps=20)])
    assert "kmeans features" in capfd.readouterr().out, "the first fit extracts, with a progress bar"
    # TensorBoard shows the k-means dictionary, and no class templates (the weights are no image).
    events = EventAccumulator(str(run(tmp_path / "a")), size_guidance={"images": 0})
    events.Reload()
    assert "features/dictionary" in events.Tags()["images"] and "best/templates" not in events.Tags()["images"]
    (image,) = events.Images("features/dictionary")
    side = 3 * (5 * 3 + 4)  # 3 x 3 tiles of 5 pixels, 1-pixel padding, drawn 3 times larger
    assert (image.width, image.height) == (side, side)
    main(["fit", *cli_args(cifar10_dir, tmp_path / "b", *KMEANS, *cache, steps=20)])
    assert "kmeans features" not in capfd.readouterr().out, "the second reads the cache"
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    main(["fit", *cli_args(cifar10_dir, tmp_path / "c", *KMEANS, "--data.kmeans.num_centroids", "6", *cache, steps=20)])
    assert "kmeans features" in capfd.readouterr().out
    after = sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    assert len(entries) == 1 and len(after) == 2
    A, B = (torch.load(run(tmp_path / r) / "checkpoints" / "last.ckpt")["state_dict"]["W"] for r in "ab")
    assert torch.equal(A, B), "the cached features train as the extracted ones"
