"""Multi-process sweeps: one process against two, split by minibatch and by configs; whole processes timed.

    python benchmarks/ddp.py --data-dir /path/to/folder-with-cifar-10-batches-py [--steps 1000] [--repeats 3]

For two grids, ``configs/softmax_sweep.yaml`` (25 configs) and a 20 x 20 grid of 400 configs with its
other settings, it times the wall clock of ``python train.py fit`` (start-up, data loading, training,
validation, checkpoints and TensorBoard views: what a user waits for) three ways on the CPU:

- one process;
- two processes (DDP, gloo) with ``--model.split minibatch``: each takes half of every minibatch and
  the gradient, D x K x C floats, is all-reduced at every step;
- two processes with ``--model.split configs``: each trains half of the configs on whole minibatches,
  with no traffic between validations.

Prints a table of medians over ``--repeats`` and the ratios to one process. On a machine whose cores
the two processes share, no speed-up is possible: the figure of merit is how little the second
process costs. Also prints the bytes each split moves per SGD step (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, machine, median, write_json  # noqa: E402

GRIDS = {
    "softmax_sweep.yaml (25 configs)": [],
    "400 configs (20 lr x 20 reg)": [
        "--model.lr",
        str([round(0.1 * 1.2**i, 6) for i in range(20)]),
        "--model.reg",
        str([round(1e-4 * 1.4**i, 8) for i in range(20)]),
    ],
}
WAYS = {
    "1 process": ["--trainer.devices", "1"],
    "2 x minibatch": ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--model.split", "minibatch"],
    "2 x configs": ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--model.split", "configs"],
}
D, C, BATCH = 3073, 10, 200


def fit_seconds(data_dir: str, steps: int, grid: list[str], way: list[str]) -> float:
    """Wall time of one ``python train.py fit`` with configs/softmax_sweep.yaml, ``grid`` and ``way``."""
    with tempfile.TemporaryDirectory() as root:
        command = [
            sys.executable,
            os.path.join(REPO, "train.py"),
            "fit",
            "--config",
            os.path.join(REPO, "configs", "softmax_sweep.yaml"),
            "--data.data_dir",
            data_dir,
            "--data.download",
            "false",
            "--trainer.accelerator",
            "cpu",
            "--trainer.max_steps",
            str(steps),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            root,
            *grid,
            *way,
        ]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds


def bytes_per_step(K: int, processes: int = 2) -> dict[str, int]:
    """What each split sends per SGD step and process: the all-reduced gradient and loss, or nothing."""
    return {"minibatch": (D * K * C + K) * 4 if processes > 1 else 0, "configs": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="timings are medians over this many runs")
    parser.add_argument("--grids", nargs="*", default=list(GRIDS), help="which grids (default: both)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    print(machine(), flush=True)
    results: dict[str, dict[str, list[float]]] = {}
    for grid in args.grids:
        results[grid] = {way: [] for way in WAYS}
        for repeat in range(args.repeats):  # interleaved, so that a busy spell of the machine hits every way
            for way, way_args in WAYS.items():
                seconds = fit_seconds(args.data_dir, args.steps, GRIDS[grid], way_args)
                results[grid][way].append(seconds)
                print(f"{grid} | {way} | run {repeat + 1}: {seconds:.1f} s", flush=True)
    print(f"\n{args.steps} SGD steps, medians of {args.repeats} (s)")
    print(
        f"{'grid':34} {'1 process':>10} {'2 x minibatch':>14} {'2 x configs':>12} {'minibatch/1':>12} {'configs/1':>10}"
    )
    for grid, ways in results.items():
        m = {way: median(times) for way, times in ways.items()}
        one = m["1 process"]
        print(
            f"{grid:34} {one:10.1f} {m['2 x minibatch']:14.1f} {m['2 x configs']:12.1f} "
            f"{m['2 x minibatch'] / one:12.2f} {m['2 x configs'] / one:10.2f}"
        )
    for K in (25, 400):
        sent = bytes_per_step(K)
        print(
            f"bytes sent per SGD step and process, {K} configs: minibatch {sent['minibatch'] / 1e6:.1f} MB, configs 0"
        )
    write_json(args.out, {"machine": machine(), "steps": args.steps, "seconds": results})


if __name__ == "__main__":
    main()
