"""The plan's view of input records: validation, shape keys, compact record columns.

Validation needs only one RDKit parse per SMILES (:func:`smiles_status`: status and
molecular formula); shape keys are cached per atomic composition (:class:`ShapeIds`), and
large SMILES inputs are validated in a pool of processes (:func:`planning_processes`), in
input order. Per record the plan keeps only NumPy columns (:class:`RecordTable`); a
shard's :class:`PlanItem` list is rebuilt from the input when the shard is submitted
(:func:`read_items`): its lines are read again, checked against their CRC-32 (a changed
input is refused, :class:`InputChangedError`) and validated again, which gives exactly the
record the reader gives.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import zlib
from array import array
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from qmgen.errors import UserError
from qmgen.pipeline.options import GenerateOptions, parse_split
from qmgen.status import Status

VALIDATE_CHUNK = 2048  # SMILES records per validation task of the planning pool
POOL_MIN_BYTES = 2 << 20  # inputs smaller than this (~60,000 lines) are validated in-process
POOL_MAX_PROCESSES = 8
_FORMULA = re.compile(r"([A-Z][a-z]?)(\d*)")

log = logging.getLogger("qmgen.pipeline")


class InputChangedError(UserError):
    """The input file no longer holds what was planned (it changed during the run)."""


@dataclass(frozen=True)
class PlanItem:
    """One input record as the plan sees it (``raw`` is its input text).

    ``status``/``message``/``smiles``/``name`` come from validation; a valid record is
    rebuilt from ``raw`` in the worker, with conformers.
    """

    molecule_index: int
    format: str
    raw: str
    status: int
    message: str = ""
    smiles: str = ""
    name: str = ""

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


@dataclass
class RecordTable:
    """Per-record columns of a plan, in shard order (length n_records each).

    molecule_index (int64): input index; status (int8): validation status; shape (int32):
    id of the shape key in :attr:`Plan.shape_keys` (-1 for invalid records); offset and
    length (int64): the byte span of the record's line in a SMILES input (-1 otherwise);
    crc (uint32): CRC-32 of those bytes. 33 bytes a record.
    """

    molecule_index: np.ndarray
    status: np.ndarray
    shape: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    crc: np.ndarray

    def __len__(self) -> int:
        return len(self.molecule_index)

    def take(self, order) -> RecordTable:
        """The records at positions ``order`` (an index array or a slice)."""
        columns = dataclasses.fields(self)
        return RecordTable(**{c.name: getattr(self, c.name)[order] for c in columns})

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns."""
        return sum(getattr(self, c.name).nbytes for c in dataclasses.fields(self))


def shape_key(z, options: GenerateOptions):
    """Sort key of a molecule with atomic numbers ``z``: its padded shape bucket.

    Returns ``(n_ao, n_points, n_atoms, structure)`` or None when the basis lacks an
    element (the compute step then records the failure). Depends only on the multiset of
    ``z`` (the bucket counts shells, atoms and grid points), not on atom order.
    """
    from qmgen.dft.basis import BasisError
    from qmgen.dft.batching import BucketPolicy, bucket_of
    from qmgen.molecule import MoleculeError

    try:
        mol = SimpleNamespace(z=list(z), n_atoms=len(z))
        b = bucket_of(mol, options.basis, options.grid_level, BucketPolicy())  # type: ignore[arg-type]  # z and n_atoms suffice
    except (BasisError, MoleculeError, KeyError, ValueError):
        return None
    return (b.n_ao, b.n_points, b.n_atoms, b.structure)


def shape_cost(key) -> float:
    """Relative cost of a conformer of shape ``key`` (ERIs ~ n_ao^4, XC ~ n_ao^2 n_points)."""
    if key is None:
        return 1.0
    n_ao, n_points = key[0], key[1]
    return n_ao**4 / 8 + 3 * n_ao**2 * n_points


