"""The shard schema: HDF5 layout, field tables, schema versions and text encoding.

Writing is ``storage.writer``, reading ``storage.reader``, checking ``storage.check``.

A shard holds the labels of one finished unit of work: n stored conformers (m atoms in
total) of k distinct molecules, and f failure records. Everything is columnar (CSR with
int64 offsets, no variable-length HDF5 types), so a block of rows is a handful of slices.

Layout, schema version 2 (``units`` attribute on every dataset)::

    /            attrs: schema_version, shard_id, n_rows, n_failures, n_molecules,
                 has_forces, has_dispersion and has_spin (optional, False when absent),
                 json_attrs
                 (names of the attributes below stored as JSON
                 text), then the caller's attrs (level of theory, provenance): str, int,
                 float and bool natively; dicts, lists and None as JSON text
    /conformers/ energy, homo, lumo, gap  f8 (n,)   hartree
                 scf_error                f8 (n,)   hartree (final SCF residual)
                 dipole                   f8 (n,3)  e*bohr
                 n_atoms, n_heavy, n_basis, n_iter, conformer_index   i4 (n,)
                 converged b1 (n,), status u1 (n,) (qmgen.status.Status)
                 molecule_index i8 (n,) (0-based input line), molecule_row i4 (n,)
                 (row of /molecules/), atom_offset i8 (n+1,), mo_offset i8 (n+1,)
                 charge i2 (n,) e, net charge of the molecule; multiplicity u1 (n,),
                 2S+1 (both new in version 2; version 1 shards read with them unknown)
                 dispersion f8 (n,) hartree: the empirical dispersion (D3(BJ)) included
                 in energy (present only when the functional has one, root attribute
                 has_dispersion; shards without the attribute have none)
                 unrestricted b1, s2 f8 (<S^2>), homo_alpha, lumo_alpha, homo_beta,
                 lumo_beta f8 hartree (n,): present only with root attribute has_spin
                 (datasets of --open-shell / --unrestricted runs); restricted rows have
                 s2 0 and alpha = beta
    /atoms/      z u1 (m,), positions f8 (m,3) bohr, charges f8 (m,) e,
                 forces f8 (m,3) hartree/bohr (present only when the dataset has forces)
                 spin_populations f8 (m,) e (Mulliken spin density; only has_spin)
    /orbitals/   mo_energy f8 (mo_offset[-1],) hartree (unrestricted rows: alpha then
                 beta, 2 n_basis values)
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

from pathlib import Path

import numpy as np

from qmgen.errors import QmgenError

SCHEMA_VERSION = 2
# Versions this qmgen reads. Version 1 (qmgen before net charge and multiplicity were
# stored) reads with those fields reported as unknown (``FIELDS_SINCE``).
READABLE_VERSIONS = (1, 2)
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
    "charge": ("i2", (), "e"),  # net charge of the molecule
    "multiplicity": ("u1", (), "1"),  # spin multiplicity 2S+1 (1: closed shell)
}
# per-conformer labels stored only when the dataset has them (like atoms/forces): the
# dispersion part of the energy, for functionals with an empirical dispersion term. An
# optional dataset, not a schema change: older readers ignore it
OPTIONAL_CONFORMER_FIELDS: dict[str, tuple[str, tuple, str]] = {"dispersion": ("f8", (), "hartree")}
# open-shell labels, stored (root attribute has_spin) by datasets that may hold
# unrestricted rows (``--open-shell``, ``--unrestricted``): the method of each row
# (unrestricted: UKS/UHF, else RKS/RHF), <S^2> (0 for restricted rows) and the frontier
# orbital energies of each spin (alpha = beta for restricted rows); with them the atoms
# get Mulliken spin populations and an unrestricted row's orbital energies are its alpha
# then its beta ones (2 n_basis values)
SPIN_CONFORMER_FIELDS: dict[str, tuple[str, tuple, str]] = {
    "unrestricted": ("b1", (), "1"),
    "s2": ("f8", (), "1"),
    "homo_alpha": ("f8", (), "hartree"),
    "lumo_alpha": ("f8", (), "hartree"),
    "homo_beta": ("f8", (), "hartree"),
    "lumo_beta": ("f8", (), "hartree"),
}
SPIN_LABELS = ("homo_alpha", "lumo_alpha", "homo_beta", "lumo_beta")  # energies
OPTIONAL_CONFORMER_FIELDS.update(SPIN_CONFORMER_FIELDS)
# fields added after version 1: the first schema version that stores them
FIELDS_SINCE = {"charge": 2, "multiplicity": 2}
ATOM_FIELDS = {
    "z": ("u1", (), "1"),
    "positions": ("f8", (3,), "bohr"),
    "charges": ("f8", (), "e"),
    "forces": ("f8", (3,), "hartree/bohr"),  # optional
    "spin_populations": ("f8", (), "e"),  # optional: with has_spin
}
ROW_SCALARS = ("energy", "homo", "lumo", "gap", "scf_error")
RESERVED_ATTRS: tuple[str, ...] = ("schema_version", "shard_id", "n_rows", "n_failures")
RESERVED_ATTRS += ("n_molecules", "has_forces", "json_attrs", "has_dispersion", "has_spin")
OPTIONAL_ATTRS = ("has_dispersion", "has_spin")  # reserved, but absent from shards of older qmgen
MAX_Z = 118
MAX_CHARGE = 1000  # |net charge| of a stored molecule


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


def blob(texts) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated UTF-8 bytes (u1) and int64 offsets (len(texts)+1,)."""
    encoded = [encode_text(t) for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def unblob(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = blob.tobytes()
    bounds = offsets.tolist()
    return [decode_text(raw[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"attribute value of type {type(value).__name__} is not JSON serialisable")


BLOBS = {"molecules": ("k", ("smiles", "name")), "failures": ("f", ("input", "smiles", "message"))}
LENGTH_OF = {"m": "conformers/atom_offset", "n_mo": "conformers/mo_offset"}


def conformer_fields(version: int = SCHEMA_VERSION) -> dict:
    """CONFORMER_FIELDS as shards of schema ``version`` store them."""
    return {k: v for k, v in CONFORMER_FIELDS.items() if FIELDS_SINCE.get(k, 1) <= version}


def unknown_fields(version: int) -> tuple[str, ...]:
    """Fields of the current schema that shards of ``version`` do not store."""
    return tuple(k for k, since in FIELDS_SINCE.items() if since > version)


def check_version(version, where) -> int:
    """``version`` as an int if this qmgen reads it; else :class:`CorruptShardError`."""
    if isinstance(version, np.generic):
        version = version.item()
    if type(version) is not int or version not in READABLE_VERSIONS:
        newer = type(version) is int and version > SCHEMA_VERSION
        hint = "written by a newer qmgen; upgrade qmgen" if newer else "not a qmgen shard schema"
        raise CorruptShardError(
            where,
            f"shard schema version {version!r}: {hint} (this qmgen reads {READABLE_VERSIONS})",
        )
    return version


def layout(
    has_forces: bool,
    version: int = SCHEMA_VERSION,
    has_dispersion: bool = False,
    has_spin: bool = False,
) -> list[tuple[str, str, tuple, str, str]]:
    """(dataset path, dtype, trailing shape, units, length key) for every dataset
    (atoms/forces only ``has_forces``, conformers/dispersion only ``has_dispersion``,
    the open-shell fields (SPIN_CONFORMER_FIELDS, atoms/spin_populations) only
    ``has_spin``).

    The length key is a count ("n", "f", "k", or with "+1" for offsets) or the name of an
    offset array whose last element gives the length.
    """
    fields = conformer_fields(version).items()
    spec = [(f"conformers/{k}", d, s, u, "n") for k, (d, s, u) in fields]
    for k, (d, s, u) in OPTIONAL_CONFORMER_FIELDS.items():
        if has_spin if k in SPIN_CONFORMER_FIELDS else has_dispersion:
            spec.append((f"conformers/{k}", d, s, u, "n"))
    spec += [(f"conformers/{k}", "i8", (), "1", "n+1") for k in ("atom_offset", "mo_offset")]
    optional_atoms = {"forces": has_forces, "spin_populations": has_spin}
    for k, (d, s, u) in ATOM_FIELDS.items():
        if optional_atoms.get(k, True):
            spec.append((f"atoms/{k}", d, s, u, "m"))
    spec.append(("orbitals/mo_energy", "f8", (), "hartree", "n_mo"))
    spec.append(("molecules/molecule_index", "i8", (), "1", "k"))
    spec.append(("failures/molecule_index", "i8", (), "1", "f"))
    spec.append(("failures/status", "u1", (), "1", "f"))
    for group, (count, keys) in BLOBS.items():
        for key in keys:
            spec.append((f"{group}/{key}_offset", "i8", (), "1", f"{count}+1"))
            spec.append((f"{group}/{key}", "u1", (), "1", f"{group}/{key}_offset"))
    return spec
