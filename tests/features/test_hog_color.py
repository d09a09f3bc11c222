"""Tests of HOGColor against a slow numpy copy of the course's code, image by image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_linear.features.hog_color import HOGColor

WEIGHTS = (0.299, 0.587, 0.114)


def rgb2gray(rgb: np.ndarray, weights=WEIGHTS) -> np.ndarray:
    return np.dot(rgb[..., :3], list(weights))


def hog_feature(im: np.ndarray, weights=WEIGHTS, unsigned: bool = False) -> np.ndarray:
    """The course's ``hog_feature`` on one ``(32, 32, 3)`` image, with the cell mean for ``uniform_filter``."""
    image = rgb2gray(im, weights)
    sx, sy = image.shape
    orientations = 9
    cx, cy = (8, 8)
    gx = np.zeros(image.shape)
    gy = np.zeros(image.shape)
    gx[:, :-1] = np.diff(image, n=1, axis=1)
    gy[:-1, :] = np.diff(image, n=1, axis=0)
    grad_mag = np.sqrt(gx**2 + gy**2)
    grad_ori = np.arctan2(gy, (gx + 1e-15)) * (180 / np.pi) + 90
    if unsigned:
        grad_ori = np.mod(grad_ori, 180)
    n_cellsx = int(np.floor(sx / cx))
    n_cellsy = int(np.floor(sy / cy))
    orientation_histogram = np.zeros((n_cellsx, n_cellsy, orientations))
    for i in range(orientations):
        temp_ori = np.where(grad_ori < 180 / orientations * (i + 1), grad_ori, 0)
        temp_ori = np.where(grad_ori >= 180 / orientations * i, temp_ori, 0)
        cond2 = temp_ori > 0
        if unsigned:  # the folded angle of exactly 0 counts in bin 0
            cond2 = (grad_ori >= 180 / orientations * i) & (grad_ori < 180 / orientations * (i + 1))
        temp_mag = np.where(cond2, grad_mag, 0)
        orientation_histogram[:, :, i] = cell_means(temp_mag, cx).T
    return orientation_histogram.ravel()


def cell_means(a: np.ndarray, size: int) -> np.ndarray:
    """``uniform_filter(a, size)[size//2::size, size//2::size]``: each cell's mean (checked below with scipy)."""
    rows, cols = a.shape
    out = np.zeros((rows // size, cols // size))
    for r in range(rows // size):
        for c in range(cols // size):
            out[r, c] = a[r * size : (r + 1) * size, c * size : (c + 1) * size].mean()
    return out


def rgb_to_hsv(arr: np.ndarray) -> np.ndarray:
    """matplotlib's ``colors.rgb_to_hsv`` (matplotlib is not installed here)."""
    out = np.zeros_like(arr)
    arr_max = arr.max(-1)
    ipos = arr_max > 0
    delta = np.ptp(arr, -1)
    s = np.zeros_like(delta)
    s[ipos] = delta[ipos] / arr_max[ipos]
    ipos = delta > 0
    idx = (arr[..., 0] == arr_max) & ipos
    out[idx, 0] = (arr[idx, 1] - arr[idx, 2]) / delta[idx]
    idx = (arr[..., 1] == arr_max) & ipos
    out[idx, 0] = 2.0 + (arr[idx, 2] - arr[idx, 0]) / delta[idx]
    idx = (arr[..., 2] == arr_max) & ipos
    out[idx, 0] = 4.0 + (arr[idx, 0] - arr[idx, 1]) / delta[idx]
    out[..., 0] = (out[..., 0] / 6.0) % 1.0
    out[..., 1] = s
    out[..., 2] = arr_max
    return out


def color_histogram_hsv(im: np.ndarray, nbin=10, xmin=0, xmax=255, normalized=True) -> np.ndarray:
    bins = np.linspace(xmin, xmax, nbin + 1)
    hsv = rgb_to_hsv(im / xmax) * xmax
    imhist, bin_edges = np.histogram(hsv[:, :, 0], bins=bins, density=normalized)
    return imhist * np.diff(bin_edges)


def reference(images: np.ndarray, **kwargs) -> np.ndarray:
    """``(N, 3, 32, 32)`` uint8 -> ``(N, 154)``: the course's ``extract_features`` on HWC float images."""
    rows = []
    for im in images.transpose(0, 2, 3, 1).astype(np.float64):
        rows.append(np.concatenate([hog_feature(im, **kwargs), color_histogram_hsv(im, nbin=10)]))
    return np.stack(rows)


def make_images(n: int = 6) -> np.ndarray:
    """Random images with flat, grey and saturated areas, so every branch of hue and HOG is taken."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(max(n, 4), 3, 32, 32))
    images[0, :, :10] = 128  # flat grey: zero gradients, hue 0
    images[1, :, :, :16] = images[1, :1, :, :16]  # grey (R = G = B) but textured
    images[2] = np.round(images[2] / 64) * 64  # coarse levels: ties of the largest channel and zero gradients
    images[3, 2] = images[3, 1]  # G = B ties
    return np.clip(images, 0, 255).astype(np.uint8)[:n]


def test_shapes_dtypes_and_both_input_layouts():
    images = torch.from_numpy(make_images(3))
    module = HOGColor()
    assert module.fit(images) is module and module.out_features == 154
    features = module(images)
    assert features.shape == (3, 154) and features.dtype == torch.float32
    torch.testing.assert_close(module(images.reshape(3, 3072)), features, rtol=0, atol=0)
    assert features[:, 144:].sum(dim=1).sub(1).abs().max() < 1e-6  # hue fractions sum to 1


@pytest.mark.parametrize("orientation", ["course", "unsigned"])
def test_matches_the_courses_numpy_code(orientation):
    images = make_images()
    features = HOGColor(orientation=orientation, chunk_size=4)(torch.from_numpy(images))
    expected = reference(images, unsigned=orientation == "unsigned")
    np.testing.assert_allclose(features.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_the_courses_gray_weights_are_an_option():
    images = make_images(2)
    course = (0.299, 0.587, 0.144)
    features = HOGColor(gray_weights=course)(torch.from_numpy(images))
    np.testing.assert_allclose(features.numpy(), reference(images, weights=course), rtol=1e-4, atol=1e-4)


def test_course_mode_drops_left_pointing_gradients_and_unsigned_keeps_them():
    # A horizontal ramp that falls to the right: gx < 0 everywhere but the last column.
    ramp = torch.arange(32, 0, -1, dtype=torch.float64).mul(4).expand(1, 3, 32, 32)
    assert HOGColor(orientation="course")(ramp)[0, :144].abs().max() == 0
    assert HOGColor(orientation="unsigned")(ramp)[0, :144].sum() > 0


def test_cell_means_are_the_courses_uniform_filter():
    ndimage = pytest.importorskip("scipy.ndimage")
    a = np.random.default_rng(1).normal(size=(32, 32))
    np.testing.assert_allclose(ndimage.uniform_filter(a, size=(8, 8))[4::8, 4::8], cell_means(a, 8), rtol=1e-12)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="images must have shape"):
        HOGColor()(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiple of cell_size"):
        HOGColor(image_size=30)
