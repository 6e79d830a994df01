"""Known-answer tests of the simulator's physics (in memory, tiny sizes, seeded)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import DEVICES
from torch_fourier_filter.dose_weight import critical_exposure
from torch_fourier_slice import project_3d_to_2d

from cryosr.core.fourier import bin_sum
from cryosr.core.io.model import load_default_model
from cryosr.core.shifts import cross_correlation_shift
from cryosr.core.simulate import (
    AtomicModel,
    SimulationConfig,
    electron_wavelength_a,
    euler_to_matrix,
    ice_attenuation,
    interaction_constant,
    potential_volume,
    projection_boxes_ft,
    simulate_movie,
)
from cryosr.core.simulate.physics import ICE_MIP_V


@pytest.fixture(scope="module")
def model():
    return load_default_model()


def _carbon(positions_a) -> AtomicModel:
    ref = load_default_model()
    c = ref.elements.index("C")
    n = len(positions_a)
    return AtomicModel(
        coords_a=torch.tensor(positions_a, dtype=torch.float32),
        element_index=torch.zeros(n, dtype=torch.int64),
        form_a=ref.form_a[c : c + 1],
        form_b=ref.form_b[c : c + 1],
        b_factor_a2=torch.tensor([20.0]),
        elements=("C",),
        displaced_volume_a3=ref.displaced_volume_a3,
    )


def test_electron_constants_match_literature():
    """λ(300 kV) = 0.019687 Å, λ(200 kV) = 0.02508 Å; σ(300 kV) = 0.6526 rad/(kV·Å) (§5.1)."""
    assert electron_wavelength_a(300) == pytest.approx(0.019687, abs=2e-6)
    assert electron_wavelength_a(200) == pytest.approx(0.02508, abs=2e-5)
    assert interaction_constant(300) * 1e3 == pytest.approx(0.6526, abs=5e-4)
    assert 4.0 < ICE_MIP_V < 5.0  # independent-atom ice is a little above the measured 3.5-4.5 V
    assert ice_attenuation(3950.0, 300) == pytest.approx(math.exp(-1), rel=1e-6)  # Λ(300 kV) = 395 nm


def test_euler_matrix_is_relions_zyz():
    """rot = 90°: a point on +x appears at -y (RELION Euler_angles2matrix); rotations are orthonormal."""
    a = euler_to_matrix(torch.tensor([90.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(a @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0.0, -1, 0], dtype=torch.float64))
    g = torch.Generator().manual_seed(0)
    r = euler_to_matrix(torch.rand(20, 3, generator=g, dtype=torch.float64) * 360)
    torch.testing.assert_close(r @ r.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(20, 3, 3))
    assert torch.allclose(torch.linalg.det(r), torch.ones(20, dtype=torch.float64))


def test_projection_places_atom_and_integrates_to_form_factor():
    """One carbon at x = +10 Å, rot = 90°: the peak moves to y = -10 Å; the integral is 47.878 f(0) - MIP·v."""
    px, box = 0.5, 96
    atom = _carbon([[10.0, 0.0, 0.0]])
    spec = projection_boxes_ft(atom, euler_to_matrix(torch.tensor([[90.0, 0.0, 0.0]])), box, px, solvent_mip_v=ICE_MIP_V)
    img = torch.fft.irfft2(spec[0], s=(box, box))
    iy, ix = divmod(int(img.argmax()), box)
    assert (iy, ix) == (box // 2 - 20, box // 2)
    expected = 47.878 * float(atom.form_a.sum()) - ICE_MIP_V * atom.displaced_volume_a3  # V·Å³
    assert float(img.sum()) * px**2 == pytest.approx(expected, rel=1e-3)


def test_atomic_projection_matches_fourier_slice_of_the_map(model):
    """Rendering rotated atoms in 2-D agrees with projecting the 3-D map (map.mrc) with torch-fourier-slice."""
    px, box = 1.0, 96
    angles = torch.tensor([[30.0, 60.0, -45.0], [-120.0, 100.0, 10.0]])
    rot = euler_to_matrix(angles)
    direct = torch.fft.irfft2(projection_boxes_ft(model, rot, box, px, b_factor_a2=40.0), s=(box, box))
    vol = potential_volume(model, box, px, b_factor_a2=40.0)
    sliced = project_3d_to_2d(vol, rot.transpose(-1, -2), pad_factor=2.0) * px
    for a, b in zip(direct, sliced):
        cc = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
        assert cc > 0.97
        assert float(b.sum()) == pytest.approx(float(a.sum()), rel=0.02)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("energy_filter", [False, True])
def test_dose_mean_counts(model, device, energy_filter):
    """Mean counts per LR pixel = dose x (LR pixel)² within 2 % (x exp(-t/Λ) with a zero-loss filter)."""
    cfg = SimulationConfig(size=96, pixel_size_a=1.3, frames=6, dose_per_frame=1.5, particles=3, energy_filter=energy_filter, seed=1)
    sim = simulate_movie(model, cfg, 0, device)
    expected = 1.5 * 1.3**2 * (ice_attenuation(300.0, 300.0) if energy_filter else 1.0)
    assert float(sim.lr_frames.mean()) == pytest.approx(expected, rel=0.02)
    assert float(sim.hr_frames.mean()) * 4 == pytest.approx(expected, rel=0.02)
    assert torch.equal(sim.lr_frames, sim.lr_frames.round())  # counts are integers
    assert float(sim.clean_hr.mean()) * 4 / cfg.frames == pytest.approx(expected, rel=1e-4)


def _radial_profile(image: torch.Tensor, pixel_size_a: float, n_bins: int):
    n = image.shape[-1]
    power = torch.fft.rfft2(image - image.mean()).abs() ** 2
    k = torch.sqrt(torch.fft.fftfreq(n, d=pixel_size_a)[:, None] ** 2 + torch.fft.rfftfreq(n, d=pixel_size_a)[None] ** 2)
    edges = torch.linspace(0, 1 / (2 * pixel_size_a), n_bins + 1)
    idx = torch.bucketize(k.flatten(), edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    sums = torch.zeros(n_bins).index_add_(0, idx[ok], power.flatten()[ok].double().float())
    counts = torch.zeros(n_bins).index_add_(0, idx[ok], torch.ones(int(ok.sum())))
    centres = (edges[1:] + edges[:-1]) / 2
    return centres, sums / counts.clamp_min(1)


def test_thon_ring_zeros_sit_where_the_ctf_formula_puts_them(model):
    """Minima of the clean image's rotational power average match the zeros of RELION's CTF formula."""
    defocus_a, cs_mm, w, kv = 12000.0, 2.7, 0.07, 300.0
    cfg = SimulationConfig(
        size=128, pixel_size_a=1.5, frames=4, particles=2, defocus_min_a=defocus_a, defocus_max_a=defocus_a,
        astigmatism_a=0.0, cs_mm=cs_mm, amp_contrast=w, voltage_kv=kv, motion="none", seed=3,
    )
    sim = simulate_movie(model, cfg, 0, "cpu")
    px = cfg.hr_pixel_size_a
    centres, profile = _radial_profile(sim.clean_hr, px, 128)
    # cryoDRGN/RELION: γ = 2π(-½ Δf λ s² + ¼ Cs λ³ s⁴); CTF = sqrt(1-w²) sin γ - w cos γ
    lam = electron_wavelength_a(kv)
    s = torch.linspace(0.01, 1 / (2 * px), 20000, dtype=torch.float64)
    gamma = 2 * math.pi * (-0.5 * defocus_a * lam * s**2 + 0.25 * cs_mm * 1e7 * lam**3 * s**4)
    ctf = math.sqrt(1 - w**2) * torch.sin(gamma) - w * torch.cos(gamma)
    zeros = s[1:][(ctf[1:] * ctf[:-1]) < 0][:4]
    bin_width = float(centres[1] - centres[0])
    gaps = torch.diff(zeros)
    for i, z in enumerate(zeros[:-1]):
        half = min(4 * bin_width, 0.45 * float(gaps[i]), 0.45 * float(gaps[i - 1]) if i else 1.0)
        window = (centres > z - half) & (centres < z + half)
        local = torch.nonzero(window).flatten()
        k_min = centres[local[profile[local].argmin()]]
        assert abs(float(k_min - z)) <= 1.0 * bin_width, (float(z), float(k_min))
        # and the minimum is deep compared with its neighbourhood's maxima
        assert float(profile[local].min()) < 0.2 * float(profile[local].max())


def test_lr_movie_is_the_2x2_binned_hr_intensity(model):
    """Box operator: LR expectations = 2x2 sums of HR expectations exactly; the Poisson frames agree on average."""
    cfg = SimulationConfig(size=64, frames=24, dose_per_frame=2.0, particles=2, save_clean_frames=True, seed=5)
    sim = simulate_movie(model, cfg, 0, "cpu")
    torch.testing.assert_close(sim.clean_lr_frames, bin_sum(sim.clean_hr_frames, 2), rtol=1e-5, atol=1e-4)
    # independent Poisson draws: mean over frames of LR - binned HR has variance 2 λ / t per pixel
    lam = sim.clean_lr_frames.mean(0)
    diff = sim.lr_frames.mean(0) - bin_sum(sim.hr_frames, 2).mean(0)
    chi2 = float((diff**2 / (2 * lam / cfg.frames)).mean())
    assert chi2 == pytest.approx(1.0, abs=0.1)
    # the Fourier-crop operator conserves counts too but is not the box integral
    sim_f = simulate_movie(model, SimulationConfig(**{**cfg.to_dict(), "lr_operator": "fourier", "mtf_frequencies": (), "mtf_values": ()}), 0, "cpu")
    assert float(sim_f.clean_lr_frames.mean()) == pytest.approx(float(sim.clean_lr_frames.mean()), rel=1e-4)
    assert float((sim_f.clean_lr_frames - sim.clean_lr_frames).abs().max()) > 0.01


def test_recorded_shifts_match_cross_correlation(model):
    """The true shifts equal the measured cross-correlation shift of each frame against frame 1."""
    cfg = SimulationConfig(size=128, frames=6, dose_per_frame=2.0, particles=4, motion="relion-like",
                           drift_a_per_dose=0.6, jitter_a=0.0, save_clean_frames=True, seed=7)
    sim = simulate_movie(model, cfg, 0, "cpu")
    measured = cross_correlation_shift(sim.clean_lr_frames[0], sim.clean_lr_frames)
    torch.testing.assert_close(measured.double(), sim.shifts_lr_px, atol=0.1, rtol=0)
    assert float(sim.shifts_lr_px[-1].norm()) > 3  # the test is not trivially passing on zero motion
    torch.testing.assert_close(sim.shifts_lr_px * cfg.pixel_size_a, sim.shifts_a)


def test_radiation_damage_follows_grant_grigorieff(model):
    """Clean frame spectra decay as exp(-ΔN / (2 Ne(k))) between the first and last frame."""
    cfg = SimulationConfig(size=64, pixel_size_a=2.0, frames=10, dose_per_frame=4.0, particles=2,
                           motion="none", save_clean_frames=True, seed=2)
    sim = simulate_movie(model, cfg, 0, "cpu")
    f0 = torch.fft.rfft2(sim.clean_hr_frames[0] - sim.clean_hr_frames[0].mean())
    f1 = torch.fft.rfft2(sim.clean_hr_frames[-1] - sim.clean_hr_frames[-1].mean())
    n = cfg.hr_size
    px = cfg.hr_pixel_size_a
    k = torch.sqrt(torch.fft.fftfreq(n, d=px)[:, None] ** 2 + torch.fft.rfftfreq(n, d=px)[None] ** 2)
    for k_target in (0.05, 0.1, 0.15):
        shell = ((k - k_target).abs() < 0.005) & (f0.abs() > 1e-3 * f0.abs().max())
        ratio = (f1[shell].abs() / f0[shell].abs()).median()
        expected = math.exp(-(cfg.frames - 1) * cfg.dose_per_frame / (2 * float(critical_exposure(torch.tensor(k_target)))))
        assert float(ratio) == pytest.approx(expected, rel=0.08)


def test_same_seed_same_movie_and_movies_differ(model):
    cfg = SimulationConfig(size=48, frames=3, particles=1, seed=11)
    a = simulate_movie(model, cfg, 0, "cpu")
    b = simulate_movie(model, cfg, 0, "cpu")
    c = simulate_movie(model, cfg, 1, "cpu")
    assert torch.equal(a.lr_frames, b.lr_frames) and torch.equal(a.clean_hr, b.clean_hr)
    assert not torch.equal(a.lr_frames, c.lr_frames)
    assert a.defocus_u_a != c.defocus_u_a
