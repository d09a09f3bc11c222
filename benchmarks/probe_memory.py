"""ImageNet-sized features in bounded memory: a memory-mapped probe's peak RSS, and its exact resume.

    python benchmarks/probe_memory.py [--dir /tmp/imagenet_size] [--out results/probe_memory.json]

Writes (once) synthetic features the size of ImageNet-1k's training set under a ViT-B backbone:
1,281,167 x 768 float16 (a 1.97 GB ``.npy``), 1000 planted classes, and 50,000 validation rows. Then
runs ``python train.py fit`` with ``lit_linear.FeaturesDataModule`` (mapped: the file is over 1 GiB)
on 20 configs x 200 steps, standardized, reporting the child's peak RSS (target: under 1.5 GB); and
resumes a second fit from the first one's mid-fit checkpoint (step 100), comparing the final W.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, write_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TRAIN, N_VAL, D, C = 1_281_167, 50_000, 768, 1000


def write_split(folder: str, name: str, rows: int, means: np.ndarray, seed: int) -> None:
    """``{name}_x.npy`` (rows, D) float16 = a planted class mean + noise, and ``{name}_y.npy``, in chunks."""
    x_path, y_path = os.path.join(folder, f"{name}_x.npy"), os.path.join(folder, f"{name}_y.npy")
    if os.path.exists(x_path) and os.path.exists(y_path):
        return
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, size=rows)
    x = np.lib.format.open_memmap(x_path + ".tmp", mode="w+", dtype=np.float16, shape=(rows, D))
    for lo in range(0, rows, 65_536):
        hi = min(lo + 65_536, rows)
        x[lo:hi] = (means[labels[lo:hi]] + rng.normal(0.0, 4.0, size=(hi - lo, D))).astype(np.float16)
    x.flush()
    del x
    os.replace(x_path + ".tmp", x_path)
    np.save(y_path, labels)


def fit(folder: str, root: str, *extra: str) -> float:
    command = [sys.executable, os.path.join(REPO, "train.py"), "fit", "--data", "lit_linear.FeaturesDataModule"]
    for name in ("train", "val"):
        command += [f"--data.{name}", os.path.join(folder, f"{name}_x.npy")]
        command += [f"--data.{name}_labels", os.path.join(folder, f"{name}_y.npy")]
    command += ["--model.lr", "[0.01, 0.03, 0.1, 0.3, 1.0]", "--model.reg", "[0.0, 1e-5, 1e-4, 1e-3]"]
    command += ["--trainer.max_steps", "200", "--trainer.val_check_interval", "100", "--seed_everything", "0"]
    command += ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    command += ["--trainer.default_root_dir", root, *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def final_weights(root: str, version: int) -> torch.Tensor:
    path = os.path.join(root, "lightning_logs", f"version_{version}", "checkpoints", "last.ckpt")
    return torch.load(path, weights_only=True, mmap=True)["state_dict"]["W"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "lit_linear_imagenet_size"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    means = np.random.default_rng(0).normal(0.0, 1.0, size=(C, D))
    start = time.perf_counter()
    write_split(args.dir, "train", N_TRAIN, means, seed=1)
    write_split(args.dir, "val", N_VAL, means, seed=2)
    written = time.perf_counter() - start
    size_gb = os.path.getsize(os.path.join(args.dir, "train_x.npy")) / 1e9
    with tempfile.TemporaryDirectory() as root:
        keep = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.every_n_train_steps", "100"]
        keep += ["--trainer.callbacks.save_top_k", "-1", "--trainer.callbacks.dirpath", os.path.join(root, "every")]
        seconds = fit(args.dir, root, *keep)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports kB
        (mid,) = [p for p in os.listdir(os.path.join(root, "every")) if "step=100" in p]
        resumed_seconds = fit(args.dir, root, "--ckpt_path", os.path.join(root, "every", mid))
        exact = torch.equal(final_weights(root, 0), final_weights(root, 1))
    print(f"\nprobe memory: {N_TRAIN} x {D} float16 ({size_gb:.2f} GB, mapped), {C} classes ({machine()})")
    print(f"files written in {written:.0f} s; fit of 20 configs x 200 steps: {seconds:.0f} s")
    print(f"peak RSS of the fits {peak_mb:.0f} MB (target < 1536 MB); resumed from step 100: W equal = {exact}")
    payload = {"machine": machine(), "peak_rss_mb": peak_mb, "fit_s": seconds, "resumed_fit_s": resumed_seconds}
    write_json(args.out, {**payload, "resume_exact": exact, "train_gb": size_gb})


if __name__ == "__main__":
    main()
