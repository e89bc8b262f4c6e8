"""Shape buckets, padding and stacking: how many molecules share one compiled program.

The compiled SCF program depends only on static shapes: the basis *structure* (shell
count per kind, see ``qmgen.dft.basis``), the number of atoms and the number of grid points.
Elements, coordinates, exponents and which atom a shell sits on are array data. So no
canonical atom reordering is needed for sharing: two molecules whose shell counts per kind
round up to the same values share a program whatever their atom order, and every result
comes back in the input atom order by construction.

``BucketPolicy`` rounds each count up (shells per kind, atoms, grid points) so that a
dataset of similar molecules needs only a handful of programs. Padding shells have zero
coefficients, padding atoms have Z = 0, padding grid points have zero weight.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from qmgen.dft.basis import build_basis, structure_of
from qmgen.dft.grid import build_grid, grid_size
from qmgen.dft.guess import sad_density
from qmgen.dft.scf import SCFInputs
from qmgen.molecule import Molecule


def ladder(n: int, fraction: float) -> int:
    """Round ``n`` up on a geometric ladder: steps of about ``fraction * n`` (a power of 2),
    so padding wastes at most ~``fraction`` and the number of rungs grows like log(n)."""
    n = max(int(n), 1)
    if fraction <= 0:
        return n
    step = 1
    while step * 2 <= fraction * n:
        step *= 2
    return -(-n // step) * step


@dataclasses.dataclass(frozen=True)
class BucketPolicy:
    """How finely counts are padded (relative step of the rounding ladder; 0 = exact).

    Coarser ladders mean fewer compiled programs and more wasted work per molecule; ERI
    work grows with the fourth power of the shell count, so shells are padded finely.
    """

    shells: float = 0.125
    atoms: float = 0.25
    grid: float = 0.125

    @classmethod
    def exact(cls) -> BucketPolicy:
        return cls(0.0, 0.0, 0.0)


@dataclasses.dataclass(frozen=True)
class Bucket:
    """A shape signature: the static part of a compiled program's inputs."""

    basis: str
    structure: tuple  # ((ls, nprim, count), ...)
    n_atoms: int
    n_points: int
    # density fitting: the auxiliary basis ("default" = PySCF's choice for ``basis``) and
    # its structure; None and () for exact ERIs
    auxbasis: str | None = None
    aux_structure: tuple = ()
    # unrestricted (UKS/UHF) programs take two spin densities
    unrestricted: bool = False

    @property
    def n_ao(self) -> int:
        return sum(c * sum(2 * l + 1 for l in ls) for ls, _, c in self.structure)

    @property
    def n_aux(self) -> int:
        return sum(c * sum(2 * l + 1 for l in ls) for ls, _, c in self.aux_structure)


def bucket_of(
    mol: Molecule,
    basis: str,
    grid_level: int,
    policy: BucketPolicy,
    auxbasis: str | None = None,
    unrestricted: bool = False,
) -> Bucket:
    """The bucket ``mol`` falls in (raises BasisError for elements the basis lacks).

    ``auxbasis``: None for exact ERIs, else the density-fitting basis ("default" for
    PySCF's choice); its shell counts are padded on the same ladder as the orbital shells.
    """

    def padded(found):
        return tuple((ls, nprim, ladder(count, policy.shells)) for ls, nprim, count in found)

    return Bucket(
        basis=basis,
        structure=padded(structure_of(mol.z, basis)),
        n_atoms=ladder(mol.n_atoms, policy.atoms),
        n_points=ladder(grid_size(mol.z, grid_level), policy.grid),
        auxbasis=auxbasis,
        aux_structure=() if auxbasis is None else padded(structure_of(mol.z, basis, auxbasis)),
        unrestricted=unrestricted,
    )


