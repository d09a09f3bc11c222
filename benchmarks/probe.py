"""Linear-probe benchmark: this package's sweep against scikit-learn and DINOv2-style heads, on the same features.

    python benchmarks/probe.py --data-dir /path/to/folder-with-cifar-10-batches-py [--out results/probe.json]

Two feature sets, each standardized with the training split's statistics, every method given the same rows:
CIFAR-10 pixels (pixels / 255 minus the training mean; train = the first 40,000 training images, val = the
last 10,000) and synthetic features with planted classes (40,000 + 10,000 rows of 512, 100 classes).

- lit_linear: ``python train.py fit --data lit_linear.FeaturesDataModule`` over a 5 x 5 lr x reg softmax grid,
  the whole command timed (start-up included);
- scikit-learn: ``LogisticRegression(lbfgs, max_iter=200)`` at each of the 5 regularization values, as
  ``C = 1 / (2 * reg * N)`` (its objective ``C * sum(CE) + ||W||^2 / 2`` is ours, ``mean(CE) + reg * ||W||^2``,
  times ``C * N``), one after another;
- DINOv2-style heads: one ``nn.Linear`` per learning rate, all on each minibatch, autograd and SGD with
  momentum 0.9 and a cosine schedule, as DINOv2's ``eval/linear.py`` trains its heads (no weight-decay axis).

Prints best val accuracy and wall time per method. scikit-learn comes with the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import load_data, machine, write_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
LRS = [0.005, 0.01, 0.02, 0.05, 0.1]
STEPS, BATCH = 2000, 200


def cifar_pixels(data_dir: str) -> dict[str, np.ndarray]:
    dm = load_data(data_dir)
    x = {}
    for name, rows in (("train", dm.train_images), ("val", dm.val_images)):
        x[name] = torch.add(dm.pixel_mean.neg(), rows.float(), alpha=1.0 / 255.0).numpy()
    return {
        "train_x": x["train"],
        "train_y": dm.train_labels.numpy(),
        "val_x": x["val"],
        "val_y": dm.val_labels.numpy(),
    }


def planted(n_train: int = 40_000, n_val: int = 10_000, dim: int = 512, classes: int = 100) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    means = rng.normal(0.0, 1.0, size=(classes, dim))
    out = {}
    for name, n in (("train", n_train), ("val", n_val)):
        y = rng.integers(0, classes, size=n)
        out[f"{name}_x"] = (means[y] + rng.normal(0.0, 6.0, size=(n, dim))).astype(np.float32)
        out[f"{name}_y"] = y
    return out


def standardized(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    mean, std = data["train_x"].mean(0), data["train_x"].std(0, ddof=1)
    std = np.where(std > 0, std, 1.0)
    return {**data, "train_x": (data["train_x"] - mean) / std, "val_x": (data["val_x"] - mean) / std}


def ours(data: dict[str, np.ndarray], folder: str) -> tuple[float, float]:
    for key, value in data.items():
        np.save(os.path.join(folder, f"{key}.npy"), value)
    command = [sys.executable, os.path.join(REPO, "train.py"), "fit", "--data", "lit_linear.FeaturesDataModule"]
    for name in ("train", "val"):
        command += [f"--data.{name}", os.path.join(folder, f"{name}_x.npy")]
        command += [f"--data.{name}_labels", os.path.join(folder, f"{name}_y.npy")]
    command += ["--data.normalize", "standardize", "--model.lr", json.dumps(LRS), "--model.reg", json.dumps(REGS)]
    command += ["--model.lr_decay", "0.75", "--model.lr_decay_every", "200", "--trainer.max_steps", str(STEPS)]
    command += ["--trainer.val_check_interval", "500", "--trainer.accelerator", "cpu", "--seed_everything", "0"]
    command += ["--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", folder]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    with open(os.path.join(folder, "lightning_logs", "version_0", "sweep.json"), encoding="utf-8") as f:
        return json.load(f)["best"]["val_acc"], seconds


def scikit_learn(data: dict[str, np.ndarray]) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    best, start = 0.0, time.perf_counter()
    for reg in REGS:
        model = LogisticRegression(C=1.0 / (2 * reg * len(data["train_y"])), max_iter=200)
        model.fit(data["train_x"], data["train_y"])
        best = max(best, model.score(data["val_x"], data["val_y"]))
    return best, time.perf_counter() - start


def dinov2_heads(data: dict[str, np.ndarray]) -> tuple[float, float]:
    torch.manual_seed(0)
    X, y = torch.from_numpy(data["train_x"]).float(), torch.from_numpy(data["train_y"]).long()
    Xv, yv = torch.from_numpy(data["val_x"]).float(), torch.from_numpy(data["val_y"]).long()
    classes = int(y.max()) + 1
    heads = torch.nn.ModuleList(torch.nn.Linear(X.shape[1], classes) for _ in LRS)
    for head in heads:
        torch.nn.init.normal_(head.weight, std=0.01)
        torch.nn.init.zeros_(head.bias)
    groups = [{"params": head.parameters(), "lr": lr} for head, lr in zip(heads, LRS)]
    optimizer = torch.optim.SGD(groups, momentum=0.9, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, STEPS, eta_min=0)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(STEPS):
        rows = torch.randint(len(y), (BATCH,), generator=generator)
        loss = sum(torch.nn.functional.cross_entropy(head(X[rows]), y[rows]) for head in heads)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    with torch.no_grad():
        best = max(float((head(Xv).argmax(1) == yv).float().mean()) for head in heads)
    return best, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for name, data in (("CIFAR-10 pixels", cifar_pixels(args.data_dir)), ("planted, 100 classes", planted())):
        with tempfile.TemporaryDirectory() as folder:
            ours_acc, ours_s = ours(data, folder)
        features = standardized(data)
        sk_acc, sk_s = scikit_learn(features)
        dino_acc, dino_s = dinov2_heads(features)
        rows.append(
            {
                "features": name,
                "lit_linear": [ours_acc, ours_s],
                "sklearn": [sk_acc, sk_s],
                "dinov2_heads": [dino_acc, dino_s],
            }
        )
    print(f"\nprobe benchmark: {len(LRS)} x {len(REGS)} grid, {STEPS} steps of {BATCH} ({machine()})")
    print(f"{'features':22s} {'method':28s} {'best val':>9s} {'seconds':>8s} {'time / sklearn':>15s}")
    for row in rows:
        for method, label in (
            ("lit_linear", "lit_linear, 25 configs"),
            ("sklearn", "scikit-learn, 5 C values"),
            ("dinov2_heads", "DINOv2-style, 5 lr heads"),
        ):
            acc, seconds = row[method]
            ratio = seconds / row["sklearn"][1]
            print(f"{row['features']:22s} {label:28s} {100 * acc:8.2f}% {seconds:8.1f} {ratio:15.2f}")
    gaps = [100 * (row["sklearn"][0] - row["lit_linear"][0]) for row in rows]
    print(f"lit_linear's best val below scikit-learn's: {', '.join(f'{g:+.2f}' for g in gaps)} points (target <= 0.5)")
    write_json(args.out, {"machine": machine(), "rows": rows, "lrs": LRS, "regs": REGS, "steps": STEPS})


if __name__ == "__main__":
    main()
