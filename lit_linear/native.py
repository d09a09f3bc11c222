"""Compiled CPU kernels for the training step: preprocessing, the two loss heads and the optimizer's work.

Why: on the CPU, the two matrix products of a training step (:mod:`lit_linear.losses`) take
most of its time. The rest is preprocessing the minibatch, the loss head and the optimizer's
per-config work (learning rates, the regulariser's norms and shrink, freezing). In PyTorch these
are some thirty small ops, each a pass of its own over memory plus its dispatch. For the
course's 20-config grid that was 1.2 ms a step next to 1.8 ms of products. ``kernels.c`` does
each of the three in one call.

What: ``kernels.c`` transcribes the PyTorch code line for line:
:func:`~lit_linear.classifier.preprocess`, :func:`~lit_linear.losses.softmax_scores_grad`,
:func:`~lit_linear.losses.svm_scores_grad`, and ``GridSGD._prepare`` in
:mod:`lit_linear.optim`. That PyTorch code stays the definition. The tests check that both
give the same numbers, up to float32 rounding, and run the fallback too. One more kernel is
not the step's: the CRC-32C of TensorBoard's event records (:mod:`lit_linear.event_crc`).

How: the first call in a process compiles ``kernels.c`` with the system C compiler (``$CC``, else
``cc``; 0.4 s here). It uses ``-O3 -march=native -fopenmp`` and writes the library to a cache
folder (``$LIT_LINEAR_CACHE``, else ``~/.cache/lit_linear``), keyed by the source, the compiler,
its flags and the CPU. Later processes load the library from there. OpenMP is torch's own
``libgomp`` (same soname, already loaded), so the kernels share torch's threads and follow
``torch.set_num_threads``. Results do not depend on the number of threads.

When the kernels are not used, the caller runs the PyTorch code instead:
- tensors that are not float32 on the CPU (the GPU runs the PyTorch code; its ops are already fused enough);
- inputs that need autograd;
- no compiler or a failed build (one warning says why);
- ``LIT_LINEAR_NATIVE=0`` in the environment.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path

import torch
from torch import Tensor

from lit_linear.atomic import atomic_path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp", "-fPIC", "-shared")
HEAD_KIND = {"softmax": 0, "svm": 1}
NORM_ROWS_PER_BLOCK = 256  # as in kernels.c: the scratch of the norms holds one row of sums per block

_lock = threading.Lock()
_state: dict = {"lib": None, "tried": False, "reason": None}

_i64, _f32, _int, _ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_int, ctypes.c_void_p
_SIGNATURES = {
    "ll_preprocess": (_int, [_ptr, _i64, _ptr, _i64, _i64, _ptr, _f32, _ptr, _int]),
    "ll_crc32c": (ctypes.c_uint32, [ctypes.c_char_p, _i64]),
    "ll_scores_grad": (_int, [_int, _ptr, _i64, _i64, _i64, _i64, _i64, _ptr, _ptr, _ptr, _int]),
    "ll_grid_sgd_prepare": (None, [_ptr, _i64, _i64, _i64, _ptr, _ptr, _ptr, _f32, _ptr, _ptr, _ptr, _ptr, _i64, _i64,
                                   _i64, _ptr, _int]),
}


def enabled() -> bool:
    """False when ``LIT_LINEAR_NATIVE`` is set to ``0`` (or ``false``/``no``/``off``)."""
    return os.environ.get("LIT_LINEAR_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """Where built libraries are kept: ``$LIT_LINEAR_CACHE``, else ``~/.cache/lit_linear``."""
    return Path(os.environ.get("LIT_LINEAR_CACHE") or Path.home() / ".cache" / "lit_linear")


def _cpu_signature() -> str:
    # -march=native code may not run on another CPU: a cache folder shared between machines
    # (a network home) keeps one library per CPU model and feature set.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = [line for line in f if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _build() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C compiler: {compiler!r} is not on PATH (set CC to one)")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), version.encode(), " ".join(FLAGS).encode(),
                                     _cpu_signature().encode(), platform.machine().encode()])).hexdigest()[:16]  # fmt: skip
    folder = cache_dir()
    path = folder / f"kernels-{key}.so"
    if not path.exists():
        # Compiled under a temporary name (tmp*, never kernels-*.so) and renamed: processes building
        # at once (DDP ranks) never load a half-written file.
        with atomic_path(path, prefix="tmp") as tmp:
            done = subprocess.run([compiler, *FLAGS, "-o", tmp, str(SOURCE), "-lm"], capture_output=True, text=True,
                                  timeout=300)  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"{compiler} could not build {SOURCE.name}: {done.stderr.strip()[-2000:]}")
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernels, built on first use; None when they cannot be used (see :func:`unavailable_reason`)."""
    if not enabled():
        return None
    if not _state["tried"]:
        with _lock:
            if not _state["tried"]:
                try:
                    _state["lib"] = _build()
                except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                    _state["reason"] = str(e)
                    log.warning("lit_linear: compiled CPU kernels unavailable, using PyTorch ops instead (%s)", e)
                _state["tried"] = True
    return _state["lib"]


