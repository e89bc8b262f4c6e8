"""The compact, streamed plan of ``qmgen generate`` (no Dask, no SCF).

The plan keeps per record only NumPy columns and makes a shard's items when it is
submitted. Here it is held to an independent, straightforward computation of the
assignment the pipeline has always used: every record read with the reader, hydrogens
added by RDKit, shape buckets from ``qmgen.dft.batching``, valid records sorted by
(bucket, input index) and cut into shards, invalid records after them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rdkit import Chem

from qmgen.chem import read_molecules, smiles_record
from qmgen.chem.records import ChemOptions
from qmgen.dft.batching import BucketPolicy, bucket_of
from qmgen.pipeline.options import GenerateOptions
from qmgen.pipeline.plan import make_plan
from qmgen.pipeline.records import InputChangedError, formula_atoms, smiles_status
from qmgen.pipeline.run import submission_order
from qmgen.status import Status
from qmgen.storage.runfiles import json_digest

MIXED = [
    "# a comment, then a header",
    "smiles,name",
    "CCO,ethanol",
    "c1ccccc1,benzene",
    "C,methane",
    "xx1,not_smiles",
    "",
    "CC,ethane",
    "[Si](C)(C)C,silicon",
    "CCCCCCCC,octane",
    "C[O],radical",
    "OCC,ethanol_again",
    ",no_smiles",
    "[NH4+],ammonium",
    "CC(=O)[O-],acetate",
    "c1ccncc1,pyridine",
    "C" * 70 + ",too_large",
    "[2H]OC,deuterated",
    "FC(F)(F)C(=O)N,trifluoroacetamide",
    "C(C)(C)(C)(C)C,pentavalent",
    "O=C=O,carbon_dioxide",
    "OC1CCCCC1,cyclohexanol",
    "N#N,nitrogen",
    "CC(C)(C)O,tert_butanol",
    "   ",
    "c1ccccc1O,phenol",
]


@pytest.fixture
def smi(tmp_path):
    path = tmp_path / "in.csv"
    data = ("\n".join(MIXED) + "\n").encode() + b"\x00\x9f binary,junk\n" + b"COC,dme\n"
    path.write_bytes(data)
    return path


def straightforward(path, options: GenerateOptions) -> list[tuple[list[int], int]]:
    """(molecule indices, planned conformers) per shard, computed directly."""
    records = list(read_molecules(path, options=ChemOptions(elements=options.elements)))
    records = records[: options.limit] if options.limit else records
    k = options.conformers
    valid, invalid = [], []
    for rec in records:
        if not rec.ok:
            invalid.append(rec.molecule_index)
            continue
        mol = Chem.AddHs(Chem.MolFromSmiles(rec.smiles))
        z = [a.GetAtomicNum() for a in mol.GetAtoms()]
        fake = type("M", (), dict(z=z, n_atoms=len(z)))
        b = bucket_of(fake, options.basis, options.grid_level, BucketPolicy())
        valid.append(((b.n_ao, b.n_points, b.n_atoms, b.structure), rec.molecule_index))
    valid.sort()
    size = options.shard_size or min(max(math.ceil(max(len(valid) * k, 1) / 8), 8), 1000)
    per = max(1, size // k)
    shards = [
        ([i for _, i in valid[s : s + per]], len(valid[s : s + per]) * k)
        for s in range(0, len(valid), per)
    ]
    shards += [(invalid[s : s + size], 0) for s in range(0, len(invalid), size)]
    return shards


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(shard_size=3),
        dict(shard_size=5, conformers=2),
        dict(shard_size=1),
        dict(limit=9, shard_size=2),
        dict(basis="6-31g", shard_size=4),
    ],
)
def test_plan_equals_the_straightforward_assignment(smi, options):
    opts = GenerateOptions(**options)
    plan = make_plan(smi, opts)
    expected = straightforward(smi, opts)
    assert [(s.molecule_indices, s.n_conformers) for s in plan.shards] == expected
    assert plan.n_records == sum(len(m) for m, _ in expected)
    assert plan.n_valid == sum(len(m) for m, c in expected if c)
    # plan.json: the same document (and hash) as built from the expected assignment
    body = dict(
        options_hash=opts.digest(plan.input_sha256),
        shard_size=plan.shard_size,
        n_records=plan.n_records,
        n_valid=plan.n_valid,
        shards=[
            dict(shard_id=i, molecule_indices=m, n_conformers=c)
            for i, (m, c) in enumerate(expected)
        ],
    )
    assert plan.plan_hash == json_digest(body)
    assert plan.to_json() == dict(body, plan_hash=json_digest(body))


def test_items_are_the_readers_records(smi):
    """Items made at submission (line re-read and validated again) are the reader's."""
    plan = make_plan(smi, GenerateOptions(shard_size=4))
    assert plan.texts is None  # SMILES: no text kept in the plan
    direct = {r.molecule_index: r for r in read_molecules(smi, n_conformers=0)}
    seen = []
    for shard in plan.shards:
        for it in shard.items:
            rec = direct[it.molecule_index]
            assert (it.raw, it.status, it.message, it.smiles, it.name, it.format) == (
                rec.raw,
                int(rec.status),
                rec.message,
                rec.smiles,
                rec.name,
                "smiles",
            )
            seen.append(it.molecule_index)
    assert sorted(seen) == sorted(direct)
    statuses = {Status(direct[i].status) for i in seen}
    assert {Status.OK, Status.INVALID_INPUT, Status.UNSUPPORTED_ELEMENT} <= statuses
    assert {Status.ODD_ELECTRONS, Status.TOO_LARGE} <= statuses


