"""Physical constants and formulas of electron scattering (methods_and_physics.md §5.1, §5.8).

All lengths in Å, voltages in kV unless the name says otherwise.
"""

from __future__ import annotations

import math

__all__ = [
    "FORM_H",
    "FORM_O",
    "ICE_MIP_V",
    "MOTT_BETHE_V_A2",
    "WATER_NUMBER_DENSITY_A3",
    "electron_wavelength_a",
    "ice_attenuation",
    "inelastic_mean_free_path_a",
    "interaction_constant",
]

#: h² / (2π m0 e) in V·Å²: a Gaussian form factor ``f_e`` (Å) integrates to a potential of
#: ``MOTT_BETHE_V_A2 * f_e(0)`` V·Å³ (Kirkland's 47.878 constant).
MOTT_BETHE_V_A2 = 47.878

#: Molecules per Å³ in vitreous ice of density 0.94 g/cm³ (parakeet's ice density).
WATER_NUMBER_DENSITY_A3 = 0.94 / 18.015 * 6.02214076e23 / 1e24

#: Electron form factors (a_i in Å, b_i in Å², ``f(s) = Σ a_i exp(-b_i s²)``, s = k/2) of O and H,
#: International Tables C 4.3.2.2 (the table gemmi ships as ``Element.c4322``).
FORM_O = ((0.0974, 0.2921, 0.6910, 0.6990, 0.2039), (0.2067, 1.3815, 4.6943, 12.7105, 32.4726))
FORM_H = ((0.0349, 0.1201, 0.1970, 0.0573, 0.1195), (0.5347, 3.5867, 12.3471, 18.9525, 38.6269))

#: Mean inner potential (V) of ice built from independent O + 2 H atoms: ρ · 47.878 · f_water(0).
ICE_MIP_V = WATER_NUMBER_DENSITY_A3 * MOTT_BETHE_V_A2 * (sum(FORM_O[0]) + 2 * sum(FORM_H[0]))

#: Inelastic mean free path of vitreous ice measured at 300 kV (Leginon, NYSBC Titan Krios).
_ICE_IMFP_300KV_A = 3950.0


def electron_wavelength_a(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å: ``12.2639 / sqrt(V + 0.97845e-6 V²)`` (V in volts)."""
    v = voltage_kv * 1e3
    return 12.2639 / math.sqrt(v + 0.97845e-6 * v * v)


def interaction_constant(voltage_kv: float) -> float:
    """Interaction constant σ in rad / (V·Å): phase = σ · projected potential.

    ``σ = 2π / (λ E) · (511 + E) / (2·511 + E)`` with E in kV (0.6526 rad/(kV·Å) at 300 kV).
    """
    lam = electron_wavelength_a(voltage_kv)
    e = voltage_kv
    return 2 * math.pi / (lam * e) * (511 + e) / (2 * 511 + e) / 1e3


def _malis_energy_term(voltage_kv: float, beta_mrad: float = 10.0, z_eff: float = 7.42) -> float:
    """Energy dependence of Malis' mean free path ``F E0 / ln(2 β E0 / Em)`` (Em in eV, E0 in keV)."""
    f = (1 + voltage_kv / 1022) / (1 + voltage_kv / 511) ** 2
    em_ev = 7.6 * z_eff**0.36
    return f * voltage_kv / math.log(2 * beta_mrad * voltage_kv * 1e3 / em_ev)


def inelastic_mean_free_path_a(voltage_kv: float) -> float:
    """Inelastic mean free path of vitreous ice in Å.

    Anchored at the measured 395 nm at 300 kV and scaled to other voltages with the energy term
    of the Malis et al. (1988) parameterisation.
    """
    return _ICE_IMFP_300KV_A * _malis_energy_term(voltage_kv) / _malis_energy_term(300.0)


def ice_attenuation(ice_thickness_a: float, voltage_kv: float) -> float:
    """Fraction of electrons that cross the ice without inelastic scattering, ``exp(-t / Λ)``."""
    return math.exp(-ice_thickness_a / inelastic_mean_free_path_a(voltage_kv))