def available() -> bool:
    """Whether the compiled kernels are in use for float32 CPU tensors in this process."""
    return library() is not None


def unavailable_reason() -> str | None:
    """Why the kernels are not in use (None when they are)."""
    if not enabled():
        return "LIT_LINEAR_NATIVE=0"
    library()
    return _state["reason"]


def _applies(*tensors: Tensor) -> ctypes.CDLL | None:
    """The library, if every tensor is on the CPU and outside autograd (the callers check dtypes and shapes)."""
    for t in tensors:
        if t.device.type != "cpu" or (t.requires_grad and torch.is_grad_enabled()):
            return None
    return library()


def preprocess(rows: Tensor, mean: Tensor, out: Tensor) -> bool:
    """``out[:, :-1] = rows * (1/255) - mean``, ``out[:, -1] = 1``; False (nothing written) if not applicable.

    Args:
        rows: ``(N, P)`` uint8.
        mean: ``(P,)`` float32, the pixel mean.
        out: ``(N, P + 1)`` float32, contiguous.
    """
    return gather_preprocess(rows, None, mean, out)


def gather_preprocess(split: Tensor, rows: Tensor | None, mean: Tensor, out: Tensor) -> bool:
    """:func:`preprocess` of ``split[rows]`` without copying the rows out first (``rows`` None: all
    of ``split``, in order); False (nothing written) if not applicable.

    Args:
        split: ``(M, P)`` uint8, contiguous.
        rows: ``(N,)`` int64, each in ``[0, M)``; or None.
        mean: ``(P,)`` float32, the pixel mean.
        out: ``(N, P + 1)`` float32, contiguous.
    """
    # Called every SGD step: plain comparisons only (see grid_sgd_prepare).
    if split.dtype != torch.uint8 or out.dtype != torch.float32 or mean.dtype != torch.float32:
        return False
    if not (split.is_contiguous() and out.is_contiguous() and mean.is_contiguous()):
        return False
    if rows is not None and (rows.dtype != torch.int64 or not rows.is_contiguous()):
        return False
    m, p = split.shape
    n = m if rows is None else rows.shape[0]
    if mean.shape != (p,) or out.shape != (n, p + 1):
        raise ValueError(f"rows of {p} values need mean ({p},) and out ({n}, {p + 1}); got "
                         f"{tuple(mean.shape)} and {tuple(out.shape)}")  # fmt: skip
    lib = _applies(split, mean, out) if rows is None else _applies(split, rows, mean, out)
    if lib is None:
        return False
    if lib.ll_preprocess(split.data_ptr(), m, None if rows is None else rows.data_ptr(), n, p, mean.data_ptr(),
                         1.0 / 255.0, out.data_ptr(), torch.get_num_threads()):  # fmt: skip
        raise IndexError(f"rows to gather must lie in [0, {m}), the rows of the split")
    return True


def scores_grad(loss: str, scores: Tensor, y: Tensor, K: int, C: int) -> Tensor | None:
    """The ``loss`` head over ``scores (N, K*C)`` (any strides): returns the data loss ``(K,)`` and
    overwrites ``scores`` with dL/dscores; None (nothing written) if not applicable.
    """
    kind = HEAD_KIND.get(loss)
    if kind is None:
        raise ValueError(f"loss must be one of {', '.join(HEAD_KIND)}, got {loss!r}")
    if scores.dtype != torch.float32 or y.dtype != torch.int64 or scores.dim() != 2 or scores.shape[1] != K * C:
        return None
    N = scores.shape[0]
    if y.shape != (N,):
        raise ValueError(f"y must have shape ({N},) to match the scores, got {tuple(y.shape)}")
    lib = _applies(scores, y)
    if lib is None:
        return None
    y = y.contiguous()
    data_loss = torch.empty(K, dtype=torch.float32)
    row_loss = torch.empty(N * K, dtype=torch.float32)
    sn, sc = scores.stride()
    status = lib.ll_scores_grad(kind, scores.data_ptr(), N, K, C, sn, sc, y.data_ptr(),
                                data_loss.data_ptr(), row_loss.data_ptr(), torch.get_num_threads())  # fmt: skip
    if status == -2:
        raise ValueError(f"y holds labels outside [0, {C}): every label must index one of the {C} classes")
    if status != 0:
        raise MemoryError("lit_linear.native: out of memory for the loss head's scratch rows")
    return data_loss


