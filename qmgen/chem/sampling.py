"""Off-equilibrium geometries: rattle, normal-mode sampling and short Langevin MD.

Applied to each conformer qmgen embeds (SMILES and 2-D SDF inputs) after the ETKDG
embedding and the optional force-field relaxation, so ``--conformers K`` stays the number of
stored geometries per molecule. Every draw comes from a NumPy generator seeded by the
molecule's conformer seed (:func:`qmgen.chem.conformers.conformer_seed`, from its canonical
SMILES and the run's seed), the conformer's number and the method, so a rerun, a resume or
another worker gives bit-identical geometries.

- ``rattle``: independent Gaussian displacements of every Cartesian coordinate, standard
  deviation ``amplitude`` (Angstrom).
- ``nms``: normal-mode sampling at ``temperature``: the force-field (MMFF94, else UFF)
  geometry is relaxed, its Hessian taken by central differences of the force-field gradient,
  and each vibrational mode displaced by a Gaussian normal coordinate of variance
  kT / omega^2 (the classical harmonic Boltzmann distribution, mean energy kT/2 per mode).
  Frequencies below 100 cm^-1 count as 100 cm^-1, so soft torsions do not fling atoms
  apart. (ANI-1's NMS, Smith, Isayev & Roitberg, Chem. Sci. 8, 3192 (2017), draws
  mode energies with a uniform sum instead; the Boltzmann form is the textbook one.)
- ``md``: ``steps`` Langevin steps (BAOAB, Leimkuhler & Matthews, Appl. Math. Res. Express
  2013, 34; time step 0.5 fs, friction 0.01 / fs) on the force field, velocities drawn from
  Maxwell-Boltzmann at ``temperature``; the last frame is stored.

A drawn geometry with two atoms closer than ``min_distance`` (Angstrom) is drawn again
(up to 20 times); then the conformer fails with EMBED_FAILED naming the distance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from qmgen.chem.records import METHODS, ChemError, SampleOptions
from qmgen.status import Status

if TYPE_CHECKING:
    from rdkit import Chem

KCAL_PER_MOL_K = 1.987204259e-3  # Boltzmann constant, kcal/mol/K (CODATA 2018)
ACCEL = 4.184e-4  # (kcal/mol/Angstrom/amu) in Angstrom/fs^2
# omega^2 of 100 cm^-1 in kcal/mol/Angstrom^2/amu: (2 pi c nu)^2 / 4.184e26
MIN_OMEGA2 = (2 * np.pi * 2.99792458e10 * 100.0) ** 2 / 4.184e26
FD_STEP = 1e-3  # Angstrom, central differences of the force-field gradient
TIME_STEP = 0.5  # fs
FRICTION = 0.01  # 1/fs
MAX_DRAWS = 20


def closest_pair(pos: np.ndarray) -> float:
    """Smallest interatomic distance of ``pos`` (n, 3), inf for one atom."""
    if len(pos) < 2:
        return float("inf")
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    return float(d[np.triu_indices(len(pos), 1)].min())


class _ForceField:
    """Energy (kcal/mol) and gradient (kcal/mol/Angstrom) of one conformer's RDKit force
    field (MMFF94, else UFF) at arbitrary positions (n, 3) Angstrom.

    The gradient is a central difference of ``CalcEnergy`` (step 1e-4 Angstrom), not
    RDKit's ``CalcGrad``: with RDKit 2026.09, repeated ``CalcGrad(positions)`` calls on one
    force field disagreed with a fresh force field's by ~100 kcal/mol/Angstrom while the
    energies agreed, and Verlet MD on it gained tens of kcal/mol in 20 fs; on the
    differenced gradient it conserves energy to 0.01 kcal/mol over 50 fs (ethanol, 0.5 fs).
    """

    def __init__(self, mh: Chem.Mol, conf_id: int):
        from rdkit.Chem import rdForceFieldHelpers as ff

        if ff.MMFFHasAllMoleculeParams(mh):
            props = ff.MMFFGetMoleculeProperties(mh)
            self.ff = ff.MMFFGetMoleculeForceField(mh, props, confId=int(conf_id))
        elif ff.UFFHasAllMoleculeParams(mh):
            self.ff = ff.UFFGetMoleculeForceField(mh, confId=int(conf_id))
        else:
            raise ChemError(
                Status.EMBED_FAILED, "no MMFF94 or UFF parameters: cannot sample nms or md"
            )
        if self.ff is None:
            raise ChemError(Status.EMBED_FAILED, "RDKit could not set up a force field")

    def energy(self, pos: np.ndarray) -> float:
        return float(self.ff.CalcEnergy(np.asarray(pos, dtype=np.float64).ravel().tolist()))

    def gradient(self, pos: np.ndarray, h: float = 1e-4) -> np.ndarray:
        x = np.asarray(pos, dtype=np.float64).ravel().copy()
        g = np.empty(x.size)
        for k in range(x.size):
            x[k] += h
            e_plus = self.ff.CalcEnergy(x.tolist())
            x[k] -= 2 * h
            e_minus = self.ff.CalcEnergy(x.tolist())
            x[k] += h
            g[k] = (e_plus - e_minus) / (2 * h)
        return g.reshape(np.shape(pos))

    def minimise(self, pos: np.ndarray) -> np.ndarray:
        """The local minimum near ``pos`` (L-BFGS on the differenced gradient)."""
        from scipy.optimize import minimize

        res = minimize(
            lambda x: self.energy(x),
            np.asarray(pos, dtype=np.float64).ravel(),
            jac=lambda x: self.gradient(x).ravel(),
            method="L-BFGS-B",
            options=dict(maxiter=2000, gtol=1e-6),
        )
        return res.x.reshape(np.shape(pos))


def hessian(ff: _ForceField, pos: np.ndarray) -> np.ndarray:
    """(3n, 3n) Hessian, kcal/mol/Angstrom^2, by central differences of the gradient."""
    n3 = pos.size
    h = np.empty((n3, n3))
    for k in range(n3):
        step = np.zeros(n3)
        step[k] = FD_STEP
        plus = ff.gradient(pos + step.reshape(pos.shape)).ravel()
        minus = ff.gradient(pos - step.reshape(pos.shape)).ravel()
        h[k] = (plus - minus) / (2 * FD_STEP)
    return 0.5 * (h + h.T)


def _nms(ff: _ForceField, pos, masses, temperature, rng):
    """Generator of NMS geometries about the force-field minimum near ``pos``."""
    centre = ff.minimise(pos)
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 3)
    hmw = hessian(ff, centre) * np.outer(inv_sqrt_m, inv_sqrt_m)
    omega2, modes = np.linalg.eigh(hmw)
    n_rigid = 5 if len(pos) == 2 or _is_linear(centre) else 6
    order = np.argsort(np.abs(omega2))[n_rigid:]  # the vibrations
    omega2, modes = np.maximum(np.abs(omega2[order]), MIN_OMEGA2), modes[:, order]
    kt = KCAL_PER_MOL_K * temperature
    while True:
        q = rng.normal(size=len(omega2)) * np.sqrt(kt / omega2)
        yield centre + (inv_sqrt_m * (modes @ q)).reshape(centre.shape)


def _is_linear(pos: np.ndarray) -> bool:
    centred = pos - pos.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    return bool(len(s) < 2 or s[1] < 1e-3 * max(s[0], 1e-12))


def _md(ff: _ForceField, pos, masses, temperature, steps, rng):
    """Generator of last frames of independent Langevin trajectories from ``pos``."""
    kt = KCAL_PER_MOL_K * temperature
    m = masses[:, None]
    sigma_v = np.sqrt(kt * ACCEL / m)  # Angstrom/fs
    c1 = np.exp(-FRICTION * TIME_STEP)
    c2 = np.sqrt(1.0 - c1 * c1)
    while True:
        x = pos.copy()
        v = rng.normal(size=x.shape) * sigma_v
        a = -ff.gradient(x) * ACCEL / m
        for _ in range(int(steps)):  # BAOAB
            v = v + 0.5 * TIME_STEP * a
            x = x + 0.5 * TIME_STEP * v
            v = c1 * v + c2 * sigma_v * rng.normal(size=x.shape)
            x = x + 0.5 * TIME_STEP * v
            a = -ff.gradient(x) * ACCEL / m
            v = v + 0.5 * TIME_STEP * a
        yield x


def sample_positions(
    mh: Chem.Mol, conf_id: int, options: SampleOptions, seed: int, index: int
) -> np.ndarray:
    """Sampled positions (n, 3) Angstrom of conformer ``conf_id`` of ``mh`` (hydrogens
    included); ``seed`` is the molecule's conformer seed, ``index`` the conformer's number.
    Raises :class:`ChemError` (EMBED_FAILED) when no draw keeps ``min_distance``."""
    pos = np.asarray(mh.GetConformer(int(conf_id)).GetPositions(), dtype=np.float64)
    masses = np.array([a.GetMass() for a in mh.GetAtoms()], dtype=np.float64)
    rng = np.random.default_rng([int(seed), int(index), METHODS.index(options.method)])
    if options.method == "rattle":
        draws = (pos + rng.normal(scale=options.amplitude, size=pos.shape) for _ in iter(int, 1))
    elif options.method == "nms":
        draws = _nms(_ForceField(mh, conf_id), pos, masses, options.temperature, rng)
    else:
        ff = _ForceField(mh, conf_id)
        draws = _md(ff, pos, masses, options.temperature, options.steps, rng)
    closest = float("inf")
    for _, new in zip(range(MAX_DRAWS), draws, strict=False):
        closest = closest_pair(new)
        if np.all(np.isfinite(new)) and closest >= options.min_distance:
            return new
    raise ChemError(
        Status.EMBED_FAILED,
        f"--sample {options.method}: {MAX_DRAWS} draws all put two atoms closer than "
        f"min_distance {options.min_distance} Angstrom (last {closest:.3f})",
    )


def sample_conformers(mh: Chem.Mol, ids, options: SampleOptions, seed: int) -> None:
    """Replace the positions of conformers ``ids`` of ``mh`` by sampled ones, in place."""
    from rdkit.Geometry import Point3D

    for index, cid in enumerate(ids):
        new = sample_positions(mh, cid, options, seed, index)
        conf = mh.GetConformer(int(cid))
        for i, p in enumerate(new):
            conf.SetAtomPosition(i, Point3D(*map(float, p)))
