r"""Molecular integration grids: PySCF's atomic grids placed on atoms, Becke weights in JAX.

A molecular grid is the union of atom-centred grids, each point weighted by its
quadrature weight times a Becke cell function (Becke, J. Chem. Phys. 88, 2547 (1988)):

.. math::
   w_g = w^{quad}_g \, \frac{P_{A(g)}(\mathbf r_g)}{\sum_B P_B(\mathbf r_g)}, \quad
   P_A = \prod_{B \ne A} \tfrac12\,[1 - f(f(f(\nu_{AB})))],\quad f(x) = \tfrac32 x - \tfrac12 x^3

with :math:`\nu_{AB} = \mu_{AB} + a_{AB}(1 - \mu_{AB}^2)`,
:math:`\mu_{AB} = (|\mathbf r - \mathbf R_A| - |\mathbf r - \mathbf R_B|)/R_{AB}`, and the
Treutler–Ahlrichs radii adjustment :math:`a_{AB} = \tfrac14(\rho_B/\rho_A - \rho_A/\rho_B)`
clipped to [-1/2, 1/2], :math:`\rho = \sqrt{r_{Bragg}}` (J. Chem. Phys. 102, 346 (1995)).
These are PySCF's defaults (``dft.Grids``: Treutler–Ahlrichs radial grids, Lebedev angular
grids, NWChem pruning, original Becke scheme with Treutler radii adjustment).

The per-element atomic grids (points relative to the nucleus and quadrature weights) depend
only on the element and the level; they come from PySCF once and are cached. Placing them
on atoms and the Becke partition depend on the geometry and run in JAX. A grid is padded
to a static number of points with zero-weight points.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np

from qmgen.dft.chunking import map_chunks
from qmgen.molecule import SYMBOLS, Molecule

GRID_LEVELS = tuple(range(10))


class GridError(ValueError):
    """An unsupported grid request; the message names the problem."""


def check_level(level) -> int:
    if (
        isinstance(level, bool)
        or not isinstance(level, (int, np.integer))
        or level not in GRID_LEVELS
    ):
        raise GridError(f"unknown grid level {level!r}; supported levels: 0-9 (PySCF's)")
    return int(level)


@cache
def atomic_grid(z: int, level: int) -> tuple[np.ndarray, np.ndarray]:
    """PySCF's grid of element ``z`` at ``level``: (points (n, 3) Bohr, weights (n,))."""
    from pyscf import gto
    from pyscf.dft import gen_grid, radi

    level = check_level(level)
    with contextlib.redirect_stderr(io.StringIO()):  # PySCF warns that no basis is given
        mol = gto.M(atom=f"{SYMBOLS[z]} 0 0 0", basis={}, spin=z % 2, unit="Bohr", verbose=0)
    tab = gen_grid.gen_atomic_grids(
        mol, level=level, radi_method=radi.treutler, prune=gen_grid.nwchem_prune
    )
    coords, weights = tab[SYMBOLS[z]]
    return np.ascontiguousarray(coords), np.ascontiguousarray(weights)


@cache
def _sqrt_bragg() -> np.ndarray:
    from pyscf.dft import radi

    out = np.sqrt(np.asarray(radi.BRAGG_RADII, dtype=np.float64)) + 1e-200
    out[0] = 1.0  # padding atoms (Z=0)
    return out


def grid_size(z, level: int) -> int:
    """Number of (unpadded) grid points of atoms ``z`` at ``level``."""
    return int(sum(atomic_grid(int(zi), level)[1].size for zi in np.asarray(z).tolist()))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Grid:
    """Atom-centred grid points of one molecule, before placement (a JAX pytree).

    local: (G, 3) point positions relative to their atom, Bohr.
    owner: (G,) int32 index of the atom each point belongs to.
    quad: (G,) quadrature weights (0 for padding points).
    """

    # NumPy on the host (build_grid), JAX arrays once placed on a device or traced
    local: jax.Array | np.ndarray
    owner: jax.Array | np.ndarray
    quad: jax.Array | np.ndarray


def build_grid(mol: Molecule, level: int = 0, n_points: int | None = None) -> Grid:
    """Host-side: concatenate the atomic grids of ``mol`` and pad to ``n_points``."""
    level = check_level(level)
    parts = [atomic_grid(int(z), level) for z in mol.z.tolist()]
    n = sum(p[1].size for p in parts)
    n_points = n if n_points is None else int(n_points)
    if n_points < n:
        raise GridError(f"grid needs {n} points but only {n_points} were allowed")
    local = np.zeros((n_points, 3))
    owner = np.zeros(n_points, np.int32)
    quad = np.zeros(n_points)
    p0 = 0
    for atom, (c, w) in enumerate(parts):
        local[p0 : p0 + w.size] = c
        owner[p0 : p0 + w.size] = atom
        quad[p0 : p0 + w.size] = w
        p0 += w.size
    return Grid(local, owner, quad)


def becke_partition(coords, positions, z):
    """Becke cell functions P_A(r) of every atom at every point: (G, natom).

    Args:
      coords: (G, 3) points, Bohr. positions: (natom, 3) Bohr.
      z: (natom,) atomic numbers, 0 for padding atoms (which get P = 0 and do not cut
        the cells of real atoms).
    """
    dtype = coords.dtype
    real = z > 0
    rad = jnp.asarray(_sqrt_bragg(), dtype)[z]
    a = 0.25 * (rad[None, :] / rad[:, None] - rad[:, None] / rad[None, :])
    a = jnp.clip(a, -0.5, 0.5)
    dist = jnp.sqrt(jnp.sum((coords[:, None, :] - positions[None, :, :]) ** 2, axis=-1))
    rab = jnp.sqrt(jnp.sum((positions[:, None, :] - positions[None, :, :]) ** 2, axis=-1))
    natom = positions.shape[0]
    off = ~jnp.eye(natom, dtype=bool) & real[:, None] & real[None, :]
    inv_rab = jnp.where(off, 1.0 / jnp.where(off, rab, 1.0), 0.0)
    mu = (dist[:, :, None] - dist[:, None, :]) * inv_rab
    g = mu + a * (1.0 - mu * mu)
    for _ in range(3):
        g = (3.0 - g * g) * g * 0.5
    s = jnp.where(off, 0.5 - 0.5 * g, 1.0)
    return jnp.where(real, jnp.prod(s, axis=-1), 0.0)


POINT_CHUNK = 4096  # points per Becke step: bounds the (chunk, natom, natom) work arrays


def place_grid(grid: Grid, positions, z):
    """Coordinates and weights of a molecular grid: ((G, 3) Bohr, (G,)).

    Args:
      grid: the molecule's ``Grid``. positions: (natom, 3) Bohr. z: (natom,) atomic
        numbers, 0 for padding atoms.
    """
    coords = positions[grid.owner] + grid.local

    def weights_of(args):
        c, owner, quad = args
        p = becke_partition(c, positions, z)
        total = jnp.sum(p, axis=-1)
        mine = jnp.take_along_axis(p, owner[:, None], axis=-1)[:, 0]
        return quad * mine / jnp.where(total > 0, total, 1.0)

    return coords, map_chunks(weights_of, (coords, grid.owner, grid.quad), POINT_CHUNK)
