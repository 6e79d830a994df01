"""Sub-pixel shifts: apply them in Fourier space and measure them by cross-correlation."""

from __future__ import annotations

import torch

__all__ = ["cross_correlation_shift", "fourier_shift", "phase_factors", "phase_ramp"]


def phase_factors(freq: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """``exp(-2 pi i f s)``: the 1-D phase factors that translate by ``shifts`` along one axis.

    The one phase convention of cryosr: multiplying a spectrum by them moves content by ``+s``
    (towards larger indices); ``-s`` moves it back. Separable 2-D ramps are outer products of the
    row and column factors, so the phases are exact at any precision of ``freq``.

    Parameters
    ----------
    freq : torch.Tensor
        Frequencies in cycles/pixel, any shape `F` (e.g. `(h,)` rows or `(w // 2 + 1,)` rfft columns).
    shifts : torch.Tensor
        `(...)` shifts in pixels along that axis (cast to ``freq``'s dtype).

    Returns
    -------
    factors : torch.Tensor
        `(..., *F)` complex, on ``freq.device``.
    """
    s = shifts.to(device=freq.device, dtype=freq.dtype)
    angle = (-2 * torch.pi) * s.reshape(*s.shape, *([1] * freq.ndim)) * freq
    return torch.polar(torch.ones_like(angle), angle)


def phase_ramp(shape: tuple[int, int], shifts_yx: torch.Tensor) -> torch.Tensor:
    """rfft-layout phase factors that translate an image by ``shifts_yx`` pixels.

    Parameters
    ----------
    shape : tuple[int, int]
        `(h, w)` real-space size.
    shifts_yx : torch.Tensor
        `(..., 2)` shifts in pixels (y, x); positive moves content towards larger indices.

    Returns
    -------
    ramp : torch.Tensor
        `(..., h, w // 2 + 1)` complex, on ``shifts_yx.device`` (float64 phases for float64 shifts).
    """
    h, w = shape
    real = torch.float64 if shifts_yx.dtype == torch.float64 else torch.float32
    ky = torch.fft.fftfreq(h, device=shifts_yx.device, dtype=real)
    kx = torch.fft.rfftfreq(w, device=shifts_yx.device, dtype=real)
    return phase_factors(ky, shifts_yx[..., 0])[..., :, None] * phase_factors(kx, shifts_yx[..., 1])[..., None, :]


def fourier_shift(image: torch.Tensor, shifts_yx: torch.Tensor) -> torch.Tensor:
    """Translate images by (sub-pixel) shifts with periodic boundaries.

    Parameters
    ----------
    image : torch.Tensor
        `(..., h, w)` real image(s).
    shifts_yx : torch.Tensor
        `(..., 2)` or `(2,)` shifts in pixels (y, x), broadcast against the leading dims.

    Returns
    -------
    shifted : torch.Tensor
        `(..., h, w)`, same dtype and device.
    """
    h, w = image.shape[-2:]
    x = image.to(torch.float64 if image.dtype == torch.float64 else torch.float32)
    shifts_yx = torch.as_tensor(shifts_yx, device=image.device).to(x.dtype)
    spec = torch.fft.rfft2(x) * phase_ramp((h, w), shifts_yx)
    return torch.fft.irfft2(spec, s=(h, w)).to(image.dtype)


def cross_correlation_shift(
    reference: torch.Tensor, image: torch.Tensor, *, max_shift_px: float | None = None
) -> torch.Tensor:
    """Shift that maps ``reference`` onto ``image``, with sub-pixel parabolic refinement.

    ``fourier_shift(reference, s)`` best matches ``image`` for the returned ``s``.

    Parameters
    ----------
    reference : torch.Tensor
        `(h, w)` image.
    image : torch.Tensor
        `(..., h, w)` image(s).
    max_shift_px : float | None
        Restrict the search to shifts of at most this many pixels.

    Returns
    -------
    shifts_yx : torch.Tensor
        `(..., 2)` float shifts in pixels.
    """
    h, w = image.shape[-2:]
    real = torch.float64 if image.dtype == torch.float64 else torch.float32
    a = torch.fft.rfft2(reference.to(real) - reference.to(real).mean())
    b = torch.fft.rfft2(image.to(real) - image.to(real).mean(dim=(-2, -1), keepdim=True))
    cc = torch.fft.irfft2(b * a.conj(), s=(h, w))
    lead = cc.shape[:-2]
    cc = cc.reshape(-1, h, w)
    if max_shift_px is not None:
        yy = torch.fft.fftfreq(h, 1 / h, device=cc.device).abs()
        xx = torch.fft.fftfreq(w, 1 / w, device=cc.device).abs()
        mask = (yy[:, None] <= max_shift_px) & (xx[None, :] <= max_shift_px)
        cc = cc.masked_fill(~mask, float("-inf"))
    flat = cc.flatten(1).argmax(1)
    iy, ix = flat // w, flat % w
    n = torch.arange(cc.shape[0], device=cc.device)

    def _parabola(cm: torch.Tensor, c0: torch.Tensor, cp: torch.Tensor) -> torch.Tensor:
        den = cm - 2 * c0 + cp
        off = 0.5 * (cm - cp) / torch.where(den.abs() > 1e-20, den, torch.ones_like(den))
        return torch.where(torch.isfinite(off) & (den < 0), off.clamp(-0.5, 0.5), torch.zeros_like(off))

    c0 = cc[n, iy, ix]
    dy = _parabola(cc[n, (iy - 1) % h, ix], c0, cc[n, (iy + 1) % h, ix])
    dx = _parabola(cc[n, iy, (ix - 1) % w], c0, cc[n, iy, (ix + 1) % w])
    sy = torch.where(iy > h // 2, iy - h, iy).to(real) + dy
    sx = torch.where(ix > w // 2, ix - w, ix).to(real) + dx
    return torch.stack([sy, sx], dim=-1).reshape(*lead, 2)
