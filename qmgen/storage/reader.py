"""Reading shards: open (refusing files that refer outside themselves), attributes,
column blocks, the molecule table and failure records.

Imports only h5py and NumPy, so every reader (loader, info, verify, export) stays free of
JAX, PySCF and POSIX-only modules.
"""

from __future__ import annotations

import json

import h5py
import numpy as np

from qmgen.storage.schema import (
    ATOM_FIELDS,
    OPTIONAL_CONFORMER_FIELDS,
    RESERVED_ATTRS,
    ROW_SCALARS,
    SPIN_CONFORMER_FIELDS,
    CorruptShardError,
    check_version,
    conformer_fields,
    unblob,
)


def open_shard(path, **kwargs) -> h5py.File:
    """Open a shard read-only; an unreadable file, or one that is not self-contained (see
    :func:`foreign_parts`), raises :class:`CorruptShardError`."""
    try:
        f = h5py.File(path, "r", **kwargs)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, RuntimeError) as err:
        raise CorruptShardError(path, f"not a readable HDF5 file ({err})") from err
    try:
        foreign = foreign_parts(f)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        f.close()
        raise CorruptShardError(path, f"unreadable HDF5 structure ({err})") from err
    if foreign:
        f.close()
        raise CorruptShardError(
            path, f"refers to data outside itself ({'; '.join(foreign[:3])}); refused"
        )
    return f


def foreign_parts(f: h5py.File) -> list[str]:
    """What in ``f`` would make HDF5 read another file or alias another object: external
    and soft links, virtual datasets, external storage. qmgen's writer makes none.

    HDF5's own visitors walk the file without following anything but hard links (each
    object once, cycles included), so checking a hostile shard opens nothing else; about
    1 ms per shard (the high-level h5py walk took 6 ms).
    """
    out, datasets = [], []
    kinds = {h5py.h5l.TYPE_SOFT: "SoftLink", h5py.h5l.TYPE_EXTERNAL: "ExternalLink"}

    def on_link(name: bytes, info) -> None:
        if info.type != h5py.h5l.TYPE_HARD:
            kind = kinds.get(info.type, "user-defined link")
            out.append(f"/{name.decode(errors='replace')} is a {kind}")

    def on_object(name: bytes, info) -> None:
        if info.type == h5py.h5o.TYPE_DATASET:
            datasets.append(name)

    f.id.links.visit(on_link, info=True)
    h5py.h5o.visit(f.id, on_object, info=True)
    for name in datasets:
        dcpl = h5py.h5d.open(f.id, name).get_create_plist()
        if dcpl.get_layout() == h5py.h5d.VIRTUAL:
            out.append(f"/{name.decode(errors='replace')} is a virtual dataset")
        elif dcpl.get_external_count():
            out.append(f"/{name.decode(errors='replace')} keeps its data in external files")
    return out


def read_attrs(f: h5py.File, shard_keys: bool = True) -> dict:
    """Root attributes as Python values (JSON-encoded ones decoded); without the
    schema's own keys (schema_version, shard_id, n_rows, ...) unless ``shard_keys``."""
    json_keys = set(json.loads(f.attrs.get("json_attrs", "[]")))
    out = {}
    for key, value in f.attrs.items():
        if key == "json_attrs" or (not shard_keys and key in RESERVED_ATTRS):
            continue
        if isinstance(value, bytes):
            value = value.decode()
        if key in json_keys:
            value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


