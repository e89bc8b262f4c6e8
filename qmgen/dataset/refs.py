"""Per-element reference energies: ``qmgen refs DIR`` and ``energy="referenced"``.

ML potentials fit energies with per-element constants removed,
:math:`E_\\mathrm{ref} = E - \\sum_a e_{Z_a}`. The constants belong to the level of theory,
so they are stored with the dataset, in ``DIR/refs.json``:

- ``method: "least-squares"``: :math:`e_Z` minimise :math:`\\sum_i (E_i - \\sum_Z n_{iZ}
  e_Z)^2` over the dataset's converged conformers (:math:`n_{iZ}` atoms of element Z in
  conformer i), as MACE's ``E0s="average"`` and SchNetPack's atomrefs fits do. These are
  not isolated-atom energies: an element's constant absorbs its average bonding energy.
- Isolated-atom energies (``energy="atomization"``, :math:`E - \\sum_a E_\\mathrm{atom}`)
  need spin-polarised (UKS) atoms, since H, C, N, O and F are open-shell; qmgen's SCF is
  closed-shell (UKS is issue 15), so they are not computed, and asking for them says so.

The fit refuses element counts that do not determine the constants (every conformer of
the same composition ratios, e.g. only water): the least-squares matrix is then
rank-deficient, and any answer would be arbitrary.
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
ENERGY_KINDS = ("total", "referenced", "atomization")
LEVEL_KEYS = ("xc", "basis", "grid_level", "precision", "density_fit")


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


def write_references(root, doc: dict) -> Path:
    """Write ``doc`` as ``root/refs.json`` atomically (temporary file, fsync, rename)."""
    path = Path(root) / REFS_FILE
    tmp = path.with_name(f".{REFS_FILE}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def read_references(root) -> dict | None:
    """The refs.json document of ``root``, or None when there is none."""
    path = Path(root) / REFS_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        energies = {str(k): float(v) for k, v in doc["energies"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ReferenceEnergyError(f"{path}: not a qmgen reference-energy file ({err})") from None
    doc["energies"] = energies
    return doc


def reference_table(root, kind: str) -> np.ndarray | None:
    """Per-atomic-number energies (Hartree, shape (len(SYMBOLS),)) to subtract for
    ``kind`` ("total": None), NaN for elements without a constant."""
    if kind not in ENERGY_KINDS:
        raise ValueError(f"unknown energy={kind!r}; valid: {', '.join(ENERGY_KINDS)}")
    if kind == "total":
        return None
    doc = read_references(root)
    if kind == "atomization":
        raise ReferenceEnergyError(
            "energy='atomization' needs isolated-atom energies, which need open-shell (UKS) "
            "atoms; qmgen's SCF is closed-shell (issue 15), so they are not available. "
            "Use energy='referenced' with fitted constants (qmgen refs DIR)"
        )
    if doc is None:
        raise ReferenceEnergyError(
            f"{root}: no reference energies ({REFS_FILE}); compute them with `qmgen refs {root}`"
        )
    table = np.full(len(SYMBOLS), np.nan)
    for sym, value in doc["energies"].items():
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
