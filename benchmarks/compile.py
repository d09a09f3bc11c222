"""Compile benchmark: what ``--model.compile true`` costs and buys on a whole fit, as a user runs it.

    python benchmarks/compile.py --data-dir /path/to/folder-with-cifar-10-batches-py [--config softmax_sweep.yaml]

Runs ``python train.py fit --config configs/<config>`` three times in child processes: eager
(``--model.compile false``), compiled with an empty inductor cache (the first run on a machine:
it pays for the compilation), and compiled again with the cache that run left (later runs). Prints
each whole command's wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, machine, write_json  # noqa: E402


def run_fit(config: str, data_dir: str, root: str, compile: bool, cache: str, steps: int) -> float:
    command = [
        sys.executable,
        os.path.join(REPO, "train.py"),
        "fit",
        "--config",
        os.path.join(REPO, "configs", config),
        "--data.data_dir",
        data_dir,
        "--data.download",
        "false",
        "--trainer.default_root_dir",
        root,
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_steps",
        str(steps),
        "--model.compile",
        str(compile).lower(),
    ]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--config", default="softmax_sweep.yaml")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as cache:
        eager = run_fit(args.config, args.data_dir, root, False, cache, args.steps)
        cold = run_fit(args.config, args.data_dir, root, True, cache, args.steps)
        warm = run_fit(args.config, args.data_dir, root, True, cache, args.steps)
    print(f"\ncompile benchmark: {args.config}, {args.steps} steps, whole `train.py fit` commands ({machine()})")
    print(f"{'run':40s} {'seconds':>8s}")
    for name, seconds in (
        ("eager (--model.compile false)", eager),
        ("compiled, empty cache (first run)", cold),
        ("compiled, warm cache (later runs)", warm),
    ):
        print(f"{name:40s} {seconds:8.1f}")
    print(f"compile cost: first run +{cold - eager:.1f} s, later runs {warm - eager:+.1f} s against eager")
    write_json(
        args.out,
        {
            "machine": machine(),
            "config": args.config,
            "steps": args.steps,
            "seconds": {"eager": eager, "compiled_cold": cold, "compiled_warm": warm},
        },
    )


if __name__ == "__main__":
    main()
