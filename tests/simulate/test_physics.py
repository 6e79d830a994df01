"""Known-answer tests of the simulator's physics (in memory, tiny sizes, seeded)."""

from __future__ import annotations

import math

import pytest
import torch
from torch_fourier_filter.dose_weight import critical_exposure
from torch_fourier_slice import project_3d_to_2d

from cryosr.core.errors import InputError
from cryosr.core.fourier import bin_sum, fourier_crop
from cryosr.core.shifts import cross_correlation_shift
from cryosr.core.simulate import (
    AtomicModel,
    SimulationConfig,
    electron_wavelength_a,
    euler_to_matrix,
    ice_attenuation,
    interaction_constant,
    place_particles,
    potential_volume,
    projection_boxes_ft,
    random_euler_angles,
    simulate_movie,
)
from cryosr.core.simulate.model_io import load_default_model
from cryosr.core.simulate.physics import ICE_MIP_V
from cryosr.core.simulate.potential import fft_friendly_even, model_radius_a, particle_box_px
from tests.helpers import DEVICES


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


def test_orientations_are_uniform_and_particles_do_not_overlap():
    """Item 1: Haar-uniform (rot, tilt, psi) and non-overlapping centres inside the field."""
    g = torch.Generator().manual_seed(0)
    angles = random_euler_angles(20000, g)
    cos_tilt = torch.cos(torch.deg2rad(angles[:, 1])).sort().values
    ks = float((cos_tilt - torch.linspace(-1, 1, len(cos_tilt), dtype=torch.float64)).abs().max()) / 2
    assert ks < 0.015  # Kolmogorov-Smirnov distance to U(-1, 1); 1.6/sqrt(n) = 0.011 at p = 0.01
    assert float(angles[:, 0].mean()) == pytest.approx(0.0, abs=3.0) and float(angles[:, 2].std()) == pytest.approx(360 / 12**0.5, rel=0.02)
    # the mean rotation of a uniform distribution on SO(3) is the zero matrix
    assert float(euler_to_matrix(angles).mean(0).abs().max()) < 0.02
    centres = place_particles(40, 600.0, 30.0, g)
    d = torch.cdist(centres, centres) + torch.eye(40, dtype=torch.float64) * 1e9
    assert float(d.min()) >= 60.0 and float(centres.min()) >= 0 and float(centres.max()) <= 600.0
    with pytest.raises(InputError, match="non-overlapping"):
        place_particles(200, 600.0, 30.0, g)


def test_phase_scales_with_the_interaction_constant(model):
    """Item 1: the noise-free phase is σ(V) x projected potential; σ depends on the voltage only."""
    base = {"size": 48, "pixel_size_a": 3.0, "frames": 2, "particles": 2, "motion": "none", "ice_thickness_a": 0.0, "seed": 9}
    p300 = simulate_movie(model, SimulationConfig(voltage_kv=300.0, **base), 0, "cpu").clean_hr_noctf
    p250 = simulate_movie(model, SimulationConfig(voltage_kv=250.0, **base), 0, "cpu").clean_hr_noctf
    assert float(p300.abs().max()) > 0.01  # a particle is there, with a phase of the expected order
    torch.testing.assert_close(p250, p300 * (interaction_constant(250) / interaction_constant(300)), atol=1e-6, rtol=1e-4)


def test_ice_noise_scales_with_thickness_and_shows_the_water_ring(model):
    """Item 2: the solvent's phase variance grows linearly with --ice-thickness; its spectrum peaks at ~3.7 Å."""
    def ice_phase(thickness):
        cfg = SimulationConfig(size=128, frames=1, particles=0, motion="none", ice_thickness_a=thickness, seed=4)
        return simulate_movie(model, cfg, 0, "cpu").clean_hr_noctf

    thin, thick = ice_phase(200.0), ice_phase(800.0)
    assert float(thick.var() / thin.var()) == pytest.approx(4.0, rel=0.02)  # same noise seed, amplitude ∝ sqrt(t)
    assert float(ice_phase(0.0).abs().max()) == 0.0
    centres, profile = _radial_profile(thick, 0.5, 64)
    ring = centres[(centres > 0.15)][profile[centres > 0.15].argmax()]
    assert float(ring) == pytest.approx(1 / 3.7, abs=0.02)


