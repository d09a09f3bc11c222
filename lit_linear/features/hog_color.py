"""The CS231n assignment-1 image features, vectorized: HOG on the grey image plus a hue histogram.

The course's ``cs231n/features.py`` loops over images in numpy; this computes the same numbers for a whole
chunk of images at once with tensor ops (``torch.atan2``, ``torch.bucketize``, ``scatter_add_``). Per image:

- **HOG** (``hog_feature``): grey ``g = 0.299 R + 0.587 G + 0.114 B`` (the course's ``rgb2gray`` has a
  typo, 0.144 for blue; ``gray_weights=(0.299, 0.587, 0.144)`` reproduces it). Forward differences as
  the course's ``np.diff``: ``gx[:, j] = g[:, j+1] - g[:, j]`` (0 in the last column), ``gy`` likewise down
  the rows. Orientation ``atan2(gy, gx + 1e-15)`` in degrees ``+ 90``, 9 bins of 20 degrees over [0, 180);
  each cell's histogram is the *mean* over its 8x8 pixels of the magnitudes in each bin (the course's
  ``uniform_filter(size=8)`` sampled at the cell centres ``4::8``, which is that mean).
  ``orientation="course"`` keeps the course's quirk: the angle ``+ 90`` lies in (-90, 270], and the
  gradients outside [0, 180) (those pointing left, ``gx < 0``) fall in no bin and are dropped (so is an
  angle of exactly 0). ``orientation="unsigned"`` folds them in instead (the angle modulo 180), the usual
  unsigned HOG. Order of the 144 values: ``(cell column, cell row, bin)``, as the course's ``.T`` then ``ravel``.
- **Colour** (``color_histogram_hsv``, ``nbin=10``): the HSV hue of each pixel (matplotlib's
  ``rgb_to_hsv``: 0 for grey pixels; on ties of the largest channel blue wins over green over red),
  scaled to [0, 255], in 10 equal bins (the last one closed); the counts divided by the pixel count, as the
  course's ``density=True`` histogram times the bin widths: fractions that sum to 1.

Computed in float64 (cheap: 1024 pixels an image) so that the bins match the course's float64 numpy at
their edges; returned as float32.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["HOGColor", "as_images"]

Orientation = Literal["course", "unsigned"]


def as_images(images: Tensor, image_size: int) -> Tensor:
    """``(N, 3, S, S)`` or ``(N, 3*S*S)`` rows (channel-major, as in the CIFAR files) -> an ``(N, 3, S, S)`` view."""
    images = torch.as_tensor(images)
    if images.dim() == 2 and images.shape[1] == 3 * image_size * image_size:
        return images.view(-1, 3, image_size, image_size)
    if images.dim() == 4 and images.shape[1:] == (3, image_size, image_size):
        return images
    raise ValueError(
        f"images must have shape (N, 3, {image_size}, {image_size}) or (N, {3 * image_size * image_size}), "
        f"got {tuple(images.shape)}"
    )


class HOGColor(nn.Module):
    """HOG + hue-histogram features of 0-255 RGB images: ``(N, 3, S, S)`` -> ``(N, out_features)`` float32.

    No learned state; ``fit`` exists so that it can be swapped for :class:`~lit_linear.features.kmeans.KMeansFeatures`.

    Args:
        image_size: ``S``, a multiple of ``cell_size``.
        cell_size: pixels per HOG cell side (8: 4x4 cells on 32x32).
        orientations: HOG bins over [0, 180) degrees.
        color_bins: hue histogram bins.
        orientation: ``"course"`` (drop the gradients outside [0, 180), as the course) or ``"unsigned"``.
        gray_weights: the R, G, B weights of the grey image.
        chunk_size: images per vectorized step (bounds the float64 temporaries: ~100 kB an image).
    """

    def __init__(
        self,
        *,
        image_size: int = 32,
        cell_size: int = 8,
        orientations: int = 9,
        color_bins: int = 10,
        orientation: Orientation = "course",
        gray_weights: tuple[float, float, float] = (0.299, 0.587, 0.114),
        chunk_size: int = 2048,
    ) -> None:
        super().__init__()
        if image_size % cell_size:
            raise ValueError(f"image_size {image_size} is not a multiple of cell_size {cell_size}")
        if orientation not in ("course", "unsigned"):
            raise ValueError(f"orientation must be 'course' or 'unsigned', got {orientation!r}")
        self.image_size, self.cell_size, self.orientations = image_size, cell_size, orientations
        self.color_bins, self.orientation, self.chunk_size = color_bins, orientation, chunk_size
        self.gray_weights = tuple(float(w) for w in gray_weights)
        self.cells = image_size // cell_size
        self.out_features = self.cells * self.cells * orientations + color_bins

    def fit(self, images: Tensor, generator: torch.Generator | None = None, progress: object = None) -> HOGColor:
        """Nothing to learn: returns ``self`` (the signature of :meth:`KMeansFeatures.fit`)."""
        return self

    def forward(self, images: Tensor) -> Tensor:
        """``(N, 3, S, S)`` or ``(N, 3*S*S)`` 0-255 values (uint8 or float) -> ``(N, out_features)`` float32."""
        images = as_images(images, self.image_size)
        out = torch.empty(images.shape[0], self.out_features, dtype=torch.float32, device=images.device)
        for start in range(0, images.shape[0], self.chunk_size):
            x = images[start : start + self.chunk_size].to(torch.float64)
            out[start : start + x.shape[0], : -self.color_bins] = self.hog(x)
            out[start : start + x.shape[0], -self.color_bins :] = self.hue_histogram(x)
        return out

    def hog(self, x: Tensor) -> Tensor:
        """``(n, 3, S, S)`` float64 -> ``(n, cells*cells*orientations)``, the course's ``hog_feature``."""
        n, _, S, _ = x.shape
        w = self.gray_weights
        gray = w[0] * x[:, 0] + w[1] * x[:, 1] + w[2] * x[:, 2]  # (n, S, S)
        gx = torch.zeros_like(gray)
        gy = torch.zeros_like(gray)
        gx[:, :, :-1] = torch.diff(gray, dim=2)
        gy[:, :-1, :] = torch.diff(gray, dim=1)
        magnitude = torch.sqrt(gx * gx + gy * gy)
        angle = torch.atan2(gy, gx + 1e-15) * (180 / math.pi) + 90  # (n, S, S) in (-90, 270]
        width = 180 / self.orientations
        if self.orientation == "unsigned":
            angle = torch.remainder(angle, 180.0)
        else:
            # The course's bins are "width*i <= angle < width*(i+1)" with "angle > 0": outside, no bin.
            magnitude = magnitude * ((angle > 0) & (angle < 180))
        # Compared with the same float64 edges as the course, so that angles on an edge fall alike.
        edges = width * torch.arange(1, self.orientations, dtype=x.dtype, device=x.device)
        bins = torch.bucketize(angle, edges, right=True).clamp_(max=self.orientations - 1)  # (n, S, S)
        # Cell (row r, column c) of a pixel -> the course's order: column-major cells, then the bin.
        cell = torch.arange(S, device=x.device) // self.cell_size
        cell_index = (cell.view(1, S) * self.cells + cell.view(S, 1)) * self.orientations  # (S, S)
        index = (cell_index + bins).view(n, S * S)
        hist = torch.zeros(n, self.cells * self.cells * self.orientations, dtype=x.dtype, device=x.device)
        hist.scatter_add_(1, index, magnitude.view(n, S * S))
        return hist / (self.cell_size * self.cell_size)

    def hue_histogram(self, x: Tensor) -> Tensor:
        """``(n, 3, S, S)`` float64 -> ``(n, color_bins)`` fractions, the course's ``color_histogram_hsv``."""
        n = x.shape[0]
        rgb = x / 255.0
        r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
        high = rgb.amax(dim=1)
        delta = high - rgb.amin(dim=1)
        # matplotlib's rgb_to_hsv assigns red, then green, then blue: the last one that is the maximum wins.
        hue = torch.where(
            b == high, 4.0 + (r - g) / delta, torch.where(g == high, 2.0 + (b - r) / delta, (g - b) / delta)
        )
        hue = torch.where(delta > 0, hue, 0.0)  # grey pixels: hue 0 (the 0/0 above is discarded here)
        hue = torch.remainder(hue / 6.0, 1.0) * 255.0
        edges = (255.0 / self.color_bins) * torch.arange(1, self.color_bins, dtype=x.dtype, device=x.device)
        bins = torch.bucketize(hue, edges, right=True).view(n, -1)  # the last bin includes 255, as numpy's
        counts = torch.zeros(n, self.color_bins, dtype=x.dtype, device=x.device)
        counts.scatter_add_(1, bins, torch.ones_like(hue).view(n, -1))
        return counts / bins.shape[1]

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, cell_size={self.cell_size}, orientation={self.orientation!r}, "
            f"out_features={self.out_features}"
        )
