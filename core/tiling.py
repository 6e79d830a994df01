"""The one tiler: apply a local operation over a large image in tiles with context margins.

Each tile is cut with ``margin`` extra pixels on every side (clipped at the image border), the
operation is applied to the enlarged box, and only the tile's core is kept. With a margin at least
the operation's receptive-field radius the tiled result equals the untiled one. Used by the
enhancement network (``cryosr.core.enhance.infer.run_network``) and the zssr network.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["round_up", "tiled_apply"]


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a whole number of ``multiple`` (>= 1)."""
    return -(-n // max(1, multiple)) * max(1, multiple)


def tiled_apply(
    fn: Callable[[slice, slice], torch.Tensor],
    out: torch.Tensor,
    shape: tuple[int, int],
    *,
    tile: int,
    margin: int,
    scale: int = 1,
) -> torch.Tensor:
    """Fill ``out`` `(..., h * scale, w * scale)` tile by tile from ``fn``.

    Parameters
    ----------
    fn : Callable[[slice, slice], torch.Tensor]
        ``fn(rows, cols)`` returns the operation's `(..., (rows) * scale, (cols) * scale)` result
        on the input box ``[rows, cols]`` (the tile plus its margins).
    out : torch.Tensor
        Output buffer, written in place and returned.
    shape : tuple[int, int]
        `(h, w)` input size.
    tile : int
        Tile edge in input pixels (<= 0: the whole image in one call).
    margin : int
        Context pixels on every side of a tile.
    scale : int
        Output pixels per input pixel.

    Returns
    -------
    out : torch.Tensor
    """
    h, w = shape
    tile = tile if tile > 0 else max(h, w)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(y0 - margin, 0), max(x0 - margin, 0)
            yb, xb = min(y1 + margin, h), min(x1 + margin, w)
            res = fn(slice(ya, yb), slice(xa, xb))
            core = res[..., (y0 - ya) * scale : (y1 - ya) * scale, (x0 - xa) * scale : (x1 - xa) * scale]
            out[..., y0 * scale : y1 * scale, x0 * scale : x1 * scale] = core
    return out
