"""Sweep benchmark: the course's 20-config softmax grid trained four ways, timed in one process.

    python benchmarks/sweep.py --data-dir /path/to/folder-with-cifar-10-batches-py [--out results/sweep.json]

(a) the course's way: a plain PyTorch loop, one config after another, with the package's
    vectorized loss (``loss, dW = softmax_loss_vectorized(W, X, y, reg); W -= lr * dW``; same sampler);
(a') the package's own training maths (grid_loss_factored, GridSGD), one config after another;
(b) the same grid as one batched plain loop (all 20 configs share each minibatch);
(c) ``Trainer.fit`` of LinearClassifierModule with the shipped settings (configs/softmax_sweep.yaml
    with the course's grid; progress bar off; data loaded beforehand, as for a and b);
(d) the floor: only the two matrix products a batched step must do, at their shapes, ``steps`` times.
Prints seconds, the ratios a/c, a'/c, c/b and c/d (medians over --repeats), and the best val
accuracy of (a), (a'), (b) and (c), which must agree: they train the same configs on the same minibatches.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import lightning.pytorch as pl
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    COURSE_LRS,
    COURSE_REGS,
    REPO,
    accuracy,
    course_loop,
    load_data,
    machine,
    median,
    plain_loop,
    shipped_fit,
    write_json,
)


def course_grid_fit(data_dir: str, root: str, steps: int) -> tuple[float, float]:
    """(c): fit the course grid with configs/softmax_sweep.yaml's settings; (seconds, best val acc)."""
    seconds, model = shipped_fit(
        "softmax_sweep.yaml", data_dir, root, steps, "--model.lr", str(COURSE_LRS), "--model.reg", str(COURSE_REGS)
    )
    return seconds, model.results.best.val_acc


def floor(steps: int, K: int, N: int = 200, D: int = 3073, C: int = 10) -> float:
    """(d): the scores and gradient products of one batched step, ``steps`` times."""
    X, W, G = torch.randn(N, D), torch.randn(D, K * C), torch.randn(N, K * C)
    start = time.perf_counter()
    for _ in range(steps):
        X @ W  # scores (N, K*C)
        X.t() @ G  # gradient (D, K*C)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="timings are medians over this many runs")
    parser.add_argument("--root", default="/tmp/lit_linear_bench", help="run folder for (c)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    dm = load_data(args.data_dir)
    with open(os.path.join(REPO, "configs", "softmax_sweep.yaml"), encoding="utf-8") as f:
        model = yaml.safe_load(f)["model"]
    lr_decay, lr_decay_every = model["lr_decay"], model["lr_decay_every"]  # the shipped schedule
    K = len(COURSE_LRS) * len(COURSE_REGS)
    times = {"a": [], "a'": [], "b": [], "c": [], "d": []}
    for _ in range(args.repeats):
        pl.seed_everything(0, verbose=False)
        W0 = 1e-6 * torch.randn(3073, 10)
        configs = [(lr, reg) for lr in COURSE_LRS for reg in COURSE_REGS]
        t = time.perf_counter()
        single = [course_loop(dm, "softmax", lr, reg, args.steps, lr_decay, lr_decay_every, W0) for lr, reg in configs]
        acc_a = accuracy(torch.stack(single, dim=1), dm.val_images, dm.val_labels, dm.pixel_mean)
        accuracy(torch.stack(single, dim=1), dm.train_eval_images, dm.train_eval_labels, dm.pixel_mean)
        times["a"].append(time.perf_counter() - t)

        t = time.perf_counter()
        single = [
            plain_loop(dm, "softmax", [lr], [reg], args.steps, lr_decay, lr_decay_every, W0)[:, 0]
            for lr, reg in configs
        ]
        acc_a1 = accuracy(torch.stack(single, dim=1), dm.val_images, dm.val_labels, dm.pixel_mean)
        accuracy(torch.stack(single, dim=1), dm.train_eval_images, dm.train_eval_labels, dm.pixel_mean)
        times["a'"].append(time.perf_counter() - t)

        t = time.perf_counter()
        W = plain_loop(dm, "softmax", COURSE_LRS, COURSE_REGS, args.steps, lr_decay, lr_decay_every, W0)
        acc_b = accuracy(W, dm.val_images, dm.val_labels, dm.pixel_mean)
        accuracy(W, dm.train_eval_images, dm.train_eval_labels, dm.pixel_mean)
        times["b"].append(time.perf_counter() - t)

        seconds, best_c = course_grid_fit(args.data_dir, args.root, args.steps)
        times["c"].append(seconds)
        times["d"].append(floor(args.steps, K))

    a, a1, b, c, d = (median(times[k]) for k in ("a", "a'", "b", "c", "d"))
    best = {"a": float(acc_a.max()), "a'": float(acc_a1.max()), "b": float(acc_b.max()), "c": best_c}
    rows = [
        ("(a) the course's loop, 20 configs one by one", a),
        ("(a') the package's maths, 20 configs one by one", a1),
        ("(b) batched plain loop, 20 configs at once", b),
        ("(c) Trainer.fit, shipped settings", c),
        ("(d) floor: 2 matrix products per step", d),
    ]
    print(f"\nsweep benchmark: {K} softmax configs, {args.steps} steps, batch 200 ({machine()})")
    print(f"{'run':52s} {'seconds':>8s}")
    for name, sec in rows:
        print(f"{name:52s} {sec:8.2f}")
    print(
        f"a/c = {a / c:.2f} (target >= 6)   a'/c = {a1 / c:.2f}   c/b = {c / b:.2f} (target <= 1.2)   "
        f"c/d = {c / d:.2f} (target <= 1.8)"
    )
    print("best val acc: " + "  ".join(f"({k}) {100 * v:.2f}%" for k, v in best.items()))
    write_json(
        args.out,
        {
            "machine": machine(),
            "steps": args.steps,
            "configs": K,
            "seconds": {k: median(v) for k, v in times.items()},
            "all_seconds": times,
            "ratios": {"a/c": a / c, "a'/c": a1 / c, "c/b": c / b, "c/d": c / d},
            "best_val_acc": best,
        },
    )


if __name__ == "__main__":
    main()
