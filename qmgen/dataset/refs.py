"""Per-element reference energies: ``qmgen refs DIR``, ``energy="referenced"`` and
``energy="atomization"``.

ML potentials fit energies with per-element constants removed,
:math:`E_\\mathrm{ref} = E - \\sum_a e_{Z_a}`. The constants belong to the level of theory,
so they are stored with the dataset, in ``DIR/refs.json``. Two kinds, either or both:

- Least-squares constants (``energy="referenced"``, ``qmgen refs DIR``): :math:`e_Z`
  minimise :math:`\\sum_i (E_i - \\sum_Z n_{iZ} e_Z)^2` over the dataset's converged
  conformers (:math:`n_{iZ}` atoms of element Z in conformer i), as MACE's
  ``E0s="average"`` and SchNetPack's atomrefs fits do. These are not isolated-atom
  energies: an element's constant absorbs its average bonding energy. The fit refuses
  element counts that do not determine the constants (every conformer of the same
  composition ratios, e.g. only water): the least-squares matrix is then rank-deficient,
  and any answer would be arbitrary.
- Isolated-atom energies (``energy="atomization"``, :math:`E - \\sum_a E_\\mathrm{atom}`,
  ``qmgen refs DIR --atoms``): one SCF per element, a neutral atom at the origin in its
  ground-state multiplicity (:data:`GROUND_MULTIPLICITY`, Hund's rules): UKS (UHF for
  ``xc="hf"``) for open-shell atoms, RKS for closed-shell ones, at the dataset's level
  of theory. For a charged or open-shell molecule the result still subtracts neutral
  ground-state atoms. Caveat: at coarse grids the energy of an atom with a partly filled
  p shell (B, C, O, F, ...) depends on how its p orbitals lie relative to the angular
  grid. qmgen's SCF settles with them along the axes (its energies equal PySCF's UKS
  from an axis-aligned guess to 1e-10 Ha for B, C, O, F in STO-3G, conv_tol 1e-10);
  PySCF's default guess can settle elsewhere: O in STO-3G at ``grid_level=0`` then comes
  out 1.1e-4 Ha lower (over orientations it spans 1.4e-4 Ha at level 0, 1.3e-6 Ha at
  level 3), and C and B do not converge there. Filled-shell atoms whose basis has no
  virtual orbitals (He, Ne, Ar in STO-3G) are kept although the SCF reports them
  NON_FINITE (no LUMO): the occupied orbitals span the basis, so the energy is exact
  after one cycle.

``refs.json`` layout (``format`` 2; energies in Hartree, ``unit: "hartree"``)::

    {"format": 2, "unit": "hartree",
     "level": {xc, basis, grid_level, precision[, density_fit]},   # the dataset's
     # least-squares fit, for energy="referenced" (absent when not fitted):
     "method": "least-squares", "energies": {symbol: e_Z}, "note", "n_conformers",
     "include_unconverged", "rms_residual", "max_residual", "created",
     # isolated atoms, for energy="atomization" (absent when not computed):
     "atoms": {symbol: E_atom},
     "atoms_meta": {"method": "isolated-atoms", "multiplicity": {symbol: 2S+1},
                    "scf": {symbol: "UKS" | "RKS"}, "s2": {symbol: <S^2>},
                    "n_iter": {symbol: cycles}, "level": {..., conv_tol},
                    "created", "note"}}

Files written before the isolated atoms existed (no ``format``: format 1) are the
least-squares part alone and read unchanged; they give ``energy="referenced"``, and
``energy="atomization"`` says to run ``qmgen refs DIR --atoms``. ``qmgen refs --xc X
--basis B --elements H,C --out FILE`` writes the atoms part alone (no ``energies``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from qmgen.errors import UserError
from qmgen.molecule import SYMBOLS

REFS_FILE = "refs.json"
REFS_FORMAT = 2  # 1: the least-squares part alone (no "format" key)
ENERGY_KINDS = ("total", "referenced", "atomization")
LEVEL_KEYS = ("xc", "basis", "grid_level", "precision", "density_fit")

# Ground-state spin multiplicity 2S+1 of the neutral atoms (Hund's rules)
GROUND_MULTIPLICITY = {
    "H": 2, "He": 1,
    "Li": 2, "Be": 1, "B": 2, "C": 3, "N": 4, "O": 3, "F": 2, "Ne": 1,
    "Na": 2, "Mg": 1, "Al": 2, "Si": 3, "P": 4, "S": 3, "Cl": 2, "Ar": 1,
    "Br": 2, "I": 2,
}  # fmt: skip


class ReferenceEnergyError(UserError):
    """Reference energies that cannot be fitted, found or used (the message says why)."""


def fit_references(ds, include_unconverged: bool = False) -> dict:
    """Least-squares per-element energies (Hartree) over ``ds``, an opened
    :class:`qmgen.dataset.Dataset` (the caller opens it: this module is imported by the
    reader, so it does not import the reader back).

    Returns the refs.json document: ``energies`` {symbol: Hartree}, ``n_conformers``,
    ``rms_residual`` and ``max_residual`` (Hartree), ``method``, the dataset's level of
    theory. Raises :class:`ReferenceEnergyError` for an empty or rank-deficient fit.
    """
    root = ds.root
    sel = ds if include_unconverged else ds.filter(converged=True)
    counts, energies = [], []
    for b in sel.batches(4096, shuffle=False, layout="packed", strings=False):
        ao = b["atom_offset"]
        z = b["z"].astype(np.int64)
        for i in range(len(ao) - 1):
            counts.append(np.bincount(z[int(ao[i]) : int(ao[i + 1])], minlength=len(SYMBOLS)))
        energies.append(np.asarray(b["energy"], dtype=np.float64))
    if not counts:
        raise ReferenceEnergyError(f"{root}: no converged conformers to fit reference energies on")
    n = np.array(counts)
    present = np.flatnonzero(n.sum(axis=0))
    a, e = n[:, present].astype(np.float64), np.concatenate(energies)
    rank = np.linalg.matrix_rank(a)
    if rank < len(present):
        names = ", ".join(SYMBOLS[z] for z in present)
        raise ReferenceEnergyError(
            f"{root}: the element counts of its {len(e)} conformers determine only {rank} of "
            f"{len(present)} per-element energies ({names}): every molecule has the same "
            "composition ratios; add molecules of other compositions"
        )
    coef, *_ = np.linalg.lstsq(a, e, rcond=None)
    residual = e - a @ coef
    attrs = ds.attrs
    return {
        "format": REFS_FORMAT,
        "method": "least-squares",
        "note": "per-element constants fitted to total energies; not isolated-atom energies",
        "unit": "hartree",
        "energies": {SYMBOLS[z]: float(c) for z, c in zip(present, coef, strict=True)},
        "n_conformers": int(len(e)),
        "include_unconverged": bool(include_unconverged),
        "rms_residual": float(np.sqrt(np.mean(residual**2))),
        "max_residual": float(np.abs(residual).max()),
        "level": {k: attrs.get(k) for k in LEVEL_KEYS if k in attrs},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def dataset_elements(ds) -> list[str]:
    """Symbols of the elements in any conformer of ``ds`` (converged or not), by Z."""
    seen = np.zeros(len(SYMBOLS), dtype=bool)
    for b in ds.batches(4096, shuffle=False, layout="packed", strings=False):
        seen[np.unique(b["z"].astype(np.int64))] = True
    return [SYMBOLS[z] for z in np.flatnonzero(seen)]


def dataset_level(ds) -> dict:
    """The keyword arguments of :func:`qmgen.pipeline.refs.isolated_atom_energies` for
    ``ds``'s stored level of theory (its attrs: xc, basis, grid_level, precision,
    conv_tol, density_fit)."""
    attrs = ds.attrs
    missing = [k for k in ("xc", "basis", "grid_level") if attrs.get(k) is None]
    if missing:
        raise ReferenceEnergyError(
            f"{ds.root}: the dataset does not record its {', '.join(missing)}, so the level "
            "of theory of its isolated atoms is unknown; compute them with "
            "`qmgen refs --xc X --basis B --elements ...`"
        )
    return dict(
        xc=str(attrs["xc"]),
        basis=str(attrs["basis"]),
        grid_level=int(attrs["grid_level"]),
        precision=str(attrs.get("precision") or "float64"),
        conv_tol=float(attrs.get("conv_tol") or 1e-9),
        density_fit=attrs.get("density_fit") or None,
    )


def same_level(a: dict | None, b: dict | None) -> bool:
    """Whether two ``level`` dicts name the same xc, basis, grid level, precision and
    density fitting (absent density_fit: exact ERIs)."""
    if a is None or b is None:
        return False
    return all(a.get(k) == b.get(k) for k in LEVEL_KEYS)


def combine_references(fit: dict | None, atoms: dict | None) -> dict:
    """One refs.json document of a least-squares ``fit`` (:func:`fit_references`) and
    the atoms part ``atoms`` (:func:`qmgen.pipeline.refs.isolated_atom_energies`), either
    possibly None."""
    if fit is None and atoms is None:
        raise ValueError("nothing to combine: neither a fit nor isolated atoms")
    doc = dict(fit or {})
    if atoms is not None:
        doc.setdefault("level", atoms["level"])
        doc.update(atoms=atoms["atoms"], atoms_meta=atoms["atoms_meta"])
    doc.update(format=REFS_FORMAT, unit="hartree")
    return doc


def write_references(root, doc: dict) -> Path:
    """Write ``doc`` as ``root/refs.json`` (:func:`write_references_file`)."""
    return write_references_file(Path(root) / REFS_FILE, doc)


def write_references_file(path, doc: dict) -> Path:
    """Write ``doc`` as JSON to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def read_references(root) -> dict | None:
    """The refs.json document of ``root`` (either format: module docstring), or None
    when there is none. ``energies`` and ``atoms``, where present, are {symbol: float}."""
    path = Path(root) / REFS_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        version = int(doc.get("format", 1))
        parts = [k for k in ("energies", "atoms") if k in doc]
        if not parts:
            raise KeyError("neither 'energies' nor 'atoms'")
        for key in parts:
            doc[key] = {str(k): float(v) for k, v in doc[key].items()}
            for sym in doc[key]:
                SYMBOLS.index(sym)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ReferenceEnergyError(f"{path}: not a qmgen reference-energy file ({err})") from None
    if version > REFS_FORMAT:
        raise ReferenceEnergyError(
            f"{path}: reference-energy format {version} is newer than this qmgen reads "
            f"({REFS_FORMAT}); upgrade qmgen or rerun `qmgen refs`"
        )
    return doc


