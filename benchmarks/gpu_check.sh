#!/usr/bin/env bash
# The accelerator check, in one command on a machine with a CUDA GPU:
#
#     bash benchmarks/gpu_check.sh OUT_DIR [DATA_DIR]
#
# 1. installs what the machine's Python lacks of the package's dependencies (pip, into a private
#    folder): from the wheels in $WHEELS (default .whl/) when that folder exists, else from PyPI.
#    A GPU machine with no internet needs the wheels; make them where pip reaches PyPI with
#        pip download --no-deps --only-binary=:all: -d .whl jsonargparse docstring-parser typeshed-client
#    (add --python-version and --platform when that machine's Python differs from this one's);
# 2. uses DATA_DIR (holding cifar-10-batches-py) or writes a synthetic CIFAR-10 of the real size
#    (50,000 + 10,000 images): the timings do not depend on what the pixels show;
# 3. runs tests/training/test_cuda.py, then benchmarks/grid.py on CUDA eagerly and with --model.cuda_graph
#    true (ms per SGD step of 1 and 25 configs, against the plain loop), then benchmarks/precision.py
#    (ms per SGD step and whole fits of 25 and 1,000 configs in 32-true, TF32 and bf16-mixed).
#
# Everything it prints also lands in OUT_DIR (env.txt, test_cuda.log, grid_*, precision.log and .json).
# A failing step is recorded and the next one still runs; the exit status is the first failure's.
set -uo pipefail
OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [DATA_DIR]}
DATA=${2:-}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONUNBUFFERED=1
status=0
step() {  # step NAME COMMAND...: run it, its output to the console and OUT/NAME.log
    echo "== $1: ${*:2}"
    "${@:2}" 2>&1 | tee "$OUT/$1.log"
    local rc=${PIPESTATUS[0]}
    echo "== $1: exit $rc"
    if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
}

SITE=${SITE:-/tmp/lit_linear_site}
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
missing=$(python3 - <<'EOF'
import importlib.util
need = {"torch": "torch", "lightning": "lightning", "torchmetrics": "torchmetrics", "tensorboard": "tensorboard",
        "jsonargparse": "jsonargparse", "docstring_parser": "docstring-parser", "typeshed_client": "typeshed-client",
        "yaml": "pyyaml", "PIL": "pillow", "pytest": "pytest"}
print(" ".join(dist for module, dist in need.items() if importlib.util.find_spec(module) is None))
EOF
)
if [ -n "$missing" ]; then
    if [ -d "${WHEELS:-.whl}" ]; then
        step install python3 -m pip install --quiet --no-deps --target "$SITE" --no-index --find-links "${WHEELS:-.whl}" $missing
    else
        step install python3 -m pip install --quiet --target "$SITE" $missing
    fi
fi
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__); \
print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')" 2>&1 | tee "$OUT/env.txt"

if [ -z "$DATA" ]; then
    DATA=/tmp/lit_linear_cifar10
    if [ ! -d "$DATA/cifar-10-batches-py" ]; then
        step data python3 -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; \
from conftest import write_cifar10; write_cifar10(Path('$DATA'), per_batch=10000, num_test=10000)"
    fi
fi

step test_cuda python3 -m pytest -q -rs tests/training/test_cuda.py
step grid_eager python3 benchmarks/grid.py --data-dir "$DATA" --accelerator cuda --out "$OUT/grid_eager.json"
step grid_graphs python3 benchmarks/grid.py --data-dir "$DATA" --accelerator cuda --cuda-graph --out "$OUT/grid_graphs.json"
step precision python3 benchmarks/precision.py --data-dir "$DATA" --accelerator cuda --configs 25 1000 \
    --precisions 32-true tf32 bf16-mixed --steps 1000 --out "$OUT/precision.json"
echo "== results in $OUT; first failing exit status: $status"
exit "$status"