def coarsen(buckets: dict, min_size: int) -> dict:
    """Merge buckets holding fewer than ``min_size`` molecules into larger ones.

    Buckets are visited from the smallest AO count up; under-filled ones are accumulated
    and merged (``merge_buckets``) until the group holds ``min_size`` members. Trades
    padding of small molecules for fewer compiles. ``buckets``: {Bucket: [indices]}.
    """
    if min_size <= 1:
        return buckets
    if len({b.unrestricted for b in buckets}) > 1:  # restricted and unrestricted never merge
        split: dict = {}
        for flag in (False, True):
            split.update(
                coarsen({b: m for b, m in buckets.items() if b.unrestricted is flag}, min_size)
            )
        return split
    out: dict = {}
    acc_bucket, acc = None, []  # type: ignore[var-annotated]
    for b in sorted(buckets, key=lambda b: (b.n_ao, b.n_points)):
        members = buckets[b]
        if acc_bucket is None and len(members) >= min_size:
            out.setdefault(b, []).extend(members)
            continue
        acc_bucket = b if acc_bucket is None else merge_buckets(acc_bucket, b)
        acc = acc + members
        if len(acc) >= min_size:
            out.setdefault(acc_bucket, []).extend(acc)
            acc_bucket, acc = None, []
    if acc:
        out.setdefault(acc_bucket, []).extend(acc)
    return {b: sorted(m) for b, m in out.items()}


def merge_buckets(a: Bucket, b: Bucket) -> Bucket:
    """The smallest bucket holding both (kinds present in either, larger counts)."""
    return Bucket(
        basis=a.basis,
        structure=_merge_structures(a.structure, b.structure),
        n_atoms=max(a.n_atoms, b.n_atoms),
        n_points=max(a.n_points, b.n_points),
        auxbasis=a.auxbasis,
        aux_structure=_merge_structures(a.aux_structure, b.aux_structure),
        unrestricted=a.unrestricted,
    )


def _merge_structures(a: tuple, b: tuple) -> tuple:
    kinds: dict[tuple, list[int]] = {}
    for ls, nprim, count in a + b:
        k = kinds.setdefault(ls, [0, 0])
        k[0], k[1] = max(k[0], nprim), max(k[1], count)
    keys = sorted(kinds, key=lambda ls: (max(ls), len(ls), ls))
    return tuple((ls, kinds[ls][0], kinds[ls][1]) for ls in keys)


def prepare(mol: Molecule, bucket: Bucket, grid_level: int, dtype=np.float64):
    """Padded NumPy ``SCFInputs`` of ``mol`` in ``bucket``, and its ``BasisLayout``."""
    basis, layout = build_basis(mol, bucket.basis, structure=bucket.structure)
    grid = build_grid(mol, grid_level, n_points=bucket.n_points)
    pad_atoms = bucket.n_atoms - mol.n_atoms
    positions = np.concatenate([mol.positions, np.zeros((pad_atoms, 3))])
    z = np.concatenate([mol.z, np.zeros(pad_atoms, np.int64)]).astype(np.int32)
    inputs = SCFInputs(
        basis=basis.astype(dtype),
        positions=positions.astype(dtype),
        z=z,
        grid=jax.tree_util.tree_map(lambda x: x, grid),
        ao_mask=layout.ao_mask.astype(dtype),
        ao_atom=np.maximum(layout.ao_atom, 0).astype(np.int32),
        dm0=sad_density(mol, layout, basis.n_ao).astype(dtype),
        n_occ=np.asarray(mol.n_electrons // 2, np.int32),
    )
    if bucket.unrestricted:  # alpha and beta halves of the guess (PySCF's UHF guess)
        inputs = dataclasses.replace(
            inputs,
            dm0=np.stack([0.5 * inputs.dm0, 0.5 * inputs.dm0]),
            n_occ=np.asarray([mol.n_alpha, mol.n_beta], np.int32),
        )
    if bucket.auxbasis is not None:
        aux, aux_layout = build_basis(
            mol, bucket.basis, structure=bucket.aux_structure, aux=bucket.auxbasis
        )
        inputs = dataclasses.replace(
            inputs, aux=aux.astype(dtype), aux_mask=aux_layout.ao_mask.astype(dtype)
        )
    inputs = dataclasses.replace(
        inputs,
        grid=dataclasses.replace(
            grid, local=grid.local.astype(dtype), quad=grid.quad.astype(dtype)
        ),
    )
    return inputs, layout


def stack(items: list):
    """Stack a list of identically shaped pytrees along a new leading (batch) axis."""
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *items)
