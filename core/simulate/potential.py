"""Electron-scattering potential of a specimen model, as 2-D projections and as a 3-D map.

Two model kinds, both plain tensors (files are read by ``cryosr.core.simulate.model_io``):

- ``AtomicModel``: atoms with 5-Gaussian electron form factors (Peng 1996 / International Tables
  C 4.3.2.2, taken from gemmi). The projected potential of an atom with B-factor B has the 2-D
  Fourier transform ``47.878 V·Å² · Σ a_i exp(-(b_i + B) k² / 4)`` (k in 1/Å). Atoms are splatted
  bilinearly onto the pixel grid, the splat's transfer function is divided out and the form
  factor is applied in Fourier space, so positions are exact to sub-pixel precision. Solvent
  displaced by each atom is subtracted as a Gaussian of the ice's mean inner potential.
- ``VolumeModel``: a density map (MRC) on a cubic grid, scaled to volts (see ``scale_map_to_volts``),
  projected with torch-fourier-slice.

Orientations follow RELION: a reference point ``r`` appears in the image at ``A @ r`` where ``A`` is
RELION's ZYZ Euler matrix of (rot, tilt, psi) (see ``geometry.euler_to_matrix``). Image axes are
x = column, y = row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch_fourier_slice import project_3d_to_2d

from cryosr.core.fourier import fourier_resample
from cryosr.core.simulate.physics import MOTT_BETHE_V_A2, WATER_NUMBER_DENSITY_A3

__all__ = [
    "PROTEIN_VOLUME_A3_PER_DA",
    "AtomicModel",
    "VolumeModel",
    "ice_mean_inner_potential_v",
    "model_radius_a",
    "fft_friendly_even",
    "particle_box_px",
    "potential_volume",
    "projection_boxes_ft",
    "scale_map_to_volts",
    "soft_sphere_mask",
    "volume_oversampling",
]

#: Partial specific volume of protein, 0.73 cm³/g, in Å³ per Dalton.
PROTEIN_VOLUME_A3_PER_DA = 1.212

#: Width (Å, Gaussian sigma) of each atom's excluded-solvent blob.
_SOLVENT_SIGMA_A = 1.0


@dataclass(frozen=True)
class AtomicModel:
    """Atoms of one particle, centred on the origin.

    Attributes
    ----------
    coords_a : torch.Tensor
        `(n, 3)` float32 x, y, z in Å relative to the particle centre.
    element_index : torch.Tensor
        `(n,)` int64 index into the element tables.
    form_a : torch.Tensor
        `(e, g)` Gaussian form-factor amplitudes a_i in Å (g = 5, or 10 with united-atom H).
    form_b : torch.Tensor
        `(e, g)` Gaussian widths b_i in Å² (``f(s) = Σ a_i exp(-b_i s²)``, s = k / 2).
    b_factor_a2 : torch.Tensor
        `(e,)` mean B-factor of each element's atoms (Å²).
    elements : tuple[str, ...]
        Element symbols.
    displaced_volume_a3 : float
        Solvent volume displaced per atom (protein partial specific volume x mass / atoms).
    name : str
        Where the model came from.
    """

    coords_a: torch.Tensor
    element_index: torch.Tensor
    form_a: torch.Tensor
    form_b: torch.Tensor
    b_factor_a2: torch.Tensor
    elements: tuple[str, ...]
    displaced_volume_a3: float
    name: str = ""

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return int(self.coords_a.shape[0])


@dataclass(frozen=True)
class VolumeModel:
    """A cubic potential map in volts, relative to the surrounding ice.

    Attributes
    ----------
    volume : torch.Tensor
        `(d, d, d)` float32, z-y-x order, centre at index ``d // 2``.
    pixel_size_a : float
        Voxel size in Å.
    name : str
        Where the map came from.
    """

    volume: torch.Tensor
    pixel_size_a: float
    name: str = ""


def ice_mean_inner_potential_v(water_form_a: torch.Tensor) -> float:
    """Mean inner potential (V) of ice made of molecules with form-factor amplitudes ``water_form_a``."""
    return float(WATER_NUMBER_DENSITY_A3 * MOTT_BETHE_V_A2 * water_form_a.sum())


def model_radius_a(model: AtomicModel | VolumeModel) -> float:
    """Radius (Å) of the sphere around the centre that holds the particle."""
    if isinstance(model, AtomicModel):
        return float(model.coords_a.norm(dim=1).max()) if model.n_atoms else 0.0
    vol = model.volume
    d = vol.shape[-1]
    thresh = vol.max() * 0.02
    idx = torch.nonzero(vol > thresh).to(torch.float32)
    if idx.numel() == 0:
        return 0.0
    return float((idx - d // 2).norm(dim=1).max()) * model.pixel_size_a


def _sinc2(n: int, rfft: bool, device: torch.device) -> torch.Tensor:
    f = torch.fft.rfftfreq(n, device=device) if rfft else torch.fft.fftfreq(n, device=device)
    return torch.sinc(f) ** 2


def _element_kernels(
    model: AtomicModel, k2: torch.Tensor, b_factor_a2: float | None, solvent_mip_v: float
) -> torch.Tensor:
    """`(e, *k2.shape)` Fourier transform of each element's potential minus its displaced solvent."""
    dev = k2.device
    a = model.form_a.to(dev)
    b = model.form_b.to(dev)
    bf = model.b_factor_a2.to(dev) if b_factor_a2 is None else torch.full_like(model.b_factor_a2, b_factor_a2).to(dev)
    # the kernels are radial: tabulate them finely in k² and interpolate linearly (fast in 3-D)
    n_tab = 4097
    kk = torch.linspace(0, float(k2.max()) * 1.0001 + 1e-12, n_tab, device=dev)
    atom = MOTT_BETHE_V_A2 * (a[:, :, None] * torch.exp(-(b[:, :, None] + bf[:, None, None]) * kk / 4)).sum(1)
    solvent = solvent_mip_v * model.displaced_volume_a3 * torch.exp(-2 * math.pi**2 * _SOLVENT_SIGMA_A**2 * kk)
    table = atom - solvent[None]  # (e, n_tab)
    pos = (k2 / kk[-1] * (n_tab - 1)).reshape(-1)
    i0 = pos.floor().long().clamp(0, n_tab - 2)
    w = (pos - i0).clamp(0, 1)
    out = table[:, i0] * (1 - w) + table[:, i0 + 1] * w
    return out.reshape(-1, *k2.shape)


