"""Memory benchmark: peak resident memory of the full-CIFAR-10 softmax sweep, as a user runs it.

    python benchmarks/memory.py --data-dir /path/to/folder-with-cifar-10-batches-py [--out results/memory.json]

Runs ``python train.py fit --config configs/softmax_sweep.yaml`` (25 configs, 2000 steps) in a
child process on the CPU and reports the child's peak RSS (``getrusage``). Target: <= 1.5 GB.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, write_json  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--config", default=os.path.join(REPO, "configs", "softmax_sweep.yaml"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        command = [
            sys.executable,
            os.path.join(REPO, "train.py"),
            "fit",
            "--config",
            args.config,
            "--data.data_dir",
            args.data_dir,
            "--data.download",
            "false",
            "--trainer.default_root_dir",
            root,
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.accelerator",
            "cpu",
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports kB
    print(f"\nmemory benchmark: {os.path.basename(args.config)} on full CIFAR-10 ({machine()})")
    print(f"peak RSS {peak_mb:.0f} MB (target <= 1536 MB); whole command {seconds:.1f} s")
    write_json(args.out, {"machine": machine(), "config": args.config, "peak_rss_mb": peak_mb, "seconds": seconds})


if __name__ == "__main__":
    main()
