"""Single-layer k-means features of Coates, Lee & Ng (AISTATS 2011), as in their ``kmeans_demo.m``.

``fit`` learns, from random ``patch_size`` x ``patch_size`` patches of the training images (raw 0-255 values):

1. contrast normalization of each patch vector ``p`` (P = 3 * patch_size**2 values):
   ``p_n = (p - mean(p)) / sqrt(var(p) + 10)``, ``var`` unbiased (``/ (P - 1)``) as MATLAB's;
2. ZCA whitening ``x = (p_n - patch_mean) @ whitening``, ``whitening = V diag(1 / sqrt(d + whiten_eps)) V^T``
   from the eigen-decomposition ``V diag(d) V^T`` of the normalized patches' covariance;
3. k-means on the whitened patches as their ``run_kmeans.m``: ``centroids = 0.1 * randn``, each patch goes to
   ``argmax_k(c_k . x - 0.5 |c_k|^2)`` (the nearest centroid), each centroid becomes the mean of its patches,
   an empty cluster becomes 0. ``objective[t]`` is the mean ``|x - c|^2`` to the nearest centroid at
   iteration t (before its update), which cannot rise from one iteration to the next.

``forward`` is their ``extract_features.m``: for every patch at ``stride`` (27 x 27 = 729 positions for 6x6
patches of 32x32), ``z_k = |x - c_k|`` and the "triangle" activation ``f_k = max(0, mean_j(z_j) - z_k)``,
summed over the four quadrants of the position grid: rows and columns ``[0, h)`` and ``[h, R)`` with
``h = ceil(R / 2)`` (MATLAB's ``round(27 / 2) = 14``). Features ``(N, 4 K)``, quadrant-major: top-left,
top-right, bottom-left, bottom-right, each ``K`` values in centroid order.

It never forms the patches: with ``a_k = whitening @ c_k``, ``x . c_k = (p_n - patch_mean) . a_k`` and
``p_n . a = (p . a - mean(p) sum(a)) / sqrt(var(p) + 10) = p . (a - mean(a)) / sqrt(var(p) + 10)``, where
``p . (a - mean(a))`` is one ``conv2d`` of the image with a zero-mean ``(3, ps, ps)`` kernel and ``var(p)`` comes
from box filters (``avg_pool2d`` of the image and its square). ``|x|^2`` is the sum of squares of P more such
channels, the columns of ``whitening``; then ``z_k^2 = |x|^2 - 2 x . c_k + |c_k|^2``. So one conv with ``K + P``
output channels, run channels_last so that its output is position-major and the reductions over ``K`` contiguous.

Patch vectors are channel-major, ``p = image[:, i:i+ps, j:j+ps].reshape(-1)``: a centroid shown as a colour
tile is ``c.view(3, ps, ps)`` (:meth:`KMeansFeatures.dictionary_image`). Everything learned is a buffer
(``patch_mean (P,)``, ``whitening (P, P)``, ``centroids (K, P)``): ``state_dict()`` is the whole model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_linear.features.hog_color import as_images

__all__ = ["KMeansFeatures"]

CONTRAST_EPS = 10.0  # added to each patch's variance (0-255 pixel values), as their code


class KMeansFeatures(nn.Module):
    """Coates-Lee-Ng k-means features of 0-255 RGB images: ``(N, 3, S, S)`` -> ``(N, 4 K)`` float32.

    Args (the paper's values by default):
        num_centroids: ``K``.
        patch_size: ``ps``; ``P = 3 ps^2``.
        stride: between patch positions, in ``forward`` and for the sampled patches.
        whiten_eps: added to the covariance's eigenvalues before ``1 / sqrt``.
        num_patches: random training patches (taken from the images in turn, at random positions).
        kmeans_iterations: k-means iterations (their code: 50).
        pooling: ``"quadrant"`` (sum over the 4 quadrants), the only one.
        seed: seeds ``fit``'s sampling and initialization when no generator is given.
        image_size: ``S``.
        chunk_size: images per conv step in ``forward`` (~5 MB each in float32 for K = 1600).
        kmeans_batch: patches per assignment step (bounds the ``(batch, K)`` score matrix).
    """

    def __init__(
        self,
        *,
        num_centroids: int = 1600,
        patch_size: int = 6,
        stride: int = 1,
        whiten_eps: float = 0.1,
        num_patches: int = 400_000,
        kmeans_iterations: int = 50,
        pooling: str = "quadrant",
        seed: int = 0,
        image_size: int = 32,
        chunk_size: int = 32,
        kmeans_batch: int = 8192,
    ) -> None:
        super().__init__()
        if pooling != "quadrant":
            raise ValueError(f"pooling must be 'quadrant', got {pooling!r}")
        if not 0 < patch_size <= image_size:
            raise ValueError(f"patch_size must be in [1, {image_size}], got {patch_size}")
        self.num_centroids = num_centroids
        self.patch_size = patch_size
        self.stride = stride
        self.whiten_eps = whiten_eps
        self.num_patches = num_patches
        self.kmeans_iterations = kmeans_iterations
        self.pooling = pooling
        self.seed = seed
        self.image_size, self.chunk_size, self.kmeans_batch = image_size, chunk_size, kmeans_batch
        self.patch_dim = 3 * patch_size * patch_size
        self.positions = (image_size - patch_size) // stride + 1  # R per side: 27 for 6x6 on 32x32
        self.out_features = 4 * num_centroids
        self.objective: list[float] = []
        P = self.patch_dim
        # Shapes fixed by the options, so that a fresh module can load_state_dict() a fitted one.
        self.register_buffer("patch_mean", torch.zeros(P))
        self.register_buffer("whitening", torch.zeros(P, P))
        self.register_buffer("centroids", torch.zeros(num_centroids, P))

    # ----------------------------------------------------------------------------------- fit

    def fit(
        self,
        images: Tensor,
        generator: torch.Generator | None = None,
        progress: Callable[[int, float], None] | None = None,
    ) -> KMeansFeatures:
        """Learn the whitening and the centroids from ``(N, 3, S, S)`` 0-255 images; ``progress(t, objective)``."""
        generator = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        normalized = self.normalize(self.sample_patches(images, self.num_patches, generator))
        self.fit_whitening(normalized)
        self.run_kmeans(self.whiten(normalized), generator, progress)
        return self

    def sample_patches(self, images: Tensor, num: int, generator: torch.Generator) -> Tensor:
        """``(num, P)`` raw patches: patch ``i`` from image ``i % N`` at a random position of the stride grid."""
        images = as_images(images, self.image_size)
        N, S, ps = images.shape[0], self.image_size, self.patch_size
        flat = images.reshape(N, 3 * S * S)
        grid = torch.arange(ps)
        offsets = (torch.arange(3).view(3, 1, 1) * S * S + grid.view(1, ps, 1) * S + grid.view(1, 1, ps)).view(-1)
        rows, cols = (torch.randint(0, self.positions, (num,), generator=generator) * self.stride for _ in range(2))
        patches = torch.empty(num, self.patch_dim, dtype=self.centroids.dtype, device=self.centroids.device)
        for start in range(0, num, 65536):  # bounds the (chunk, P) int64 index
            sl = slice(start, min(start + 65536, num))
            index = (rows[sl] * S + cols[sl]).view(-1, 1) + offsets.view(1, -1)
            image_index = torch.arange(sl.start, sl.stop).remainder_(N).view(-1, 1)
            patches[sl] = flat[image_index.to(flat.device), index.to(flat.device)].to(patches.dtype)
        return patches

    def normalize(self, patches: Tensor) -> Tensor:
        """Contrast normalization of ``(M, P)`` raw patches: ``(p - mean(p)) / sqrt(var(p) + 10)``."""
        mean = patches.mean(dim=1, keepdim=True)
        return (patches - mean) / torch.sqrt(patches.var(dim=1, keepdim=True) + CONTRAST_EPS)

    def fit_whitening(self, normalized: Tensor) -> None:
        """Set ``patch_mean`` and the ZCA ``whitening`` from ``(M, P)`` normalized patches."""
        x = normalized.to(torch.float64)
        mean = x.mean(dim=0)
        centred = x - mean
        cov = centred.T @ centred / (x.shape[0] - 1)
        d, V = torch.linalg.eigh(cov)
        # Normalized patches sum to 0, so one eigenvalue is 0 up to rounding: clamp its tiny negative values.
        W = V @ torch.diag(torch.rsqrt(d.clamp_min(0) + self.whiten_eps)) @ V.T
        self.patch_mean.copy_(mean)
        self.whitening.copy_(W)

    def whiten(self, normalized: Tensor) -> Tensor:
        """``(M, P)`` normalized patches -> whitened ``(normalized - patch_mean) @ whitening``."""
        return (normalized - self.patch_mean) @ self.whitening

    def run_kmeans(
        self, x: Tensor, generator: torch.Generator, progress: Callable[[int, float], None] | None = None
    ) -> None:
        """Their ``run_kmeans.m`` on ``(M, P)`` whitened patches: sets ``centroids`` and ``objective``."""
        M, K = x.shape[0], self.num_centroids
        centroids = (0.1 * torch.randn(K, x.shape[1], generator=generator, dtype=torch.float64)).to(x)
        x2 = (x * x).sum(dim=1)  # (M,)
        self.objective = []
        for t in range(self.kmeans_iterations):
            half_c2 = 0.5 * (centroids * centroids).sum(dim=1)  # (K,)
            sums = torch.zeros(K, x.shape[1], dtype=torch.float64, device=x.device)
            counts = torch.zeros(K, dtype=torch.float64, device=x.device)
            loss = torch.zeros((), dtype=torch.float64, device=x.device)
            for start in range(0, M, self.kmeans_batch):
                xb = x[start : start + self.kmeans_batch]
                best, labels = torch.addmm(half_c2, xb, centroids.T, alpha=1, beta=-1).max(dim=1)
                # |x - c|^2 / 2 = |x|^2 / 2 - (c . x - |c|^2 / 2); their "loss".
                loss += (0.5 * x2[start : start + xb.shape[0]] - best).sum(dtype=torch.float64)
                sums.index_add_(0, labels, xb.to(torch.float64))
                counts += torch.bincount(labels, minlength=K)
            self.objective.append(2.0 * loss.item() / M)
            # An empty cluster gets 0 (their "zap"), not the NaN of 0 / 0.
            centroids = (sums / counts.clamp_min(1).unsqueeze(1)).to(x.dtype)
            if progress is not None:
                progress(t, self.objective[-1])
        self.centroids.copy_(centroids)

    # ----------------------------------------------------------------------------------- features

    def forward(self, images: Tensor) -> Tensor:
        """``(N, 3, S, S)`` or ``(N, 3 S^2)`` 0-255 images -> ``(N, 4 K)`` float32 quadrant-pooled triangle features."""
        if not bool(self.whitening.any()):
            raise RuntimeError("KMeansFeatures is not fitted: call fit() or load_state_dict() first")
        images = as_images(images, self.image_size)
        kernels, offsets, bias = self._kernels()
        out = torch.empty(images.shape[0], self.out_features, dtype=torch.float32, device=self.centroids.device)
        for start in range(0, images.shape[0], self.chunk_size):
            chunk = images[start : start + self.chunk_size].to(self.centroids.device)
            out[start : start + chunk.shape[0]] = self._encode(chunk, kernels, offsets, bias).to(torch.float32)
        return out

    def _kernels(self) -> tuple[Tensor, Tensor, Tensor]:
        """The ``K + P`` conv kernels, each less its mean; ``m . kernel``; ``|c_k|^2 + 2 m . a_k``."""
        a = self.centroids @ self.whitening.T  # (K, P): row k is a_k = W c_k, as x . c = (p_n - m) . (W c)
        b = self.whitening.T  # (P, P): row j is column j of W; |x|^2 = sum_j ((p_n - m) . W[:, j])^2
        kernels = torch.cat([a, b])  # (K + P, P)
        offsets = kernels @ self.patch_mean  # (K + P,)
        # p . a - mean(p) sum(a) = p . (a - mean(a)): with zero-mean kernels the conv is the numerator itself.
        kernels = kernels - kernels.mean(dim=1, keepdim=True)
        ps, K = self.patch_size, self.num_centroids
        bias = (self.centroids * self.centroids).sum(dim=1) + 2 * offsets[:K]  # (K,)
        # channels_last: the conv runs faster on the CPU, and its output is position-major, (n, R, R, K + P).
        return kernels.view(-1, 3, ps, ps).contiguous(memory_format=torch.channels_last), offsets[K:], bias

    def _encode(self, images: Tensor, kernels: Tensor, offsets: Tensor, bias: Tensor) -> Tensor:
        """``(n, 3, S, S)`` -> ``(n, 4 K)`` in the buffers' dtype."""
        K, P, ps, s = self.num_centroids, self.patch_dim, self.patch_size, self.stride
        x = images.to(torch.float64)
        # A constant shift does not change p . (a - mean(a)); centring each image keeps p small, so the float32
        # conv adds up smaller terms. The box-filter moments are taken in float64: var = E[p^2] - E[p]^2 cancels.
        x = x - x.mean(dim=(1, 2, 3), keepdim=True)
        mean = F.avg_pool2d(x, ps, s).mean(dim=1)  # (n, R, R): mean(p)
        var = (F.avg_pool2d(x * x, ps, s).mean(dim=1) - mean * mean) * (P / (P - 1))  # unbiased, as MATLAB
        inv_std = torch.rsqrt(var.clamp_min(0) + CONTRAST_EPS).to(kernels.dtype).unsqueeze(-1)  # (n, R, R, 1)
        x = x.to(kernels.dtype).contiguous(memory_format=torch.channels_last)
        proj = F.conv2d(x, kernels, stride=s).permute(0, 2, 3, 1)  # (n, R, R, K + P), contiguous: p . kernel
        # (p_n - m) . kernel = (p . kernel) / sqrt(var + 10) - m . kernel; |x|^2 from the P whitening channels.
        xx = proj[..., K:].mul(inv_std).sub_(offsets).square_().sum(dim=-1, keepdim=True)  # (n, R, R, 1)
        # z^2 = |x|^2 - 2 x . c + |c|^2 = |x|^2 - 2 (p . a~) / sqrt(var + 10) + (|c|^2 + 2 m . a), in place.
        z = proj[..., :K]
        torch.addcmul(xx, z, inv_std.mul(-2), out=z)
        z.add_(bias).clamp_min_(0).sqrt_()  # (n, R, R, K): |x - c_k|
        # min(0, z_k - mean_j z_j) = -(triangle activation): one pass less than negating first.
        neg_act = z.sub_(z.mean(dim=-1, keepdim=True)).clamp_max_(0)
        h = math.ceil(self.positions / 2)
        rows = torch.stack([neg_act[:, :h].sum(dim=1), neg_act[:, h:].sum(dim=1)], dim=1)  # (n, 2, R, K)
        quads = torch.stack([rows[:, :, :h].sum(dim=2), rows[:, :, h:].sum(dim=2)], dim=2)  # (n, 2, 2, K)
        return quads.reshape(images.shape[0], 4 * K).abs_()  # sums of values <= 0: abs negates, and gives +0, not -0

    def dictionary_image(self) -> Tensor:
        """The centroids as ``(K, 3, ps, ps)`` colour tiles, each scaled to [0, 1] (constant tiles: 0.5)."""
        tiles = self.centroids.view(-1, 3, self.patch_size, self.patch_size).to(torch.float32)
        low = tiles.amin(dim=(1, 2, 3), keepdim=True)
        span = tiles.amax(dim=(1, 2, 3), keepdim=True) - low
        return torch.where(span > 0, (tiles - low) / span.clamp_min(1e-12), 0.5)

    def extra_repr(self) -> str:
        return (
            f"num_centroids={self.num_centroids}, patch_size={self.patch_size}, stride={self.stride}, "
            f"whiten_eps={self.whiten_eps}, positions={self.positions}, out_features={self.out_features}"
        )