def _splat(positions_px: torch.Tensor, channel: torch.Tensor, n_channels: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Bilinear/trilinear splat of unit weights.

    Parameters
    ----------
    positions_px : torch.Tensor
        `(p, n, dims)` positions in array index units (last axis ordered like ``shape``).
    channel : torch.Tensor
        `(n,)` channel of each point.
    n_channels : int
        Number of channels.
    shape : tuple[int, ...]
        Spatial grid shape (2 or 3 dims), periodic.

    Returns
    -------
    grid : torch.Tensor
        `(p, n_channels, *shape)`.
    """
    p, n, dims = positions_px.shape
    dev = positions_px.device
    base = torch.floor(positions_px)
    frac = positions_px - base
    base = base.long()
    numel = math.prod(shape)
    out = torch.zeros(p * n_channels * numel, device=dev, dtype=positions_px.dtype)
    offset = (torch.arange(p, device=dev)[:, None] * n_channels + channel[None, :].to(dev)) * numel  # (p, n)
    strides = [math.prod(shape[i + 1 :]) for i in range(dims)]
    for corner in range(2**dims):
        bits = [(corner >> (dims - 1 - i)) & 1 for i in range(dims)]
        w = torch.ones_like(frac[..., 0])
        flat = offset.clone()
        for i, bit in enumerate(bits):
            w = w * (frac[..., i] if bit else 1 - frac[..., i])
            flat += ((base[..., i] + bit) % shape[i]) * strides[i]
        out.index_add_(0, flat.reshape(-1), w.reshape(-1))
    return out.reshape(p, n_channels, *shape)


def projection_boxes_ft(
    model: AtomicModel | VolumeModel,
    rotations: torch.Tensor,
    box: int,
    pixel_size_a: float,
    *,
    b_factor_a2: float | None = None,
    solvent_mip_v: float = 4.5,
    chunk: int = 16,
) -> torch.Tensor:
    """Projected potential of rotated copies of ``model``, centred at ``box // 2``, as rfft2 spectra.

    Parameters
    ----------
    model : AtomicModel | VolumeModel
        The particle.
    rotations : torch.Tensor
        `(p, 3, 3)` RELION Euler matrices (reference xyz -> image xyz); defines the device.
    box : int
        Even box size in pixels.
    pixel_size_a : float
        Pixel size in Å of the output images.
    b_factor_a2 : float | None
        Override every atom's B-factor (atomic models only).
    solvent_mip_v : float
        Mean inner potential of the solvent displaced by the atoms (V).
    chunk : int
        Particles rendered at a time.

    Returns
    -------
    spectra : torch.Tensor
        `(p, box, box // 2 + 1)` complex64: rfft2 of the projected potential in V·Å sampled at
        pixel centres.
    """
    dev = rotations.device
    rotations = rotations.to(torch.float32)
    if rotations.shape[0] == 0:  # --particles 0: ice only (split() would yield one empty chunk)
        return torch.zeros(0, box, box // 2 + 1, dtype=torch.complex64, device=dev)
    out = []
    if isinstance(model, VolumeModel):
        # project at a coarser pixel that still samples all of the map's information, then
        # Fourier-pad the 2-D projections (a 3-D volume at the HR pixel would cost m³ more)
        m = volume_oversampling(model, pixel_size_a)
        if box % m:
            m = 1
        coarse = box // m
        vol = _volume_at_pixel(model, pixel_size_a * m, coarse).to(dev)
        for r in rotations.split(chunk):
            proj = project_3d_to_2d(vol, r.transpose(-1, -2), pad_factor=2.0) * (pixel_size_a * m)
            if m > 1:
                proj = fourier_resample(proj, (box, box))
            out.append(torch.fft.rfft2(proj))
        return torch.cat(out)
    ky = torch.fft.fftfreq(box, d=pixel_size_a, device=dev)
    kx = torch.fft.rfftfreq(box, d=pixel_size_a, device=dev)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    kernels = _element_kernels(model, k2, b_factor_a2, solvent_mip_v)  # (e, box, box//2+1)
    deconv = _sinc2(box, False, dev)[:, None] * _sinc2(box, True, dev)[None, :]
    coords = model.coords_a.to(dev)
    elem = model.element_index.to(dev)
    n_el = len(model.elements)
    for r in rotations.split(chunk):
        xyz = torch.einsum("pij,nj->pni", r, coords)  # image coordinates, Å
        pos = torch.stack([xyz[..., 1], xyz[..., 0]], dim=-1) / pixel_size_a + box // 2  # (p, n, [y, x])
        grid = _splat(pos, elem, n_el, (box, box)) / pixel_size_a**2
        spec = torch.fft.rfft2(grid)
        out.append((spec * kernels).sum(1) / deconv)
    return torch.cat(out)


def potential_volume(
    model: AtomicModel | VolumeModel,
    box: int,
    pixel_size_a: float,
    *,
    b_factor_a2: float | None = None,
    solvent_mip_v: float = 4.5,
    device: torch.device | None = None,
) -> torch.Tensor:
    """3-D potential (V, relative to the solvent) of the unrotated model on a cubic grid.

    Parameters
    ----------
    model : AtomicModel | VolumeModel
        The particle.
    box : int
        Edge in voxels; the model centre sits at index ``box // 2``.
    pixel_size_a : float
        Voxel size in Å.
    b_factor_a2 : float | None
        Override every atom's B-factor.
    solvent_mip_v : float
        Mean inner potential of the displaced solvent (V).
    device : torch.device | None
        Where to compute.

    Returns
    -------
    volume : torch.Tensor
        `(box, box, box)` float32 in z-y-x order.
    """
    if isinstance(model, VolumeModel):
        return _volume_at_pixel(model, pixel_size_a, box).to(device)
    dev = device or model.coords_a.device
    kz = torch.fft.fftfreq(box, d=pixel_size_a, device=dev)
    kx = torch.fft.rfftfreq(box, d=pixel_size_a, device=dev)
    k2 = kz[:, None, None] ** 2 + kz[None, :, None] ** 2 + kx[None, None, :] ** 2
    kernels = _element_kernels(model, k2, b_factor_a2, solvent_mip_v)
    c = model.coords_a.to(dev)
    pos = (torch.stack([c[:, 2], c[:, 1], c[:, 0]], dim=-1) / pixel_size_a + box // 2)[None]
    grid = _splat(pos, model.element_index.to(dev), len(model.elements), (box, box, box))[0] / pixel_size_a**3
    s1 = _sinc2(box, False, dev)
    deconv = s1[:, None, None] * s1[None, :, None] * _sinc2(box, True, dev)[None, None, :]
    spec = (torch.fft.rfftn(grid, dim=(-3, -2, -1)) * kernels).sum(0) / deconv
    return torch.fft.irfftn(spec, s=(box, box, box), dim=(-3, -2, -1)).to(torch.float32)


def volume_oversampling(model: VolumeModel, pixel_size_a: float) -> int:
    """Integer factor ``m`` such that projecting at ``m * pixel_size_a`` loses none of the map.

    ``m = floor(map pixel / pixel_size_a)`` (at least 1): the coarser pixel is still no larger than
    the map's own, so its Nyquist frequency holds every frequency the map has.
    """
    return max(1, int(model.pixel_size_a / pixel_size_a + 1e-6))


def particle_box_px(model: AtomicModel | VolumeModel, pixel_size_a: float) -> int:
    """Even edge (pixels) of the box that holds one particle's projection with >= 8 Å margin per side.

    Rounded up to an FFT-friendly size (``fft_friendly_even``): the boxes are inverse-transformed
    every frame.

    For a map, the box is a multiple of ``volume_oversampling`` so that the projections can be
    computed at the coarser pixel and Fourier-padded exactly (``projection_boxes_ft``).
    """
    radius = model_radius_a(model)
    m = volume_oversampling(model, pixel_size_a) if isinstance(model, VolumeModel) else 1
    n = math.ceil((2 * radius + 16.0) / (pixel_size_a * m)) + 4
    return fft_friendly_even(n) * m


def fft_friendly_even(n: int) -> int:
    """Smallest even ``N >= n`` whose only prime factors are 2, 3 and 5 (fast FFTs; 174 = 2·3·29 is 3x slower than 180)."""
    size = max(2, n + n % 2)
    while True:
        rest = size
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return size
        size += 2


def _padded_size(d: int, ratio: float, extra: int = 16) -> int:
    """Size ``>= d`` whose rescaled size ``size * ratio`` is closest to an integer (exact resampling)."""
    best, best_err = d, 1.0
    for n in range(d, d + extra + 1):
        err = abs(n * ratio - round(n * ratio)) / (n * ratio)
        if err < best_err - 1e-9:
            best, best_err = n, err
    return best


def _resize_rfft(spec: torch.Tensor, n_in: int, n_out: int) -> torch.Tensor:
    """Crop or zero-pad an rfftn spectrum `(n, n, n // 2 + 1)` of a cube to size ``n_out`` (Nyquist planes zeroed)."""
    out = torch.zeros((n_out, n_out, n_out // 2 + 1), dtype=spec.dtype, device=spec.device)
    m = min(n_in, n_out)
    half = (m - 1) // 2  # frequencies -half .. +half are kept on the full axes, 0 .. half on the last
    idx_in = torch.cat([torch.arange(0, half + 1), torch.arange(n_in - half, n_in)]).to(spec.device)
    idx_out = torch.cat([torch.arange(0, half + 1), torch.arange(n_out - half, n_out)]).to(spec.device)
    sub = spec.index_select(0, idx_in).index_select(1, idx_in)[:, :, : half + 1]
    out[idx_out[:, None], idx_out[None, :], : half + 1] = sub
    return out


def _volume_at_pixel(model: VolumeModel, pixel_size_a: float, box: int) -> torch.Tensor:
    """Resample a map to ``pixel_size_a`` (Fourier, rfft) and centre-crop or pad it to ``box``.

    The map is first zero-padded to a size whose rescaled size is (nearly) an integer, so the
    resampled voxel is ``pixel_size_a`` to better than 1e-3 relative.
    """
    vol = model.volume
    d = vol.shape[-1]
    ratio = model.pixel_size_a / pixel_size_a
    if abs(ratio - 1) > 1e-6:
        d_pad = _padded_size(d, ratio)
        if d_pad != d:
            padded = torch.zeros((d_pad,) * 3, dtype=vol.dtype, device=vol.device)
            o = d_pad // 2 - d // 2
            padded[o : o + d, o : o + d, o : o + d] = vol
            vol, d = padded, d_pad
        n_new = max(2, round(d * ratio))
        spec = torch.fft.rfftn(vol.to(torch.float32), dim=(-3, -2, -1))
        spec = _resize_rfft(spec, d, n_new)
        vol = torch.fft.irfftn(spec, s=(n_new,) * 3, dim=(-3, -2, -1)) * (n_new / d) ** 3  # V are intensive
        d = n_new
    out = torch.zeros((box,) * 3, dtype=torch.float32, device=vol.device)
    m = min(d, box)
    si, so = d // 2 - m // 2, box // 2 - m // 2
    out[so : so + m, so : so + m, so : so + m] = vol[si : si + m, si : si + m, si : si + m]
    return out


def soft_sphere_mask(volume: torch.Tensor, edge_voxels: float = 3.0) -> torch.Tensor:
    """Multiply a cube `(d, d, d)` by a sphere inscribed in it (radius ``d/2 - 1``) with a raised-cosine edge."""
    d = volume.shape[-1]
    c = torch.arange(d, dtype=torch.float32, device=volume.device) - d // 2
    r = torch.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    outer = d / 2 - 1
    inner = max(outer - edge_voxels, 0.0)
    t = ((r - inner) / max(outer - inner, 1e-6)).clamp(0, 1)
    return volume * (0.5 + 0.5 * torch.cos(math.pi * t))


def scale_map_to_volts(volume: torch.Tensor, contrast_v: float = 3.0) -> torch.Tensor:
    """Put a map of arbitrary units on a potential scale relative to the ice.

    The background (median) is set to 0 and the mean inside a crude envelope (voxels above
    mean + 2 std) is set to ``contrast_v``, the typical protein-minus-ice mean inner potential.

    Parameters
    ----------
    volume : torch.Tensor
        `(d, d, d)` map.
    contrast_v : float
        Target mean potential inside the envelope (V).
    """
    v = volume - volume.median()
    env = v > v.mean() + 2 * v.std()
    inside = v[env].mean() if env.any() else v.abs().max()
    return (v * (contrast_v / inside.clamp_min(1e-12))).clamp_min(-contrast_v)
