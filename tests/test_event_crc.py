"""TensorBoard event files written with the compiled checksum are the files TensorBoard writes and reads."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.summary.writer import record_writer
from torch.utils.tensorboard import SummaryWriter

from lit_linear import event_crc, native

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CC") or "cc") is None, reason="no C compiler: TensorBoard's own checksum is used"
)


@pytest.fixture
def restore_writer(monkeypatch):
    """Whatever a test installs into TensorBoard's record writer is undone afterwards."""
    monkeypatch.setattr(record_writer, "masked_crc32c", record_writer.masked_crc32c)


@needs_compiler
@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 63, 4096, 46281])
def test_checksum_equals_tensorboards(size):
    data = os.urandom(size)
    assert native.crc32c(data) == pywrap_tensorflow.crc32c(data)
    assert event_crc.masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data)


@needs_compiler
def test_the_standard_check_value():
    assert native.crc32c(b"123456789") == 0xE3069283  # CRC-32C's published check value


@needs_compiler
def test_installed_writer_files_pass_tensorboards_checks(tmp_path, restore_writer):
    assert event_crc.install()
    assert record_writer.masked_crc32c is event_crc.masked_crc32c
    writer = SummaryWriter(str(tmp_path))
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8)
    writer.add_image("templates", image, 7)
    writer.add_scalar("acc/val", 0.25, 7)
    writer.close()
    # TensorBoard's reader checks every record's checksums with its own Python code.
    (path,) = tmp_path.glob("events.out.tfevents.*")
    reader = pywrap_tensorflow.PyRecordReader_New(str(path))
    records = 0
    while True:
        try:
            reader.GetNext()
        except Exception as e:  # OutOfRangeError at the end; DataLossError on a bad checksum
            assert "No more events" in str(e), e
            break
        records += 1
    assert records == 3  # the file version, the image and the scalar
    acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert acc.Images("templates")[0].width == 60 and acc.Scalars("acc/val")[0].value == 0.25


def test_nothing_is_replaced_without_the_kernels(monkeypatch, restore_writer):
    monkeypatch.setenv("LIT_LINEAR_NATIVE", "0")
    original = record_writer.masked_crc32c
    assert not event_crc.install()
    assert record_writer.masked_crc32c is original
    assert event_crc.masked_crc32c(b"abc") == pywrap_tensorflow.masked_crc32c(b"abc"), "falls back to TensorBoard's"