class ShapeIds:
    """Small integer ids of shape keys, cached per atomic composition (the key depends
    only on the element counts, see :func:`shape_key`)."""

    def __init__(self, options: GenerateOptions):
        self.options = options
        self.keys: list = []  # id -> shape key (None: the basis lacks an element)
        self._id_of_key: dict = {}
        self._id_of_composition: dict[tuple, int] = {}
        self._id_of_formula: dict[str, int] = {}

    def of_z(self, z) -> int:
        """Id of the shape of atomic numbers ``z`` (None or empty: the None key)."""
        composition = tuple(sorted(Counter(int(x) for x in z).items())) if z else ()
        found = self._id_of_composition.get(composition)
        if found is None:
            zs = [e for e, n in composition for _ in range(n)]
            key = shape_key(zs, self.options) if zs else None
            found = self._id_of_composition[composition] = self._id_of_key.setdefault(
                key, len(self._id_of_key)
            )
            if found == len(self.keys):
                self.keys.append(key)
        return found

    def of_formula(self, formula: str | None) -> int:
        """Id of the shape of a molecular formula as RDKit's ``CalcMolFormula`` writes it
        ("C2H6O", "H4N+"; None: the None key)."""
        if formula is None:
            return self.of_z(None)
        found = self._id_of_formula.get(formula)
        if found is None:
            found = self._id_of_formula[formula] = self.of_z(formula_atoms(formula))
        return found

    def ranks(self) -> np.ndarray:
        """Sort rank of each id: by key, the None key last (int64, one per id)."""
        order = sorted(range(len(self.keys)), key=lambda i: _key_order(self.keys[i]))
        ranks = np.empty(len(self.keys), dtype=np.int64)
        ranks[order] = np.arange(len(order))
        return ranks


def _key_order(key):
    return (key is None, key or ())


def formula_atoms(formula: str) -> list[int]:
    """Atomic numbers (sorted, hydrogens included) of a molecular formula ("C2H6O");
    a trailing charge ("+", "-2") is ignored."""
    from qmgen.molecule import atomic_number

    out: list[int] = []
    for symbol, count in _FORMULA.findall(formula):
        out += [atomic_number(symbol)] * (int(count) if count else 1)
    return sorted(out)


def _atomic_numbers(record) -> list[int] | None:
    """Atomic numbers (hydrogens included) of a validated XYZ or SDF record."""
    if record.conformers:
        return [int(x) for x in record.conformers[0].z]
    if not record.smiles:
        return None
    from rdkit import Chem

    from qmgen.chem.records import rdkit_log_capture

    with rdkit_log_capture():
        mol = Chem.MolFromSmiles(record.smiles)
    if mol is None:
        return None
    return [a.GetAtomicNum() for a in Chem.AddHs(mol).GetAtoms()]


# ------------------------------------------------------------------ SMILES validation
def smiles_status(smiles: str, chem) -> tuple[int, str | None]:
    """``(status, formula)`` of one SMILES under :class:`~qmgen.chem.ChemOptions`
    ``chem``: the status :func:`qmgen.chem.smiles_record` gives it (the same checks in
    the same order, without building the record), and on success its molecular formula
    with hydrogens (RDKit's ``CalcMolFormula``; None if that fails). One RDKit parse."""
    return validate_smiles([smiles], chem)[0]


def validate_smiles(smiles: list[str | None], chem) -> list[tuple[int, str | None]]:
    """:func:`smiles_status` of each SMILES (None: a line already known to be invalid,
    INVALID_INPUT); the task of the planning pool."""
    from rdkit import Chem
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula

    from qmgen.chem.records import ChemError
    from qmgen.chem.smiles import canonical_smiles, check_size, parse_smiles

    ok, invalid = int(Status.OK), int(Status.INVALID_INPUT)
    out: list[tuple[int, str | None]] = []
    for text in smiles:
        if text is None:
            out.append((invalid, None))
            continue
        try:  # as smiles_record with n_conformers=0
            mol = parse_smiles(text, chem)
            canonical_smiles(mol)
            Chem.GetFormalCharge(mol)
            check_size(mol, chem)
        except ChemError as err:
            out.append((int(err.status), None))
            continue
        except MemoryError:
            raise
        except Exception:  # noqa: BLE001 - the reader's guard makes it INVALID_INPUT too
            out.append((invalid, None))
            continue
        try:
            formula = CalcMolFormula(mol)
        except (RuntimeError, ValueError):  # no key: sorted last, as an unknown shape
            formula = None
        out.append((ok, formula))
    return out


