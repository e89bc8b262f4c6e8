"""Gaussian basis sets by name, as static padded arrays for the JAX kernels.

PySCF supplies the basis-set data (any name ``pyscf.gto.basis.load`` knows). Each element's
shells are read once from a one-atom PySCF molecule and cached, so normalisation and AO order
are exactly PySCF's (``cart=False``): shells atom by atom in PySCF's order, spherical
components in PySCF's order (p as x, y, z).

Inside qmgen, shells are grouped into *kinds*. Shells of one atom that share exponents
(the 2s and 2p of STO-3G and Pople bases) are merged into one "L" shell, as Gaussian does,
so one primitive-quartet evaluation serves all their integrals (2.7x fewer primitive
quartets for STO-3G). A kind is then one tuple of angular momenta ``ls`` ((0,), (0, 1),
(1,), (2,), ...), with the number of primitives padded to the largest in the kind
(padding primitives have zero coefficients). A kind holds its shells as arrays: the atom
each is centred on, its exponents and its contraction coefficients (libcint's, which
include the radial normalisation). Grouping by angular momentum only, not by primitive
count, keeps the number of integral classes and so the compile time small: one kind per
(l, nprim) made 231 ERI classes for 6-31G* and a 9-minute compile. The *structure* of a
basis is the tuple of (ls, nprim, count) per kind; it is
the only thing the compiled kernels depend on. Which atom a shell sits on, the element, the
exponents and the coefficients are all array arguments, so a molecule with other elements or
coordinates but the same structure reuses the compiled program. Padding a kind with extra
shells (zero coefficients) maps many molecules onto one structure.

The internal AO order is kind by kind; ``BasisLayout.ao_index`` maps it to PySCF's order.
"""

from __future__ import annotations

import dataclasses
from functools import cache

import jax
import numpy as np

from qmgen.molecule import SYMBOLS, Molecule, MoleculeError

LMAX = 3  # s, p, d, f
LMAX_AUX = 4  # auxiliary bases (def2-universal-jkfit has g shells)
DEFAULT_AUX = "default"  # PySCF's auxiliary basis for the orbital basis


class BasisError(ValueError):
    """A basis set that cannot be used for a molecule; the message names the problem."""