def reference_table(root, kind: str) -> np.ndarray | None:
    """Per-atomic-number energies (Hartree, shape (len(SYMBOLS),)) to subtract for
    ``kind`` ("total": None; "referenced": the least-squares constants; "atomization":
    the isolated-atom energies), NaN for elements without one."""
    if kind not in ENERGY_KINDS:
        raise ValueError(f"unknown energy={kind!r}; valid: {', '.join(ENERGY_KINDS)}")
    if kind == "total":
        return None
    doc = read_references(root)
    if kind == "atomization":
        if doc is None or "atoms" not in doc:
            has = "" if doc is None else " has only least-squares constants"
            raise ReferenceEnergyError(
                f"{root}: energy='atomization' needs isolated-atom energies, and "
                f"{Path(root) / REFS_FILE}{has or ' does not exist'}; compute them with "
                f"`qmgen refs {root} --atoms`"
            )
        values = doc["atoms"]
    else:
        if doc is None:
            raise ReferenceEnergyError(
                f"{root}: no reference energies ({REFS_FILE}); compute them with "
                f"`qmgen refs {root}`"
            )
        if "energies" not in doc:
            raise ReferenceEnergyError(
                f"{root}: {REFS_FILE} has isolated-atom energies (energy='atomization') "
                f"but no least-squares constants for energy='referenced'; fit them with "
                f"`qmgen refs {root}`"
            )
        values = doc["energies"]
    table = np.full(len(SYMBOLS), np.nan)
    for sym, value in values.items():
        table[SYMBOLS.index(sym)] = value
    return table


def per_conformer(table: np.ndarray, z: np.ndarray, atom_offset: np.ndarray) -> np.ndarray:
    """Sum of ``table[z]`` over each conformer's atoms (rows split by ``atom_offset``);
    raises :class:`ReferenceEnergyError` naming an element without a constant."""
    values = table[z.astype(np.int64)]
    if np.isnan(values).any():
        missing = sorted({SYMBOLS[int(x)] for x in z[np.isnan(values)]})
        raise ReferenceEnergyError(f"no reference energy for element(s) {', '.join(missing)}")
    sums = np.concatenate([[0.0], np.cumsum(values)])
    return sums[atom_offset[1:]] - sums[atom_offset[:-1]]