class ShardReader:
    """An open shard with its column datasets resolved once.

    HDF5 name lookups cost 0.1-0.3 ms each, more than reading a block of rows, so the
    loader keeps one reader per open shard. ``rdcc_nbytes`` is the HDF5 chunk cache per
    dataset.
    """

    def __init__(self, path, rdcc_nbytes: int = 4 << 20):
        self.path = str(path)
        self.file = open_shard(path, rdcc_nbytes=rdcc_nbytes)
        try:
            self.columns = {}
            for group in ("conformers", "atoms", "orbitals"):
                for name, obj in self.file[group].items():
                    self.columns[name] = obj
            self.n_rows = int(self.file.attrs["n_rows"])
            self.schema_version = check_version(self.file.attrs["schema_version"], path)
        except (KeyError, OSError, ValueError, RuntimeError) as err:
            self.file.close()
            raise CorruptShardError(path, f"missing schema parts ({err})") from err
        except CorruptShardError:
            self.file.close()
            raise
        self.fields = conformer_fields(self.schema_version)

    def close(self) -> None:
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def column(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """One column (per conformer, per atom or mo_energy), rows [start, stop)."""
        try:
            return self.columns[name][start:stop]
        except KeyError:
            raise
        except (OSError, ValueError, RuntimeError) as err:
            raise CorruptShardError(self.path, f"cannot read {name} ({err})") from err

    def read_block(self, start: int = 0, stop: int | None = None) -> dict:
        """Rows ``[start, stop)`` as a flat dict of arrays in stored units.

        Per-conformer fields (k,...) of CONFORMER_FIELDS that this shard's schema version
        stores (``self.fields``) and those of OPTIONAL_CONFORMER_FIELDS it holds
        (``dispersion``, the open-shell labels); ``atom_offset``/``mo_offset`` (k+1,) rebased to 0;
        per-atom fields (sum n_atoms, ...) and ``mo_energy``.
        """
        c = self.columns
        stop = self.n_rows if stop is None else stop
        try:
            out = {name: c[name][start:stop] for name in self.fields}
            for name in OPTIONAL_CONFORMER_FIELDS:
                if name in c:
                    out[name] = c[name][start:stop]
            ao = c["atom_offset"][start : stop + 1]
            mo = c["mo_offset"][start : stop + 1]
            a0, a1, m0, m1 = int(ao[0]), int(ao[-1]), int(mo[0]), int(mo[-1])
            for name in ATOM_FIELDS:
                if name in c:
                    out[name] = c[name][a0:a1]
            out["mo_energy"] = c["mo_energy"][m0:m1]
        except (OSError, KeyError, ValueError, IndexError, RuntimeError) as err:
            raise CorruptShardError(self.path, f"cannot read rows {start}:{stop} ({err})") from err
        out["atom_offset"] = ao - a0
        out["mo_offset"] = mo - m0
        return out


def read_molecules(f: h5py.File) -> tuple[np.ndarray, list[str], list[str]]:
    """Molecule table: molecule_index (k,), smiles and name lists."""
    try:
        g = f["molecules"]
        idx = g["molecule_index"][()]
        smiles = unblob(g["smiles"][()], g["smiles_offset"][()])
        names = unblob(g["name"][()], g["name_offset"][()])
    except (OSError, KeyError, ValueError, RuntimeError, UnicodeDecodeError) as err:
        raise CorruptShardError(f.filename, f"cannot read /molecules ({err})") from err
    return idx, smiles, names


def read_failures(f: h5py.File) -> list[dict]:
    """Failure records: dicts with molecule_index, input, smiles, status, message."""
    try:
        g = f["failures"]
        idx = g["molecule_index"][()].tolist()
        status = g["status"][()].tolist()
        text = {k: unblob(g[k][()], g[f"{k}_offset"][()]) for k in ("input", "smiles", "message")}
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise CorruptShardError(f.filename, f"cannot read /failures ({err})") from err
    return [
        dict(molecule_index=i, input=a, smiles=s, status=st, message=m)
        for i, a, s, st, m in zip(
            idx, text["input"], text["smiles"], status, text["message"], strict=True
        )
    ]


def read_shard(path) -> dict:
    """Whole shard as ``dict(attrs, rows, failures)``, rows shaped like write_shard's input."""
    with ShardReader(path) as reader:
        attrs = read_attrs(reader.file)
        cols = reader.read_block()
        _, smiles, names = read_molecules(reader.file)
        failures = read_failures(reader.file)
    ao, mo = cols["atom_offset"], cols["mo_offset"]
    rows = []
    for i in range(len(ao) - 1):
        a, b, p, q = ao[i], ao[i + 1], mo[i], mo[i + 1]
        m = int(cols["molecule_row"][i])
        row = {k: cols[k][i].item() for k in ROW_SCALARS}
        row.update(
            z=cols["z"][a:b],
            positions=cols["positions"][a:b],
            charges=cols["charges"][a:b],
            forces=cols["forces"][a:b] if "forces" in cols else None,
            dispersion=cols["dispersion"][i].item() if "dispersion" in cols else None,
            dipole=cols["dipole"][i],
            mo_energy=cols["mo_energy"][p:q],
            converged=bool(cols["converged"][i]),
            smiles=smiles[m],
            name=names[m],
        )
        for k in ("n_iter", "status", "molecule_index", "conformer_index", "n_basis"):
            row[k] = int(cols[k][i])
        for k in ("charge", "multiplicity"):
            row[k] = int(cols[k][i]) if k in cols else None  # None: unknown (version 1)
        if "s2" in cols:  # open-shell labels (has_spin)
            row.update({k: cols[k][i].item() for k in SPIN_CONFORMER_FIELDS})
            row["unrestricted"] = bool(row["unrestricted"])
            row["spin_populations"] = cols["spin_populations"][a:b]
        rows.append(row)
    return dict(attrs=attrs, rows=rows, failures=failures)
