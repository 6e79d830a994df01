"""DST-Net-like spatio-temporal enhancement network (Chong et al., TCBB 2024, re-designed here).

The paper's architecture is not public (methods note §2.2); this is our own small design with
the three parts the abstract names:

1. a per-frame **spatial encoder** (shared weights, residual conv blocks),
2. a **temporal fusion** across the frame window: 3-D convolutions over (frames, y, x) followed by
   attention weights per frame and position (softmax over frames), so any window length works,
   a single micrograph (one frame) included,
3. a **reconstructor**: optionally a multi-scale (U-Net) body over ``levels`` 2x-downsampled
   levels, for context of the size of a particle, then residual blocks with one head per output
   scale: 1x (denoised) and, when configured, 2x with a sub-pixel (PixelShuffle) head.

The network learns a residual on top of an *anchor* (bicubic-upsampled for 2x): the mean of the
input frames, or (``anchor="wiener"``) the spectral Wiener estimate of that mean
(``cryosr.core.enhance.prefilter.wiener_anchor``), which then also enters the features.
Inputs are normalised frames (mean about 1, see ``cryosr.core.enhance.window.frame_window``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cryosr.core.enhance.prefilter import wiener_anchor
from cryosr.core.errors import InputError

__all__ = ["ANCHORS", "NOISE_ESTIMATES", "DSTNet", "EnhanceNetConfig"]

#: What the network's output is a residual over.
ANCHORS = ("mean", "wiener")

#: Noise estimates of the Wiener anchor for movie windows (``cryosr.core.enhance.infer``).
NOISE_ESTIMATES = ("corner", "frames")


@dataclass(frozen=True)
class EnhanceNetConfig:
    """Architecture of ``DSTNet``.

    Attributes
    ----------
    frames : int
        Window length the net is trained with (frame groups per movie).
    channels : int
        Feature channels throughout.
    encoder_blocks : int
        Residual blocks of the per-frame spatial encoder.
    fusion_layers : int
        3-D (frames x y x x) convolution layers of the temporal fusion.
    reconstructor_blocks : int
        Residual blocks of the reconstructor.
    scales : tuple[int, ...]
        Output heads present: 1 (denoise) and/or 2 (denoise + 2x super-resolution).
    anchor : str
        What the output is a residual over: ``mean`` (the frame mean) or ``wiener`` (its spectral
        Wiener estimate, a whole-image operation computed before tiling).
    levels : int
        2x-downsampling levels of the multi-scale body between fusion and reconstructor (0: none,
        the original single-scale network). Level ``l`` has ``channels * min(2**l, 4)`` channels.
    dose_weighted : bool
        The window's frame groups are exposure-weighted so they add up to the dose-weighted sum
        (``cryosr.core.enhance.window.frame_window``); an input convention stored with the weights
        so inference prepares movies the way training did.
    noise : str
        Noise estimate of the Wiener anchor for movie windows the weights were trained with:
        ``corner`` (white level from the outer corner of the spectrum) or ``frames`` (per ring
        from even/odd frame sums, ``cryosr.core.enhance.window.frame_window``); one-frame
        windows (micrographs) always use ``corner``. An input convention like ``dose_weighted``:
        inference uses it by default. Checkpoints without it are ``corner``.
    """

    frames: int = 5
    channels: int = 24
    encoder_blocks: int = 2
    fusion_layers: int = 1
    reconstructor_blocks: int = 3
    scales: tuple[int, ...] = (1,)
    levels: int = 0
    anchor: str = "mean"
    dose_weighted: bool = False
    noise: str = "corner"

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise InputError(None, f"--frames must be >= 1, got {self.frames}")
        if self.channels < 4:
            raise InputError(None, f"channels must be >= 4, got {self.channels}")
        if min(self.encoder_blocks, self.fusion_layers, self.reconstructor_blocks) < 0:
            raise InputError(None, "block counts must be >= 0")
        if self.anchor not in ANCHORS:
            raise InputError(None, f"anchor must be one of {', '.join(ANCHORS)}, got {self.anchor!r}")
        if self.noise not in NOISE_ESTIMATES:
            raise InputError(None, f"noise estimate must be one of {', '.join(NOISE_ESTIMATES)}, got {self.noise!r}")
        if self.noise != "corner" and self.anchor != "wiener":
            raise InputError(None, f"the {self.noise!r} noise estimate needs the wiener anchor")
        if not 0 <= self.levels <= 4:
            raise InputError(None, f"--levels must be 0-4, got {self.levels}")
        scales = tuple(sorted({int(s) for s in self.scales}))
        if not scales or any(s not in (1, 2) for s in scales):
            raise InputError(None, f"--scale must be 1 and/or 2, got {self.scales}")
        object.__setattr__(self, "scales", scales)

    @property
    def grid_px(self) -> int:
        """Tiles must start on multiples of this (the coarsest level's cell, ``2**levels``)."""
        return 2**self.levels

    @property
    def receptive_radius_px(self) -> int:
        """Upper bound of the receptive-field radius in input pixels (the tiling margin needed).

        Each 3x3 convolution at level ``l`` adds ``2**l`` pixels; the strided and transposed
        convolutions of the multi-scale body add one cell of their level each.
        """
        radius = 1 + 2 * self.encoder_blocks + self.fusion_layers + 1  # head, encoder, fusion, attention
        for level in range(1, self.levels + 1):
            cell = 2**level
            radius += cell + 2 * cell + cell + 2 * (cell // 2)  # down conv, res block, up conv, res block
        radius += 2 * self.reconstructor_blocks + 2  # reconstructor and the heads
        return radius

    def to_dict(self) -> dict:
        """JSON-serialisable form (lists instead of tuples)."""
        d = asdict(self)
        d["scales"] = list(self.scales)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EnhanceNetConfig:
        """Inverse of ``to_dict``; unknown keys raise ``InputError``."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise InputError(None, f"unknown architecture keys {sorted(unknown)}")
        d = dict(d)
        if "scales" in d:
            d["scales"] = tuple(d["scales"])
        return cls(**d)


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.1))


class _MultiScale(nn.Module):
    """U-Net body: strided-conv downsampling, residual blocks, transposed-conv upsampling, skip sums."""

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        ch = [channels * min(2**level, 4) for level in range(levels + 1)]
        self.down = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(ch[i], ch[i + 1], 3, stride=2, padding=1), nn.LeakyReLU(0.1), _ResBlock(ch[i + 1]))
             for i in range(levels)]
        )
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in range(levels)])
        self.merge = nn.ModuleList([_ResBlock(ch[i]) for i in range(levels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.down:
            skips.append(x)
            x = down(x)
        for i in reversed(range(len(self.down))):
            x = self.merge[i](skips[i] + F.leaky_relu(self.up[i](x), 0.1))
        return x


class DSTNet(nn.Module):
    """Spatial encoder -> temporal fusion -> reconstructor, residual over the anchor.

    Parameters
    ----------
    config : EnhanceNetConfig
        Architecture.
    """

    def __init__(self, config: EnhanceNetConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.head = nn.Conv2d(1, c, 3, padding=1)
        self.encoder = nn.Sequential(*[_ResBlock(c) for _ in range(config.encoder_blocks)])
        self.fusion3d = nn.ModuleList(
            [nn.Conv3d(c, c, (3, 3, 3), padding=(1, 1, 1)) for _ in range(config.fusion_layers)]
        )
        self.attention = nn.Conv2d(2 * c, 1, 3, padding=1)
        self.merge = nn.Conv2d(2 * c, c, 1)
        self.anchor_in = nn.Conv2d(1, c, 3, padding=1) if config.anchor == "wiener" else None
        self.multiscale = _MultiScale(c, config.levels) if config.levels > 0 else None
        self.reconstructor = nn.Sequential(*[_ResBlock(c) for _ in range(config.reconstructor_blocks)])
        self.out1 = nn.Conv2d(c, 1, 3, padding=1) if 1 in config.scales else None
        self.out2 = (
            nn.Sequential(nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(0.1), nn.Conv2d(c, 1, 3, padding=1))
            if 2 in config.scales
            else None
        )
        for head in (self.out1, self.out2):
            if head is not None:  # start as the identity residual (output = anchor)
                last = head if isinstance(head, nn.Conv2d) else head[-1]
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)

    def features(self, window: torch.Tensor, anchor: torch.Tensor | None = None) -> torch.Tensor:
        """Fused features of a frame window.

        Parameters
        ----------
        window : torch.Tensor
            `(b, t, h, w)` normalised frames.
        anchor : torch.Tensor | None
            `(b, h, w)` Wiener anchor (models with ``anchor="wiener"`` only).

        Returns
        -------
        fused : torch.Tensor
            `(b, c, h, w)` reconstructor output features.
        """
        b, t, h, w = window.shape
        grid = self.config.grid_px
        pad_y, pad_x = (-h) % grid, (-w) % grid
        x = (window - 1.0).reshape(b * t, 1, h, w)
        if pad_y or pad_x:  # bottom/right edge padding to whole coarse cells; cropped off below
            x = F.pad(x, (0, pad_x, 0, pad_y), mode="replicate")
            if anchor is not None:
                anchor = F.pad(anchor[:, None], (0, pad_x, 0, pad_y), mode="replicate")[:, 0]
            h, w = h + pad_y, w + pad_x
        f = self.encoder(F.leaky_relu(self.head(x), 0.1))
        c = f.shape[1]
        f = f.reshape(b, t, c, h, w)
        if self.fusion3d:
            g = f.permute(0, 2, 1, 3, 4)  # (b, c, t, h, w)
            for conv in self.fusion3d:
                g = g + F.leaky_relu(conv(g), 0.1)
            f = g.permute(0, 2, 1, 3, 4)
        mean = f.mean(1, keepdim=True).expand(-1, t, -1, -1, -1)
        pair = torch.cat([f, mean], dim=2).reshape(b * t, 2 * c, h, w)
        logits = self.attention(pair).reshape(b, t, 1, h, w)
        fused = (torch.softmax(logits, dim=1) * f).sum(1)
        fused = self.merge(torch.cat([fused, f.mean(1)], dim=1))
        if self.anchor_in is not None:
            fused = fused + self.anchor_in(anchor[:, None] - 1.0)
        fused = F.leaky_relu(fused, 0.1)
        if self.multiscale is not None:
            fused = self.multiscale(fused)
        out = self.reconstructor(fused)
        return out[..., : h - pad_y, : w - pad_x]

    def forward(self, window: torch.Tensor, scale: int = 1, anchor: torch.Tensor | None = None) -> torch.Tensor:
        """Enhance a frame window.

        Parameters
        ----------
        window : torch.Tensor
            `(b, t, h, w)` normalised aligned frames (any ``t >= 1``).
        scale : int
            1 for the denoised image, 2 for the 2x super-resolved one (needs that head).
        anchor : torch.Tensor | None
            `(b, h, w)` Wiener anchor for ``anchor="wiener"`` models, computed on the whole image
            before tiling; None: computed here from the window mean.

        Returns
        -------
        out : torch.Tensor
            `(b, h * scale, w * scale)` normalised enhanced image.
        """
        if window.ndim != 4:
            raise InputError(None, f"expected a (batch, frames, y, x) window, got {tuple(window.shape)}")
        if self.anchor_in is None:
            anchor = None
            base = window.mean(1, keepdim=True)
        else:
            if anchor is None:
                anchor = wiener_anchor(window.mean(1))
            if tuple(anchor.shape) != (window.shape[0], *window.shape[2:]):
                raise InputError(None, f"anchor {tuple(anchor.shape)} does not fit the window {tuple(window.shape)}")
            base = anchor[:, None]
        feats = self.features(window, anchor)
        if scale == 1 and self.out1 is not None:
            return (base + self.out1(feats))[:, 0]
        if scale == 2 and self.out2 is not None:
            up = F.interpolate(base, scale_factor=2, mode="bicubic", align_corners=False)
            return (up + self.out2(feats))[:, 0]
        raise InputError(None, f"this model has no {scale}x head (it was trained for scales {list(self.config.scales)})")
