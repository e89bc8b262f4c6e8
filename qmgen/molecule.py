"""The Molecule record: atomic numbers, positions in Bohr, net charge (pure NumPy).

Validation happens here, once, so that every later layer can trust its input: unknown
elements, non-finite coordinates, atoms closer than 0.1 Bohr, shape mismatches and empty
molecules are refused with an error that names the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qmgen.units import ANGSTROM_TO_BOHR

# fmt: off
SYMBOLS = (
    "X",
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S",
    "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga",
    "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd",
    "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm",
    "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os",
    "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa",
    "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg",
    "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
)
# fmt: on
_Z_OF = {s.upper(): z for z, s in enumerate(SYMBOLS) if z > 0}

MIN_DISTANCE = 0.1  # Bohr; closer atoms are refused


class MoleculeError(ValueError):
    """Raised for a molecule that cannot be computed; the message names the problem."""


def atomic_number(symbol: str | int) -> int:
    """Atomic number of an element symbol ("C", "cl", "Cl") or an integer Z."""
    if isinstance(symbol, (int, np.integer)):
        z = int(symbol)
        if not 1 <= z < len(SYMBOLS):
            raise MoleculeError(f"unknown element: atomic number {z} (valid: 1-{len(SYMBOLS) - 1})")
        return z
    key = str(symbol).strip()
    if key.isdigit():
        return atomic_number(int(key))
    found = _Z_OF.get(key.upper())
    if found is None:
        raise MoleculeError(f"unknown element symbol {symbol!r}")
    return found


@dataclass(frozen=True, eq=False)
class Molecule:
    """A molecule: atomic numbers ``z`` (n,), ``positions`` (n, 3) in Bohr, net ``charge``
    and ``spin``, the number of unpaired electrons 2S (PySCF's ``mol.spin``: 0 singlet,
    1 doublet, 2 triplet). ``qmgen.compute`` runs unrestricted Kohn–Sham for spin > 0.

    >>> Molecule([8, 1, 1], [[0, 0, 0], [0, 1.43, 1.11], [0, -1.43, 1.11]])
    Molecule(OH2, charge=0)
    """

    z: np.ndarray
    positions: np.ndarray
    charge: int = 0
    name: str = field(default="", compare=False)
    spin: int = 0

    def __post_init__(self):
        z = np.asarray(self.z)
        if z.ndim != 1:
            raise MoleculeError(f"z must be a 1-D array of atomic numbers, got shape {z.shape}")
        if z.size == 0:
            raise MoleculeError("empty molecule: no atoms given")
        if not np.issubdtype(z.dtype, np.integer):
            if not np.all(np.isfinite(z.astype(float))) or np.any(z != np.round(z)):
                raise MoleculeError(f"atomic numbers must be integers, got {z.tolist()}")
        z = z.astype(np.int64)
        bad = z[(z < 1) | (z >= len(SYMBOLS))]
        if bad.size:
            raise MoleculeError(f"unknown element: atomic number {int(bad[0])}")
        pos = np.asarray(self.positions, dtype=np.float64)
        if pos.shape != (z.size, 3):
            raise MoleculeError(
                f"positions must have shape ({z.size}, 3) for {z.size} atoms, got {pos.shape}"
            )
        if not np.all(np.isfinite(pos)):
            atom = int(np.argwhere(~np.isfinite(pos))[0, 0])
            raise MoleculeError(f"non-finite coordinate for atom {atom} ({SYMBOLS[z[atom]]})")
        if z.size > 1:
            d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
            d[np.diag_indices(z.size)] = np.inf
            i, j = np.unravel_index(np.argmin(d), d.shape)
            if d[i, j] < MIN_DISTANCE:
                raise MoleculeError(
                    f"atoms {min(i, j)} and {max(i, j)} are {d[i, j]:.3g} Bohr apart "
                    f"(minimum {MIN_DISTANCE} Bohr)"
                )
        if int(self.charge) != self.charge:
            raise MoleculeError(f"charge must be an integer, got {self.charge!r}")
        if isinstance(self.spin, bool) or int(self.spin) != self.spin or self.spin < 0:
            raise MoleculeError(
                f"spin must be a non-negative integer 2S (unpaired electrons), got {self.spin!r}"
            )
        n_e = int(z.sum()) - int(self.charge)
        if self.spin and (self.spin > n_e or (n_e - int(self.spin)) % 2):
            raise MoleculeError(
                f"spin 2S = {self.spin} is impossible with {n_e} electrons (charge "
                f"{int(self.charge)}): 2S must have the parity of the electron count and "
                "not exceed it"
            )
        z.setflags(write=False)
        pos.setflags(write=False)
        object.__setattr__(self, "z", z)
        object.__setattr__(self, "positions", pos)
        object.__setattr__(self, "charge", int(self.charge))
        object.__setattr__(self, "spin", int(self.spin))

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_symbols(
        cls, symbols, coords, unit: str = "angstrom", charge: int = 0, name="", spin: int = 0
    ):
        """From element symbols and coordinates in ``unit`` ("angstrom" or "bohr")."""
        scale = _unit_scale(unit)
        symbols = list(symbols)
        coords = np.asarray(coords, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[0] != len(symbols):
            raise MoleculeError(
                f"{len(symbols)} symbols but coordinates of shape {coords.shape}; "
                "expected one (x, y, z) row per symbol"
            )
        z = [atomic_number(s) for s in symbols]
        z_arr = np.asarray(z, dtype=np.int64)
        return cls(z_arr, coords * scale, charge=charge, name=name, spin=spin)

    @classmethod
    def from_xyz(cls, text: str, charge: int = 0, unit: str = "angstrom", spin: int = 0):
        """From XYZ text: atom count, comment line, then ``symbol x y z`` lines (Angstrom).

        Bare ``symbol x y z`` lines without the two header lines are accepted too.
        """
        lines = [ln for ln in text.strip().splitlines()]
        if not lines or not lines[0].strip():
            raise MoleculeError("empty molecule: XYZ text has no atoms")
        name = ""
        first = lines[0].split()
        if len(first) == 1:
            try:
                n = int(first[0])
            except ValueError as err:
                raise MoleculeError(f"XYZ header must be an atom count, got {first[0]!r}") from err
            name = lines[1].strip() if len(lines) > 1 else ""
            body = lines[2 : 2 + n]
            if len(body) != n:
                raise MoleculeError(f"XYZ header says {n} atoms but {len(body)} lines follow")
        else:
            body = lines
        symbols, coords = [], []
        for k, ln in enumerate(body):
            parts = ln.split()
            if len(parts) < 4:
                raise MoleculeError(f"XYZ atom line {k + 1} needs 'symbol x y z', got {ln!r}")
            symbols.append(parts[0])
            try:
                coords.append([float(v) for v in parts[1:4]])
            except ValueError as err:
                raise MoleculeError(f"XYZ atom line {k + 1} has a bad coordinate: {ln!r}") from err
        if not symbols:
            raise MoleculeError("empty molecule: XYZ text has no atoms")
        return cls.from_symbols(symbols, coords, unit=unit, charge=charge, name=name, spin=spin)

    # ----------------------------------------------------------------- properties
    @property
    def n_atoms(self) -> int:
        return int(self.z.size)

    @property
    def n_electrons(self) -> int:
        return int(self.z.sum()) - self.charge

    @property
    def n_alpha(self) -> int:
        """Alpha electrons, (N + 2S) / 2 (for spin 0 and odd N: not an integer count)."""
        return (self.n_electrons + self.spin) // 2

    @property
    def n_beta(self) -> int:
        return self.n_electrons - self.n_alpha

    @property
    def symbols(self) -> list[str]:
        return [SYMBOLS[z] for z in self.z]

    @property
    def formula(self) -> str:
        counts: dict[str, int] = {}
        for s in self.symbols:
            counts[s] = counts.get(s, 0) + 1
        return "".join(f"{s}{n if n > 1 else ''}" for s, n in counts.items())

    def to_xyz(self, comment: str = "") -> str:
        """XYZ text in Angstrom."""
        from qmgen.units import BOHR

        rows = [f"{self.n_atoms}", comment or self.name]
        for s, (x, y, zc) in zip(self.symbols, self.positions * BOHR, strict=True):
            rows.append(f"{s:<2} {x:16.10f} {y:16.10f} {zc:16.10f}")
        return "\n".join(rows) + "\n"

    def __repr__(self) -> str:
        spin = f", spin={self.spin}" if self.spin else ""
        return f"Molecule({self.formula}, charge={self.charge}{spin})"


def _unit_scale(unit: str) -> float:
    u = unit.lower()
    if u in ("angstrom", "a", "ang"):
        return ANGSTROM_TO_BOHR
    if u in ("bohr", "au"):
        return 1.0
    raise MoleculeError(f"unknown length unit {unit!r}; valid: angstrom, bohr")
