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

import functools
import hashlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from qmgen.pipeline.options import GenerateOptions
from qmgen.pipeline.records import (
    PlanItem,
    RecordTable,
    ShapeIds,
    planning_processes,
    read_items,
    scan_records,
    scan_smiles,
    shape_cost,
)
from qmgen.status import Status
from qmgen.storage.files import atomic_write_pieces, sha256_file

AUTO_SHARD_TARGET = 8  # auto shard size: about this many shards for small inputs...
AUTO_SHARD_MIN, AUTO_SHARD_MAX = 8, 1000  # ...within these bounds (conformers per shard)

log = logging.getLogger("qmgen.pipeline")


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
        return read_items(self.input_path, self.records.take(span), self.options)

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
    unit = np.array([shape_cost(key) for key in shapes.keys] or [0.0], dtype=np.float64)
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
    if fmt == "xyz" and getattr(options, "sample", None) is not None:
        raise ValueError(
            f"--sample {options.sample} moves the conformers qmgen embeds (SMILES, 2-D SDF); "
            f"the XYZ frames of {input_path.name} are geometries given as they are"
        )
    shapes = ShapeIds(options)
    texts: list[PlanItem] | None = None
    if fmt == "smiles":
        cols = scan_smiles(input_path, options, shapes, planning_processes(input_path, processes))
    else:
        cols, texts = scan_records(input_path, options, shapes)
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