def planning_processes(input_path, processes: int | None = None) -> int:
    """Processes that validate a SMILES input: ``processes`` if given, else 0 (in this
    process) below POOL_MIN_BYTES, else this process's CPU cores (at most
    POOL_MAX_PROCESSES)."""
    if processes is not None:
        return max(int(processes), 0)
    if Path(input_path).stat().st_size < POOL_MIN_BYTES:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return min(cores, POOL_MAX_PROCESSES) if cores > 1 else 0


class _Columns:
    """Growing per-record columns (compact ``array`` buffers) while the input is read."""

    def __init__(self):
        self.index, self.status, self.shape = array("q"), array("b"), array("i")
        self.offset, self.length, self.crc = array("q"), array("q"), array("I")

    def add(self, index, status, shape, offset=-1, length=-1, crc=0) -> None:
        self.index.append(index)
        self.status.append(status)
        self.shape.append(shape)
        self.offset.append(offset)
        self.length.append(length)
        self.crc.append(crc)

    def table(self) -> RecordTable:
        """The columns as NumPy arrays (copies: the buffers can go)."""
        return RecordTable(
            molecule_index=np.array(self.index, dtype=np.int64),
            status=np.array(self.status, dtype=np.int8),
            shape=np.array(self.shape, dtype=np.int32),
            offset=np.array(self.offset, dtype=np.int64),
            length=np.array(self.length, dtype=np.int64),
            crc=np.array(self.crc, dtype=np.uint32),
        )


def _selector(options: GenerateOptions):
    """``keep(index)`` of ``options.split`` (everything when None)."""
    if options.split is None:
        return lambda index: True
    k, n = parse_split(options.split)
    return lambda index: index % n == k - 1


def _smiles_lines(path, options: GenerateOptions) -> Iterator[tuple]:
    """``(index, offset, data, smiles)`` of the record lines of a SMILES input that this
    job keeps (``limit`` counted over the whole input, then ``split``); ``smiles`` is
    None where the line is invalid without RDKit (binary, empty SMILES field)."""
    from qmgen.chem.readers import record_lines

    keep = _selector(options)
    starts = [0]  # byte offset of the line being read (lines are read in order)

    def counted(fh):
        for data in fh:
            yield data
            starts[0] += len(data)

    n_records = 0
    with open(path, "rb") as fh:
        for index, data, line in record_lines(counted(fh)):
            if options.limit is not None and n_records >= options.limit:
                return
            n_records += 1
            if keep(index):
                smiles = line[2] if line[1] is None and line[2] else None
                yield index, starts[0], data, smiles


def _chunks(lines: Iterator[tuple], size: int) -> Iterator[list[tuple]]:
    chunk: list[tuple] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _validated(chunks: Iterator[list[tuple]], chem, processes: int) -> Iterator[tuple]:
    """``(chunk, statuses)`` per chunk, in input order: validated in a pool of
    ``processes`` processes with a bounded window of chunks in flight, or here (0)."""
    pool = _PlanningPool(processes, chem)
    window: deque = deque()
    try:
        for chunk in chunks:
            window.append((chunk, pool.submit(chunk)))
            while window and len(window) > pool.window:
                yield pool.result(*window.popleft())
        while window:
            yield pool.result(*window.popleft())
    finally:
        pool.close()


class _PlanningPool:
    """Spawn-started processes running :func:`validate_smiles` on chunks of SMILES
    records; where the pool cannot start or breaks, the chunks it did not return are
    validated in this process (same results)."""

    def __init__(self, processes: int, chem):
        self.chem, self.pool = chem, None
        self.window = 2 * processes + 2 if processes > 0 else 0
        if processes > 0:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            from qmgen.pipeline.conformers import _pool_init

            try:
                self.pool = ProcessPoolExecutor(
                    processes,
                    mp_context=multiprocessing.get_context("spawn"),  # the driver runs JAX
                    initializer=_pool_init,
                    initargs=(os.getpid(),),
                )
            except (OSError, RuntimeError, ValueError) as err:
                self._drop(err)

    def submit(self, chunk: list[tuple]):
        """A future of the chunk's statuses, or None (then :meth:`result` makes them)."""
        from concurrent.futures import BrokenExecutor

        if self.pool is None:
            return None
        try:
            return self.pool.submit(validate_smiles, [c[3] for c in chunk], self.chem)
        except (BrokenExecutor, RuntimeError, OSError) as err:
            self._drop(err)
            return None

    def result(self, chunk: list[tuple], fut) -> tuple[list[tuple], list]:
        from concurrent.futures import BrokenExecutor

        if fut is not None and self.pool is not None:
            try:
                return chunk, fut.result()
            except BrokenExecutor as err:
                self._drop(err)
        return chunk, validate_smiles([c[3] for c in chunk], self.chem)

    def _drop(self, err: BaseException) -> None:
        log.warning(
            "planning: cannot validate in a process pool (%s: %s); validating in this process",
            type(err).__name__,
            err,
        )
        self.close(wait=False)
        self.window = 0

    def close(self, wait: bool = True) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=wait, cancel_futures=True)
            self.pool = None


