"""TensorBoard's event-file checksums computed by the compiled kernels instead of in pure Python.

Why: TensorBoard without TensorFlow (what ``torch.utils.tensorboard`` and Lightning's
``TensorBoardLogger`` write with) checksums every record of an event file, CRC-32C, in pure
Python: about 100 ns a byte. One 46 KB class-template image took 4.5 ms to checksum here, and a
20-config sweep writes 24 of them in a fit (0.1 s of a 5 s fit). tensorboardX reported the same
cost and takes a compiled ``crc32c`` when one is installed (lanpa/tensorboardX#428).

What: :func:`install` points ``tensorboard.summary.writer.record_writer.masked_crc32c``, the one
function every record goes through, at the same masked CRC-32C computed by
:func:`lit_linear.native.crc32c` (20 us for those 46 KB). The files are byte for byte the same;
the tests compare the two checksums and read the files back with TensorBoard's own reader. Without
the kernels (no compiler, ``LIT_LINEAR_NATIVE=0``) nothing is replaced.
"""

from __future__ import annotations

from lit_linear import native

_MASK_DELTA = 0xA282EAD8  # TensorFlow's record format: a CRC stored in a file is "masked" with this


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C of ``data``, as TensorFlow's record format stores it."""
    crc = native.crc32c(data)
    if crc is None:  # the kernels went away (e.g. switched off) after install: TensorBoard's own code
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as python_masked_crc32c

        return python_masked_crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def install() -> bool:
    """Make TensorBoard's event writer use :func:`masked_crc32c`; True if it now does (idempotent)."""
    if not native.available():
        return False
    try:
        from tensorboard.summary.writer import record_writer
    except ImportError:  # another TensorBoard layout: leave it as it is
        return False
    if not callable(getattr(record_writer, "masked_crc32c", None)):
        return False
    record_writer.masked_crc32c = masked_crc32c
    return True
