"""Class templates: the columns of W drawn as 32x32 colour images, labelled, in one grid.

As in the course, the bias row is dropped, each column is reshaped to ``3 x 32 x 32`` and all C
templates are rescaled to [0, 255] with one min/max, so their brightness can be compared.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from lit_linear.errors import check_count

LABEL_HEIGHT = 12  # px strip under each tile for the class name
PAD = 2  # px between tiles


def is_image_weight(W: Tensor | None) -> bool:
    """Whether ``W (D, C)`` weighs 3x32x32 pixels and a bias (so its columns can be drawn as images)."""
    return W is not None and W.dim() == 2 and W.shape[0] == 3 * 32 * 32 + 1


def class_templates(W: Tensor) -> Tensor:
    """``W (3073, C)`` with its bias row -> ``(C, 3, 32, 32)`` uint8 templates, one min/max for all."""
    if W.dim() != 2 or W.shape[0] != 3 * 32 * 32 + 1:
        raise ValueError(f"expected W of shape (3073, C): 3x32x32 pixel weights and a bias row; got {tuple(W.shape)}")
    w = W[:-1].detach().double().cpu()  # (3072, C)
    w = w.t().reshape(-1, 3, 32, 32)  # (C, 3, 32, 32), channel-major like the CIFAR rows
    lo, hi = w.min(), w.max()
    scaled = (w - lo) / (hi - lo) if hi > lo else torch.zeros_like(w)
    return (255.0 * scaled).round().to(torch.uint8)


def grid_columns(num_classes: int) -> int:
    """Tiles per row: 5 for CIFAR-10 (the course's 2 x 5), at most 10 otherwise (10 x 10 for CIFAR-100)."""
    return 5 if num_classes == 10 else min(num_classes, 10)


def grid_shape(num_classes: int, scale: int) -> tuple[int, int]:
    """``(height, width)`` in pixels of :func:`template_grid`'s image."""
    cols = grid_columns(num_classes)
    rows = -(-num_classes // cols)
    tile = 32 * scale
    return rows * (tile + LABEL_HEIGHT + PAD) + PAD, cols * (tile + PAD) + PAD


def check_scale(scale: int, option: str = "scale") -> None:
    """Refuse a tile enlargement that is not a whole number >= 1 (ConfigError naming ``option``)."""
    check_count(scale, option)


def template_grid(W: Tensor, class_names: Sequence[str], scale: int = 3) -> Tensor:
    """One labelled image of all class templates: ``(3, H, W)`` uint8 (see :func:`grid_shape`).

    Tile ``c`` (label order, row-major, :func:`grid_columns` per row) shows class ``c``,
    enlarged ``scale`` times (nearest neighbour), with its name written underneath.
    """
    check_scale(scale)
    templates = class_templates(W)  # (C, 3, 32, 32)
    num_classes = templates.shape[0]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} templates")
    # The labelled background is the same for every config of a sweep: drawn once (text rendering
    # is most of the cost), and only the tiles are written per image.
    canvas = _labelled_background(tuple(class_names), scale).copy()  # (H, W, 3)
    cols, tile = grid_columns(num_classes), 32 * scale
    tiles = templates.permute(0, 2, 3, 1).numpy()  # (C, 32, 32, 3)
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)  # (C, tile, tile, 3), nearest neighbour
    for c in range(num_classes):
        x, y = _tile_origin(c, cols, tile)
        canvas[y : y + tile, x : x + tile] = tiles[c]
    return torch.from_numpy(canvas).permute(2, 0, 1)  # (3, H, W)


def _tile_origin(c: int, cols: int, tile: int) -> tuple[int, int]:
    """Top-left ``(x, y)`` in pixels of tile ``c``."""
    row, col = divmod(c, cols)
    return PAD + col * (tile + PAD), PAD + row * (tile + LABEL_HEIGHT + PAD)


@functools.lru_cache(maxsize=8)
def _labelled_background(class_names: tuple[str, ...], scale: int) -> np.ndarray:
    """White ``(H, W, 3)`` uint8 canvas with every class name written under its tile's place."""
    num_classes = len(class_names)
    height, width = grid_shape(num_classes, scale)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    cols, tile = grid_columns(num_classes), 32 * scale
    for c, name in enumerate(class_names):
        x, y = _tile_origin(c, cols, tile)
        draw.text((x + 1, y + tile), _fit(draw, name, font, tile), fill=(0, 0, 0), font=font)
    background = np.asarray(canvas).copy()
    background.flags.writeable = False  # shared by every call: callers copy it
    return background


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Shorten ``text`` until it fits in ``width`` pixels."""
    while text and draw.textlength(text, font=font) > width - 2:
        text = text[:-1]
    return text
