"""The margin tiler: tiled = untiled for a local operation whose radius fits in the margin."""

from __future__ import annotations

import torch

from cryosr.core.tiling import round_up, tiled_apply


def _blur_up(x: torch.Tensor) -> torch.Tensor:
    """A local operation of radius 2 (two 3x3 box blurs), then nearest 2x upsampling."""
    k = torch.ones(1, 1, 3, 3, dtype=x.dtype) / 9
    y = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x[None, None], k, padding=1), k, padding=1)[0, 0]
    return y.repeat_interleave(2, 0).repeat_interleave(2, 1)


def test_tiled_equals_untiled_with_enough_margin_and_differs_without():
    x = torch.rand(70, 53, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    whole = _blur_up(x)
    for tile in (16, 25, 64, 0):
        out = tiled_apply(lambda r, c: _blur_up(x[r, c]), x.new_zeros(140, 106), x.shape, tile=tile, margin=2, scale=2)
        torch.testing.assert_close(out, whole, atol=1e-12, rtol=0)
    short = tiled_apply(lambda r, c: _blur_up(x[r, c]), x.new_zeros(140, 106), x.shape, tile=16, margin=1, scale=2)
    assert float((short - whole).abs().max()) > 1e-3  # the check can fail: too small a margin shows
    assert (round_up(5, 4), round_up(8, 4), round_up(3, 0)) == (8, 8, 3)
