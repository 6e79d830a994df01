"""Tiling: identity returns the input, 2x output blends consistently."""

import pytest
import torch

from cryosr.core.fourier import upsample_bilinear
from cryosr.core.tiling import TilingConfig, apply_tiled, tile_starts


def test_tile_starts_cover_the_image():
    assert tile_starts(100, 40, 8) == [0, 32, 60]
    assert tile_starts(30, 40, 8) == [0]


def test_identity_is_returned_exactly():
    img = torch.randn(3, 100, 77, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = apply_tiled(lambda x: x, img, TilingConfig(tile=32, overlap=6))
    torch.testing.assert_close(out, img, atol=1e-12, rtol=0)


def test_pointwise_2x_function_tiled_equals_untiled():
    img = torch.randn(64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def fn(x):
        return torch.repeat_interleave(torch.repeat_interleave(x, 2, -1), 2, -2) * 2

    torch.testing.assert_close(apply_tiled(fn, img, TilingConfig(24, 4), scale=2), fn(img), atol=1e-12, rtol=0)
    # a local function (support of one pixel) differs from untiled only where tile edges get weight
    tiled = apply_tiled(lambda x: upsample_bilinear(x, 2), img, TilingConfig(32, 8), scale=2)
    full = upsample_bilinear(img, 2)
    torch.testing.assert_close(tiled[:40, :40], full[:40, :40], atol=1e-12, rtol=0)


def test_bad_config():
    with pytest.raises(ValueError):
        TilingConfig(tile=16, overlap=8)