def _scratch_size(D: int, K: int, C: int) -> int:
    # As ll_grid_sgd_prepare lays it out: the shrink row, one row of partial sums per block, the lr.
    return (-(-D // NORM_ROWS_PER_BLOCK) + 1) * K * C + K


def grid_sgd_scratch(D: int, K: int, C: int) -> Tensor:
    """The scratch :func:`grid_sgd_prepare` needs for a ``(D, K*C)`` grid; a caller that steps often keeps one."""
    return torch.empty(_scratch_size(D, K, C), dtype=torch.float32)


def grid_sgd_prepare(W_flat: Tensor, base_lr: Tensor, reg: Tensor, live: Tensor, decay: float, data_loss: Tensor | None,
                     dscores: Tensor | None, K: int, C: int, scratch: Tensor | None = None) -> tuple[Tensor, Tensor] | None:
    """:class:`~lit_linear.optim.GridSGD`'s per-config work of one step, in one call; None (nothing
    written) if not applicable.

    With ``lr_k = base_lr_k * live_k * decay``: takes ``||W_k||^2`` and scales ``W_k`` by
    ``1 - 2 lr_k reg_k`` (one pass over ``W``); with a ``data_loss``, forms the loss ``data_loss +
    reg * ||W_k||^2``, sets ``live_k`` to 0 where it is not finite and ``lr_k`` with it; scales
    column ``k*C + c`` of ``dscores`` by ``lr_k`` in place.

    Args:
        W_flat: contiguous float32 ``(D, K*C)``, updated in place.
        base_lr, reg: ``(K,)`` float32, contiguous.
        live: ``(K,)`` float32, contiguous, updated in place (1: training, 0: frozen).
        decay: the step's learning-rate decay factor.
        data_loss: ``(K,)`` float32, or None.
        dscores: float32 ``(N, K*C)`` (any strides), or None.
        scratch: from :func:`grid_sgd_scratch` for this shape (made here when None).

    Returns:
        ``(loss (K,), lr (K,))``: the loss (the norms when ``data_loss`` is None), a new tensor,
        and the step's learning rates, a view of ``scratch`` (overwritten by the next call).
    """
    # Called every SGD step: the checks are kept to plain comparisons (Python work here costs
    # two to three times its isolated time next to the step's matrix products).
    f32 = torch.float32
    if W_flat.dtype != f32 or W_flat.dim() != 2 or W_flat.shape[1] != K * C or not W_flat.is_contiguous():
        return None
    for v in (base_lr, reg, live) if data_loss is None else (base_lr, reg, live, data_loss):
        if v.dtype != f32 or v.shape != (K,) or not v.is_contiguous():
            return None
    if dscores is not None and (dscores.dtype != f32 or dscores.dim() != 2 or dscores.shape[1] != K * C):
        return None
    lib = _applies(W_flat, base_lr, reg, live, *[t for t in (data_loss, dscores) if t is not None])
    if lib is None:
        return None
    D = W_flat.shape[0]
    if scratch is None or scratch.numel() != _scratch_size(D, K, C) or scratch.dtype != f32 or scratch.device.type != "cpu":
        scratch = grid_sgd_scratch(D, K, C)
    loss, lr = torch.empty(K, dtype=f32), scratch[-K:]
    N, sn, sc = (0, 0, 0) if dscores is None else (dscores.shape[0], *dscores.stride())
    lib.ll_grid_sgd_prepare(W_flat.data_ptr(), D, K, C, base_lr.data_ptr(), reg.data_ptr(), live.data_ptr(), decay,
                            None if data_loss is None else data_loss.data_ptr(), loss.data_ptr(), lr.data_ptr(),
                            None if dscores is None else dscores.data_ptr(), N, sn, sc, scratch.data_ptr(),
                            torch.get_num_threads())  # fmt: skip
    return loss, lr


def crc32c(data: bytes) -> int | None:
    """CRC-32C (Castagnoli) of ``data``, as TensorFlow and TensorBoard compute it; None without the kernels."""
    lib = library()
    if lib is None:
        return None
    return int(lib.ll_crc32c(data, len(data)))
