"""Deterministic work plan of ``qmgen generate``: which input records go into which shard.

The plan is a pure function of the input file's content and the output-relevant options
(:class:`GenerateOptions`), so a rerun after a crash recomputes exactly the same shards:

1. Every input record is validated without making conformers (``n_conformers=0``, cheap:
   RDKit parsing and the element / charge / size checks). Failures are known here.
2. Valid records get a *shape key*: the padded shape bucket (``qmgen.dft.batching``) of the
   molecule with hydrogens, which only depends on its atomic numbers. Records are sorted by
   (shape key, input index), so neighbouring records share compiled programs.
3. The sorted valid records are cut into shards of about ``shard_size`` conformers (each
   valid record counts ``conformers`` planned conformers); the invalid records follow in
   shards of their own (they cost nothing to "compute" but still end as failure records).

Shard ids are positions in that order. ``plan.json`` in the dataset directory stores the
shard -> input indices map and its hash; ``config.json`` the options and their hash.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from types import SimpleNamespace

from qmgen.status import Status
from qmgen.storage.files import sha256_file
from qmgen.storage.runfiles import json_digest

AUTO_SHARD_TARGET = 8  # auto shard size: about this many shards for small inputs...
AUTO_SHARD_MIN, AUTO_SHARD_MAX = 8, 1000  # ...within these bounds (conformers per shard)


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
        return dataclasses.asdict(self)

    def digest(self, input_sha256: str) -> str:
        """SHA-256 of these options and the input content (the dataset's identity)."""
        doc = dict(options=self.to_dict(), input_sha256=input_sha256)
        return json_digest(doc)


def _check_basis(name: str) -> None:
    import numpy as np

    from qmgen.dft.basis import BasisError, structure_of

    try:
        structure_of(np.array([1]), name)
    except BasisError as err:
        raise ValueError(f"unknown basis {name!r}: {err}") from None


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
class ShardPlan:
    """Items of one shard, in the order they are computed, and its planned conformers."""

    shard_id: int
    items: list[PlanItem] = field(default_factory=list)
    n_conformers: int = 0  # planned conformer slots (valid items x conformers)
    cost: float = 0.0  # relative compute cost estimate (for scheduling order)

    @property
    def molecule_indices(self) -> list[int]:
        return [it.molecule_index for it in self.items]


@dataclass
class Plan:
    """The shard assignment of one input under one set of options."""

    options: GenerateOptions
    input_sha256: str
    shards: list[ShardPlan]
    n_records: int
    n_valid: int
    shard_size: int

    @property
    def options_hash(self) -> str:
        return self.options.digest(self.input_sha256)

    @property
    def n_planned(self) -> int:
        return sum(s.n_conformers for s in self.shards)

    def to_json(self) -> dict:
        """The plan.json document (shard id -> input indices) with its hash."""
        shards = [
            dict(
                shard_id=s.shard_id,
                molecule_indices=s.molecule_indices,
                n_conformers=s.n_conformers,
            )
            for s in self.shards
        ]
        body = dict(
            options_hash=self.options_hash,
            shard_size=self.shard_size,
            n_records=self.n_records,
            n_valid=self.n_valid,
            shards=shards,
        )
        body["plan_hash"] = json_digest(body)
        return body


def auto_shard_size(n_conformers: int) -> int:
    """Default conformers per shard: about AUTO_SHARD_TARGET shards, within bounds."""
    size = math.ceil(max(n_conformers, 1) / AUTO_SHARD_TARGET)
    return int(min(max(size, AUTO_SHARD_MIN), AUTO_SHARD_MAX))


def shape_key(z, options: GenerateOptions):
    """Sort key of a molecule with atomic numbers ``z``: its padded shape bucket.

    Returns ``(n_ao, n_points, n_atoms, structure)`` or None when the basis lacks an
    element (the compute step then records the failure).
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


def _atomic_numbers(record) -> list[int] | None:
    """Atomic numbers (hydrogens included) of a validated record."""
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


def _cost(key) -> float:
    """Relative cost of a conformer of shape ``key`` (ERIs ~ n_ao^4, XC ~ n_ao^2 n_points)."""
    if key is None:
        return 1.0
    n_ao, n_points = key[0], key[1]
    return n_ao**4 / 8 + 3 * n_ao**2 * n_points


def plan_items(input_path, options: GenerateOptions):
    """Validate every record of the input (no conformers): ``[(PlanItem, shape_key)]``."""
    from qmgen.chem import read_molecules

    out: list[tuple] = []
    chem = options.chem_options(0)
    for rec in read_molecules(input_path, format=options.format, options=chem):
        if options.limit is not None and len(out) >= options.limit:
            break
        item = PlanItem(
            molecule_index=int(rec.molecule_index),
            format=rec.format,
            raw=rec.raw,
            status=int(rec.status),
            message=rec.message,
            smiles=rec.smiles,
            name=rec.name,
        )
        key = None
        if rec.ok:
            z = _atomic_numbers(rec)
            key = shape_key(z, options) if z else None
        out.append((item, key))
    return out


def make_plan(input_path, options: GenerateOptions, input_sha256: str | None = None) -> Plan:
    """The deterministic plan of ``input_path`` under ``options`` (see the module doc)."""
    input_sha256 = input_sha256 or sha256_file(input_path)
    items = plan_items(input_path, options)
    valid = [(it, key) for it, key in items if it.ok]
    invalid = [it for it, _ in items if not it.ok]
    k = options.conformers
    shard_size = options.shard_size or auto_shard_size(len(valid) * k)
    per_shard = max(1, shard_size // k)
    # valid records sorted by shape (unknown shapes last), then input order
    valid.sort(key=lambda p: (p[1] is None, p[1] or (), p[0].molecule_index))
    shards: list[ShardPlan] = []
    for start in range(0, len(valid), per_shard):
        part = valid[start : start + per_shard]
        shards.append(
            ShardPlan(
                shard_id=len(shards),
                items=[it for it, _ in part],
                n_conformers=len(part) * k,
                cost=sum(_cost(key) for _, key in part) * k,
            )
        )
    invalid.sort(key=lambda it: it.molecule_index)
    for start in range(0, len(invalid), shard_size):
        shards.append(ShardPlan(shard_id=len(shards), items=invalid[start : start + shard_size]))
    return Plan(
        options=options,
        input_sha256=input_sha256,
        shards=shards,
        n_records=len(items),
        n_valid=len(valid),
        shard_size=shard_size,
    )


def option_changes(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two option dicts ("basis: 'sto-3g' -> '6-31g')."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
