"""The PNG files written for TensorBoard's image dashboard decode to the exact pixels."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lit_linear.png import encode_png


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.mode) == ("PNG", "RGB")
        image.load()  # reads every chunk: a bad CRC or a truncated IDAT raises here
        return np.asarray(image)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (7, 3), (222, 492), (1142, 982)])
def test_decodes_to_the_same_pixels(height, width):
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(height))
    np.testing.assert_array_equal(_decode(encode_png(image)), image.permute(1, 2, 0).numpy())


@pytest.mark.parametrize("level", [0, 1, 9])
def test_every_compression_level_decodes(level):
    image = torch.zeros(3, 20, 30, dtype=torch.uint8)
    image[0, 5:10] = 200
    np.testing.assert_array_equal(_decode(encode_png(image, level)), image.permute(1, 2, 0).numpy())


def test_chunk_checksums_are_png_crc32():
    data = encode_png(torch.full((3, 4, 5), 17, dtype=torch.uint8))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        kinds.append(kind)
        pos += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", data[16:29]) == (5, 4, 8, 2, 0, 0, 0)  # width, height, 8-bit RGB


@pytest.mark.parametrize(
    "image",
    [torch.zeros(4, 5, 5, dtype=torch.uint8), torch.zeros(3, 5, 5), torch.zeros(5, 5, dtype=torch.uint8),
     torch.zeros(3, 0, 5, dtype=torch.uint8)],
)  # fmt: skip
def test_refuses_what_is_not_an_rgb_image(image):
    with pytest.raises(ValueError, match="uint8 image|at least one pixel"):
        encode_png(image)
