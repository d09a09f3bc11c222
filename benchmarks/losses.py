"""Loss benchmark: naive loops vs vectorized, and the grid loss's cost per config as K grows.

    python benchmarks/losses.py [--data-dir /path/to/folder-with-cifar-10-batches-py] [--out results/losses.json]

On 500 x 3073 rows (real CIFAR-10 validation images if --data-dir is given, else random ones) with
W = 1e-4 * randn(3073, 10): seconds per call of each loss, naive and vectorized, and the speed-up
(the course saw about 80x for softmax). Then the vectorized grid loss on a 200-row minibatch at
K = 1, 5, 25 configs (DKC layout): seconds per call and per config.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import load_data, machine, median, write_json  # noqa: E402

from lit_linear.features.preprocess import preprocess
from lit_linear.maths.losses import softmax_loss_vectorized, svm_loss_vectorized
from lit_linear.maths.naive import softmax_loss_naive, svm_loss_naive


def per_call(fn, repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py (optional)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    if args.data_dir:
        dm = load_data(args.data_dir)
        X = preprocess(dm.val_images[:500], dm.pixel_mean)
        y = dm.val_labels[:500]
    else:
        X = torch.cat([torch.rand(500, 3072) - 0.5, torch.ones(500, 1)], dim=1)
        y = torch.randint(0, 10, (500,))
    W = 1e-4 * torch.randn(3073, 10)

    rows = []
    print(f"\nloss benchmark, 500 x 3073, C = 10 ({machine()})")
    print(f"{'loss':8s} {'naive s':>9s} {'vectorized s':>13s} {'speed-up':>9s}")
    for name, naive, vectorized in (
        ("svm", svm_loss_naive, svm_loss_vectorized),
        ("softmax", softmax_loss_naive, softmax_loss_vectorized),
    ):
        t_naive = per_call(lambda f=naive: f(W, X, y, 1e-3), 3)
        t_vec = per_call(lambda f=vectorized: f(W, X, y, 1e-3), 50)
        rows.append({"loss": name, "naive_s": t_naive, "vectorized_s": t_vec, "speedup": t_naive / t_vec})
        print(f"{name:8s} {t_naive:9.4f} {t_vec:13.6f} {t_naive / t_vec:8.0f}x")

    grid_rows = []
    Xb, yb = X[:200], y[:200]
    print("\ngrid loss on a 200-row minibatch (DKC layout)")
    print(f"{'loss':8s} {'K':>3s} {'ms per call':>12s} {'ms per config':>14s}")
    for name, vectorized in (("svm", svm_loss_vectorized), ("softmax", softmax_loss_vectorized)):
        for K in (1, 5, 25):
            Wg = W.unsqueeze(1).repeat(1, K, 1)  # (D, K, C)
            reg = torch.full((K,), 1e-3)
            t = per_call(lambda f=vectorized, Wg=Wg, reg=reg: f(Wg, Xb, yb, reg, layout="DKC"), 200)
            grid_rows.append({"loss": name, "K": K, "ms_per_call": 1e3 * t, "ms_per_config": 1e3 * t / K})
            print(f"{name:8s} {K:3d} {1e3 * t:12.3f} {1e3 * t / K:14.3f}")
    write_json(args.out, {"machine": machine(), "naive_vs_vectorized": rows, "grid": grid_rows})


if __name__ == "__main__":
    main()
