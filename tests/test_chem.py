"""Chemistry input layer (qmgen.chem): readers, validation, conformers, sampler, CLI.

Real RDKit, no mocks; small molecules only so the file runs in a few seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402
from rdkit.Chem import rdDistGeom  # noqa: E402

from qmgen.chem import (  # noqa: E402
    ChemError,
    ChemOptions,
    conformer_seed,
    detect_format,
    read_molecules,
    sample_molecules,
    smiles_record,
    smiles_to_molecules,
    split_smiles_line,
)
from qmgen.status import Status  # noqa: E402

BOHR_PER_ANGSTROM = 1 / 0.52917721092
REPO = Path(__file__).resolve().parents[1]


def _by_index(records):
    out = {r.molecule_index: r for r in records}
    assert len(out) == len(records), "molecule_index must be unique"
    return out


# ----------------------------------------------------------------------------- imports
def test_import_does_not_load_rdkit():
    code = (
        "import argparse, sys\n"
        "import qmgen.chem, qmgen.chem.cli, qmgen.chem.records, qmgen.chem.readers\n"
        "import qmgen.chem.smiles, qmgen.chem.conformers, qmgen.chem.sampler\n"
        "qmgen.chem.cli.register(argparse.ArgumentParser().add_subparsers())\n"
        "assert 'rdkit' not in sys.modules, 'rdkit imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# ----------------------------------------------------------------------------- SMILES files
MIXED = [
    b"# a comment line",  # 0 skipped
    b"smiles name",  # 1 header, skipped
    b"CCO ethanol",  # 2 ok
    b"C1CC broken_ring",  # 3 invalid
    b"",  # 4 blank, skipped
    b"[Si] silicon",  # 5 unsupported
    b"CCCl chloroethane",  # 6 unsupported (Cl not allowed by default)
    b"[CH3] methyl",  # 7 odd electrons
    b"[CH2] methylene",  # 8 diradical, even count
    b"   ",  # 9 blank, skipped
    b"C" * 66 + b" hexahexacontane",  # 10 200 atoms
    b"\x00\xff\xfe\x89PNG junk",  # 11 binary
    b"N#N.[Na+] salt",  # 12 unsupported Na
    b"c1cccc1 bad_aromatic",  # 13 kekulize failure
    b"[NH4+],ammonium,extra",  # 14 ok, charge +1, csv
    b",no_smiles",  # 15 empty SMILES field
    b"C(C(C open_paren",  # 16 invalid
    b"\t[O-]C methoxide",  # 17 ok, charge -1
]
EXPECTED = {
    2: (Status.OK, ""),
    3: (Status.INVALID_INPUT, "unclosed ring"),
    5: (Status.UNSUPPORTED_ELEMENT, "Si"),
    6: (Status.UNSUPPORTED_ELEMENT, "Cl"),
    7: (Status.ODD_ELECTRONS, "odd electron count (9 electrons"),
    8: (Status.ODD_ELECTRONS, "radical"),
    10: (Status.TOO_LARGE, "200 atoms"),
    11: (Status.INVALID_INPUT, "binary"),
    12: (Status.UNSUPPORTED_ELEMENT, "Na"),
    13: (Status.INVALID_INPUT, "kekulize"),
    14: (Status.OK, ""),
    15: (Status.INVALID_INPUT, "empty SMILES"),
    16: (Status.INVALID_INPUT, "parenthes"),
    17: (Status.OK, ""),
}


def test_smiles_file_accounts_for_every_line(tmp_path):
    path = tmp_path / "mixed.smi"
    path.write_bytes(b"\n".join(MIXED) + b"\n")
    records = _by_index(list(read_molecules(path)))
    assert set(records) == set(EXPECTED)  # every non-blank, non-comment line, once
    for i, (status, words) in EXPECTED.items():
        rec = records[i]
        assert rec.status == status, (i, rec)
        assert words.lower() in rec.message.lower(), (i, rec.message)
        assert rec.ok == (status == Status.OK)
        assert bool(rec.conformers) == rec.ok
        assert rec.raw  # raw input kept for failures (and successes)
    assert records[2].name == "ethanol" and records[2].smiles == "CCO"
    assert records[14].name == "ammonium" and records[14].charge == 1
    assert records[14].conformers[0].charge == 1
    assert records[17].charge == -1 and records[17].smiles == "C[O-]"
    assert records[10].smiles  # canonical SMILES known even though too large
    assert "\\x" in records[11].raw  # undecodable bytes escaped, not dropped
    mol = records[2].conformers[0]
    assert mol.name == "ethanol" and mol.n_atoms == 9 and mol.n_electrons % 2 == 0
    # the allowed element set and the size limit are configurable
    assert smiles_record("CCCl", elements="HCNOFCl").ok
    assert smiles_record("C" * 66, max_atoms=200, n_conformers=0).ok


def test_split_smiles_line_and_formats():
    assert split_smiles_line("CCO ethanol") == ("CCO", "ethanol")
    assert split_smiles_line("CCO\tethyl alcohol") == ("CCO", "ethyl alcohol")
    assert split_smiles_line('"CCO","ethanol",46.07') == ("CCO", "ethanol")
    assert split_smiles_line("CCO") == ("CCO", "")
    assert detect_format("a.smi") == detect_format("a.CSV") == detect_format("a.txt") == "smiles"
    assert detect_format("a.xyz") == "xyz" and detect_format("a.sdf") == "sdf"
    assert detect_format("a.dat", format="xyz") == "xyz"
    with pytest.raises(ValueError, match="extension"):
        detect_format("a.dat")
    with pytest.raises(ValueError, match="valid: smiles, xyz, sdf"):
        detect_format("a.smi", format="pdb")
    with pytest.raises(ValueError, match="'none', 'mmff', 'uff'"):
        ChemOptions(optimize="gaff")
    assert ChemOptions(elements="H,C,Cl").elements == {"H", "C", "Cl"}


def test_csv_bom_crlf_and_binary_files(tmp_path):
    csv = tmp_path / "in.csv"
    csv.write_bytes(b"\xef\xbb\xbfSMILES,Name\r\nCCO,ethanol\r\n\r\nC=O,formaldehyde\r\n")
    recs = list(read_molecules(csv, n_conformers=0))
    assert [(r.molecule_index, r.name, r.ok) for r in recs] == [
        (1, "ethanol", True),
        (3, "formaldehyde", True),
    ]
    junk = bytes(range(256)) * 4
    (tmp_path / "junk.sdf").write_bytes(junk)
    recs = list(read_molecules(tmp_path / "junk.sdf"))
    assert recs and all(r.status == Status.INVALID_INPUT for r in recs)
    assert all("binary" in r.message for r in recs)
    (tmp_path / "junk.xyz").write_bytes(junk)
    recs = list(read_molecules(tmp_path / "junk.xyz"))
    assert recs and all(r.status == Status.INVALID_INPUT for r in recs)
    (tmp_path / "junk.smi").write_bytes(junk)
    recs = list(read_molecules(tmp_path / "junk.smi"))
    assert recs and all(r.status == Status.INVALID_INPUT for r in recs)


# ----------------------------------------------------------------------------- conformers
def _positions(rec):
    return [m.positions for m in rec.conformers]


def test_conformers_reproducible_and_seeded():
    kwargs = dict(n_conformers=3, seed=7)
    a = smiles_record("CC(=O)Nc1ccccc1O", **kwargs)
    b = smiles_record("CC(=O)Nc1ccccc1O", options=ChemOptions(**kwargs))
    assert a.ok and a.n_conformers == 3
    for x, y in zip(_positions(a), _positions(b), strict=True):
        assert np.array_equal(x, y)
    assert not np.allclose(a.conformers[0].positions, a.conformers[1].positions)
    c = smiles_record("CC(=O)Nc1ccccc1O", n_conformers=3, seed=8)
    assert not np.allclose(a.conformers[0].positions, c.conformers[0].positions)
    assert conformer_seed("CCO", 0) == conformer_seed("CCO", 0) != conformer_seed("CCO", 1)
    # a fresh process gives the same coordinates
    digest = hashlib.sha256(b"".join(p.tobytes() for p in _positions(a))).hexdigest()
    code = (
        "import hashlib\n"
        "from qmgen.chem import smiles_record\n"
        "r = smiles_record('CC(=O)Nc1ccccc1O', n_conformers=3, seed=7)\n"
        "print(hashlib.sha256(b''.join(m.positions.tobytes() for m in r.conformers)).hexdigest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO
    )
    assert out.stdout.strip() == digest


def test_n_conformers_pruning_optimization_and_atom_order():
    rec = smiles_record("OCCCCC", n_conformers=4)
    assert rec.n_conformers == 4 and rec.message == ""
    mol = rec.conformers[0]
    assert mol.z.tolist() == [8, 6, 6, 6, 6, 6] + [1] * 12  # SMILES order, then H
    pruned = smiles_record("OCCCCC", n_conformers=4, prune_rms=50.0)
    assert pruned.n_conformers == 1 and "pruning" in pruned.message
    relaxed = smiles_record("OCCCCC", n_conformers=2, optimize="mmff")
    again = smiles_record("OCCCCC", n_conformers=2, optimize="mmff")
    assert relaxed.ok and np.array_equal(
        relaxed.conformers[1].positions, again.conformers[1].positions
    )
    assert not np.allclose(relaxed.conformers[0].positions, rec.conformers[0].positions)
    only_validate = smiles_record("OCCCCC", n_conformers=0)
    assert only_validate.ok and only_validate.conformers == ()
    assert len(smiles_to_molecules("C=O", n_conformers=2)) >= 1
    with pytest.raises(ChemError) as err:
        smiles_to_molecules("[CH3]")
    assert err.value.status == Status.ODD_ELECTRONS


def test_positions_are_bohr():
    rec = smiles_record("CCO", seed=3)
    mh = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = conformer_seed("CCO", 3)
    params.numThreads = 1
    assert rdDistGeom.EmbedMolecule(mh, params) == 0
    ang = mh.GetConformer().GetPositions()
    d_ang = np.linalg.norm(ang[1] - ang[2])  # C-O bond, Angstrom
    pos = rec.conformers[0].positions
    d_bohr = np.linalg.norm(pos[1] - pos[2])
    assert d_bohr == pytest.approx(d_ang * BOHR_PER_ANGSTROM, rel=1e-12)
    assert 2.5 < d_bohr < 2.9  # about 1.43 Angstrom


# ----------------------------------------------------------------------------- XYZ / SDF
XYZ = """3
water charge=0
O 0.0 0.0 0.0
H 0.0 0.757 0.586
H 0.0 -0.757 0.586

