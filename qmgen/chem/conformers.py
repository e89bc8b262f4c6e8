"""Reproducible 3-D conformers with RDKit's ETKDG (version 3).

Reproducibility: the RDKit random seed of a molecule is derived from its canonical SMILES
and the run's base seed by SHA-256 (:func:`conformer_seed`), never from process state, and
embedding runs single-threaded; the same input line with the same options therefore gives
bit-identical coordinates in any process, worker or rerun. Two different spellings of one
molecule share the seed but not the atom order, so their geometries may differ.

Atom order of the returned molecules is RDKit's: the atoms of the input in input order
(heavy atoms in SMILES order), then the hydrogens added by ``Chem.AddHs``.

References: Riniker & Landrum, J. Chem. Inf. Model. 55, 2562 (2015) (ETKDG);
Wang, Witek, Landrum & Riniker, J. Chem. Inf. Model. 60, 2044 (2020) (ETKDGv3).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from qmgen.chem.records import ChemError, ChemOptions
from qmgen.molecule import Molecule, MoleculeError
from qmgen.status import Status
from qmgen.units import ANGSTROM_TO_BOHR

if TYPE_CHECKING:
    from rdkit import Chem

_SEED_MASK = 0x7FFFFFFF  # RDKit seeds are non-negative C ints; -1 would mean "random"


def conformer_seed(canonical_smiles: str, base_seed: int = 0) -> int:
    """RDKit random seed in [0, 2**31) from a canonical SMILES and a base seed.

    Pure function of its arguments (SHA-256), stable across processes and platforms.
    """
    digest = hashlib.sha256(f"{int(base_seed)}\x00{canonical_smiles}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & _SEED_MASK


def etkdg_params(seed: int, prune_rms: float | None = None, random_coords: bool = False):
    """ETKDGv3 parameters: fixed seed, one thread, optional heavy-atom RMSD pruning (A)."""
    from rdkit.Chem import rdDistGeom

    params: Any = rdDistGeom.ETKDGv3()  # RDKit's stubs type its attributes wrongly
    params.randomSeed = int(seed)
    params.numThreads = 1
    params.pruneRmsThresh = -1.0 if prune_rms is None else float(prune_rms)
    params.useRandomCoords = bool(random_coords)
    return params


def embed(mol: Chem.Mol, n_conformers: int, seed: int, prune_rms: float | None = None):
    """Embed ``n_conformers`` conformers of ``mol`` (hydrogens added) with ETKDGv3.

    Returns ``(mol_with_h, conformer_ids)``. Tries the default initial embedding first and,
    if it yields nothing, random initial coordinates (slower, more robust for strained
    rings). Raises :class:`ChemError` (EMBED_FAILED) when both fail.
    """
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom

    from qmgen.chem.records import rdkit_log_capture

    mh = Chem.AddHs(mol)
    ids: list[int] = []
    with rdkit_log_capture():
        for random_coords in (False, True):
            params = etkdg_params(seed, prune_rms, random_coords)
            try:
                ids = list(rdDistGeom.EmbedMultipleConfs(mh, int(n_conformers), params))
            except (RuntimeError, ValueError) as err:
                raise ChemError(Status.EMBED_FAILED, f"RDKit embedding raised: {err}") from err
            if ids:
                break
    if not ids:
        raise ChemError(
            Status.EMBED_FAILED,
            f"RDKit ETKDGv3 could not embed {mh.GetNumAtoms()} atoms in 3-D "
            "(also tried random initial coordinates)",
        )
    return mh, ids


def optimize(mh: Chem.Mol, method: str, max_iters: int = 500) -> str:
    """Relax every conformer of ``mh`` in place with MMFF94 or UFF; returns a note.

    The note is "" when all conformers converged, else says how many did not (their
    partially relaxed geometry is kept) or that force-field parameters were missing (the
    ETKDG geometry is kept).
    """
    if method == "none":
        return ""
    from rdkit.Chem import rdForceFieldHelpers as ff

    from qmgen.chem.records import rdkit_log_capture

    with rdkit_log_capture():
        if method == "mmff":
            if not ff.MMFFHasAllMoleculeParams(mh):
                return "MMFF94 parameters missing; ETKDG geometry kept"
            out = ff.MMFFOptimizeMoleculeConfs(mh, numThreads=1, maxIters=int(max_iters))
        elif method == "uff":
            if not ff.UFFHasAllMoleculeParams(mh):
                return "UFF parameters missing; ETKDG geometry kept"
            out = ff.UFFOptimizeMoleculeConfs(mh, numThreads=1, maxIters=int(max_iters))
        else:
            raise ValueError(f"unknown optimize={method!r}; valid: 'none', 'mmff', 'uff'")
    not_converged = sum(1 for flag, _ in out if flag != 0)
    if not_converged:
        return (
            f"{method.upper()} did not converge in {max_iters} steps for {not_converged} conformers"
        )
    return ""


def to_molecules(mh: Chem.Mol, ids, charge: int, name: str = "", spin: int = 0) -> list[Molecule]:
    """:class:`qmgen.Molecule` objects (positions in Bohr) for conformers ``ids`` of ``mh``,
    with net ``charge`` and ``spin`` 2S (unpaired electrons)."""
    z = np.array([a.GetAtomicNum() for a in mh.GetAtoms()], dtype=np.int64)
    out = []
    for cid in ids:
        pos_angstrom = np.asarray(mh.GetConformer(int(cid)).GetPositions(), dtype=np.float64)
        try:
            pos = pos_angstrom * ANGSTROM_TO_BOHR
            out.append(Molecule(z, pos, charge=charge, name=name, spin=spin))
        except MoleculeError as err:
            raise ChemError(Status.EMBED_FAILED, f"embedded geometry rejected: {err}") from err
    return out


def embed_molecules(
    mol: Chem.Mol, canonical: str, options: ChemOptions, name: str = "", spin: int = 0
) -> tuple[list[Molecule], str]:
    """Conformers of a validated, sanitised ``mol`` as :class:`qmgen.Molecule` objects.

    ``canonical`` is its canonical SMILES (the seed source); ``spin`` is the 2S the
    molecules carry (it does not change the geometry). Returns ``(molecules, note)``:
    up to ``options.n_conformers`` molecules, positions (n_atoms, 3) in Bohr, and a note
    ("" or what pruning / relaxation did). Raises :class:`ChemError` (EMBED_FAILED).
    """
    from rdkit import Chem

    seed = conformer_seed(canonical, options.seed)
    mh, ids = embed(mol, options.n_conformers, seed, options.prune_rms)
    notes = []
    if len(ids) < options.n_conformers:
        what = "after RMSD pruning" if options.prune_rms is not None else "embedded"
        notes.append(f"{len(ids)} of {options.n_conformers} conformers {what}")
    note = optimize(mh, options.optimize, options.max_opt_iters)
    if note:
        notes.append(note)
    if options.sample is not None:
        from qmgen.chem.sampling import sample_conformers

        sample_conformers(mh, ids, options.sample, seed)
    mols = to_molecules(mh, ids, Chem.GetFormalCharge(mh), name, spin=spin)
    return mols, "; ".join(notes)
