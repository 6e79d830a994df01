"""Specimen models for the simulator: atomic models (PDB/mmCIF via gemmi) and density maps (MRC).

Atomic models become ``AtomicModel`` tensors with per-element 5-Gaussian electron form factors
(International Tables C 4.3.2.2, gemmi's ``Element.c4322``, the Peng 1996 parameterisation).
Models without explicit hydrogens get united-atom hydrogens (the H form factor added to the heavy
atom) in average protein proportions.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources
from pathlib import Path

import gemmi
import numpy as np
import torch

from cryosr.core.errors import InputError
from cryosr.core.io.mrc import read_volume
from cryosr.core.simulate.potential import (
    PROTEIN_VOLUME_A3_PER_DA,
    AtomicModel,
    VolumeModel,
    scale_map_to_volts,
    soft_sphere_mask,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MODEL", "default_model_path", "load_default_model", "read_model"]

#: The embedded default: chain A of PDB 6Z6U (human apoferritin heavy chain, 1358 atoms, ~21 kDa).
DEFAULT_MODEL = "apoferritin_6z6u_chain_a.pdb"

#: United-atom hydrogens per heavy atom (protein average: ~7.7 H per ~7.8 heavy atoms).
_UNITED_H = {"C": 1.0, "N": 1.0, "O": 0.3, "S": 0.5}

_ATOMIC_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb.gz", ".cif.gz", ".ent.gz", ".mmcif.gz")
_MAP_SUFFIXES = (".mrc", ".map", ".mrcs", ".ccp4")


def default_model_path() -> Path:
    """Path of the embedded default model file."""
    return Path(str(resources.files("cryosr.core.data").joinpath(DEFAULT_MODEL)))


@functools.lru_cache(maxsize=4)
def _cached_atomic(path: str, mtime: float, assembly: bool) -> AtomicModel:
    return _read_atomic(Path(path), assembly)


def load_default_model() -> AtomicModel:
    """The embedded apoferritin subunit as an ``AtomicModel`` (cached in memory)."""
    path = default_model_path()
    return _cached_atomic(str(path), path.stat().st_mtime, False)


def read_model(path: str | Path | None, *, assembly: bool = False) -> AtomicModel | VolumeModel:
    """Read a specimen model: PDB/mmCIF -> ``AtomicModel``, MRC map -> ``VolumeModel``.

    Parameters
    ----------
    path : str | Path | None
        Model file; None or ``"default"`` gives the embedded model.
    assembly : bool
        For atomic models with a biological-assembly record, build the first assembly.

    Returns
    -------
    model : AtomicModel | VolumeModel
        Centred on the origin (atoms: centroid; maps: box centre).

    Raises
    ------
    InputError
        Missing or unreadable file, no atoms, anisotropic voxels, unknown extension.
    """
    if path is None or str(path) == "default":
        return load_default_model()
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such model file")
    name = path.name.lower()
    if name.endswith(_MAP_SUFFIXES):
        return _read_map(path)
    if name.endswith(_ATOMIC_SUFFIXES):
        return _cached_atomic(str(path.resolve()), path.stat().st_mtime, assembly)
    raise InputError(path, "unknown model format (use .pdb, .cif or an .mrc/.map density map)")


def _read_atomic(path: Path, assembly: bool) -> AtomicModel:
    try:
        st = gemmi.read_structure(str(path))
    except Exception as exc:
        raise InputError(path, f"not a readable PDB/mmCIF model ({exc})") from exc
    if len(st) == 0:
        raise InputError(path, "model file holds no models")
    try:
        # PDB files without SEQRES/entity records (e.g. refinement outputs) leave entity types unset,
        # which remove_ligands_and_waters() refuses; setup_entities() derives them from the residues
        st.setup_entities()
        st.remove_ligands_and_waters()
    except RuntimeError as exc:
        raise InputError(path, f"cannot separate polymer from ligands/waters ({exc})") from exc
    if assembly and st.assemblies:
        st = gemmi.make_assembly(st.assemblies[0], st[0], gemmi.HowToNameCopiedChain.Short)
        model = st
    else:
        model = st[0]
    xyz, symbols, bfac = [], [], []
    for chain in model:
        for res in chain:
            for atom in res:
                if atom.element == gemmi.Element("X"):
                    continue
                xyz.append(atom.pos.tolist())
                symbols.append(atom.element.name)
                bfac.append(atom.b_iso)
    if not xyz:
        raise InputError(path, "model has no atoms (after removing waters and ligands)")
    coords = np.asarray(xyz, dtype=np.float64)
    coords -= coords.mean(axis=0)
    elements = tuple(sorted(set(symbols)))
    index = np.array([elements.index(s) for s in symbols], dtype=np.int64)
    has_h = "H" in elements or "D" in elements
    form_a, form_b, b_mean = [], [], []
    mass = 0.0
    h_form = gemmi.Element("H").c4322
    for e in elements:
        el = gemmi.Element(e)
        coef = el.c4322
        if coef is None or not any(coef.a):
            raise InputError(path, f"no electron form factor for element {e!r}")
        n_h = 0.0 if has_h else _UNITED_H.get(e, 0.0)
        # a united atom's hydrogens sit on the heavy atom: 5 Gaussians of the atom + 5 of n_h H
        a = np.concatenate([np.array(coef.a), n_h * np.array(h_form.a)])
        b = np.concatenate([np.array(coef.b), np.array(h_form.b)])
        count = int((index == elements.index(e)).sum())
        mass += count * (el.weight + n_h * 1.008)
        form_a.append(a)
        form_b.append(b)
        sel = np.array(bfac)[index == elements.index(e)]
        b_mean.append(float(sel.mean()))
    displaced = PROTEIN_VOLUME_A3_PER_DA * mass / len(symbols)
    logger.info("%s: %d atoms, %.1f kDa, elements %s", path.name, len(symbols), mass / 1e3, ",".join(elements))
    return AtomicModel(
        coords_a=torch.from_numpy(coords.astype(np.float32)),
        element_index=torch.from_numpy(index),
        form_a=torch.tensor(np.array(form_a), dtype=torch.float32),
        form_b=torch.tensor(np.array(form_b), dtype=torch.float32),
        b_factor_a2=torch.tensor(b_mean, dtype=torch.float32),
        elements=elements,
        displaced_volume_a3=float(displaced),
        name=path.name,
    )


def _read_map(path: Path) -> VolumeModel:
    """A cubic map, scaled to volts and masked by a soft sphere inscribed in its box.

    The mask keeps the particle inside the sphere the projections assume (density in the corners,
    e.g. of a filament or of noise, would otherwise make the particle radius the box diagonal and
    the projection boxes needlessly large).
    """
    volume, px = read_volume(path)
    if px is None or px <= 0:
        raise InputError(path, "map header has no pixel size")
    d, h, w = volume.shape
    if not d == h == w:
        raise InputError(path, f"map must be cubic, found {tuple(volume.shape)}")
    if d < 8:
        raise InputError(path, f"map of {d}³ voxels is too small")
    return VolumeModel(volume=soft_sphere_mask(scale_map_to_volts(volume)), pixel_size_a=float(px), name=path.name)
