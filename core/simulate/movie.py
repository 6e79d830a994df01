"""Forward model of one movie: specimen -> motion -> radiation damage -> CTF -> detector.

For frame j (methods_and_physics.md §5.9):

1. Phase ``η_j = σ · (Σ_particles projected potential at their frame-j positions + ice)``; the
   particles are rendered once per movie in their own boxes (``projection_boxes_ft``) and moved
   each frame by the global drift plus their own jitter with sub-pixel Fourier shifts; the ice's
   structural noise moves with the global drift. The mean phase is dropped (a uniform phase has
   no contrast; the slab's absorption is the attenuation term below).
2. Radiation damage: the spectrum is multiplied by ``exp(-N_j / (2 Ne(k)))`` (Grant & Grigorieff)
   with ``N_j`` the exposure at the middle of frame j.
3. Weak-phase image ``I_j = A (1 - 2 CTF ⊛ η_j) + (1 - A)`` with torch-ctf's CTF (whose value at
   k = 0 is +amplitude contrast, so protein is dark in underfocus); ``A = exp(-t / Λ)`` is the
   fraction of elastically/unscattered electrons, the rest is an inelastic uniform background
   (dropped with ``energy_filter``).
4. Detector: expected counts ``dose_per_frame · p_HR² · I_j`` at the HR pixel. HR frames: MTF at
   the HR pixel, Poisson. LR frames: 2x2 box sum of the HR expectation (or Fourier crop), MTF at
   the LR pixel, Poisson. With ``noise_mtf`` the MTF is applied to the Poisson-sampled counts
   instead (charge spreading after detection: coloured noise with power ~ MTF²); the expected
   counts (clean frames) are the same either way.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch_ctf import calculate_ctf_2d

from cryosr.core.acquisition import Acquisition
from cryosr.core.dose import cumulative_dose, dose_filter
from cryosr.core.errors import InputError
from cryosr.core.fourier import irfft2
from cryosr.core.shifts import phase_ramp
from cryosr.core.simulate.config import SimulationConfig
from cryosr.core.simulate.detector import (
    Camera,
    apply_mtf,
    camera_expectation,
    detect,
    downsample_counts,
    make_camera,
    mtf_rfft,
)
from cryosr.core.simulate.geometry import euler_to_matrix, place_particles, random_euler_angles
from cryosr.core.simulate.motion import global_drift_a, particle_jitter_a
from cryosr.core.simulate.physics import (
    FORM_H,
    FORM_O,
    ICE_MIP_V,
    MOTT_BETHE_V_A2,
    WATER_NUMBER_DENSITY_A3,
    ice_attenuation,
    interaction_constant,
)
from cryosr.core.simulate.potential import (
    AtomicModel,
    VolumeModel,
    model_radius_a,
    particle_box_px,
    projection_boxes_ft,
)

logger = logging.getLogger(__name__)

__all__ = ["MoviePlan", "SimulatedMovie", "camera_for", "plan_movie", "simulate_movie"]

#: B-factor (Å²) of the water molecules in the ice noise model.
_WATER_B_A2 = 20.0


@dataclass(frozen=True)
class MoviePlan:
    """The random but cheap choices of one movie, drawn on the CPU before any rendering.

    Attributes
    ----------
    movie_index : int
        0-based movie number.
    defocus_u_a, defocus_v_a, defocus_angle_deg : float
        Astigmatic defocus (RELION convention: U >= V, angle from the x axis).
    angles_deg : torch.Tensor
        `(p, 3)` RELION rot, tilt, psi.
    centres_yx_a : torch.Tensor
        `(p, 2)` particle centres in the reference (frame-1, motion-free) specimen, Å from the
        corner of the field (pixel-centre convention: HR pixel i covers ``[i, i+1) * p_HR``).
    shifts_a : torch.Tensor
        `(t, 2)` global content shift (y, x) of each frame in Å, frame 1 = 0.
    jitter_a : torch.Tensor
        `(p, t, 2)` per-particle shift on top of ``shifts_a``.
    noise_seed : int
        Seed of the device generator (ice noise and Poisson counts).
    """

    movie_index: int
    defocus_u_a: float
    defocus_v_a: float
    defocus_angle_deg: float
    angles_deg: torch.Tensor
    centres_yx_a: torch.Tensor
    shifts_a: torch.Tensor
    jitter_a: torch.Tensor
    noise_seed: int


@dataclass
class SimulatedMovie:
    """One simulated movie with its ground truths (all tensors on the simulation device).

    Attributes
    ----------
    lr_frames : torch.Tensor
        `(t, s, s)` counts at the LR pixel (the movie a camera at the lower magnification records).
    hr_frames : torch.Tensor
        `(t, 2s, 2s)` counts at the HR pixel: same specimen, dose and motion.
    clean_hr : torch.Tensor
        `(2s, 2s)` noise-free, motion-free, exposure-weighted (Grant & Grigorieff optimal weights,
        as ``cryosr.core.dose.dose_weighted_sum``), CTF-modulated sum of expected counts at the HR
        pixel, without detector MTF.
    clean_hr_noctf : torch.Tensor
        `(2s, 2s)` the same without CTF: the exposure-weighted phase ``η`` (rad, mean removed),
        i.e. σ x projected potential.
    clean_lr_frames, clean_hr_frames : torch.Tensor | None
        `(t, s, s)` and `(t, 2s, 2s)` expected counts of each frame (motion, damage, CTF, MTF;
        the Poisson means), kept when ``save_clean_frames``.
    eer_expected_hr : torch.Tensor | None
        `(t, 2s, 2s)` expected counts of each fraction at the HR pixel before any MTF, the intensity
        the EER events are drawn from (``movie_format`` eer only), with ``eer_seed`` for their draws.
    shifts_a : torch.Tensor
        `(t, 2)` true global shift (y, x) in Å: frame i's content is the reference specimen moved
        by +shift (``fourier_shift`` convention); frame 1 is 0.
    shifts_lr_px : torch.Tensor
        `(t, 2)` the same in LR pixels.
    particle_angles_deg : torch.Tensor
        `(p, 3)` RELION rot, tilt, psi.
    particle_yx_hr_px : torch.Tensor
        `(p, 2)` particle centres in the reference specimen in HR pixel coordinates (pixel centres
        at integers).
    particle_yx_lr_px : torch.Tensor
        `(p, 2)` the same in LR pixels: ``(hr - 0.5) / 2``.
    defocus_u_a, defocus_v_a, defocus_angle_deg : float
        CTF of the micrograph.
    pixel_size_a, hr_pixel_size_a : float
        LR and HR pixel sizes.
    seconds : float
        Wall time of the simulation.
    info : dict
        Derived physical numbers (interaction constant, attenuation, ...).
    """

    lr_frames: torch.Tensor
    hr_frames: torch.Tensor
    clean_hr: torch.Tensor
    clean_hr_noctf: torch.Tensor
    shifts_a: torch.Tensor
    shifts_lr_px: torch.Tensor
    particle_angles_deg: torch.Tensor
    particle_yx_hr_px: torch.Tensor
    particle_yx_lr_px: torch.Tensor
    defocus_u_a: float
    defocus_v_a: float
    defocus_angle_deg: float
    pixel_size_a: float
    hr_pixel_size_a: float
    clean_lr_frames: torch.Tensor | None = None
    clean_hr_frames: torch.Tensor | None = None
    eer_expected_hr: torch.Tensor | None = None
    eer_seed: int = 0
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


def _movie_generator(seed: int, movie_index: int, stream: int) -> int:
    return (seed * 1_000_003 + movie_index * 7919 + stream * 104_729) % (2**63 - 1)


def mean_lr_counts(config: SimulationConfig) -> float:
    """Expected counts per LR pixel and frame over an empty area (ice only)."""
    attenuation = ice_attenuation(config.ice_thickness_a, config.voltage_kv)
    background = 0.0 if config.energy_filter else 1.0 - attenuation
    return config.dose_per_frame * config.pixel_size_a**2 * (attenuation + background)


def camera_for(config: SimulationConfig) -> Camera | None:
    """The LR camera of this run (sensitivity, hot pixels, dead columns), drawn from the master seed; None if perfect."""
    return make_camera(config.size, gain_sigma=config.gain_sigma, hot_pixels=config.hot_pixels,
                       dead_columns=config.dead_columns, hot_counts=config.hot_pixel_rate * mean_lr_counts(config),
                       seed=_movie_generator(config.seed, -1, 3))  # fmt: skip


def plan_movie(model: AtomicModel | VolumeModel, config: SimulationConfig, movie_index: int) -> MoviePlan:
    """Draw defocus, orientations, positions and motion of one movie (deterministic per seed).

    Raises
    ------
    InputError
        When the particles cannot be placed without overlap.
    """
    g = torch.Generator().manual_seed(_movie_generator(config.seed, movie_index, 0))
    mean = config.defocus_min_a + float(torch.rand(1, generator=g)) * (config.defocus_max_a - config.defocus_min_a)
    astig = float(torch.rand(1, generator=g)) * config.astigmatism_a
    angle = float(torch.rand(1, generator=g)) * 180.0
    field_a = config.size * config.pixel_size_a
    radius = model_radius_a(model)
    centres = place_particles(config.particles, field_a, radius, g)
    angles = random_euler_angles(config.particles, g)
    shifts = global_drift_a(config.frames, config.dose_per_frame, config.motion, config.drift_a_per_dose, g)
    jitter = particle_jitter_a(config.particles, config.frames, config.jitter_a, config.motion, g)
    return MoviePlan(
        movie_index=movie_index,
        defocus_u_a=mean + astig,
        defocus_v_a=mean - astig,
        defocus_angle_deg=angle,
        angles_deg=angles,
        centres_yx_a=centres,
        shifts_a=shifts,
        jitter_a=jitter,
        noise_seed=_movie_generator(config.seed, movie_index, 1),
    )


def _box_size(model: AtomicModel | VolumeModel, pixel_size_a: float) -> int:
    return particle_box_px(model, pixel_size_a)


def _ice_spectrum(
    shape: tuple[int, int], pixel_size_a: float, thickness_a: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """rfft2 of the ice's projected-potential fluctuations (V·Å), independent water molecules.

    Variance per frequency ``ρ t H W / p² · (47.878 f_water(k))² · S(k)`` with an approximate
    structure factor of amorphous water: 0.06 at k -> 0 (low compressibility), 1 at high k and a
    peak at 1/3.7 Å (the ice ring).
    """
    h, w = shape
    if thickness_a == 0:
        return torch.zeros(h, w // 2 + 1, dtype=torch.complex64, device=device)
    ky = torch.fft.fftfreq(h, d=pixel_size_a, device=device)
    kx = torch.fft.rfftfreq(w, d=pixel_size_a, device=device)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    k = k2.sqrt()

    # f_water(k) = f_O + 2 f_H, each Σ_i a_i exp(-(b_i + B) k² / 4): accumulated term by term in place
    f_water = torch.zeros_like(k2)
    for coefs, count in ((FORM_O, 1.0), (FORM_H, 2.0)):
        for a_i, b_i in zip(*coefs):
            f_water.add_(torch.exp(k2 * (-(float(b_i) + _WATER_B_A2) / 4)), alpha=count * float(a_i))
    s0 = 0.06
    structure = 1 - (1 - s0) * torch.exp(-((k / 0.22) ** 2)) + 1.2 * torch.exp(-(((k - 0.27) / 0.045) ** 2))
    amp = math.sqrt(WATER_NUMBER_DENSITY_A3 * thickness_a) / pixel_size_a * MOTT_BETHE_V_A2 * f_water * structure.sqrt()
    white = torch.randn(h, w, generator=generator, device=device)
    return torch.fft.rfft2(white) * amp


def _paste(
    boxes: torch.Tensor, centres_yx_px: torch.Tensor, canvas: torch.Tensor, pad: int
) -> torch.Tensor:
    """Add particle boxes (centre at ``box // 2``) into a padded canvas at sub-pixel centres.

    Parameters
    ----------
    boxes : torch.Tensor
        `(p, b, b // 2 + 1)` rfft2 spectra of the particles centred at ``b // 2``.
    centres_yx_px : torch.Tensor
        `(p, 2)` centres in field pixels (the field starts at ``pad`` in the canvas).
    canvas : torch.Tensor
        `(size + 2 pad, size + 2 pad)` float32 working canvas, zeroed by the caller; modified in place.
    pad : int
        Margin (>= b) that keeps every box inside the canvas.

    Returns
    -------
    field : torch.Tensor
        `(size, size)` view of the canvas without its margin.
    """
    n = canvas.shape[-1]
    field = canvas[pad:-pad, pad:-pad]
    if boxes.shape[0] == 0:
        return field
    b = boxes.shape[-2]
    base = torch.floor(centres_yx_px)
    frac = (centres_yx_px - base).to(torch.float32)
    real = irfft2(boxes * phase_ramp((b, b), frac), (b, b))
    top = base.long() - b // 2 + pad
    if (top < 0).any() or (top + b > n).any():
        raise InputError(None, "a particle drifted outside the simulated field; reduce the motion")
    # one slice-add per particle: much faster than a scattered index_add_ of every pixel
    for (y, x), image in zip(top.tolist(), real):
        canvas[y : y + b, x : x + b] += image
    return field


def simulate_movie(
    model: AtomicModel | VolumeModel,
    config: SimulationConfig,
    movie_index: int = 0,
    device: torch.device | str = "cpu",
    *,
    plan: MoviePlan | None = None,
) -> SimulatedMovie:
    """Simulate one movie and its ground truths.

    Parameters
    ----------
    model : AtomicModel | VolumeModel
        The particle (``cryosr.core.simulate.model_io.read_model`` or ``load_default_model``).
    config : SimulationConfig
        All parameters.
    movie_index : int
        0-based movie number; with ``config.seed`` it fixes every random choice.
    device : torch.device | str
        Where to compute (``cryosr.core.device.resolve_device`` turns ``auto`` into one).
    plan : MoviePlan | None
        Pre-drawn plan (``plan_movie``); drawn here when None.

    Returns
    -------
    movie : SimulatedMovie
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    plan = plan or plan_movie(model, config, movie_index)
    n_hr = config.hr_size
    p_hr = config.hr_pixel_size_a
    t = config.frames
    sigma = interaction_constant(config.voltage_kv)
    attenuation = ice_attenuation(config.ice_thickness_a, config.voltage_kv)
    background = 0.0 if config.energy_filter else 1.0 - attenuation
    counts_per_px = config.dose_per_frame * p_hr**2
    gen = torch.Generator(device=device).manual_seed(plan.noise_seed)

    # particles: rendered once, moved per frame
    box = _box_size(model, p_hr)
    rot = euler_to_matrix(plan.angles_deg).to(device=device, dtype=torch.float32)
    spectra = projection_boxes_ft(model, rot, box, p_hr, b_factor_a2=config.b_factor_a2, solvent_mip_v=ICE_MIP_V)
    centres_px = plan.centres_yx_a.to(device) / p_hr - 0.5  # pixel-centre coordinates
    shifts_px = plan.shifts_a.to(device) / p_hr
    jitter_px = plan.jitter_a.to(device) / p_hr
    ice = _ice_spectrum((n_hr, n_hr), p_hr, config.ice_thickness_a, gen, device)

    ctf = calculate_ctf_2d(
        defocus=torch.tensor((plan.defocus_u_a + plan.defocus_v_a) / 2e4, device=device),
        astigmatism=(plan.defocus_u_a - plan.defocus_v_a) / 2e4,
        astigmatism_angle=plan.defocus_angle_deg,
        voltage=config.voltage_kv,
        spherical_aberration=config.cs_mm,
        amplitude_contrast=config.amp_contrast,
        phase_shift=0.0,
        pixel_size=p_hr,
        image_shape=(n_hr, n_hr),
        rfft=True,
        fftshift=False,
    ).to(torch.float32)
    dose = cumulative_dose(Acquisition(p_hr, config.dose_per_frame, voltage_kv=config.voltage_kv), t, device=device)
    # damage exponent per e/Å²: q_j = exp(N_j · log q(1)), computed once instead of once per frame
    log_q = dose_filter((n_hr, n_hr), torch.ones(1, device=device), p_hr, voltage_kv=config.voltage_kv)[0].log()
    mtf_hr = mtf_lr = None
    if config.mtf_frequencies:
        f = torch.tensor(config.mtf_frequencies, device=device)
        v = torch.tensor(config.mtf_values, device=device)
        mtf_hr = mtf_rfft((n_hr, n_hr), f, v)
        mtf_lr = mtf_rfft((config.size, config.size), f, v)

    ky = torch.fft.fftfreq(n_hr, device=device, dtype=torch.float64)
    kx = torch.fft.rfftfreq(n_hr, device=device, dtype=torch.float64)
    # expected counts = counts_per_px · (A (1 - 2 contrast) + background), contrast = CTF ⊛ σ·(potential):
    # the constant factors ride on the CTF, whose k = 0 term is dropped (a uniform phase has no contrast)
    offset = counts_per_px * (attenuation + background)
    ctf_counts = ctf * (-2.0 * attenuation * counts_per_px * sigma)
    ctf_counts[0, 0] = 0
    canvas = torch.zeros(n_hr + 2 * box, n_hr + 2 * box, device=device)
    spec = torch.empty(n_hr, n_hr // 2 + 1, dtype=torch.complex64, device=device)
    ramp = torch.empty_like(spec)
    q = torch.empty(n_hr, n_hr // 2 + 1, device=device)
    factor = torch.empty_like(q)
    q2 = torch.zeros_like(q)  # Σ_j q_j², for the dose-weighted truth
    expected = torch.empty(n_hr, n_hr, device=device)

    def potential_spectrum(centres: torch.Tensor, shift_px: torch.Tensor | None) -> torch.Tensor:
        """rfft2 of particles + ice (V·Å) into ``spec``; the ice moves with the global shift."""
        canvas.zero_()
        torch.fft.rfft2(_paste(spectra, centres, canvas, box), out=spec)
        if shift_px is None:
            return spec.add_(ice)
        torch.mul(
            torch.exp(-2j * torch.pi * ky * float(shift_px[0])).to(torch.complex64)[:, None],
            torch.exp(-2j * torch.pi * kx * float(shift_px[1])).to(torch.complex64)[None, :],
            out=ramp,
        )
        return spec.addcmul_(ice, ramp)

    lr = torch.empty(t, config.size, config.size, device=device)
    hr = torch.empty(t, n_hr, n_hr, device=device)
    camera = camera_for(config)
    eer_expected = torch.empty_like(hr) if config.movie_format == "eer" else None
    clean_lr = torch.empty_like(lr) if config.save_clean_frames else None
    clean_hr_frames = torch.empty_like(hr) if config.save_clean_frames else None

    def record(j: int, exp_hr: torch.Tensor, exp_lr: torch.Tensor) -> None:
        """Poisson-sample frame j (HR, then LR: one generator, always in this order)."""
        if config.noise_mtf:  # sample the unblurred expectation, then spread signal and noise
            hr[j] = apply_mtf(detect(exp_hr, gen), mtf_hr, clamp=False)
            lr[j] = apply_mtf(detect(camera_expectation(exp_lr, camera), gen), mtf_lr, clamp=False)
            if clean_lr is not None and clean_hr_frames is not None:
                clean_lr[j] = apply_mtf(exp_lr, mtf_lr)
                clean_hr_frames[j] = apply_mtf(exp_hr, mtf_hr)
            return
        hr[j] = detect(exp_hr, gen)
        lr[j] = detect(camera_expectation(exp_lr, camera), gen)
        if clean_lr is not None and clean_hr_frames is not None:
            clean_lr[j] = exp_lr
            clean_hr_frames[j] = exp_hr

    # On the CPU torch.poisson is single-threaded: sample frame j in a worker thread while frame
    # j + 1 is rendered (two alternating buffers; the draws and their order are the same as inline).
    overlap = device.type == "cpu" and t > 1
    buffers = [expected, torch.empty_like(expected)] if overlap else [expected]
    pending = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        for j in range(t):
            potential_spectrum(centres_px + shifts_px[j] + jitter_px[:, j], shifts_px[j])
            torch.mul(log_q, dose[j], out=q).exp_()
            q2.addcmul_(q, q)
            torch.mul(ctf_counts, q, out=factor)
            torch.view_as_real(spec).mul_(factor[..., None])
            frame = buffers[j % len(buffers)]  # its previous user (frame j - 2) has been recorded
            irfft2(spec, (n_hr, n_hr), out=frame)
            frame.add_(offset).clamp_min_(0)
            if eer_expected is not None:
                eer_expected[j] = frame
            if config.noise_mtf:  # the MTF follows the Poisson sampling (record)
                exp_hr = frame
                exp_lr = downsample_counts(frame, config.bin_factor, config.lr_operator)
            else:
                exp_hr = apply_mtf(frame, mtf_hr)
                exp_lr = apply_mtf(downsample_counts(frame, config.bin_factor, config.lr_operator), mtf_lr)
            if pending is not None:
                pending.result()
            if overlap:
                pending = pool.submit(record, j, exp_hr, exp_lr)
            else:
                record(j, exp_hr, exp_lr)
        if pending is not None:
            pending.result()

    # motion-free truths: Σ_j q_j · (q_j S) · sqrt(t / Σ q²) = S · sqrt(t Σ q²) (dose_weighted_sum)
    spec0 = potential_spectrum(centres_px, None)
    dw_contrast = irfft2(spec0 * (ctf_counts * torch.sqrt(t * q2)), (n_hr, n_hr))
    clean_hr = t * offset + dw_contrast
    noctf = torch.sqrt(q2 / t) * sigma
    noctf[0, 0] = 0
    clean_noctf = irfft2(spec0 * noctf, (n_hr, n_hr))

    yx_hr = centres_px.to(torch.float64)
    info = {
        "interaction_constant_rad_per_v_a": sigma,
        "ice_attenuation": attenuation,
        "ice_mean_inner_potential_v": ICE_MIP_V,
        "inelastic_background": background,
        "expected_counts_per_lr_pixel_per_frame": mean_lr_counts(config),
        "particle_box_hr_px": box,
        "particle_radius_a": model_radius_a(model),
    }
    return SimulatedMovie(
        lr_frames=lr,
        hr_frames=hr,
        clean_hr=clean_hr,
        clean_hr_noctf=clean_noctf,
        clean_lr_frames=clean_lr,
        clean_hr_frames=clean_hr_frames,
        eer_expected_hr=eer_expected,
        eer_seed=_movie_generator(config.seed, movie_index, 2),
        shifts_a=plan.shifts_a.clone(),
        shifts_lr_px=plan.shifts_a / config.pixel_size_a,
        particle_angles_deg=plan.angles_deg.clone(),
        particle_yx_hr_px=yx_hr.cpu(),
        particle_yx_lr_px=((yx_hr - 0.5) / config.bin_factor).cpu(),
        defocus_u_a=plan.defocus_u_a,
        defocus_v_a=plan.defocus_v_a,
        defocus_angle_deg=plan.defocus_angle_deg,
        pixel_size_a=config.pixel_size_a,
        hr_pixel_size_a=p_hr,
        seconds=time.perf_counter() - t0,
        info=info,
    )
