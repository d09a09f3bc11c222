"""Tests of :class:`lit_linear.features.kmeans.KMeansFeatures` on tiny random images, CPU only.

The slow reference forms every patch (``F.unfold``) and follows their ``extract_features.m`` line by line.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_linear.features.kmeans import KMeansFeatures

OPTIONS = {"num_centroids": 8, "num_patches": 3000, "kmeans_iterations": 5, "seed": 0}


def make_images(n: int, seed: int = 0) -> Tensor:
    """``(n, 3, 32, 32)`` uint8: blocky colour (flat patches, edges) plus noise."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (n, 3, 8, 8), generator=g).float().repeat_interleave(4, 2).repeat_interleave(4, 3)
    noise = 20 * torch.randn(n, 3, 32, 32, generator=g)
    return (blocks + noise).clamp(0, 255).to(torch.uint8)


def reference_features(module: KMeansFeatures, images: Tensor) -> Tensor:
    """Their ``extract_features.m`` in float64, one image at a time, with the patches formed."""
    ps, s, R, K = module.patch_size, module.stride, module.positions, module.num_centroids
    m, W, C = (b.to(torch.float64) for b in (module.patch_mean, module.whitening, module.centroids))
    rows = []
    for image in images.to(torch.float64):
        patches = F.unfold(image.unsqueeze(0), ps, stride=s)[0].T  # (R*R, P), channel-major like c.view(3, ps, ps)
        patches = (patches - patches.mean(1, keepdim=True)) / torch.sqrt(patches.var(1, keepdim=True) + 10)
        x = (patches - m) @ W
        z = torch.sqrt(((x.unsqueeze(1) - C.unsqueeze(0)) ** 2).sum(dim=2))  # (R*R, K)
        act = torch.clamp(z.mean(dim=1, keepdim=True) - z, min=0).view(R, R, K)
        h = math.ceil(R / 2)
        quads = [act[:h, :h], act[:h, h:], act[h:, :h], act[h:, h:]]  # TL, TR, BL, BR
        rows.append(torch.cat([q.sum(dim=(0, 1)) for q in quads]))
    return torch.stack(rows)


@pytest.fixture(scope="module")
def fitted64() -> KMeansFeatures:
    return KMeansFeatures(**OPTIONS).double().fit(make_images(40))


def test_shapes_dtypes_and_buffers(fitted64):
    module = KMeansFeatures(**OPTIONS).fit(make_images(40))
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {
        "patch_mean": (108,),
        "whitening": (108, 108),
        "centroids": (8, 108),
    }
    features = module(make_images(3, seed=1))
    assert module.out_features == 32 and features.shape == (3, 32) and features.dtype == torch.float32
    assert fitted64(make_images(3, seed=1).reshape(3, 3072)).dtype == torch.float32
    tiles = module.dictionary_image()
    assert tiles.shape == (8, 3, 6, 6) and tiles.min() >= 0 and tiles.max() <= 1


def test_whitened_patches_have_identity_covariance():
    module = KMeansFeatures(num_centroids=4, whiten_eps=1e-6).double()
    patches = module.sample_patches(make_images(50), 5000, torch.Generator().manual_seed(0))
    normalized = module.normalize(patches)
    # Their contrast normalization, with MATLAB's unbiased var (/ (P - 1)).
    expected = (patches - patches.mean(1, keepdim=True)) / torch.sqrt(patches.var(1, keepdim=True) + 10)
    torch.testing.assert_close(normalized, expected)
    module.fit_whitening(normalized)
    x = module.whiten(normalized)
    cov = torch.cov(x.T)
    # Normalized patches sum to 0: the all-ones direction has variance 0, every other one 1.
    ones = torch.full((108, 1), 108**-0.5, dtype=torch.float64)
    torch.testing.assert_close(cov, torch.eye(108, dtype=torch.float64) - ones @ ones.T, rtol=0, atol=1e-2)


def test_kmeans_objective_does_not_rise():
    module = KMeansFeatures(num_centroids=16, num_patches=4000, kmeans_iterations=12, seed=3).double()
    seen = []
    module.fit(make_images(30), progress=lambda t, value: seen.append((t, value)))
    objective = torch.tensor(module.objective, dtype=torch.float64)
    assert [t for t, _ in seen] == list(range(12)) and objective.tolist() == [v for _, v in seen]
    assert (objective.diff() <= 1e-12 * objective[:-1]).all(), objective
    assert objective[-1] < objective[0]


@pytest.mark.parametrize("patch_size,stride", [(6, 1), (5, 2)])  # R = 27 (split 14 + 13) and R = 14
def test_triangle_features_match_the_slow_reference(patch_size, stride):
    options = dict(OPTIONS, patch_size=patch_size, stride=stride)
    images = make_images(2, seed=2)
    module = KMeansFeatures(**options).double().fit(make_images(40))
    expected = reference_features(module, images)
    assert (expected > 0).any()
    torch.testing.assert_close(module(images).to(torch.float64), expected, rtol=1e-4, atol=1e-4)
    # The float32 module (how it runs for real) against the float64 reference.
    single = KMeansFeatures(**options)
    single.load_state_dict(module.float().state_dict())
    torch.testing.assert_close(single(images).to(torch.float64), expected, rtol=1e-4, atol=1e-3)


def test_float64_matches_the_reference_tightly(fitted64):
    images = make_images(2, seed=4)
    torch.testing.assert_close(fitted64(images).double(), reference_features(fitted64, images), rtol=1e-6, atol=1e-6)


def test_state_dict_round_trip_gives_identical_features():
    module = KMeansFeatures(**OPTIONS).fit(make_images(40))
    fresh = KMeansFeatures(**OPTIONS)
    fresh.load_state_dict(module.state_dict())
    images = make_images(3, seed=5)
    assert torch.equal(fresh(images), module(images))


def test_fit_is_deterministic_for_a_seed_and_unfitted_forward_is_refused():
    a = KMeansFeatures(**OPTIONS).fit(make_images(20))
    b = KMeansFeatures(**OPTIONS).fit(make_images(20))
    assert torch.equal(a.centroids, b.centroids)
    with pytest.raises(RuntimeError, match="not fitted"):
        KMeansFeatures(**OPTIONS)(make_images(1))
