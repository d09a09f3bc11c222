"""Image and text summaries written straight into a SummaryWriter's event file, under the tag given."""

from __future__ import annotations

import io

from PIL import Image
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.text import metadata as text_metadata
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter


def add_png(writer: SummaryWriter, tag: str, image: Tensor, step: int) -> None:
    """Log a ``(3, H, W)`` uint8 RGB image as a PNG encoded by PIL at zlib level 1.

    Not ``writer.add_image``: it re-scales through float and encodes at PIL's default compression
    level, noticeably slower per image, and a sweep writes one image per config. Not
    ``torchvision.io.encode_png``: torchvision deprecates its image codecs (0.29) for removal.
    """
    _, height, width = image.shape
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG", compress_level=1)  # (H, W, 3)
    png = summary_pb2.Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=buffer.getvalue())
    writer.file_writer.add_summary(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=png)]), step)


def add_markdown(writer: SummaryWriter, tag: str, text: str, step: int) -> None:
    """Log ``text`` for TensorBoard's Text dashboard (which renders Markdown) under ``tag`` itself.

    Not ``writer.add_text``: it files the text under ``<tag>/text_summary``, the name the dashboard
    then shows.
    """
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, string_val=[text.encode("utf-8")], tensor_shape=tensor_shape_pb2.TensorShapeProto()
    )
    meta = text_metadata.create_summary_metadata(display_name=tag, description="")
    value = summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=tensor)
    writer.file_writer.add_summary(summary_pb2.Summary(value=[value]), step)
