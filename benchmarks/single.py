"""Single-config benchmark: one softmax classifier, 2000 steps, plain loop vs ``Trainer.fit``.

    python benchmarks/single.py --data-dir /path/to/folder-with-cifar-10-batches-py [--out results/single.json]

Both use the shipped configs/softmax.yaml settings (lr, reg, decay, batch 200), the package's
loss, sampler and update; the plain loop also measures the accuracies once at the end. Prints
seconds (medians over --repeats) and the ratio fit/plain, which is Lightning's cost per step.
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
from common import REPO, accuracy, load_data, machine, median, plain_loop, shipped_fit, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", default="/tmp/lit_linear_bench_single")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    config_file = os.path.join(REPO, "configs", "softmax.yaml")
    with open(config_file, encoding="utf-8") as f:
        model = yaml.safe_load(f)["model"]

    dm = load_data(args.data_dir)
    plain, fit = [], []
    for _ in range(args.repeats):
        pl.seed_everything(0, verbose=False)
        W0 = model["weight_scale"] * torch.randn(3073, 10)
        start = time.perf_counter()
        W = plain_loop(
            dm, "softmax", [model["lr"]], [model["reg"]], args.steps, model["lr_decay"], model["lr_decay_every"], W0
        )
        accuracy(W, dm.val_images, dm.val_labels, dm.pixel_mean)
        accuracy(W, dm.train_eval_images, dm.train_eval_labels, dm.pixel_mean)
        plain.append(time.perf_counter() - start)

        seconds, _ = shipped_fit("softmax.yaml", args.data_dir, args.root, args.steps)
        fit.append(seconds)

    p, f = median(plain), median(fit)
    print(f"\nsingle-config benchmark: softmax, {args.steps} steps, batch 200 ({machine()})")
    print(f"{'plain loop':30s} {p:8.2f} s")
    print(f"{'Trainer.fit (shipped)':30s} {f:8.2f} s")
    print(
        f"fit/plain = {f / p:.2f} (target <= 1.3); "
        f"per step: plain {1e3 * p / args.steps:.3f} ms, fit {1e3 * f / args.steps:.3f} ms"
    )
    write_json(
        args.out,
        {
            "machine": machine(),
            "steps": args.steps,
            "seconds": {"plain": p, "fit": f},
            "all_seconds": {"plain": plain, "fit": fit},
            "ratio": f / p,
        },
    )


if __name__ == "__main__":
    main()
