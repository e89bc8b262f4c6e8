"""Chemistry input layer: molecules in (SMILES, XYZ, SDF), validated, RDKit conformers out.

Public API (imported lazily: ``import qmgen.chem`` does not import RDKit; the first use
of a function that needs it does):

- :func:`read_molecules` (path -> stream of :class:`InputRecord`), :func:`iter_smiles`,
  :func:`iter_xyz`, :func:`iter_sdf`, :func:`detect_format`, :func:`split_smiles_line`
- :func:`smiles_record` (one SMILES -> record), :func:`smiles_to_molecules`
- :func:`conformer_seed`, :func:`embed_molecules`
- :func:`sample_molecules` (random valid molecules as canonical SMILES)
- :class:`ChemOptions`, :class:`InputRecord`, :class:`ChemError`

See ``readers.py`` for the input formats and which lines give records, ``smiles.py`` for
the validation order and ``conformers.py`` for reproducibility.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ChemError": "records",
    "ChemOptions": "records",
    "InputRecord": "records",
    "DEFAULT_ELEMENTS": "records",
    "DEFAULT_MAX_ATOMS": "records",
    "parse_elements": "records",
    "read_molecules": "readers",
    "iter_smiles": "readers",
    "iter_xyz": "readers",
    "iter_sdf": "readers",
    "detect_format": "readers",
    "split_smiles_line": "readers",
    "smiles_record": "smiles",
    "canonical_smiles": "smiles",
    "conformer_seed": "conformers",
    "embed_molecules": "conformers",
    "smiles_to_molecules": "smiles",
    "sample_molecules": "sampler",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qmgen.chem' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"qmgen.chem.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
