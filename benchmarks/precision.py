"""Precision benchmark: ms per SGD step and whole-fit time of a sweep in each ``--trainer.precision``.

    python benchmarks/precision.py --data-dir DIR [--accelerator cuda] [--configs 25 400] [--steps 1000]

For each grid of K configs (25: configs/softmax_sweep.yaml; 400: 20 lr x 20 reg; 1000: 40 x 25, with
the shipped sweep's other settings) and each precision:

- ``step ms``: the step's maths alone, as the module runs it (``data_term`` and ``GridSGD.step``: the
  features, the two products, the loss head and the update), median of ``--repeats`` timings of
  ``--step-count`` steps after a warm-up, the precisions interleaved;
- ``fit s``: ``Trainer.fit`` of ``--steps`` SGD steps with the shipped settings (validation every
  500 steps, checkpoints, progress bar off), data loaded before the clock, and the best val
  accuracy it reaches.

The precisions: ``32-true``; ``tf32`` (32-true with ``--float32_matmul_precision high``: TF32 products
on a CUDA GPU with Tensor Cores, the same as 32-true elsewhere); ``bf16-mixed``; ``16-mixed`` (float16
products: on a CPU, where Lightning's flag turns into bf16-mixed, through ``MixedPrecision('16-mixed',
'cpu')``); ``64-true``. Each fit also records its best val accuracy, so that one run says what a
precision costs and what it changes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import lightning.pytorch as pl
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import load_data, machine, median, sgd_step, shipped_fit, sync, to_device, write_json  # noqa: E402

from lit_linear.maths.optim import GridSGD
from lit_linear.sweep.configs import grid

# K -> (learning rates, L2 strengths); 25 is configs/softmax_sweep.yaml as shipped.
AXES = {
    25: ([0.4, 0.8, 1.2, 1.6, 2.4], [5e-4, 1e-3, 2e-3, 3e-3, 5e-3]),
    400: ([round(0.1 * 1.2**i, 6) for i in range(20)], [round(1e-4 * 1.4**i, 8) for i in range(20)]),
    1000: ([round(0.05 * 1.1**i, 6) for i in range(40)], [round(1e-4 * 1.25**i, 8) for i in range(25)]),
}

# name -> (W's dtype, the products' dtype, float32 matmul precision, fit arguments)
PRECISIONS = {
    "32-true": (torch.float32, None, "highest", ["--trainer.precision", "32-true"]),
    "tf32": (torch.float32, None, "high", ["--trainer.precision", "32-true", "--float32_matmul_precision", "high"]),
    "bf16-mixed": (torch.float32, torch.bfloat16, "highest", ["--trainer.precision", "bf16-mixed"]),
    "16-mixed": (torch.float32, torch.float16, "highest", ["--trainer.precision", "16-mixed"]),
    "64-true": (torch.float64, None, "highest", ["--trainer.precision", "64-true"]),
}
FP16_ON_CPU = [
    "--trainer.precision",
    "null",
    "--trainer.plugins",
    "MixedPrecision",
    "--trainer.plugins.precision",
    "16-mixed",
    "--trainer.plugins.device",
    "cpu",
]


def grid_args(K: int) -> list[str]:
    lrs, regs = AXES[K]
    return ["--model.lr", str(lrs), "--model.reg", str(regs)]


def step_ms(dm, K: int, precision: str, steps: int, device: str) -> float:
    """Milliseconds per SGD step of the step's maths for K configs in ``precision``."""
    w_dtype, p_dtype, matmul, _ = PRECISIONS[precision]
    torch.set_float32_matmul_precision(matmul)
    configs = grid(*AXES[K])
    W = (1e-6 * torch.randn(3073, 1, 10, dtype=w_dtype, device=device)).repeat(1, K, 1)  # (D, K, C)
    optimizer = GridSGD([W], [c[0] for c in configs], [c[1] for c in configs], lr_decay=0.75, lr_decay_every=100)
    pixel_mean = dm.pixel_mean.to(w_dtype)
    generator = torch.Generator().manual_seed(0)
    X = None
    for warm in (True, False):
        sync(device)
        start = time.perf_counter()
        for _ in range(10 if warm else steps):
            rows = torch.randint(len(dm.train_labels), (200,), generator=generator).to(device)
            X = sgd_step(
                optimizer,
                "softmax",
                W,
                dm.train_images,
                rows,
                dm.train_labels.index_select(0, rows),
                pixel_mean,
                X,
                p_dtype,
            )
        sync(device)
    torch.set_float32_matmul_precision("highest")
    return 1e3 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--accelerator", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--configs", type=int, nargs="*", default=[25, 400], choices=sorted(AXES))
    parser.add_argument("--precisions", nargs="*", default=list(PRECISIONS), choices=list(PRECISIONS))
    parser.add_argument("--steps", type=int, default=1000, help="SGD steps of each fit (0: no fits)")
    parser.add_argument("--step-count", type=int, default=100, help="steps per step timing")
    parser.add_argument("--repeats", type=int, default=3, help="step timings per precision (medians)")
    parser.add_argument("--root", default="/tmp/lit_linear_bench_precision")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.accelerator == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    device = "cuda" if args.accelerator == "cuda" else "cpu"
    dm = to_device(load_data(args.data_dir), device)
    name = torch.cuda.get_device_name() if device == "cuda" else machine()
    payload = {"machine": machine(), "device": name, "steps": args.steps, "runs": {}}
    for K in args.configs:
        times: dict[str, list[float]] = {p: [] for p in args.precisions}
        for _ in range(args.repeats):  # interleaved, so that a busy spell of the machine hits every precision
            for precision in args.precisions:
                times[precision].append(step_ms(dm, K, precision, args.step_count, device))
        for precision in args.precisions:
            run = payload["runs"].setdefault(f"{K}", {}).setdefault(precision, {})
            run["step_ms"] = times[precision]
            if args.steps:
                extra = FP16_ON_CPU if precision == "16-mixed" and device == "cpu" else PRECISIONS[precision][3]
                pl.seed_everything(0, verbose=False)
                seconds, fitted = shipped_fit(
                    "softmax_sweep.yaml",
                    args.data_dir,
                    args.root,
                    args.steps,
                    *grid_args(K),
                    *extra,
                    accelerator=args.accelerator,
                )
                run.update(
                    fit_s=seconds,
                    best_val_acc=fitted.results.best.val_acc,
                    best=[fitted.results.best.lr, fitted.results.best.reg],
                )
            print(f"{K} configs, {precision}: {run}", flush=True)

    print(f"\nprecision benchmark: softmax, batch 200, {args.accelerator} ({name})")
    print(f"{'configs':>7} {'precision':>10} {'step ms':>8} {'x 32-true':>9} {'fit s':>7} {'best val':>9}")
    for K, runs in payload["runs"].items():
        base = median(runs["32-true"]["step_ms"]) if "32-true" in runs else None
        for precision, run in runs.items():
            ms = median(run["step_ms"])
            ratio = f"{ms / base:9.2f}" if base else f"{'-':>9}"
            fit = f"{run['fit_s']:7.1f} {100 * run['best_val_acc']:8.2f}%" if "fit_s" in run else ""
            print(f"{K:>7} {precision:>10} {ms:8.2f} {ratio} {fit}")
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