4
hydronium charge=+1
O 0.0 0.0 0.1
H 0.0 0.94 -0.2
H 0.81 -0.47 -0.2
H -0.81 -0.47 -0.2
2
hydroxyl radical
O 0 0 0
H 0 0 0.97
not_a_count
C 0 0 0
3
silylene
Si 0 0 0
H 0 0 1.5
H 0 1.5 0
3
truncated
O 0 0 0
"""


def test_xyz_single_and_multi_frame(tmp_path):
    single = tmp_path / "one.xyz"
    single.write_text(XYZ.split("\n\n")[0] + "\n")
    (rec,) = list(read_molecules(single))
    assert rec.ok and rec.format == "xyz" and rec.name == "water" and rec.smiles == "O"
    mol = rec.conformers[0]
    assert mol.z.tolist() == [8, 1, 1]
    assert np.allclose(mol.positions[1], np.array([0.0, 0.757, 0.586]) * BOHR_PER_ANGSTROM)

    multi = tmp_path / "many.xyz"
    multi.write_text(XYZ)
    recs = _by_index(list(read_molecules(multi)))
    assert sorted(recs) == [0, 1, 2, 3, 4, 5]
    assert recs[1].ok and recs[1].charge == 1 and recs[1].name == "hydronium"
    assert recs[1].conformers[0].charge == 1 and recs[1].smiles == "[OH3+]"
    assert recs[2].status == Status.ODD_ELECTRONS and "9 electrons" in recs[2].message
    assert recs[3].status == Status.INVALID_INPUT and "atom count" in recs[3].message
    assert recs[4].status == Status.UNSUPPORTED_ELEMENT and "Si" in recs[4].message
    assert recs[5].status == Status.INVALID_INPUT and "ends after 1" in recs[5].message
    assert all(r.raw for r in recs.values())


def _molblock(smiles: str, name: str, three_d: bool = True) -> str:
    mol = Chem.MolFromSmiles(smiles)
    if three_d:
        mol = Chem.AddHs(mol)
        assert rdDistGeom.EmbedMolecule(mol, randomSeed=11) == 0
    mol.SetProp("_Name", name)
    return Chem.MolToMolBlock(mol)


def test_sdf_reader(tmp_path):
    blocks = [
        _molblock("CCO", "ethanol"),
        "broken\n\n\n  x  y  0  0  0  0            999 V2000\nM  END\n",
        _molblock("[CH3]", "methyl"),
        _molblock("C[SiH3]", "methylsilane"),
        _molblock("CC(=O)[O-]", "acetate"),
        _molblock("OCC=O", "glycolaldehyde", three_d=False),
    ]
    path = tmp_path / "mols.sdf"
    path.write_text("".join(b + "$$$$\n" for b in blocks))
    recs = _by_index(list(read_molecules(path, n_conformers=2)))
    assert sorted(recs) == list(range(6))
    eth = recs[0]
    assert eth.ok and eth.name == "ethanol" and eth.smiles == "CCO" and eth.n_conformers == 1
    ref = Chem.MolFromMolBlock(blocks[0], removeHs=False).GetConformer().GetPositions()
    assert np.allclose(eth.conformers[0].positions, ref * BOHR_PER_ANGSTROM)
    assert recs[1].status == Status.INVALID_INPUT and "SDF block 1" in recs[1].message
    assert recs[2].status == Status.ODD_ELECTRONS
    assert recs[3].status == Status.UNSUPPORTED_ELEMENT and "Si" in recs[3].message
    assert recs[4].ok and recs[4].charge == -1
    assert recs[5].ok and recs[5].n_conformers == 2  # 2-D block: embedded with ETKDG
    assert recs[5].conformers[0].n_atoms == 8


# ----------------------------------------------------------------------------- sampler
def test_sampler_deterministic_valid_unique():
    a = sample_molecules(30, heavy_atoms=9, elements="CNOF", seed=1)
    assert a == sample_molecules(30, heavy_atoms=9, elements="CNOF", seed=1)
    assert a != sample_molecules(30, heavy_atoms=9, elements="CNOF", seed=2)
    assert len(set(a)) == 30
    for smi in a:
        mol = Chem.MolFromSmiles(smi)
        assert mol is not None and Chem.MolToSmiles(mol) == smi
        assert mol.GetNumAtoms() == 9
        assert {at.GetSymbol() for at in mol.GetAtoms()} <= set("CNOF")
        assert Chem.GetFormalCharge(mol) == 0
        assert not any(at.GetNumRadicalElectrons() for at in mol.GetAtoms())
    recs = [smiles_record(s, seed=1) for s in a[:10]]
    assert all(r.ok for r in recs), [r for r in recs if not r.ok]
    small = sample_molecules(3, heavy_atoms=2, elements="CO", seed=0)
    assert set(small) <= {"CC", "C=C", "C#C", "CO", "C=O"}  # no O-O: unstable bonds filtered
    with pytest.raises(ValueError, match="found only 4 of 5"):
        sample_molecules(5, heavy_atoms=1, elements="CNOF", max_attempts=500)


def test_cli_sample(tmp_path, capsys):
    from qmgen.chem.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    out = tmp_path / "out.smi"
    args = parser.parse_args(
        ["sample", "-n", "5", "--heavy-atoms", "6", "--seed", "3", "-o", str(out)]
    )
    assert args.func(args) == 0
    assert out.read_text().split() == sample_molecules(5, heavy_atoms=6, seed=3)
    args = parser.parse_args(["sample", "-n", "2", "--elements", "Xq"])
    assert args.func(args) == 2
    assert "error" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bundled data
def test_bundled_molecules():
    path = REPO / "data" / "molecules.smi"
    recs = list(read_molecules(path, max_atoms=64))
    assert 100 <= len(recs) <= 160
    bad = [r for r in recs if not r.ok]
    assert not bad, bad
    heavy = [int(np.sum(r.conformers[0].z > 1)) for r in recs]
    assert max(heavy) <= 9 and min(heavy) == 1
    assert sum(h >= 7 for h in heavy) >= 0.4 * len(recs)
    assert all(r.charge == 0 and r.name for r in recs)
    assert max(Counter(r.smiles for r in recs).values()) == 1
    assert max(Counter(r.name for r in recs).values()) == 1
    for r in recs:
        assert set(r.conformers[0].symbols) <= {"H", "C", "N", "O", "F"}
