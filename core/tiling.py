"""Apply an image-to-image function over a large image in overlapping, smoothly blended tiles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["TilingConfig", "apply_tiled", "tile_starts"]


@dataclass(frozen=True)
class TilingConfig:
    """Tile geometry in input pixels.

    Attributes
    ----------
    tile : int
        Tile edge length (input pixels).
    overlap : int
        Overlap between neighbouring tiles (input pixels), blended with a raised-cosine ramp.
    """

    tile: int = 1024
    overlap: int = 64

    def __post_init__(self) -> None:
        if self.tile <= 0:
            raise ValueError(f"tile must be positive, got {self.tile}")
        if not 0 <= 2 * self.overlap < self.tile:
            raise ValueError(f"overlap must be in [0, tile/2), got {self.overlap} for tile {self.tile}")


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``[0, size)`` with at least ``overlap`` shared pixels.

    Returns
    -------
    starts : list[int]
        Increasing offsets; the last tile ends exactly at ``size``.
    """
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


def _ramp(n: int, ramp: int, left: bool, right: bool, device, dtype) -> torch.Tensor:
    w = torch.ones(n, device=device, dtype=dtype)
    if ramp > 0:
        r = torch.sin(0.5 * torch.pi * (torch.arange(ramp, device=device, dtype=dtype) + 0.5) / ramp) ** 2
        if left:
            w[:ramp] = r
        if right:
            w[n - ramp :] = torch.flip(r, (0,))
    return w


def apply_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    config: TilingConfig = TilingConfig(),
    *,
    scale: int = 1,
) -> torch.Tensor:
    """Run ``fn`` tile by tile and blend the results into one output.

    ``fn`` maps a `(..., th, tw)` tile to a `(..., th * scale, tw * scale)` result (the leading
    dimensions, e.g. frames, pass through unchanged except that ``fn`` may drop or change them
    consistently for every tile). Inside the overlaps the tile outputs are blended with
    raised-cosine weights that sum to one, so an identity ``fn`` returns the input.

    Parameters
    ----------
    fn : Callable
        Image-to-image function.
    image : torch.Tensor
        `(..., h, w)` input.
    config : TilingConfig
        Tile size and overlap in input pixels.
    scale : int
        Output pixels per input pixel (2 for super-resolution).

    Returns
    -------
    out : torch.Tensor
        `(..., h * scale, w * scale)` (leading dims as returned by ``fn``).
    """
    h, w = image.shape[-2:]
    tile_h, tile_w = min(config.tile, h), min(config.tile, w)
    if tile_h == h and tile_w == w:
        return fn(image)
    ys = tile_starts(h, tile_h, config.overlap)
    xs = tile_starts(w, tile_w, config.overlap)
    out = None
    weight = None
    for y0 in ys:
        for x0 in xs:
            res = fn(image[..., y0 : y0 + tile_h, x0 : x0 + tile_w])
            if res.shape[-2:] != (tile_h * scale, tile_w * scale):
                raise ValueError(f"tile function returned {tuple(res.shape[-2:])}, expected {(tile_h * scale, tile_w * scale)}")
            if out is None:
                out = res.new_zeros((*res.shape[:-2], h * scale, w * scale))
                weight = res.new_zeros((h * scale, w * scale))
            wy = _ramp(tile_h * scale, config.overlap * scale, y0 > 0, y0 + tile_h < h, res.device, res.dtype)
            wx = _ramp(tile_w * scale, config.overlap * scale, x0 > 0, x0 + tile_w < w, res.device, res.dtype)
            win = wy[:, None] * wx[None, :]
            sy = slice(y0 * scale, (y0 + tile_h) * scale)
            sx = slice(x0 * scale, (x0 + tile_w) * scale)
            out[..., sy, sx] += res * win
            weight[sy, sx] += win
    assert out is not None and weight is not None
    return out / weight
