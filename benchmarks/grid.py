"""Grid-cost benchmark: what a whole sweep costs against one config, on any accelerator.

    python benchmarks/grid.py --data-dir DIR [--accelerator cuda [--cuda-graph]] [--out results/grid.json]

Trains configs/softmax.yaml (1 config) and configs/softmax_sweep.yaml (25 configs) for --steps
SGD steps each, two ways: the batched plain PyTorch loop (the package's loss, sampler and update,
no Lightning) and ``Trainer.fit`` with the shipped settings (progress bar off). Prints seconds
(medians over --repeats), time per step, and the ratio 25 configs / 1 config: how close a sweep
comes to the price of a single run. On a GPU, where one config leaves the device mostly idle, the
ratio is the point of training the grid at once.
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
from common import REPO, accuracy, load_data, machine, median, plain_loop, shipped_fit, sync, to_device, write_json  # noqa: E402

CONFIGS = ("softmax.yaml", "softmax_sweep.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--cuda-graph", action="store_true", help="fit with --model.cuda_graph true (one CUDA device)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--root", default="/tmp/lit_linear_bench_grid")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.accelerator == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    device = "cuda" if args.accelerator == "cuda" else "cpu"
    dm = to_device(load_data(args.data_dir), device)

    rows, payload = (
        [],
        {
            "machine": machine(),
            "accelerator": args.accelerator,
            "cuda_graph": args.cuda_graph,
            "steps": args.steps,
            "runs": {},
        },
    )
    if device == "cuda":
        payload["device"] = torch.cuda.get_device_name()
    for config in CONFIGS:
        with open(os.path.join(REPO, "configs", config), encoding="utf-8") as f:
            model = yaml.safe_load(f)["model"]
        lrs, regs = (v if isinstance(v, list) else [v] for v in (model["lr"], model["reg"]))
        plain, fit, best = [], [], None
        for _ in range(args.repeats):
            pl.seed_everything(0, verbose=False)
            W0 = (model["weight_scale"] * torch.randn(3073, 10)).to(device)
            sync(device)
            start = time.perf_counter()
            W = plain_loop(dm, model["loss"], lrs, regs, args.steps, model["lr_decay"], model["lr_decay_every"], W0)
            accuracy(W, dm.val_images, dm.val_labels, dm.pixel_mean)
            accuracy(W, dm.train_eval_images, dm.train_eval_labels, dm.pixel_mean)
            sync(device)
            plain.append(time.perf_counter() - start)
            graphs = ("--model.cuda_graph", "true") if args.cuda_graph else ()
            seconds, fitted = shipped_fit(
                config, args.data_dir, args.root, args.steps, *graphs, accelerator=args.accelerator
            )
            fit.append(seconds)
            best = fitted.results.best.val_acc
        K = len(lrs) * len(regs)
        rows.append((config, K, median(plain), median(fit), best))
        payload["runs"][config] = {"configs": K, "plain": plain, "fit": fit, "best_val_acc": best}

    name = payload.get("device", machine())
    mode = ", CUDA graphs" if args.cuda_graph else ""
    print(f"\ngrid-cost benchmark: softmax, {args.steps} steps, batch 200, {args.accelerator}{mode} ({name})")
    print(f"{'config':22s} {'K':>3s} {'plain s':>8s} {'fit s':>8s} {'fit ms/step':>12s} {'best val':>9s}")
    for config, K, p, f, best in rows:
        print(f"{config:22s} {K:3d} {p:8.2f} {f:8.2f} {1e3 * f / args.steps:12.3f} {100 * best:8.2f}%")
    (_, k1, p1, f1, _), (_, k25, p25, f25, _) = rows
    print(f"{k25} configs / {k1} config: plain {p25 / p1:.2f}x, fit {f25 / f1:.2f}x the time")
    payload["ratio_sweep_over_single"] = {"plain": p25 / p1, "fit": f25 / f1}
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
