"""Shard files: the HDF5 schema, atomic checksummed writes, reads and structural checks.

A shard holds the labels of one finished unit of work: n stored conformers (m atoms in
total) of k distinct molecules, and f failure records. Everything is columnar (CSR with
int64 offsets, no variable-length HDF5 types), so a block of rows is a handful of slices.

Layout, schema version 1 (``units`` attribute on every dataset)::

    /            attrs: schema_version, shard_id, n_rows, n_failures, n_molecules,
                 has_forces, json_attrs (names of the attributes below stored as JSON
                 text), then the caller's attrs (level of theory, provenance): str, int,
                 float and bool natively; dicts, lists and None as JSON text
    /conformers/ energy, homo, lumo, gap  f8 (n,)   hartree
                 scf_error                f8 (n,)   hartree (final SCF residual)
                 dipole                   f8 (n,3)  e*bohr
                 n_atoms, n_heavy, n_basis, n_iter, conformer_index   i4 (n,)
                 converged b1 (n,), status u1 (n,) (qmgen.status.Status)
                 molecule_index i8 (n,) (0-based input line), molecule_row i4 (n,)
                 (row of /molecules/), atom_offset i8 (n+1,), mo_offset i8 (n+1,)
    /atoms/      z u1 (m,), positions f8 (m,3) bohr, charges f8 (m,) e,
                 forces f8 (m,3) hartree/bohr (present only when the dataset has forces)
    /orbitals/   mo_energy f8 (mo_offset[-1],) hartree
    /molecules/  molecule_index i8 (k,); smiles, name: u1 byte blobs with
                 smiles_offset, name_offset i8 (k+1,)   (deduplicated per molecule)
    /failures/   molecule_index i8 (f,), status u1 (f,); input, smiles, message: u1 blobs
                 with input_offset, smiles_offset, message_offset i8 (f+1,)

Text is UTF-8 with ``errors="surrogateescape"``: an input line decoded from raw bytes with
surrogateescape is stored as its original bytes and reads back as the same str. (A lone
surrogate outside U+DC80..U+DCFF, which no decoder produces, is stored with
``surrogatepass`` and reads back as surrogate-escaped bytes.)

Every dataset is chunked with the fletcher32 filter, so a corrupted chunk fails at read
time; ``read_*`` turn such HDF5 errors into :class:`CorruptShardError`. Compression is off
by default: on float labels LZF saves ~10 % and makes reads ~5x slower.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import h5py
import numpy as np

from qmgen.errors import QmgenError
from qmgen.status import Status

SCHEMA_VERSION = 1
CONFORMER_CHUNK_ROWS = 1024  # per-conformer arrays: chunk rows (aligned with loader blocks)
CHUNK_BYTES = 256 * 1024  # per-atom / per-orbital arrays: target bytes per chunk

# name: (dtype, trailing shape, units)
CONFORMER_FIELDS = {
    "energy": ("f8", (), "hartree"),
    "homo": ("f8", (), "hartree"),
    "lumo": ("f8", (), "hartree"),
    "gap": ("f8", (), "hartree"),
    "scf_error": ("f8", (), "hartree"),
    "dipole": ("f8", (3,), "e*bohr"),
    "n_atoms": ("i4", (), "1"),
    "n_heavy": ("i4", (), "1"),
    "n_basis": ("i4", (), "1"),
    "n_iter": ("i4", (), "1"),
    "converged": ("b1", (), "1"),
    "status": ("u1", (), "1"),
    "molecule_index": ("i8", (), "1"),
    "conformer_index": ("i4", (), "1"),
    "molecule_row": ("i4", (), "1"),
}
ATOM_FIELDS = {
    "z": ("u1", (), "1"),
    "positions": ("f8", (3,), "bohr"),
    "charges": ("f8", (), "e"),
    "forces": ("f8", (3,), "hartree/bohr"),  # optional
}
ROW_SCALARS = ("energy", "homo", "lumo", "gap", "scf_error")
RESERVED_ATTRS = ("schema_version", "shard_id", "n_rows", "n_failures", "n_molecules")
RESERVED_ATTRS += ("has_forces", "json_attrs")
MAX_Z = 118


class CorruptShardError(QmgenError):
    """A shard file that cannot be trusted: checksum, truncation, schema or HDF5 error,
    links to data outside the file (exit code 2 on the command line)."""

    exit_code = 2

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"corrupt shard {self.path}: {reason}")


# ----------------------------------------------------------------------------- text


def encode_text(text) -> bytes:
    """UTF-8 bytes of ``text`` (str or bytes); surrogate-escaped raw bytes come back raw."""
    if isinstance(text, bytes):
        return text
    text = str(text)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def decode_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _blob(texts) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated UTF-8 bytes (u1) and int64 offsets (len(texts)+1,)."""
    encoded = [encode_text(t) for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _unblob(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = blob.tobytes()
    bounds = offsets.tolist()
    return [decode_text(raw[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


# ---------------------------------------------------------------------------- write


def _need(row: dict, i: int, key: str, what: str = "row"):
    try:
        return row[key]
    except KeyError:
        raise ValueError(f"{what} {i}: missing field {key!r}") from None


def _pack_rows(rows) -> tuple[dict, dict, bool]:
    """Columns of ``rows`` (see :func:`write_shard`) and the molecule table."""
    n = len(rows)
    has_forces = n > 0 and rows[0].get("forces") is not None
    z, pos, chg, frc, mo, dip = [], [], [], [], [], []
    scal = {k: np.empty(n) for k in ROW_SCALARS}
    ints = {k: np.empty(n, dtype=np.int64) for k in ("n_iter", "status", "molecule_index")}
    ints["conformer_index"] = np.empty(n, dtype=np.int64)
    n_basis = np.empty(n, dtype=np.int64)
    converged = np.empty(n, dtype=bool)
    molecules: dict[tuple, int] = {}
    mol_row = np.empty(n, dtype=np.int64)
    for i, r in enumerate(rows):
        zi = np.asarray(_need(r, i, "z"))
        if zi.ndim != 1 or zi.size == 0 or zi.dtype.kind not in "iu":
            raise ValueError(f"row {i}: z must be a non-empty 1-D integer array, got {zi!r}")
        na = zi.size
        pi = np.asarray(_need(r, i, "positions"), dtype=np.float64)
        ci = np.asarray(_need(r, i, "charges"), dtype=np.float64)
        di = np.asarray(_need(r, i, "dipole"), dtype=np.float64)
        mi = np.asarray(_need(r, i, "mo_energy"), dtype=np.float64)
        fi = r.get("forces")
        if pi.shape != (na, 3) or ci.shape != (na,) or di.shape != (3,) or mi.ndim != 1:
            raise ValueError(
                f"row {i}: shapes positions {pi.shape}, charges {ci.shape}, dipole {di.shape},"
                f" mo_energy {mi.shape}; expected ({na}, 3), ({na},), (3,), (n_mo,)"
            )
        if (fi is not None) != has_forces:
            raise ValueError(f"row {i}: forces must be given for all rows or for none")
        if has_forces:
            fi = np.asarray(fi, dtype=np.float64)
            if fi.shape != (na, 3):
                raise ValueError(f"row {i}: forces shape {fi.shape}, expected ({na}, 3)")
            frc.append(fi)
        z.append(zi)
        pos.append(pi)
        chg.append(ci)
        dip.append(di)
        mo.append(mi)
        for k in ROW_SCALARS:
            scal[k][i] = _need(r, i, k)
        for k in ints:
            ints[k][i] = _need(r, i, k)
        Status(int(ints["status"][i]))  # refuse unknown codes
        n_basis[i] = r.get("n_basis", mi.size)
        converged[i] = bool(_need(r, i, "converged"))
        key = (int(ints["molecule_index"][i]), str(_need(r, i, "smiles")), str(r.get("name", "")))
        mol_row[i] = molecules.setdefault(key, len(molecules))
    z_all = np.concatenate(z) if n else np.zeros(0, dtype=np.uint8)
    if z_all.size and (z_all.min() < 1 or z_all.max() > MAX_Z):
        raise ValueError(f"atomic numbers must lie in 1..{MAX_Z}")
    n_atoms = np.fromiter((len(a) for a in z), dtype=np.int64, count=n)
    n_mo = np.fromiter((len(a) for a in mo), dtype=np.int64, count=n)
    atom_offset = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64)
    heavy = np.add.reduceat((z_all > 1).astype(np.int64), atom_offset[:-1]) if n else n_atoms
    conf = dict(scal)
    conf.update(
        dipole=np.asarray(dip).reshape(n, 3),
        n_atoms=n_atoms,
        n_heavy=heavy,
        n_basis=n_basis,
        n_iter=ints["n_iter"],
        converged=converged,
        status=ints["status"],
        molecule_index=ints["molecule_index"],
        conformer_index=ints["conformer_index"],
        molecule_row=mol_row,
        atom_offset=atom_offset,
        mo_offset=np.concatenate([[0], np.cumsum(n_mo)]).astype(np.int64),
    )
    atoms = dict(
        z=z_all,
        positions=np.concatenate(pos) if n else np.zeros((0, 3)),
        charges=np.concatenate(chg) if n else np.zeros(0),
    )
    if has_forces:
        atoms["forces"] = np.concatenate(frc)
    conf["mo_energy"] = np.concatenate(mo) if n else np.zeros(0)
    return conf, atoms, molecules


def _create(group, name: str, data, dtype, units: str, compression=None, chunk_rows=None):
    data = np.ascontiguousarray(np.asarray(data, dtype=dtype))
    n = data.shape[0]
    if chunk_rows is None:
        row_bytes = max(1, data.itemsize * int(np.prod(data.shape[1:], dtype=np.int64)))
        chunk_rows = CHUNK_BYTES // row_bytes
    kw = dict(chunks=(max(1, min(n, chunk_rows)),) + data.shape[1:], fletcher32=True)
    if n == 0:
        kw["maxshape"] = (None,) + data.shape[1:]
    if compression:
        kw.update(compression=compression, shuffle=True)
    ds = group.create_dataset(name, data=data, **kw)
    ds.attrs["units"] = units
    return ds


def _create_blob(group, name: str, texts, compression=None):
    blob, offsets = _blob(texts)
    _create(group, name, blob, "u1", "1", compression).attrs["encoding"] = "utf-8"
    _create(group, f"{name}_offset", offsets, "i8", "1", compression)


def json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"attribute value of type {type(value).__name__} is not JSON serialisable")


def _write_attrs(f: h5py.File, attrs: dict) -> None:
    as_json = []
    for key, value in attrs.items():
        if key in RESERVED_ATTRS:
            raise ValueError(f"attribute name {key!r} is reserved by the shard schema")
        if isinstance(value, (str, bool, int, float, np.bool_, np.integer, np.floating)):
            f.attrs[key] = value
        else:
            f.attrs[key] = json.dumps(value, default=json_default, sort_keys=True)
            as_json.append(key)
    f.attrs["json_attrs"] = json.dumps(as_json)


def _fsync_path(path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_shard(path, shard_id: int, rows, failures, attrs, compression=None) -> dict:
    """Write one shard atomically; return ``dict(sha256, n_rows, n_failures, path, size)``.

    ``rows``: dicts with z (n,) int, positions (n,3) Bohr, energy/homo/lumo/gap (Hartree),
    mo_energy (n_mo,) Hartree, dipole (3,) e*Bohr, charges (n,) e, forces (n,3) Hartree/Bohr
    or None (for all rows or none), converged, n_iter, status (Status), scf_error
    (Hartree), molecule_index, conformer_index, smiles, name, optional n_basis (defaults
    to n_mo). ``failures``: dicts with molecule_index, input, smiles, status, message.
    ``attrs``: level of theory and provenance, stored as root attributes.

    The file is written under a temporary name in the same directory, fsync'd, hashed and
    renamed; on any exception the temporary file is removed, so ``path`` either holds a
    complete shard or is untouched.
    """
    path = Path(path)
    conf, atoms, molecules = _pack_rows(rows)
    for i, fl in enumerate(failures):
        for key in ("molecule_index", "input", "smiles", "status", "message"):
            _need(fl, i, key, "failure")
        Status(int(fl["status"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    comp = compression
    try:
        with h5py.File(tmp, "w") as f:
            g = f.create_group("conformers")
            for name, (dtype, _, units) in CONFORMER_FIELDS.items():
                _create(g, name, conf[name], dtype, units, comp, CONFORMER_CHUNK_ROWS)
            for name in ("atom_offset", "mo_offset"):
                _create(g, name, conf[name], "i8", "1", comp, CONFORMER_CHUNK_ROWS)
            g = f.create_group("atoms")
            for name, value in atoms.items():
                _create(g, name, value, ATOM_FIELDS[name][0], ATOM_FIELDS[name][2], comp)
            _create(f.create_group("orbitals"), "mo_energy", conf["mo_energy"], "f8", "hartree")
            g = f.create_group("molecules")
            _create(g, "molecule_index", [k[0] for k in molecules], "i8", "1", comp)
            _create_blob(g, "smiles", [k[1] for k in molecules], comp)
            _create_blob(g, "name", [k[2] for k in molecules], comp)
            g = f.create_group("failures")
            _create(g, "molecule_index", [fl["molecule_index"] for fl in failures], "i8", "1")
            _create(g, "status", [int(fl["status"]) for fl in failures], "u1", "1")
            for key in ("input", "smiles", "message"):
                _create_blob(g, key, [fl[key] for fl in failures], comp)
            f.attrs.update(
                schema_version=SCHEMA_VERSION,
                shard_id=int(shard_id),
                n_rows=len(rows),
                n_failures=len(failures),
                n_molecules=len(molecules),
                has_forces="forces" in atoms,
            )
            _write_attrs(f, attrs)
        _fsync_path(tmp)
        digest = sha256_file(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, path)
        _fsync_path(path.parent, directory=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dict(
        sha256=digest,
        n_rows=len(rows),
        n_failures=len(failures),
        path=str(path),
        size=size,
        shard_id=int(shard_id),
    )


def remove_stale_tmp(directory) -> list[Path]:
    """Delete temporary files left by writers that died mid-write; return their paths."""
    stale = sorted(Path(directory).glob(".*.h5.tmp-*"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def sha256_file(path, chunk: int = 4 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- read


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
        except (KeyError, OSError, ValueError, RuntimeError) as err:
            self.file.close()
            raise CorruptShardError(path, f"missing schema parts ({err})") from err

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

        Per-conformer fields (k,...) of CONFORMER_FIELDS; ``atom_offset``/``mo_offset``
        (k+1,) rebased to 0; per-atom fields (sum n_atoms, ...) and ``mo_energy``.
        """
        c = self.columns
        stop = self.n_rows if stop is None else stop
        try:
            out = {name: c[name][start:stop] for name in CONFORMER_FIELDS}
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
        smiles = _unblob(g["smiles"][()], g["smiles_offset"][()])
        names = _unblob(g["name"][()], g["name_offset"][()])
    except (OSError, KeyError, ValueError, RuntimeError, UnicodeDecodeError) as err:
        raise CorruptShardError(f.filename, f"cannot read /molecules ({err})") from err
    return idx, smiles, names


def read_failures(f: h5py.File) -> list[dict]:
    """Failure records: dicts with molecule_index, input, smiles, status, message."""
    try:
        g = f["failures"]
        idx = g["molecule_index"][()].tolist()
        status = g["status"][()].tolist()
        text = {k: _unblob(g[k][()], g[f"{k}_offset"][()]) for k in ("input", "smiles", "message")}
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
            dipole=cols["dipole"][i],
            mo_energy=cols["mo_energy"][p:q],
            converged=bool(cols["converged"][i]),
            smiles=smiles[m],
            name=names[m],
        )
        for k in ("n_iter", "status", "molecule_index", "conformer_index", "n_basis"):
            row[k] = int(cols[k][i])
        rows.append(row)
    return dict(attrs=attrs, rows=rows, failures=failures)


# ---------------------------------------------------------------------------- check

_BLOBS = {"molecules": ("k", ("smiles", "name")), "failures": ("f", ("input", "smiles", "message"))}
_LENGTH_OF = {"m": "conformers/atom_offset", "n_mo": "conformers/mo_offset"}


def _layout(has_forces: bool) -> list[tuple[str, str, tuple, str, str]]:
    """(dataset path, dtype, trailing shape, units, length key) for every dataset.

    The length key is a count ("n", "f", "k", or with "+1" for offsets) or the name of an
    offset array whose last element gives the length.
    """
    spec = [(f"conformers/{k}", d, s, u, "n") for k, (d, s, u) in CONFORMER_FIELDS.items()]
    spec += [(f"conformers/{k}", "i8", (), "1", "n+1") for k in ("atom_offset", "mo_offset")]
    for k, (d, s, u) in ATOM_FIELDS.items():
        if k != "forces" or has_forces:
            spec.append((f"atoms/{k}", d, s, u, "m"))
    spec.append(("orbitals/mo_energy", "f8", (), "hartree", "n_mo"))
    spec.append(("molecules/molecule_index", "i8", (), "1", "k"))
    spec.append(("failures/molecule_index", "i8", (), "1", "f"))
    spec.append(("failures/status", "u1", (), "1", "f"))
    for group, (count, keys) in _BLOBS.items():
        for key in keys:
            spec.append((f"{group}/{key}_offset", "i8", (), "1", f"{count}+1"))
            spec.append((f"{group}/{key}", "u1", (), "1", f"{group}/{key}_offset"))
    return spec


def _bad_offsets(name: str, off: np.ndarray, length: int) -> list[str]:
    if off.size == 0 or off[0] != 0 or np.any(np.diff(off) < 0) or off[-1] != length:
        return [f"{name} is not a valid CSR offset array for {length} elements"]
    return []


def _check_datasets(f: h5py.File, counts: dict, problems: list) -> dict:
    """Read every dataset, checking dtype, shape, units and length; return the arrays."""
    data = {}
    for name, dtype, trailing, units, length in _layout(bool(f.attrs["has_forces"])):
        if name not in f:
            problems.append(f"missing dataset /{name}")
            continue
        ds = f[name]
        if ds.dtype != np.dtype(dtype) or ds.shape[1:] != trailing:
            want = (None,) + trailing
            problems.append(f"/{name}: dtype {ds.dtype} shape {ds.shape}, expected {dtype} {want}")
        if ds.attrs.get("units") != units:
            problems.append(f"/{name}: units {ds.attrs.get('units')!r}, expected {units!r}")
        try:
            data[name] = ds[()]
        except (OSError, ValueError, RuntimeError) as err:
            problems.append(f"/{name}: HDF5 read error (fletcher32 checksum?): {err}")
            continue
        if length.endswith("+1"):
            want = counts[length[0]] + 1
        elif length in counts:
            want = counts[length]
        else:
            off = data.get(_LENGTH_OF.get(length, length))
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
        missing = [k for k in RESERVED_ATTRS if k not in f.attrs]
        if missing:
            return [f"missing root attributes {missing}"]
        if int(f.attrs["schema_version"]) != SCHEMA_VERSION:
            return [f"schema_version {f.attrs['schema_version']}, expected {SCHEMA_VERSION}"]
        counts = {"n": int(f.attrs["n_rows"]), "f": int(f.attrs["n_failures"])}
        counts["k"] = int(f.attrs["n_molecules"])
        problems = []
        if n_rows is not None and counts["n"] != n_rows:
            problems.append(f"shard has {counts['n']} rows, index.json says {n_rows}")
        if n_failures is not None and counts["f"] != n_failures:
            problems.append(f"shard has {counts['f']} failures, index.json says {n_failures}")
        data = _check_datasets(f, counts, problems)
    if problems:
        return problems
    return _check_values(data, counts)
