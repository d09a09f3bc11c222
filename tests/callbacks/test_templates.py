"""Class templates: bias row dropped, channel-major reshape, one shared min/max, the labelled grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import CIFAR10_NAMES

from lit_linear.callbacks.tensorboard.templates import (
    LABEL_HEIGHT,
    PAD,
    class_templates,
    grid_columns,
    grid_shape,
    template_grid,
)
from lit_linear.data.cifar import CIFAR100_CLASSES


def _weights(num_classes: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(3073, num_classes, generator=torch.Generator().manual_seed(seed))


def test_class_templates_shape_and_dtype():
    out = class_templates(_weights(10))
    assert out.shape == (10, 3, 32, 32)
    assert out.dtype == torch.uint8


def test_one_min_max_over_all_classes():
    W = torch.zeros(3073, 3)
    W[:-1, 0] = torch.linspace(-1.0, 1.0, 3072)  # the widest class sets the range
    W[:-1, 1] = torch.linspace(-0.1, 0.1, 3072)  # a faint class stays faint: no per-class rescaling
    W[:-1, 2] = 0.5
    out = class_templates(W)
    assert int(out.min()) == 0 and int(out.max()) == 255
    assert int(out[0].min()) == 0 and int(out[0].max()) == 255
    faint = out[1].int()
    assert int(faint.min()) >= 110 and int(faint.max()) <= 145  # 255 * (±0.1 + 1) / 2
    assert torch.all(out[2] == round(255 * 0.75))
    # the same numbers as the course's 255 * (w - w.min()) / (w.max() - w.min()) over all of W[:-1]
    w = W[:-1].double().numpy()
    expected = np.round(255 * (w - w.min()) / (w.max() - w.min())).T.reshape(3, 3, 32, 32)
    np.testing.assert_array_equal(out.numpy(), expected.astype(np.uint8))


def test_bias_row_is_dropped():
    W = _weights(10)
    W2 = W.clone()
    W2[-1] = 1e6  # a huge bias would squash every template if it were part of the min/max
    assert torch.equal(class_templates(W), class_templates(W2))


def test_channel_major_reshape():
    W = torch.zeros(3073, 2)
    channel, y, x = 1, 5, 7
    W[channel * 1024 + y * 32 + x, 1] = 1.0  # the CIFAR row layout: 1024 red, 1024 green, 1024 blue
    out = class_templates(W)
    assert int(out[1, channel, y, x]) == 255
    assert int(out.sum()) == 255


def test_constant_weights_give_zeros_and_bad_shape_is_refused():
    assert int(class_templates(torch.full((3073, 4), 0.3)).sum()) == 0
    with pytest.raises(ValueError, match="3073"):
        class_templates(torch.zeros(3072, 10))


@pytest.mark.parametrize(
    ("num_classes", "rows", "cols"), [(10, 2, 5), (100, 10, 10), (2, 1, 2), (20, 2, 10), (37, 4, 10)]
)
def test_grid_layout(num_classes, rows, cols):
    assert grid_columns(num_classes) == cols
    scale = 2
    tile = 32 * scale
    assert grid_shape(num_classes, scale) == (rows * (tile + LABEL_HEIGHT + PAD) + PAD, cols * (tile + PAD) + PAD)


def _tile(image: np.ndarray, c: int, cols: int, scale: int) -> np.ndarray:
    """Tile ``c`` of a ``(H, W, 3)`` grid image, without its label strip."""
    tile = 32 * scale
    row, col = divmod(c, cols)
    x, y = PAD + col * (tile + PAD), PAD + row * (tile + LABEL_HEIGHT + PAD)
    return image[y : y + tile, x : x + tile]


@pytest.mark.parametrize(("names", "scale"), [(CIFAR10_NAMES, 3), (list(CIFAR100_CLASSES), 1)])
def test_template_grid_one_tile_per_class_in_label_order(names, scale):
    num_classes = len(names)
    W = _weights(num_classes, seed=1)
    image = template_grid(W, names, scale)
    assert image.dtype == torch.uint8
    assert tuple(image.shape) == (3, *grid_shape(num_classes, scale))
    if num_classes == 100:
        assert grid_shape(100, scale) == (10 * (32 * scale + LABEL_HEIGHT + PAD) + PAD, 10 * (32 * scale + PAD) + PAD)
    pixels = image.permute(1, 2, 0).numpy()
    templates = class_templates(W).permute(0, 2, 3, 1).numpy()  # (C, 32, 32, 3)
    cols, tile = grid_columns(num_classes), 32 * scale
    for c in range(num_classes):
        expected = templates[c].repeat(scale, axis=0).repeat(scale, axis=1)  # nearest-neighbour enlargement
        np.testing.assert_array_equal(_tile(pixels, c, cols, scale), expected, err_msg=f"tile {c} ({names[c]})")
        row, col = divmod(c, cols)
        x, y = PAD + col * (tile + PAD), PAD + row * (tile + LABEL_HEIGHT + PAD) + tile
        label = pixels[y : y + LABEL_HEIGHT, x : x + tile]
        assert (label < 128).any(), f"no label drawn under tile {c} ({names[c]})"


def test_template_grid_needs_one_name_per_class():
    with pytest.raises(ValueError, match="class names"):
        template_grid(_weights(10), CIFAR10_NAMES[:9])


@pytest.mark.parametrize("scale", [0, -1, 1.5])
def test_template_grid_needs_a_whole_positive_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        template_grid(_weights(10), CIFAR10_NAMES, scale)


def test_template_grids_do_not_share_pixels():
    # The labelled background is cached per class list: each image must be a copy of it.
    first = template_grid(_weights(10, seed=1), CIFAR10_NAMES, 2)
    kept = first.clone()
    second = template_grid(_weights(10, seed=2), CIFAR10_NAMES, 2)
    assert not torch.equal(first, second)
    assert torch.equal(first, kept), "drawing another grid changed an earlier one"