def test_plan_json_is_streamed_as_json_dumps_writes_it(smi, tmp_path):
    for options in (dict(shard_size=3), dict(limit=1)):
        plan = make_plan(smi, GenerateOptions(**options))
        out = tmp_path / "plan.json"
        assert plan.write_json(out) == plan.plan_hash
        assert out.read_text() == json.dumps(plan.to_json(), indent=1, sort_keys=True) + "\n"
    empty = tmp_path / "empty.smi"
    empty.write_text("# nothing\n\n")
    plan = make_plan(empty, GenerateOptions())
    assert plan.n_shards == 0 and plan.write_json(out) == json_digest(
        dict(options_hash=plan.options_hash, shard_size=8, n_records=0, n_valid=0, shards=[])
    )
    assert json.loads(out.read_text())["shards"] == []


def test_validation_pool_gives_the_same_plan(smi, tmp_path):
    big = tmp_path / "big.csv"
    big.write_bytes(smi.read_bytes() * 200)  # 4,999 records, 3 chunks of the pool
    opts = GenerateOptions(shard_size=50)
    here, pool = make_plan(big, opts, processes=0), make_plan(big, opts, processes=2)
    assert here.n_records == 25 * 200 - 1  # the header is skipped once, a record after that
    assert pool.to_json() == here.to_json()
    assert np.array_equal(pool.shard_cost, here.shard_cost)


def test_a_changed_input_is_refused_when_a_shard_is_submitted(smi):
    plan = make_plan(smi, GenerateOptions(shard_size=4))
    assert plan.shards[0].items  # unchanged: fine
    smi.write_bytes(smi.read_bytes().replace(b"CCO,ethanol", b"CCN,ethanol"))
    with pytest.raises(InputChangedError, match="changed while qmgen generate was running"):
        for shard in plan.shards:
            shard.items  # noqa: B018 - made on access


SMILES_CASES = [
    "CCO",
    "c1ccccc1",
    "[NH4+]",
    "CC(=O)[O-]",
    "[2H]C",
    "[13CH4]",
    "[H][H]",
    "[H]",
    "C[O]",
    "[CH2]",
    "[Si](C)C",
    "Cl",
    "C(C)(C)(C)(C)C",
    "c1cccc1",
    "C1CC",
    "xx",
    "",
    "C" * 70,
    "C" * 2000,
    "[C@H](F)(Cl)Br",
    "O=[N+]([O-])c1ccccc1",
    "[Na+].[Cl-]",
    "*C",
    "C.C",
    "F[B-](F)(F)F",
    "[O-2]",
    "N1C=CC=C1",
    "[nH]1cccc1",
    "OO",
    "[He]",
]


