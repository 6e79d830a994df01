"""CTF estimation of micrographs (``cryosr ctf``): a CTFFIND4-style periodogram fit."""

from cryosr.core.ctf.fit import CtfFit, CtfFitConfig, fit_ctf

__all__ = ["CtfFit", "CtfFitConfig", "fit_ctf"]
