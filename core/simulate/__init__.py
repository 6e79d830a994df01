"""Synthetic cryo-EM movies with multiple ground truths (``cryosr simulate``).

In-memory API (stable; used by the other subcommands' tests)::

    from cryosr.core.simulate.model_io import load_default_model, read_model
    from cryosr.core.simulate import SimulationConfig, simulate_movie

    model = load_default_model()                      # embedded apoferritin subunit (cached)
    cfg = SimulationConfig(size=128, frames=8, particles=4, seed=0)
    sim = simulate_movie(model, cfg, movie_index=0, device="cpu")
    sim.lr_frames        # (t, s, s) counts at the LR pixel (2x2 box-integrated, MTF, Poisson)
    sim.hr_frames        # (t, 2s, 2s) counts at the HR pixel (same specimen, dose, motion)
    sim.clean_hr         # (2s, 2s) noise-free, motion-free, dose-weighted, CTF sum (expected counts)
    sim.clean_hr_noctf   # (2s, 2s) the same without CTF: dose-weighted phase (rad, mean removed)
    sim.shifts_a         # (t, 2) true (y, x) content shift per frame in Å (frame 1 = 0)
    sim.shifts_lr_px     # (t, 2) the same in LR pixels
    sim.particle_yx_lr_px, sim.particle_angles_deg, sim.defocus_u_a, ...

Shift convention: frame i's content equals the reference specimen moved by ``+shift`` (as
``cryosr.core.shifts.fourier_shift``: positive moves content to larger indices). The reference is
the motion-free specimen of ``clean_hr`` and of the particle coordinates, and equals frame 1.

Writing a RELION project from a ``SimulatedMovie`` is ``cryosr.core.simulate.project``.
"""

from cryosr.core.simulate.config import LR_OPERATORS, MOTION_MODELS, SimulationConfig
from cryosr.core.simulate.geometry import euler_to_matrix, place_particles, random_euler_angles
from cryosr.core.simulate.movie import MoviePlan, SimulatedMovie, plan_movie, simulate_movie
from cryosr.core.simulate.physics import electron_wavelength_a, ice_attenuation, interaction_constant
from cryosr.core.simulate.potential import AtomicModel, VolumeModel, potential_volume, projection_boxes_ft

__all__ = [
    "LR_OPERATORS",
    "MOTION_MODELS",
    "AtomicModel",
    "MoviePlan",
    "SimulatedMovie",
    "SimulationConfig",
    "VolumeModel",
    "electron_wavelength_a",
    "euler_to_matrix",
    "ice_attenuation",
    "interaction_constant",
    "place_particles",
    "plan_movie",
    "potential_volume",
    "projection_boxes_ft",
    "random_euler_angles",
    "simulate_movie",
]
