"""Reading a dataset directory: a sequence of conformers over all shards.

``open_dataset(DIR)`` returns a :class:`Dataset`: ``len``, integer/slice/array indexing,
iteration, filters, unit choice, ``batches()`` for training and ``to_torch()``.

Design:
- The global row -> (shard, row) map is the cumulative row offsets of index.json, held in
  memory. Shard files are opened lazily, per process: the owning PID is recorded and a
  forked child (DataLoader worker) never touches an inherited h5py handle, it opens its
  own. Pickling (spawn workers) carries configuration only, never handles or caches.
- A shard is checked when first opened in a process: file size against index.json, then
  SHA-256 (``verify="once"``); the verified state is cached per process keyed by path,
  size and mtime, and travels with the pickled dataset, so workers do not re-hash.
  Every HDF5 chunk also carries a fletcher32 checksum; read errors become
  :class:`CorruptShardError` naming the file.
- Random access (``dataset[i]``) decodes whole shards into an LRU cache bounded by
  ``cache_bytes`` (per process) and builds the conformer dict from views. ``batches()``
  fills that cache the same way when all shards involved fit in it (later epochs skip
  HDF5) and otherwise streams contiguous row blocks, a few HDF5 slices each; iteration
  always streams. SHA-256 checks of upcoming shards run in a background thread.
- Units are converted once, when a block is decoded.
- Per-process state (handles, caches, verified shards) lives in :mod:`qmgen.dataset.store`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qmgen.dataset.columns import Columns, to_packed, to_padded
from qmgen.dataset.store import ENERGY_FIELDS, Store
from qmgen.errors import QmgenWarning
from qmgen.status import Status
from qmgen.storage import manifest as mf
from qmgen.storage.reader import ShardReader, read_attrs, read_failures
from qmgen.storage.schema import (
    CONFORMER_FIELDS,
    OPTIONAL_CONFORMER_FIELDS,
    CorruptShardError,
    unknown_fields,
)

LAYOUTS = ("padded", "packed")


class Dataset(Sequence):
    """Conformers of a dataset directory (or a view on a subset of them).

    ``dataset[i]`` is a dict: z (n,), positions (n,3), charges (n,), forces (n,3) when
    stored, mo_energy (n_mo,), energy, homo, lumo, gap, scf_error, dipole (3,), n_atoms,
    n_heavy, n_basis, n_iter, converged, status, molecule_index, conformer_index, charge
    (net, e), multiplicity (2S+1), dispersion (the empirical dispersion part of energy;
    None for functionals without one, see ``has_dispersion``), the open-shell labels
    unrestricted, s2, homo_alpha, lumo_alpha, homo_beta, lumo_beta (None unless
    ``has_spin``; then also spin_populations (n,) and, for an unrestricted row, mo_energy
    (2 n_basis,) alpha then beta), smiles, name, index
    (position in this dataset). In a dataset of an older schema, fields it did not store
    are None (``unknown_fields``).
    Units are those chosen at open time (energies
    in ``energy_unit``, lengths in ``length_unit``, forces energy/length, dipole e*length).
    Slices and index arrays give views; ``filter`` narrows a view. Arrays of a conformer
    may be read-only views into the shard cache: copy before modifying them in place.
    Not thread-safe: use processes (each has its own handles and cache).
    """

    def __init__(self, store: Store, selection: np.ndarray | None = None):
        self._store = store
        self._sel = selection

    # ---------------------------------------------------------------- sequence
    def __len__(self) -> int:
        return int(self._store.offsets[-1]) if self._sel is None else len(self._sel)

    def _rows(self, positions: np.ndarray) -> np.ndarray:
        return positions.astype(np.int64) if self._sel is None else self._sel[positions]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            n, i = len(self), int(key)
            if i < 0:
                i += n
            if not 0 <= i < n:
                raise IndexError(f"index {key} out of range for {n} conformers")
            g = i if self._sel is None else int(self._sel[i])
            store = self._store
            store.check_pid()
            s, r = store.locate(g)
            cols = store.shard(s)
            if cols is None:
                out = store.rows(s, r, r + 1).row(0)
            else:
                out = cols.row(r)
            out["index"] = i
            return out
        if isinstance(key, slice):
            return Dataset(self._store, self._rows(np.arange(len(self))[key]))
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (len(self),):
                raise IndexError(f"boolean mask of shape {key.shape}, expected ({len(self)},)")
            key = np.flatnonzero(key)
        if key.dtype.kind not in "iu" or key.ndim != 1:
            raise TypeError(f"index with an int, slice, int array or bool mask, not {key!r}")
        key = np.where(key < 0, key + len(self), key)
        if key.size and (key.min() < 0 or key.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} conformers")
        return Dataset(self._store, self._rows(key))

    def __iter__(self):
        """Conformer dicts in order, read in blocks of 4096 rows (no cache needed)."""
        for cols in self._blocks(np.arange(len(self)), 4096):
            for j in range(len(cols)):
                yield cols.row(j)

    def __repr__(self) -> str:
        s = self._store
        return (
            f"Dataset({str(s.root)!r}, {len(self)} conformers, {len(s.table)} shards, "
            f"units {s.energy_unit}/{s.length_unit})"
        )

    # ---------------------------------------------------------------- metadata
    @property
    def attrs(self) -> dict:
        """Level of theory and provenance recorded in index.json."""
        return self._store.attrs

    @property
    def root(self) -> Path:
        return self._store.root

    @property
    def shards(self):
        """The shard table: a sequence of entry dicts (shard_id, file, n_rows, n_failures,
        sha256, size, row_offset), made on demand (:class:`~qmgen.storage.table.ShardTable`)."""
        return self._store.table

    @property
    def has_forces(self) -> bool:
        return self._store.has_forces()

    @property
    def has_dispersion(self) -> bool:
        """Whether conformers carry ``dispersion``: the empirical dispersion (D3(BJ)) part
        of ``energy``, stored for functionals that have one (``b3lyp-d3bj``, ...)."""
        return self._store.has_dispersion()

    @property
    def has_spin(self) -> bool:
        """Whether conformers carry the open-shell labels (datasets of ``--open-shell`` or
        ``--unrestricted`` runs): ``unrestricted`` (UKS/UHF row), ``s2`` (<S^2>),
        ``homo_alpha``, ``lumo_alpha``, ``homo_beta``, ``lumo_beta`` and per-atom
        ``spin_populations``; an unrestricted row's ``mo_energy`` is alpha then beta."""
        return self._store.has_spin()

    @property
    def schema_version(self) -> int:
        """Shard schema version of the dataset (``qmgen.storage.schema``)."""
        return self._store.schema_version

    @property
    def unknown_fields(self) -> tuple[str, ...]:
        """Fields this qmgen knows but the dataset's schema version did not store (their
        value in a conformer dict is None): charge and multiplicity before version 2."""
        return unknown_fields(self._store.schema_version)

    @property
    def failures(self) -> list[dict]:
        """Failure records of all shards: molecule_index, input, smiles, status, message."""
        out = []
        for s in range(len(self._store.table)):
            out.extend(read_failures(self._store.handle(s).file))
        return out

    def column(self, name: str) -> np.ndarray:
        """One per-conformer field for every conformer of this view, in the chosen units."""
        store = self._store
        parts = []
        for s in np.flatnonzero(store.n_rows).tolist():
            cols = store.cached(s)
            if cols is not None and name in cols.conf:
                parts.append(cols.conf[name])
            elif name in ("smiles", "name"):
                rows = store.handle(s).column("molecule_row")
                parts.append(store.meta(s)[name == "name"][rows])
            else:
                if name not in CONFORMER_FIELDS and name not in OPTIONAL_CONFORMER_FIELDS:
                    raise KeyError(f"no per-conformer field {name!r}")
                v = store.handle(s).column(name)
                if name in ENERGY_FIELDS:
                    v = v * store.ef
                elif name == "dipole":
                    v = v * store.lf
                parts.append(v)
        full = np.concatenate(parts) if parts else np.zeros(0)
        return full if self._sel is None else full[self._sel]

    def filter(self, converged=None, status=None, heavy_atoms=None, n_atoms=None) -> Dataset:
        """A view keeping conformers that match every given condition.

        converged: True/False. status: a Status/int or a collection of them.
        heavy_atoms, n_atoms: an int or an inclusive (lo, hi) range, either end None.
        """
        keep = np.ones(len(self), dtype=bool)
        if converged is not None:
            keep &= self.column("converged") == bool(converged)
        if status is not None:
            codes = [status] if isinstance(status, (int, np.integer, Status)) else list(status)
            keep &= np.isin(self.column("status"), [int(Status(int(c))) for c in codes])
        for name, bounds in (("n_heavy", heavy_atoms), ("n_atoms", n_atoms)):
            if bounds is None:
                continue
            lo, hi = (bounds, bounds) if isinstance(bounds, (int, np.integer)) else bounds
            values = self.column(name)
            if lo is not None:
                keep &= values >= lo
            if hi is not None:
                keep &= values <= hi
        return Dataset(self._store, self._rows(np.flatnonzero(keep)))

    # ---------------------------------------------------------------- batches
    def _gather(self, positions: np.ndarray) -> Columns:
        """Conformers at ``positions`` of this view, in that order, with ``index``."""
        store = self._store
        store.check_pid()
        g = self._rows(positions)
        shard_of = np.searchsorted(store.offsets, g, side="right") - 1
        cuts = np.flatnonzero(np.diff(shard_of)) + 1
        parts = []
        for run in np.split(np.arange(len(g)), cuts):
            s = int(shard_of[run[0]])
            parts.append(store.gather(s, g[run] - int(store.offsets[s])))
        cols = Columns.concat(parts)
        cols.conf["index"] = np.asarray(positions, dtype=np.int64)
        return cols

    def _block_bounds(self, block_size: int) -> np.ndarray:
        """Start positions of blocks: every ``block_size`` and at every shard boundary."""
        n = len(self)
        cuts = np.arange(0, n, block_size)
        edges = np.asarray(self._store.offsets[1:-1], dtype=np.int64)
        if self._sel is not None:
            edges = np.searchsorted(self._sel, edges) if _is_sorted(self._sel) else edges[:0]
        return np.union1d(cuts, edges[(edges > 0) & (edges < n)])

    def _blocks(self, positions: np.ndarray, block_size: int):
        for p0 in range(0, len(positions), block_size):
            yield self._gather(positions[p0 : p0 + block_size])

    def batches(
        self,
        batch_size: int,
        shuffle: bool = True,
        seed=None,
        drop_last: bool = False,
        layout: str = "padded",
        pad_atoms: int | None = None,
        float_dtype=np.float64,
        block_size: int = 1024,
        mix_blocks: int = 8,
        strings: bool = False,
        orbitals: bool = False,
    ):
        """Yield batches of ``batch_size`` conformers as dicts of NumPy arrays.

        Rows are read in contiguous blocks of ``block_size`` (split at shard boundaries).
        With ``shuffle``, the block order is a random permutation (``seed``; None draws a
        fresh one) and the rows of ``mix_blocks`` consecutive blocks are shuffled together,
        so a batch mixes several distant parts of the dataset; every conformer appears
        exactly once per call. The last batch is smaller unless ``drop_last``.

        ``layout="padded"`` (JAX/NumPy models): z (B,A), positions (B,A,3), charges (B,A),
        forces (B,A,3), mask (B,A) and per-conformer labels (B,), see
        :func:`~qmgen.dataset.columns.to_padded`; A is the batch's largest molecule or
        ``pad_atoms`` (fixed shapes for jit). ``orbitals`` adds padded mo_energy/mo_mask.
        ``layout="packed"``: flat per-atom arrays with a ``batch`` vector
        (:func:`~qmgen.dataset.columns.to_packed`). Floats are ``float_dtype``;
        ``strings`` adds smiles and name lists.

        If all shards involved fit in ``cache_bytes`` together they are decoded into the
        cache on first use, so later epochs do not touch HDF5; otherwise blocks stream.
        """
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        if layout == "padded":
            convert = lambda c: to_padded(c, pad_atoms, float_dtype, strings, orbitals)
        else:
            convert = lambda c: to_packed(c, float_dtype, strings)
        carry = None
        for cols in self._groups(shuffle, seed, block_size, mix_blocks):
            i = 0
            if carry is not None:
                need = batch_size - len(carry)
                if len(cols) < need:
                    carry = Columns.concat([carry, cols])
                    continue
                yield convert(Columns.concat([carry, cols.slice(0, need)]))
                i, carry = need, None
            while len(cols) - i >= batch_size:
                yield convert(cols.slice(i, i + batch_size))
                i += batch_size
            carry = cols.slice(i, len(cols)) if i < len(cols) else None
        if carry is not None and not drop_last:
            yield convert(carry)

    def _groups(self, shuffle: bool, seed, block_size: int, mix_blocks: int):
        """Columns of consecutive groups of blocks in epoch order (see :meth:`batches`).

        When every shard involved fits in the cache budget together, whole shards are
        decoded into the cache (later epochs skip HDF5); otherwise blocks are streamed.
        SHA-256 checks of upcoming shards run in a background thread.
        """
        n, store = len(self), self._store
        if n == 0:
            return
        starts = self._block_bounds(block_size)
        stops = np.append(starts[1:], n)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(starts)) if shuffle else np.arange(len(starts))
        group = mix_blocks if shuffle else max(1, 4096 // block_size)
        block_shard = np.searchsorted(store.offsets, self._rows(starts), side="right") - 1
        needed = list(dict.fromkeys(block_shard[order].tolist()))
        preload = store.total_bytes(needed) <= store.cache_bytes
        try:
            for k in range(0, len(order), group):
                blocks = order[k : k + group]
                store.prefetch_verify(dict.fromkeys(block_shard[order[k : k + 8 * group]]))
                if preload:
                    for s in dict.fromkeys(block_shard[blocks].tolist()):
                        store.shard(s)
                if shuffle:
                    parts = [self._gather(np.arange(starts[b], stops[b])) for b in blocks]
                    cols = Columns.concat(parts)
                    yield cols.take(rng.permutation(len(cols)))
                else:
                    yield self._gather(np.arange(starts[blocks[0]], stops[blocks[-1]]))
        finally:
            store.cancel_prefetch()

    def to_torch(self, pad_atoms: int | None = None, dtype=None, energy_dtype=None):
        """A ``torch.utils.data.Dataset`` over these conformers with a ``.collate`` function
        returning padded tensors and masks (see :mod:`qmgen.dataset.torch_adapter`): float
        features in ``dtype`` (float32), energies in ``energy_dtype`` (float64)."""
        try:
            from qmgen.dataset.torch_adapter import TorchConformers
        except ModuleNotFoundError as err:
            if err.name != "torch":
                raise
            raise ImportError(
                "Dataset.to_torch() needs PyTorch, an optional dependency: "
                "pip install 'qmgen[torch]' (or pip install torch)"
            ) from err
        return TorchConformers(self, pad_atoms=pad_atoms, dtype=dtype, energy_dtype=energy_dtype)


def _is_sorted(a: np.ndarray) -> bool:
    return bool(a.size < 2 or np.all(a[1:] >= a[:-1]))


def _index_from_manifest(root: Path) -> dict:
    entries = mf.read_manifest(root)
    if not entries:
        raise FileNotFoundError(f"{root} is not a qmgen dataset: no index.json or manifest.jsonl")
    warnings.warn(
        f"{root}: index.json missing (run unfinished?); reading the shards in manifest.jsonl",
        QmgenWarning,
        stacklevel=3,
    )
    attrs = {}
    for entry in mf.latest_entries(entries):
        try:
            where = f"{mf.MANIFEST_NAME} shard {entry['shard_id']}"
            path = mf.shard_file(root, entry["file"], where)
            with ShardReader(path) as reader:
                attrs = read_attrs(reader.file, shard_keys=False)
            break
        except (OSError, CorruptShardError):
            continue  # a missing or corrupt shard is reported when it is read
    return mf.build_index(attrs, entries)


def open_dataset(
    path,
    *,
    converged: bool | None = None,
    status=None,
    heavy_atoms=None,
    energy_unit: str = "hartree",
    length_unit: str = "bohr",
    verify: str = "once",
    cache_bytes: int | None = None,
    energy: str = "total",
) -> Dataset:
    """Open the dataset directory ``path`` (index.json, or manifest.jsonl while running).

    Filters (see :meth:`Dataset.filter`): ``converged``, ``status``, ``heavy_atoms``.
    Units: ``energy_unit`` "hartree" | "ev", ``length_unit`` "bohr" | "angstrom"; forces
    and dipoles follow. ``verify``: "once" (SHA-256 of each shard the first time a process
    opens it) or "none" (size check and HDF5 fletcher32 chunk checksums only).
    ``cache_bytes``: per-process budget of decoded shards for random access (default
    min(2 GiB, a quarter of RAM)).
    ``energy``: "total" (as computed), "referenced" (minus the per-element constants of
    ``DIR/refs.json``, written by ``qmgen refs DIR``: :mod:`qmgen.dataset.refs`) or
    "atomization" (minus the isolated-atom energies of ``refs.json``, computed with UKS
    by ``qmgen refs DIR --atoms``).
    Only ``energy`` changes; ``homo``, ``lumo``, ``dispersion`` and forces do not.
    """
    from qmgen.dataset.refs import reference_table

    root = Path(path)
    refs = reference_table(root, energy)
    try:
        index = mf.read_index(root)
    except FileNotFoundError:
        index = _index_from_manifest(root)
    store = Store(root, index, energy_unit, length_unit, verify, cache_bytes, refs)
    ds = Dataset(store)
    unknown = unknown_fields(store.schema_version)
    if unknown:
        warnings.warn(
            f"{root}: shard schema version {store.schema_version} (an older qmgen) did not "
            f"store {', '.join(unknown)}; they read as None (unknown)",
            QmgenWarning,
            stacklevel=2,
        )
    if converged is not None or status is not None or heavy_atoms is not None:
        ds = ds.filter(converged=converged, status=status, heavy_atoms=heavy_atoms)
    return ds