def scan_smiles(path, options: GenerateOptions, shapes: ShapeIds, processes: int) -> _Columns:
    cols = _Columns()
    chem = options.chem_options(0)
    chunks = _chunks(_smiles_lines(path, options), VALIDATE_CHUNK)
    for chunk, statuses in _validated(chunks, chem, processes):
        for (index, offset, data, _), (status, formula) in zip(chunk, statuses, strict=True):
            shape = shapes.of_formula(formula) if status == Status.OK else -1
            cols.add(index, status, shape, offset, len(data), zlib.crc32(data))
    return cols


def scan_records(path, options: GenerateOptions, shapes: ShapeIds):
    """Columns and items of an XYZ or SDF input (read by :func:`qmgen.chem.read_molecules`)."""
    from qmgen.chem import read_molecules

    cols, items = _Columns(), []
    keep = _selector(options)
    for n, rec in enumerate(
        read_molecules(path, format=options.format, options=options.chem_options(0))
    ):
        if options.limit is not None and n >= options.limit:
            break
        if not keep(rec.molecule_index):
            continue
        item = PlanItem(
            molecule_index=int(rec.molecule_index),
            format=rec.format,
            raw=rec.raw,
            status=int(rec.status),
            message=rec.message,
            smiles=rec.smiles,
            name=rec.name,
        )
        shape = shapes.of_z(_atomic_numbers(rec)) if rec.ok else -1
        cols.add(item.molecule_index, item.status, shape)
        items.append(item)
    return cols, items


def read_items(path, records: RecordTable, options: GenerateOptions) -> list[PlanItem]:
    """Items of SMILES records, read again from their byte spans in ``path`` and validated
    again (the reader's own per-line function): the items :func:`qmgen.chem.iter_smiles`
    gives. Raises :class:`InputChangedError` when a line's bytes changed (CRC-32) or the
    file cannot be read. (A status other than the planned one, which would be a bug, is
    logged and the item keeps the status found now: its line still ends as rows or one
    failure record.)"""
    from qmgen.chem.readers import smiles_line, smiles_line_record

    chem = options.chem_options(0)
    items = []
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise InputChangedError(
            f"the input file {str(path)!r} cannot be read any more ({err.strerror or err}); "
            "restore it and rerun the same command"
        ) from None
    with fh:
        for index, offset, length, crc, status in zip(
            records.molecule_index.tolist(),
            records.offset.tolist(),
            records.length.tolist(),
            records.crc.tolist(),
            records.status.tolist(),
            strict=True,
        ):
            fh.seek(offset)
            data = fh.read(length)
            line = smiles_line(index, data) if zlib.crc32(data) == crc else None
            if line is None:
                raise InputChangedError(
                    f"the input file {str(path)!r} changed while qmgen generate was running "
                    f"(line {index + 1} is not what was planned); restore it and rerun the "
                    "same command, or pass --new to start over with its new content"
                )
            rec = smiles_line_record(index, line, chem)
            if int(rec.status) != status:
                log.error(
                    "line %d: planned as %s, validated now as %s (a bug in qmgen: please "
                    "report this line); it is computed as validated now",
                    index + 1,
                    Status(status).name,
                    rec.status.name,
                )
            items.append(
                PlanItem(
                    index, "smiles", rec.raw, int(rec.status), rec.message, rec.smiles, rec.name
                )
            )
    return items