def test_smiles_status_is_smiles_records(smi):
    """One parse gives smiles_record's status and the formula of the molecule with H."""
    chem = ChemOptions(n_conformers=0)
    for text in SMILES_CASES:
        status, formula = smiles_status(text, chem)
        rec = smiles_record(text, options=chem)
        assert status == int(rec.status), text
        if rec.ok:
            mol = Chem.AddHs(Chem.MolFromSmiles(rec.smiles))
            assert formula_atoms(formula) == sorted(a.GetAtomicNum() for a in mol.GetAtoms())
        else:
            assert formula is None
    other = ChemOptions(n_conformers=0, elements="HCNOFClBSi", max_atoms=8)
    cases = ("Cl", "CCCC", "[SiH4]", "[Si](C)C")
    expected = [Status.OK, Status.TOO_LARGE, Status.OK, Status.ODD_ELECTRONS]
    assert [smiles_status(t, other)[0] for t in cases] == expected
    assert [smiles_record(t, options=other).status for t in cases] == expected


def test_xyz_input_keeps_its_items(tmp_path):
    from qmgen.chem import smiles_to_molecules

    frames = [smiles_to_molecules(s)[0].to_xyz(s) for s in ("CCO", "C", "CCCC", "O")]
    xyz = tmp_path / "in.xyz"
    xyz.write_text("".join(frames) + "1\nbroken frame\nQ 0 0 0\n")
    plan = make_plan(xyz, GenerateOptions(shard_size=2))
    assert [s.molecule_indices for s in plan.shards] == [[3, 1], [0, 2], [4]]
    direct = {r.molecule_index: r for r in read_molecules(xyz, n_conformers=0)}
    for it in (it for s in plan.shards for it in s.items):
        assert it.raw == direct[it.molecule_index].raw and it.format == "xyz"


def test_plan_columns_are_compact(smi, tmp_path):
    big = tmp_path / "big.csv"
    big.write_bytes(smi.read_bytes() * 50)
    plan = make_plan(big, GenerateOptions(shard_size=10))
    assert plan.records.nbytes / plan.n_records == 33  # bytes per record
    assert plan.bounds.dtype == np.int64 and len(plan.bounds) == plan.n_shards + 1
    assert len(plan.shape_keys) < 20  # shapes are ids into a small table


def test_submission_order_is_by_cost_then_id(smi):
    plan = make_plan(smi, GenerateOptions(shard_size=2))
    todo = np.array([s.shard_id for s in plan.shards if s.shard_id != 1])
    expected = sorted(todo.tolist(), key=lambda i: (-plan.shards[i].cost, i))
    assert submission_order(plan, todo).tolist() == expected
    assert plan.shards[-1].cost == 0.0 and plan.shards[0].cost > 0


def test_a_deleted_input_is_refused_when_a_shard_is_submitted(smi):
    plan = make_plan(smi, GenerateOptions(shard_size=4))
    smi.unlink()
    with pytest.raises(InputChangedError, match="cannot be read any more"):
        plan.shards[0].items  # noqa: B018 - made on access


def test_the_index_is_built_from_the_streamed_manifest(tmp_path):
    """A resumed run's index: the entry checked or committed last per shard, streamed;
    a superseded line naming another file is passed over."""
    from qmgen.pipeline.run import generate
    from qmgen.storage import manifest as mf
    from qmgen.storage.table import shard_relpath

    inp = tmp_path / "bad.smi"
    inp.write_text("C1CC a\nXx1 b\n[CH3] c\n[Si] d\n[NH4] e\nxx f\n")
    out = tmp_path / "ds"
    first = generate(inp, out, workers=1, progress=False, shard_size=2)
    assert first["complete"] and first["n_shards"] == 3 and first["n_failures"] == 6
    entries = mf.read_manifest(out)
    stale = dict(entries[0], file=shard_relpath(1))  # shard 0's line, another shard's file
    with open(out / mf.MANIFEST_NAME, "a") as fh:
        fh.write(json.dumps(stale) + "\n")
    (out / mf.INDEX_NAME).unlink()
    again = generate(inp, out, workers=1, progress=False, shard_size=2)
    assert again["n_shards_computed"] == 1 and again["n_shards_skipped"] == 2
    index = mf.read_index(out)
    assert index["n_shards"] == 3 and index["n_failures"] == 6 and index["n_rows"] == 0
    assert [s["file"] for s in index["table"]] == [shard_relpath(i) for i in range(3)]
    assert index["attrs"]["devices"] == [mf.read_manifest(out)[-1]["device"]]
