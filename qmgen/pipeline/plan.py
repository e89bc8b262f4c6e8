"""Deterministic work plan of ``qmgen generate``: which input records go into which shard.

The plan is a pure function of the input file's content and the output-relevant options
(:class:`GenerateOptions`), so a rerun after a crash recomputes exactly the same shards:

1. Every input record is validated without making conformers (RDKit parsing and the
   element / charge / size checks). Failures are known here.
2. Valid records get a *shape key*: the padded shape bucket (``qmgen.dft.batching``) of the
   molecule with hydrogens, which only depends on its atomic numbers. Records are sorted by
   (shape key, input index), so neighbouring records share compiled programs.
3. The sorted valid records are cut into shards of about ``shard_size`` conformers (each
   valid record counts ``conformers`` planned conformers); the invalid records follow in
   shards of their own (they cost nothing to "compute" but still end as failure records).

Shard ids are positions in that order. ``plan.json`` in the dataset directory stores the
shard -> input indices map and its hash; ``config.json`` the options and their hash.

**Memory and time at scale** (a million-line input): the plan holds per record only
NumPy columns (:class:`RecordTable`: input index, status, shape id and, for SMILES, the
byte span and CRC-32 of its line: 33 bytes a record) and per shard its bounds, planned
conformers and cost. A shard's :class:`PlanItem` list (input text, canonical SMILES,
name, message) is made only when the shard is submitted (:meth:`Plan.shard_items`): its
lines are read again from the input file, checked against their CRC-32 (a changed input
is refused, :class:`InputChangedError`) and validated again, which gives exactly the
record the reader gives. XYZ and SDF inputs keep each record's item (its text) in memory
instead: their readers hold the whole file or RDKit's supplier anyway. Validation needs
only one RDKit parse per SMILES (:func:`smiles_status`: status and molecular formula);
shape keys are cached per atomic composition, and large SMILES inputs are validated in
a pool of processes (:func:`planning_processes`), in input order.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import re
import zlib
from array import array
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, overload

import numpy as np

from qmgen.errors import UserError
from qmgen.status import Status
from qmgen.storage.files import atomic_write_pieces, sha256_file
from qmgen.storage.runfiles import json_digest

AUTO_SHARD_TARGET = 8  # auto shard size: about this many shards for small inputs...
AUTO_SHARD_MIN, AUTO_SHARD_MAX = 8, 1000  # ...within these bounds (conformers per shard)
VALIDATE_CHUNK = 2048  # SMILES records per validation task of the planning pool
POOL_MIN_BYTES = 2 << 20  # inputs smaller than this (~60,000 lines) are validated in-process
POOL_MAX_PROCESSES = 8
_SPLIT = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
_FORMULA = re.compile(r"([A-Z][a-z]?)(\d*)")

log = logging.getLogger("qmgen.pipeline")


@dataclass(frozen=True)
class GenerateOptions:
    """Options that decide the content of a dataset (hashed; a resume must match them).

    Level of theory: ``xc``, ``basis``, ``grid_level``, ``precision``, ``forces``,
    ``conv_tol``, ``max_cycle``. Chemistry: ``conformers`` per molecule, ``optimize``
    ("none"/"mmff"/"uff"), ``prune_rms`` (Angstrom), ``seed``, ``elements``, ``max_atoms``,
    ``format`` (None: from the extension), ``limit`` (use only the first N input records;
    None = all). Work layout: ``shard_size`` conformers per
    shard (0 = automatic, from the input size), ``min_bucket_size`` (shape buckets with
    fewer conformers are merged within a compute call), ``chunk_size`` (conformers per
    compute call inside a shard, 0 = the whole shard in one call; with chunks, the next
    chunk's conformers are made while one computes),
    ``batch_size`` (molecules per compiled call; None = the engine's default).

    ``split`` ("K/N", 1 <= K <= N; None = the whole input): this job's part of an input
    shared by N jobs (a job array): the records whose ``molecule_index % N == K - 1``,
    valid and invalid alike, so every record ends in exactly one job's dataset.
    ``molecule_index`` stays the index in the whole input, and conformers do not depend
    on the split (their seeds come from the canonical SMILES). ``limit`` applies first,
    to the whole input: ``--limit L --split K/N`` is job K's part of the first L records,
    so the N jobs together hold the records of one run with ``--limit L``. The shards
    differ from that run's (each job plans its own part; pass ``shard_size`` to fix
    their size). ``split`` is an option like the others (in ``options_hash`` and
    config.json), so each job's directory is a dataset of its own; :meth:`to_dict` leaves
    it out when None, so the options hash of an unsplit run is what it was before
    ``split`` existed.

    Execution settings that do not change results (workers, scheduler) are not here.
    """

    xc: str = "b3lyp5"
    basis: str = "sto-3g"
    grid_level: int = 0
    precision: str = "float64"
    forces: bool = False
    conv_tol: float = 1e-9
    max_cycle: int = 50
    conformers: int = 1
    optimize: str = "none"
    prune_rms: float | None = None
    seed: int = 0
    elements: str = "H,C,N,O,F"
    max_atoms: int = 64
    format: str | None = None
    limit: int | None = None
    shard_size: int = 0
    min_bucket_size: int = 32
    chunk_size: int = 0
    batch_size: int | None = None
    split: str | None = None

    def __post_init__(self):
        from qmgen.dft.grid import check_level
        from qmgen.dft.precision import PRECISIONS
        from qmgen.dft.xc import get_functional

        get_functional(self.xc)
        check_level(self.grid_level)
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}"
            )
        if not (isinstance(self.conv_tol, (int, float)) and 0 < self.conv_tol < 1):
            raise ValueError(f"conv_tol must be a number in (0, 1), got {self.conv_tol!r}")
        if self.max_cycle < 1:
            raise ValueError(f"max_cycle must be >= 1, got {self.max_cycle}")
        if self.conformers < 1:
            raise ValueError(f"conformers must be >= 1, got {self.conformers}")
        for name in ("shard_size", "min_bucket_size", "chunk_size"):
            if getattr(self, name) < (1 if name == "min_bucket_size" else 0):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        if self.split is not None:
            k, n = parse_split(self.split)
            object.__setattr__(self, "split", f"{k}/{n}")
        chem = self.chem_options(0)  # validates elements, optimize, prune_rms, max_atoms
        object.__setattr__(self, "elements", ",".join(sorted(chem.elements)))
        _check_basis(self.basis)

    def chem_options(self, n_conformers: int | None = None):
        """The :class:`qmgen.chem.ChemOptions` of these options."""
        from qmgen.chem import ChemOptions

        return ChemOptions(
            elements=self.elements,
            max_atoms=self.max_atoms,
            n_conformers=self.conformers if n_conformers is None else n_conformers,
            seed=self.seed,
            optimize=self.optimize,
            prune_rms=self.prune_rms,
        )

    def compute_kwargs(self) -> dict:
        """Keyword arguments of :func:`qmgen.compute` for these options."""
        return dict(
            basis=self.basis,
            xc=self.xc,
            grid_level=self.grid_level,
            precision=self.precision,
            forces=self.forces,
            conv_tol=self.conv_tol,
            max_cycle=self.max_cycle,
            batch_size=self.batch_size,
            min_bucket_size=self.min_bucket_size,
        )

    def to_dict(self) -> dict:
        """The options as stored in config.json (``split`` only when set)."""
        out = dataclasses.asdict(self)
        if out["split"] is None:
            del out["split"]
        return out

    def digest(self, input_sha256: str) -> str:
        """SHA-256 of these options and the input content (the dataset's identity)."""
        doc = dict(options=self.to_dict(), input_sha256=input_sha256)
        return json_digest(doc)


def parse_split(split) -> tuple[int, int]:
    """``(K, N)`` of a split ``"K/N"`` (integers, 1 <= K <= N); ``ValueError`` naming
    the problem otherwise."""
    m = _SPLIT.fullmatch(split) if isinstance(split, str) else None
    if m is None:
        raise ValueError(
            f"split must be 'K/N' with integers 1 <= K <= N (job K of N, e.g. '1/4'), got {split!r}"
        )
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise ValueError(f"split {split!r}: the number of jobs N must be >= 1")
    if not 1 <= k <= n:
        raise ValueError(f"split {split!r}: the job number K must be in 1..{n} (1-based)")
    return k, n


def _check_basis(name: str) -> None:
    from qmgen.dft.basis import BasisError, structure_of

    try:
        structure_of(np.array([1]), name)
    except BasisError as err:
        raise ValueError(f"unknown basis {name!r}: {err}") from None


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


class ShardPlan:
    """One shard of a :class:`Plan`: id, planned conformers, cost and, made on first use
    of :attr:`items` (and dropped with this object), its items in computing order."""

    def __init__(self, plan: Plan, shard_id: int):
        self.plan, self.shard_id = plan, int(shard_id)
        self.n_conformers = int(plan.shard_conformers[shard_id])  # valid items x conformers
        self.cost = float(plan.shard_cost[shard_id])  # relative compute cost (scheduling)

    @property
    def molecule_indices(self) -> list[int]:
        """Input indices of the items, in computing order."""
        return self.plan.records.molecule_index[self.plan.span(self.shard_id)].tolist()

    @functools.cached_property
    def items(self) -> list[PlanItem]:
        """The items, made on first access (:meth:`Plan.shard_items`) and kept by this
        object only."""
        return self.plan.shard_items(self.shard_id)

    def __repr__(self) -> str:
        n = len(self.plan.records.molecule_index[self.plan.span(self.shard_id)])
        return f"ShardPlan({self.shard_id}, {n} items, {self.n_conformers} conformers)"


class _Shards(Sequence):
    """The shards of a plan as a sequence; each element is made when it is asked for."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def __len__(self) -> int:
        return self.plan.n_shards

    @overload
    def __getitem__(self, i: int) -> ShardPlan: ...
    @overload
    def __getitem__(self, i: slice) -> list[ShardPlan]: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return [ShardPlan(self.plan, j) for j in range(len(self))[i]]
        return ShardPlan(self.plan, range(len(self))[i])

    def __iter__(self) -> Iterator[ShardPlan]:
        return (ShardPlan(self.plan, j) for j in range(len(self)))


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


@dataclass(repr=False)
class Plan:
    """The shard assignment of one input under one set of options.

    ``bounds`` (int64, n_shards + 1): shard s holds records ``bounds[s]:bounds[s+1]`` of
    ``records``; ``shard_conformers`` (int64) and ``shard_cost`` (float64) per shard;
    ``shape_keys``: the shape key of each shape id; ``texts``: the items of an XYZ or SDF
    input in shard order (None for SMILES, whose items are read from ``input_path``).
    """

    options: GenerateOptions
    input_sha256: str
    input_path: Path
    format: str
    records: RecordTable
    bounds: np.ndarray
    shard_conformers: np.ndarray
    shard_cost: np.ndarray
    shape_keys: list
    n_records: int
    n_valid: int
    shard_size: int
    texts: list[PlanItem] | None = None

    def __repr__(self) -> str:
        return (
            f"Plan({str(self.input_path)!r}, {self.n_records} records ({self.n_valid} valid), "
            f"{self.n_shards} shards of <= {self.shard_size} conformers)"
        )

    @property
    def options_hash(self) -> str:
        return self.options.digest(self.input_sha256)

    @property
    def n_shards(self) -> int:
        return len(self.bounds) - 1

    @property
    def shards(self) -> _Shards:
        """The shards in id order (each :class:`ShardPlan` made on access)."""
        return _Shards(self)

    @property
    def n_planned(self) -> int:
        return int(self.shard_conformers.sum())

    def span(self, shard_id: int) -> slice:
        """Positions of shard ``shard_id``'s records in :attr:`records`."""
        return slice(int(self.bounds[shard_id]), int(self.bounds[shard_id + 1]))

    def shard_items(self, shard_id: int) -> list[PlanItem]:
        """The items of shard ``shard_id`` in computing order, made now (see the module
        doc); raises :class:`InputChangedError` when the input's lines changed."""
        span = self.span(shard_id)
        if self.texts is not None:
            return self.texts[span]
        return _read_items(self.input_path, self.records.take(span), self.options)

    # ------------------------------------------------------------ plan.json
    def _head(self) -> dict:
        return dict(
            options_hash=self.options_hash,
            shard_size=self.shard_size,
            n_records=self.n_records,
            n_valid=self.n_valid,
        )

    def _shard_docs(self) -> Iterator[dict]:
        index = self.records.molecule_index
        for s in range(self.n_shards):
            yield dict(
                shard_id=s,
                molecule_indices=index[self.span(s)].tolist(),
                n_conformers=int(self.shard_conformers[s]),
            )

    @functools.cached_property
    def plan_hash(self) -> str:
        """:func:`~qmgen.storage.runfiles.json_digest` of the plan.json body (without
        ``plan_hash``), computed shard by shard."""
        h = hashlib.sha256()
        for piece in _canonical_pieces(self._head(), self._shard_docs()):
            h.update(piece.encode())
        return h.hexdigest()

    def to_json(self) -> dict:
        """The plan.json document (shard id -> input indices) with its hash, in memory
        (small plans; :meth:`write_json` streams it)."""
        body: dict[str, Any] = dict(self._head(), shards=list(self._shard_docs()))
        body["plan_hash"] = self.plan_hash
        return body

    def write_json(self, path) -> str:
        """Write plan.json to ``path`` atomically, shard by shard (the text
        ``json.dumps(self.to_json(), indent=1, sort_keys=True) + "\\n"``); returns the
        plan hash."""
        head = dict(self._head(), plan_hash=self.plan_hash)
        atomic_write_pieces(path, _indented_pieces(head, self._shard_docs()))
        return self.plan_hash


def _canonical_pieces(head: dict, shards: Iterator[dict]) -> Iterator[str]:
    """``json.dumps(dict(head, shards=list(shards)), sort_keys=True)`` in pieces (the
    head's keys all sort before "shards")."""
    text = json.dumps(head, sort_keys=True)
    yield text[:-1] + (', "shards": [' if head else '"shards": [')
    for i, doc in enumerate(shards):
        yield (", " if i else "") + json.dumps(doc, sort_keys=True)
    yield "]}"


def _indented_pieces(head: dict, shards: Iterator[dict]) -> Iterator[str]:
    """``json.dumps(dict(head, shards=list(shards)), indent=1, sort_keys=True) + "\\n"``
    in pieces (the head's keys all sort before "shards")."""
    text = json.dumps(head, indent=1, sort_keys=True)
    yield text[: text.rindex("\n")] + ',\n "shards": ['
    empty = True
    for doc in shards:
        body = json.dumps(doc, indent=1, sort_keys=True).replace("\n", "\n  ")
        yield ("\n  " if empty else ",\n  ") + body
        empty = False
    yield "]\n}\n" if empty else "\n ]\n}\n"


def auto_shard_size(n_conformers: int) -> int:
    """Default conformers per shard: about AUTO_SHARD_TARGET shards, within bounds."""
    size = math.ceil(max(n_conformers, 1) / AUTO_SHARD_TARGET)
    return int(min(max(size, AUTO_SHARD_MIN), AUTO_SHARD_MAX))


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


def _cost(key) -> float:
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


def _scan_smiles(path, options: GenerateOptions, shapes: ShapeIds, processes: int) -> _Columns:
    cols = _Columns()
    chem = options.chem_options(0)
    chunks = _chunks(_smiles_lines(path, options), VALIDATE_CHUNK)
    for chunk, statuses in _validated(chunks, chem, processes):
        for (index, offset, data, _), (status, formula) in zip(chunk, statuses, strict=True):
            shape = shapes.of_formula(formula) if status == Status.OK else -1
            cols.add(index, status, shape, offset, len(data), zlib.crc32(data))
    return cols


def _scan_records(path, options: GenerateOptions, shapes: ShapeIds):
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


def _read_items(path, records: RecordTable, options: GenerateOptions) -> list[PlanItem]:
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


def _shards(records: RecordTable, shapes: ShapeIds, options: GenerateOptions):
    """Order the records and cut them into shards: ``(records, bounds, conformers,
    cost, shard_size)`` (see :class:`Plan`)."""
    k = options.conformers
    valid = np.flatnonzero(records.status == int(Status.OK))
    invalid = np.flatnonzero(records.status != int(Status.OK))
    shard_size = options.shard_size or auto_shard_size(len(valid) * k)
    per_shard = max(1, shard_size // k)
    # valid records sorted by shape (unknown shapes last), then input order
    rank = shapes.ranks()[records.shape[valid]] if len(valid) else np.zeros(0, np.int64)
    valid = valid[np.lexsort((records.molecule_index[valid], rank))]
    invalid = invalid[np.argsort(records.molecule_index[invalid], kind="stable")]
    order = np.concatenate([valid, invalid])
    records = records.take(order)
    n_valid = len(valid)
    bounds = np.concatenate(
        [
            np.arange(0, n_valid, per_shard),
            np.arange(n_valid, len(records), shard_size),
            [len(records)],
        ]
    ).astype(np.int64)
    sizes = np.diff(bounds)
    conformers = np.where(bounds[:-1] < n_valid, sizes * k, 0).astype(np.int64)
    unit = np.array([_cost(key) for key in shapes.keys] or [0.0], dtype=np.float64)
    shape = records.shape.tolist()
    cost = np.zeros(len(sizes), dtype=np.float64)
    for s in range(len(sizes)):
        if bounds[s] < n_valid:  # the same sum, in the same order, as one shard's items
            cost[s] = sum(unit[shape[bounds[s] : bounds[s + 1]]].tolist()) * k
    return order, records, bounds, conformers, cost, shard_size


def make_plan(
    input_path,
    options: GenerateOptions,
    input_sha256: str | None = None,
    processes: int | None = None,
) -> Plan:
    """The deterministic plan of ``input_path`` under ``options`` (see the module doc).

    ``processes``: SMILES validation processes (None: :func:`planning_processes`); the
    plan does not depend on it."""
    from qmgen.chem.readers import detect_format

    input_path = Path(input_path)
    input_sha256 = input_sha256 or sha256_file(input_path)
    fmt = detect_format(input_path, options.format)
    shapes = ShapeIds(options)
    texts: list[PlanItem] | None = None
    if fmt == "smiles":
        cols = _scan_smiles(input_path, options, shapes, planning_processes(input_path, processes))
    else:
        cols, texts = _scan_records(input_path, options, shapes)
    records = cols.table()
    del cols
    n_valid = int((records.status == int(Status.OK)).sum())
    n_records = len(records)
    order, in_order, bounds, conformers, cost, shard_size = _shards(records, shapes, options)
    del records
    if texts is not None:
        texts = [texts[i] for i in order.tolist()]
    return Plan(
        options=options,
        input_sha256=input_sha256,
        input_path=input_path,
        format=fmt,
        records=in_order,
        bounds=bounds,
        shard_conformers=conformers,
        shard_cost=cost,
        shape_keys=shapes.keys,
        n_records=n_records,
        n_valid=n_valid,
        shard_size=shard_size,
        texts=texts,
    )


def option_changes(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two option dicts ("basis: 'sto-3g' -> '6-31g')."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