@dataclasses.dataclass(frozen=True)
class ShellKind:
    """Static shape of a group of shells.

    ls: angular momenta sharing one set of exponents, e.g. (0,) for s or (0, 1) for an
      STO-3G/Pople "L" shell whose 2s and 2p share exponents (merging them lets one
      primitive-quartet evaluation serve all their integrals).
    nprim: primitives per shell (padded); count: number of shells.
    """

    ls: tuple
    nprim: int
    count: int

    @property
    def l(self) -> int:  # noqa: E743 - the physicist's name for angular momentum
        return max(self.ls)

    @property
    def ncart(self) -> int:
        return sum((l + 1) * (l + 2) // 2 for l in self.ls)

    @property
    def nsph(self) -> int:
        return sum(2 * l + 1 for l in self.ls)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Basis:
    """A molecule's basis as arrays grouped by shell kind (a JAX pytree).

    Fields (one entry per kind, ``kinds[k]`` gives the static shape):
      center: int32 (count,) atom index of each shell.
      exponents: (count, nprim) Gaussian exponents in Bohr^-2.
      coefficients: (count, nprim, len(ls)) contraction coefficients including the radial
        normalisation, one column per angular momentum of the kind; zero for padding.
    """

    center: tuple
    exponents: tuple
    coefficients: tuple
    kinds: tuple = dataclasses.field(metadata=dict(static=True))

    @property
    def n_ao(self) -> int:
        """Number of AOs in the internal (padded) layout."""
        return sum(k.count * k.nsph for k in self.kinds)

    @property
    def ao_offsets(self) -> tuple[int, ...]:
        off, out = 0, []
        for k in self.kinds:
            out.append(off)
            off += k.count * k.nsph
        return tuple(out)

    def astype(self, dtype) -> Basis:
        return dataclasses.replace(
            self,
            exponents=tuple(e.astype(dtype) for e in self.exponents),
            coefficients=tuple(c.astype(dtype) for c in self.coefficients),
        )


@dataclasses.dataclass(frozen=True)
class BasisLayout:
    """Host-side bookkeeping that goes with a Basis.

    ao_index: (n_ao_internal,) position of each internal AO in PySCF's AO order, -1 for
      padding AOs.
    ao_atom: (n_ao_internal,) atom index of each internal AO, -1 for padding.
    n_ao: number of real AOs (PySCF's ``mol.nao``).
    name: basis-set name as given.
    """

    ao_index: np.ndarray
    ao_atom: np.ndarray
    n_ao: int
    name: str

    @property
    def ao_mask(self) -> np.ndarray:
        return self.ao_index >= 0

    def to_pyscf_order(self, mat: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        """Reorder the given axes of ``mat`` from internal order to PySCF's, dropping padding."""
        keep = np.flatnonzero(self.ao_index >= 0)
        order = keep[np.argsort(self.ao_index[keep])]
        out = np.asarray(mat)
        for ax in axes:
            out = np.take(out, order, axis=ax)
        return out


def _pyscf_atom(z: int, name: str):
    """A one-atom PySCF molecule of element ``z`` in basis ``name`` (BasisError if absent)."""
    from pyscf import gto
    from pyscf.lib.exceptions import BasisNotFoundError

    symbol = SYMBOLS[z]
    try:
        mol = gto.M(atom=f"{symbol} 0 0 0", basis=name, spin=z % 2, unit="Bohr", verbose=0)
    except BasisNotFoundError as err:
        raise BasisError(f"basis {name!r} has no functions for element {symbol} (Z={z})") from err
    except (KeyError, ValueError, RuntimeError) as err:
        raise BasisError(f"cannot load basis {name!r} for {symbol}: {err}") from err
    if mol.nbas == 0:
        raise BasisError(f"basis {name!r} has no functions for element {symbol} (Z={z})")
    return mol


@cache
def aux_basis_spec(z: int, name: str, auxbasis: str = DEFAULT_AUX):
    """The auxiliary (density-fitting) basis of element ``z`` for orbital basis ``name``:
    ``(label, spec)``, ``spec`` what ``pyscf.df.make_auxmol`` takes for the element.

    ``auxbasis`` "default" is PySCF's choice (``pyscf.df.addons.make_auxbasis``, as
    ``mf.density_fit()``): a fitted set where one is tabulated for the orbital basis
    (def2-svp-jkfit, which is def2-universal-jkfit, for def2-SVP; def2-tzvp-jkfit
    for def2-TZVP; cc-pvdz-jkfit for 6-31G*), else even-tempered Gaussians generated
    from the orbital exponents (``aug_etb``), whose label is "etb:<basis>". Any other
    value is a basis name PySCF knows (e.g. "def2-universal-jkfit").
    """
    from pyscf.df import addons

    if auxbasis != DEFAULT_AUX:
        return auxbasis, auxbasis
    mol = _pyscf_atom(z, name)  # verbose=0: PySCF's note on generated ETB functions is quiet
    spec = addons.make_auxbasis(mol)[mol.atom_symbol(0)]
    return (spec if isinstance(spec, str) else f"etb:{name}"), spec


def _mol_shells(mol, name: str, lmax: int) -> tuple:
    symbol = mol.atom_symbol(0)
    groups: list[list] = []  # [ls, exps, [coef columns], [ao offsets]]
    ao = 0
    for ib in range(mol.nbas):
        l = int(mol.bas_angular(ib))
        if l > lmax:
            raise BasisError(
                f"basis {name!r} for {symbol} has a shell with angular momentum l={l}; "
                f"qmgen implements l <= {lmax} here"
            )
        exps = np.asarray(mol.bas_exp(ib), dtype=np.float64)
        coefs = np.asarray(mol._libcint_ctr_coeff(ib), dtype=np.float64)  # (nprim, nctr)
        for ic in range(coefs.shape[1]):
            for g in groups:
                if l not in g[0] and g[1].shape == exps.shape and np.array_equal(g[1], exps):
                    g[0].append(l)
                    g[2].append(coefs[:, ic].copy())
                    g[3].append(ao)
                    break
            else:
                groups.append([[l], exps, [coefs[:, ic].copy()], [ao]])
            ao += 2 * l + 1
    out = []
    for ls, exps, cols, offs in groups:
        order = np.argsort(ls)
        out.append(
            (
                tuple(int(ls[i]) for i in order),
                exps,
                np.stack([cols[i] for i in order], axis=1),
                tuple(int(offs[i]) for i in order),
            )
        )
    return tuple(out)


@cache
def element_shells(z: int, name: str, aux: str | None = None) -> tuple:
    """Shell groups of element ``z`` in basis ``name`` (with ``aux``: of its auxiliary
    basis for density fitting, see ``aux_basis_spec``; "default" for PySCF's choice).

    Returns a tuple of (ls, exponents (nprim,), coefficients (nprim, len(ls)), ao_offsets),
    one per group of shells that share exponents (s and p of an L shell), with
    ``ao_offsets[k]`` the position of the first AO of angular momentum ``ls[k]`` within the
    atom's AOs in PySCF's order. Coefficients are libcint's (radial normalisation
    included, as PySCF normalises auxiliary functions too); general contractions are split
    into one shell per contraction, which keeps PySCF's AO order.
    """
    mol = _pyscf_atom(z, name)
    if aux is None:
        return _mol_shells(mol, name, LMAX)
    from pyscf.df import addons

    label, spec = aux_basis_spec(z, name, aux)
    try:
        auxmol = addons.make_auxmol(mol, {mol.atom_symbol(0): spec})
    except Exception as err:  # noqa: BLE001 - PySCF raises several types for a bad name
        raise BasisError(f"cannot load auxiliary basis {label!r} for {SYMBOLS[z]}: {err}") from err
    if auxmol.nbas == 0:
        raise BasisError(f"auxiliary basis {label!r} has no functions for {SYMBOLS[z]}")
    return _mol_shells(auxmol, label, LMAX_AUX)


def structure_of(z: np.ndarray, name: str, aux: str | None = None) -> tuple:
    """The basis structure ((ls, nprim, count) per kind) of atoms ``z`` in basis ``name``.

    One kind per tuple of angular momenta ``ls``; nprim is the largest of its shells.
    """
    counts: dict[tuple, list[int]] = {}
    for zi in np.asarray(z).tolist():
        for ls, exps, _, _ in element_shells(int(zi), name, aux):
            c = counts.setdefault(ls, [0, 0])
            c[0] = max(c[0], exps.size)
            c[1] += 1
    keys = sorted(counts, key=lambda ls: (max(ls), len(ls), ls))
    return tuple((ls, counts[ls][0], counts[ls][1]) for ls in keys)


def _n_ao_atom(z: int, name: str, aux: str | None = None) -> int:
    return sum(sum(2 * l + 1 for l in ls) for ls, _, _, _ in element_shells(z, name, aux))


def build_basis(
    mol: Molecule, name: str = "sto-3g", structure: tuple | None = None, aux: str | None = None
) -> tuple[Basis, BasisLayout]:
    """Arrays of ``mol``'s basis ``name`` grouped by kind, optionally padded to ``structure``.

    Args:
      mol: the molecule.
      name: basis-set name PySCF knows ("sto-3g", "6-31g*", "def2-svp", ...).
      aux: None for the orbital basis; else the auxiliary basis of ``name`` for density
        fitting ("default" for PySCF's choice, see ``aux_basis_spec``).
      structure: optional ((ls, nprim, count), ...) to pad to (see ``structure_of``);
        every kind of the molecule must fit. Padding shells sit on atom 0 with zero
        coefficients, so their AOs vanish identically.

    Returns:
      (Basis, BasisLayout).
    """
    if not isinstance(mol, Molecule):
        raise MoleculeError(f"expected a qmgen.Molecule, got {type(mol).__name__}")
    per_kind: dict[tuple, list] = {}
    ao = 0
    for atom, zi in enumerate(mol.z.tolist()):
        for ls, exps, coefs, offs in element_shells(int(zi), name, aux):
            per_kind.setdefault(ls, []).append((atom, exps, coefs, [ao + o for o in offs]))
        ao += _n_ao_atom(int(zi), name, aux)
    n_ao = ao
    need = structure_of(mol.z, name, aux)
    if structure is None:
        structure = need
    else:
        structure = tuple((tuple(int(v) for v in ls), int(n), int(c)) for ls, n, c in structure)
        have = {ls: (n, c) for ls, n, c in structure}
        for ls, n, c in need:
            hn, hc = have.get(ls, (0, 0))
            if hn < n or hc < c:
                raise BasisError(
                    f"molecule needs {c} shells of angular momenta {ls} with up to {n} "
                    f"primitives but the structure holds {hc} shells of {hn} primitives"
                )
    kinds, centers, exponents, coefficients, ao_index, ao_atom = [], [], [], [], [], []
    for ls, nprim, count in structure:
        kind = ShellKind(ls, nprim, count)
        shells = per_kind.get(ls, [])
        c = np.zeros(count, np.int32)
        e = np.ones((count, nprim), np.float64)
        k = np.zeros((count, nprim, len(ls)), np.float64)
        idx = np.full((count, kind.nsph), -1, np.int64)
        at = np.full((count, kind.nsph), -1, np.int64)
        for s, (atom, exps, coefs, offs) in enumerate(shells):
            c[s], e[s, : exps.size], k[s, : exps.size] = atom, exps, coefs
            blocks = [o + np.arange(2 * l + 1) for o, l in zip(offs, ls, strict=True)]
            idx[s] = np.concatenate(blocks)
            at[s] = atom
        kinds.append(kind)
        centers.append(c)
        exponents.append(e)
        coefficients.append(k)
        ao_index.append(idx.ravel())
        ao_atom.append(at.ravel())
    basis = Basis(tuple(centers), tuple(exponents), tuple(coefficients), tuple(kinds))
    layout = BasisLayout(np.concatenate(ao_index), np.concatenate(ao_atom), n_ao, name)
    return basis, layout