def test_motion_modes_match_their_definitions_and_a_real_track(model):
    """Item 4: none is static; drift is a straight constant-velocity line; relion-like slows down."""
    from cryosr.core.simulate.motion import global_drift_a

    g = torch.Generator().manual_seed(1)
    assert torch.count_nonzero(global_drift_a(20, 1.25, "none", 0.37, g)) == 0
    drift = global_drift_a(21, 1.25, "drift", 0.4, g)
    steps = drift.diff(dim=0).norm(dim=1)
    torch.testing.assert_close(steps, torch.full_like(steps, 0.4 * 1.25))
    assert float(drift[-1].norm()) == pytest.approx(20 * 0.5, rel=1e-9)  # straight line
    # relion-like at the RELION tutorial's exposure (24 x 1.277 e/Å²): that movie drifted 13 px x 0.885 Å
    real_total_a = 13.0 * 0.885
    totals, early, late = [], [], []
    for seed in range(20):
        track = global_drift_a(24, 1.277, "relion-like", 0.37, torch.Generator().manual_seed(seed))
        totals.append(float(track[-1].norm()))
        s = track.diff(dim=0).norm(dim=1)
        early.append(float(s[:3].mean()))
        late.append(float(s[-5:].mean()))
    assert 0.5 * real_total_a < sum(totals) / 20 < 2 * real_total_a
    assert sum(early) / sum(late) > 1.8  # fast at the start, as beam-induced motion is
    assert sum(late) / 20 == pytest.approx(0.37 * 1.277, rel=0.2)
    # per-particle jitter is on top of the drift: particles move relative to each other
    cfg = SimulationConfig(size=64, pixel_size_a=2.5, frames=5, particles=3, jitter_a=0.3, seed=2)
    from cryosr.core.simulate import plan_movie

    plan = plan_movie(model, cfg, 0)
    assert plan.jitter_a.shape == (3, 5, 2) and float(plan.jitter_a[:, 0].abs().max()) == 0.0
    assert float(plan.jitter_a[:, -1].std()) > 0.1


