"""Structural checks of a shard: every dataset's dtype, shape, units and length, CSR
offsets, derived columns and status codes (``qmgen verify``)."""

from __future__ import annotations

import h5py
import numpy as np

from qmgen.status import Status
from qmgen.storage.reader import open_shard
from qmgen.storage.schema import (
    LENGTH_OF,
    OPTIONAL_ATTRS,
    RESERVED_ATTRS,
    CorruptShardError,
    check_version,
    layout,
)


def _bad_offsets(name: str, off: np.ndarray, length: int) -> list[str]:
    if off.size == 0 or off[0] != 0 or np.any(np.diff(off) < 0) or off[-1] != length:
        return [f"{name} is not a valid CSR offset array for {length} elements"]
    return []


def _check_datasets(f: h5py.File, counts: dict, problems: list, version: int) -> dict:
    """Read every dataset, checking dtype, shape, units and length; return the arrays."""
    data = {}
    optional = (bool(f.attrs.get(k)) for k in ("has_dispersion", "has_spin"))
    spec = layout(bool(f.attrs["has_forces"]), version, *optional)
    for name, dtype, trailing, units, length in spec:
        if name not in f:
            problems.append(f"missing dataset /{name}")
            continue
        ds = f[name]
        if ds.dtype != np.dtype(dtype) or ds.shape[1:] != trailing:
            shape = (None,) + trailing
            problems.append(f"/{name}: dtype {ds.dtype} shape {ds.shape}, expected {dtype} {shape}")
        if ds.attrs.get("units") != units:
            problems.append(f"/{name}: units {ds.attrs.get('units')!r}, expected {units!r}")
        try:
            data[name] = ds[()]
        except (OSError, ValueError, RuntimeError) as err:
            problems.append(f"/{name}: HDF5 read error (fletcher32 checksum?): {err}")
            continue
        if length.endswith("+1"):
            want: int | None = counts[length[0]] + 1
        elif length in counts:
            want = counts[length]
        else:
            off = data.get(LENGTH_OF.get(length, length))
            want = None if off is None or off.size == 0 else int(off[-1])
        if want is not None and ds.shape[0] != want:
            problems.append(f"/{name}: {ds.shape[0]} rows, expected {want}")
    return data


def _check_values(data: dict, counts: dict) -> list[str]:
    c = {k.split("/")[1]: v for k, v in data.items() if k.startswith("conformers/")}
    problems = _bad_offsets("atom_offset", c["atom_offset"], data["atoms/z"].size)
    problems += _bad_offsets("mo_offset", c["mo_offset"], data["orbitals/mo_energy"].size)
    for name in data:
        if name.endswith("_offset") and not name.startswith("conformers/"):
            problems += _bad_offsets(name, data[name], data[name[: -len("_offset")]].size)
    if problems:
        return problems
    if np.any(np.diff(c["atom_offset"]) != c["n_atoms"]) or np.any(c["n_atoms"] < 1):
        problems.append("n_atoms disagrees with atom_offset")
    elif c["n_atoms"].size:
        heavy = np.add.reduceat((data["atoms/z"] > 1).astype(np.int64), c["atom_offset"][:-1])
        if np.any(heavy != c["n_heavy"]):
            problems.append("n_heavy disagrees with atoms/z")
    rows = c["molecule_row"]
    if rows.size and (rows.min() < 0 or rows.max() >= counts["k"]):
        problems.append("molecule_row points outside /molecules")
    valid = np.array([int(s) for s in Status])
    for name in ("conformers/status", "failures/status"):
        if not np.all(np.isin(data[name], valid)):
            problems.append(f"/{name} holds unknown status codes")
    return problems


def check_shard(path, n_rows: int | None = None, n_failures: int | None = None) -> list[str]:
    """Structural problems of a shard (empty list when sound); reads every byte of data.

    Checks root attributes, presence, dtype, shape and units of every dataset, CSR offsets
    against the arrays they index, derived columns (n_atoms, n_heavy), status codes, and
    optionally the row/failure counts recorded in index.json. HDF5 read errors (fletcher32
    mismatches included) are reported, not raised.
    """
    try:
        f = open_shard(path)
    except FileNotFoundError:
        return ["file not found"]
    except CorruptShardError as err:
        return [err.reason]
    with f:
        missing = [k for k in RESERVED_ATTRS if k not in f.attrs and k not in OPTIONAL_ATTRS]
        if missing:
            return [f"missing root attributes {missing}"]
        try:
            version = check_version(f.attrs["schema_version"], path)
        except CorruptShardError as err:
            return [err.reason]
        counts = {"n": int(f.attrs["n_rows"]), "f": int(f.attrs["n_failures"])}
        counts["k"] = int(f.attrs["n_molecules"])
        problems = []
        if n_rows is not None and counts["n"] != n_rows:
            problems.append(f"shard has {counts['n']} rows, index.json says {n_rows}")
        if n_failures is not None and counts["f"] != n_failures:
            problems.append(f"shard has {counts['f']} failures, index.json says {n_failures}")
        data = _check_datasets(f, counts, problems, version)
    if problems:
        return problems
    return _check_values(data, counts)