def test_detector_mtf_is_applied_at_each_pixel_and_fourier_operator_crops(model):
    """Item 6: the MTF filters the LR expectation at the LR pixel (and the HR at the HR pixel);
    ``lr_operator='fourier'`` is the Fourier crop of the same HR expectation."""
    freqs, values = (0.0, 0.25, 0.5), (1.0, 0.7, 0.3)
    base = {"size": 64, "pixel_size_a": 2.5, "frames": 2, "particles": 3, "motion": "none", "save_clean_frames": True, "seed": 6}
    plain = simulate_movie(model, SimulationConfig(**base), 0, "cpu")
    mtf = simulate_movie(model, SimulationConfig(mtf_frequencies=freqs, mtf_values=values, **base), 0, "cpu")
    for clean, clean_mtf in ((plain.clean_lr_frames[0], mtf.clean_lr_frames[0]), (plain.clean_hr_frames[0], mtf.clean_hr_frames[0])):
        n = clean.shape[-1]
        k = torch.sqrt(torch.fft.fftfreq(n)[:, None] ** 2 + torch.fft.rfftfreq(n)[None] ** 2)  # cycles per pixel
        ratio = (torch.fft.rfft2(clean_mtf) / torch.fft.rfft2(clean)).real
        for k0, expected in ((0.125, 0.85), (0.25, 0.7), (0.375, 0.5)):
            shell = (k - k0).abs() < 0.01
            assert float(ratio[shell].median()) == pytest.approx(expected, abs=0.02)
    fourier = simulate_movie(model, SimulationConfig(lr_operator="fourier", **base), 0, "cpu")
    torch.testing.assert_close(fourier.clean_lr_frames, fourier_crop(plain.clean_hr_frames, 2) * 4, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(fourier.clean_hr_frames, plain.clean_hr_frames)


def test_particle_boxes_are_fft_friendly_and_hold_the_particle(model):
    assert fft_friendly_even(174) == 180 and fft_friendly_even(1) == 2 and fft_friendly_even(128) == 128
    for n in range(2, 400):
        m = fft_friendly_even(n)
        assert m >= n and m % 2 == 0
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        assert m == 1
    box = particle_box_px(model, 0.5)
    assert box * 0.5 >= 2 * model_radius_a(model) + 16


def _relion_ctf(shape, pixel_size_a, u_a, v_a, angle_deg, voltage_kv, cs_mm, w):
    """RELION's CTF (ctf.h getCTF/getDeltaF) on an rfft grid: rows are Y, columns X, angle from X."""
    ky = torch.fft.fftfreq(shape[0], d=pixel_size_a, dtype=torch.float64)[:, None]
    kx = torch.fft.rfftfreq(shape[1], d=pixel_size_a, dtype=torch.float64)[None, :]
    u2 = ky**2 + kx**2
    lam = electron_wavelength_a(voltage_kv)
    delta_f = -(u_a + v_a) / 2 - (u_a - v_a) / 2 * torch.cos(2 * (torch.atan2(ky, kx) - math.radians(angle_deg)))
    k3 = math.atan(w / math.sqrt(1 - w * w))
    return -torch.sin(math.pi * lam * delta_f * u2 + math.pi / 2 * cs_mm * 1e7 * lam**3 * u2**2 - k3)


def test_applied_ctf_is_relions_with_the_recorded_astigmatism(model):
    """Item 3: the CTF in the clean image is RELION's CTF for the recorded DefocusU/V/Angle.

    clean_hr and clean_hr_noctf share the specimen spectrum S: rfft(clean) / rfft(noctf) =
    -2 A (dose p²) t CTF, so the applied CTF is measured exactly, direction by direction."""
    cfg = SimulationConfig(size=64, pixel_size_a=1.5, frames=2, particles=1, astigmatism_a=1500.0,
                           defocus_min_a=9000.0, defocus_max_a=12000.0, motion="none", seed=12)
    sim = simulate_movie(model, cfg, 0, "cpu")
    assert sim.defocus_u_a - sim.defocus_v_a > 300  # astigmatic enough for the angle to matter
    n, px = cfg.hr_size, cfg.hr_pixel_size_a
    scale = -2 * sim.info["ice_attenuation"] * cfg.dose_per_frame * px**2 * cfg.frames
    num, den = torch.fft.rfft2(sim.clean_hr.double()), torch.fft.rfft2(sim.clean_hr_noctf.double())
    ok = den.abs() > 1e-3 * den.abs().max()
    ok[0, 0] = False
    # the Nyquist row/column: (ky, +1/2p) and (-ky, +1/2p) are one Hermitian pair on the grid but
    # different directions for an astigmatic CTF, so a real image cannot carry both values there
    ok[n // 2, :] = False
    ok[:, -1] = False
    measured = (num / den).real / scale
    expected = _relion_ctf((n, n), px, sim.defocus_u_a, sim.defocus_v_a, sim.defocus_angle_deg, 300.0, 2.7, 0.07)
    assert int(ok.sum()) > 0.9 * ok.numel()
    assert float((measured - expected)[ok].abs().max()) < 0.01
    rotated = _relion_ctf((n, n), px, sim.defocus_u_a, sim.defocus_v_a, sim.defocus_angle_deg + 90, 300.0, 2.7, 0.07)
    assert float((measured - rotated)[ok].abs().max()) > 0.5  # the test sees the angle


def test_noise_mtf_colours_the_flat_field_noise_like_mtf_squared(model):
    """``noise_mtf``: the Poisson-sampled counts are MTF-filtered, so the noise power spectrum of a
    flat field follows MTF² (at the LR and the HR pixel); off, it is white. The expectation (clean
    frames) is the same either way, and ``noise_mtf`` without an MTF is an error."""
    freqs, values = (0.0, 0.125, 0.25, 0.375, 0.5), (1.0, 0.85, 0.6, 0.4, 0.25)
    base = {"size": 96, "pixel_size_a": 2.0, "frames": 6, "dose_per_frame": 4.0, "particles": 0, "ice_thickness_a": 0.0,
            "motion": "none", "save_clean_frames": True, "seed": 3, "mtf_frequencies": freqs, "mtf_values": values}
    off = simulate_movie(model, SimulationConfig(**base), 0, "cpu")
    on = simulate_movie(model, SimulationConfig(noise_mtf=True, **base), 0, "cpu")
    torch.testing.assert_close(on.clean_lr_frames, off.clean_lr_frames)
    torch.testing.assert_close(on.clean_hr_frames, off.clean_hr_frames)
    for frames_on, frames_off in ((on.lr_frames, off.lr_frames), (on.hr_frames, off.hr_frames)):
        n = frames_on.shape[-1]
        k = torch.sqrt(torch.fft.fftfreq(n)[:, None] ** 2 + torch.fft.rfftfreq(n)[None] ** 2)
        mtf2 = torch.from_numpy(__import__("numpy").interp(k.numpy(), freqs, values)).float() ** 2
        for frames, expected in ((frames_on, mtf2), (frames_off, torch.ones_like(mtf2))):
            mean = float(frames.mean())
            spec = torch.fft.rfft2(frames - frames.mean((-2, -1), keepdim=True))
            nps = (spec.real**2 + spec.imag**2).mean(0) / (n * n * mean)  # 1 for white Poisson noise
            for k0 in (0.1, 0.2, 0.3, 0.4, 0.5):
                shell = (k - k0).abs() < 0.025
                assert float(nps[shell].mean() / expected[shell].mean()) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(InputError, match="needs a detector MTF"):
        SimulationConfig(noise_mtf=True)
