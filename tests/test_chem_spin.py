"""Open-shell input (issue 15): spin 2S from SMILES radicals, XYZ comments and SD files.

Real RDKit, no mocks. Expected spins and electron counts are counted by hand in the
tables below (electrons = sum of Z, hydrogens included, minus the net charge), not taken
from the code under test; the parity rule (N - 2S) even is checked on every success.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402
from rdkit.Chem import rdDistGeom  # noqa: E402

from qmgen.chem import (  # noqa: E402
    ChemError,
    ChemOptions,
    InputRecord,
    conformer_seed,
    iter_xyz,
    read_molecules,
    smiles_record,
)
from qmgen.chem.readers import parse_xyz_comment, parse_xyz_keys  # noqa: E402
from qmgen.chem.records import OPEN_SHELL_HINT, failure  # noqa: E402
from qmgen.chem.smiles import molecule_spin  # noqa: E402
from qmgen.status import Status  # noqa: E402

BOHR_PER_ANGSTROM = 1 / 0.52917721092
OPEN = ChemOptions(open_shell=True)
HINT = "pass --open-shell to compute it with UKS"

# SMILES, hand-counted electrons, expected 2S (high spin), net charge
RADICALS = [
    ("[CH3]", 6 + 3, 1, 0),  # methyl, doublet
    ("[CH2]", 6 + 2, 2, 0),  # methylene, triplet
    ("[O][O]", 8 + 8, 2, 0),  # triplet O2
    ("C=C[CH2]", 3 * 6 + 5, 1, 0),  # allyl, doublet
    ("[NH3+]", 7 + 3 - 1, 1, 1),  # ammonia radical cation
    ("[OH]", 8 + 1, 1, 0),  # hydroxyl
    ("[CH]", 6 + 1, 3, 0),  # methylidyne, quartet (high spin)
    ("[N]=O", 7 + 8, 1, 0),  # nitric oxide
    ("O=[N+][O-]", 7 + 16, 1, 0),  # NO2
    # 9 heavy atoms: 1-acetylpiperidin-3-yl radical, C7H12NO
    ("CC(=O)N1CCC[CH]C1", 7 * 6 + 12 + 7 + 8, 1, 0),
]
CLOSED = [
    ("CCO", 2 * 6 + 8 + 6),
    ("O=O", 16),
    ("[NH4+]", 7 + 4 - 1),
    ("O=Cc1ccncc1F", 6 * 6 + 4 + 9 + 7 + 8),
]


def _check_spin_consistency(rec: InputRecord, n_electrons: int, spin: int):
    assert rec.ok, rec
    assert rec.spin == spin
    assert (n_electrons - spin) % 2 == 0  # the parity rule, on the hand counts
    assert rec.conformers
    for mol in rec.conformers:
        assert mol.spin == rec.spin
        assert mol.charge == rec.charge
        assert mol.n_electrons == n_electrons
        assert mol.n_alpha - mol.n_beta == spin


# ----------------------------------------------------------------------------- options/records
def test_options_and_record_fields():
    assert ChemOptions().open_shell is False
    assert ChemOptions(open_shell=1).open_shell is True
    with pytest.raises(ValueError, match="open_shell"):
        ChemOptions(open_shell="yes")
    assert ChemOptions.make(OPEN, n_conformers=2).open_shell is True
    rec = failure(3, Status.TOO_LARGE, "too big", spin=2, charge=1)
    assert rec.spin == 2 and rec.charge == 1 and not rec.ok
    assert "spin=2" in repr(rec)
    assert "spin" not in repr(failure(3, Status.TOO_LARGE, "too big"))
    assert InputRecord(0, Status.OK).spin == 0


# ----------------------------------------------------------------------------- SMILES
@pytest.mark.parametrize("smiles,n_electrons,spin,charge", RADICALS)
def test_smiles_radical_spin_is_the_radical_electron_count(smiles, n_electrons, spin, charge):
    rec = smiles_record(smiles, options=OPEN)
    assert rec.charge == charge
    _check_spin_consistency(rec, n_electrons, spin)
    assert f"spin={spin}" in repr(rec)


@pytest.mark.parametrize("smiles,n_electrons", CLOSED)
def test_closed_shell_smiles_get_spin_zero_and_the_same_positions(smiles, n_electrons):
    closed = smiles_record(smiles, n_conformers=3, seed=5)
    opened = smiles_record(smiles, n_conformers=3, seed=5, open_shell=True)
    for rec in (closed, opened):
        _check_spin_consistency(rec, n_electrons, 0)
    assert opened.smiles == closed.smiles and opened.n_conformers == closed.n_conformers
    for a, b in zip(opened.conformers, closed.conformers, strict=True):
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.z, b.z)


def test_radical_geometry_is_plain_etkdg():
    """The spin is carried, not used: positions are RDKit's ETKDGv3 with the usual seed."""
    rec = smiles_record("C=C[CH2]", seed=3, options=OPEN)
    canonical = Chem.MolToSmiles(Chem.MolFromSmiles("C=C[CH2]"))
    assert rec.smiles == canonical
    mh = Chem.AddHs(Chem.MolFromSmiles("C=C[CH2]"))
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = conformer_seed(canonical, 3)
    params.numThreads = 1
    assert rdDistGeom.EmbedMolecule(mh, params) == 0
    ref = mh.GetConformer().GetPositions() * BOHR_PER_ANGSTROM
    assert np.allclose(rec.conformers[0].positions, ref, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "smiles,words",
    [
        ("[CH3]", "odd electron count (9 electrons"),
        ("C=C[CH2]", "odd electron count (23 electrons"),
        ("[CH2]", "radical"),
        ("[O][O]", "radical"),
        ("CC(=O)N1CCC[CH]C1", "odd electron count (69 electrons"),
    ],
)
def test_closed_shell_mode_still_refuses_radicals_with_the_hint(smiles, words):
    rec = smiles_record(smiles)
    assert rec.status == Status.ODD_ELECTRONS
    assert words in rec.message and "only closed-shell molecules are computed" in rec.message
    assert rec.message.endswith(HINT) and OPEN_SHELL_HINT == HINT
    assert rec.spin == 0 and rec.conformers == ()


def test_smiles_failures_in_open_shell_mode():
    assert smiles_record("[NH4]", options=OPEN).status == Status.INVALID_INPUT  # N valence 4
    assert smiles_record("[H+]", options=OPEN).status == Status.INVALID_INPUT  # no electrons
    big = smiles_record("CC(=O)N1CCC[CH]C1", max_atoms=10, open_shell=True)
    assert big.status == Status.TOO_LARGE and big.spin == 1  # spin known before the size check


def test_radical_count_with_the_wrong_parity_is_invalid_input():
    mol = Chem.MolFromSmiles("[CH3]")  # 9 electrons
    mol.GetAtomWithIdx(0).SetNumRadicalElectrons(2)  # RDKit would never do this itself
    with pytest.raises(ChemError) as err:
        molecule_spin(mol, OPEN, "test molecule")
    assert err.value.status == Status.INVALID_INPUT
    assert "2 radical electrons" in err.value.message and "9 electrons" in err.value.message


def test_smiles_file_mixing_open_and_closed_shells(tmp_path):
    path = tmp_path / "mixed.smi"
    path.write_text("CCO ethanol\n[CH3] methyl\n[O][O] oxygen\nC1CC broken\n")
    opened = list(read_molecules(path, open_shell=True))
    assert [(r.status, r.spin) for r in opened] == [
        (Status.OK, 0),
        (Status.OK, 1),
        (Status.OK, 2),
        (Status.INVALID_INPUT, 0),
    ]
    closed = list(read_molecules(path))
    assert [r.status for r in closed] == [
        Status.OK,
        Status.ODD_ELECTRONS,
        Status.ODD_ELECTRONS,
        Status.INVALID_INPUT,
    ]
    assert np.array_equal(opened[0].conformers[0].positions, closed[0].conformers[0].positions)


# ----------------------------------------------------------------------------- XYZ
METHYL = """C 0.0 0.0 0.0
H 1.079 0.0 0.0
H -0.5395 0.9344 0.0
H -0.5395 -0.9344 0.0"""
O2 = """O 0.0 0.0 0.0
O 0.0 0.0 1.21"""
WATER = """O 0.0 0.0 0.0
H 0.0 0.757 0.586
H 0.0 -0.757 0.586"""


def _frame(body: str, comment: str) -> str:
    return f"{len(body.splitlines())}\n{comment}\n{body}\n"


def _xyz(body: str, comment: str, **options) -> InputRecord:
    (rec,) = list(iter_xyz(_frame(body, comment), **options))
    return rec


def test_xyz_comment_keys():
    keys = parse_xyz_keys("methyl, charge=0, spin=1")
    assert (keys.charge, keys.spin, keys.multiplicity, keys.name) == (0, 1, None, "methyl")
    keys = parse_xyz_keys("Multiplicity: 3 triplet O2 CHARGE=-1")
    assert (keys.charge, keys.spin, keys.multiplicity, keys.name) == (-1, None, 3, "triplet O2")
    assert parse_xyz_keys("spinach=2 soup") == (0, None, None, "spinach=2 soup")
    assert parse_xyz_comment("hydronium charge=+1 spin=0") == (1, "hydronium")


# comment, body, hand-counted electrons, expected 2S
XYZ_OK = [
    ("methyl", METHYL, 9, 1),  # odd count: doublet by default
    ("methyl spin=1", METHYL, 9, 1),
    ("methyl multiplicity=2", METHYL, 9, 1),
    ("methyl spin=1 multiplicity=2", METHYL, 9, 1),
    ("methyl spin=3", METHYL, 9, 3),  # quartet: allowed, parity right
    ("O2", O2, 16, 0),  # even count without a key: singlet
    ("O2 multiplicity=3", O2, 16, 2),
    ("O2 spin=2", O2, 16, 2),
    ("water charge=1", WATER, 9, 1),  # charged doublet
    ("water spin=0", WATER, 10, 0),
]


@pytest.mark.parametrize("comment,body,n_electrons,spin", XYZ_OK)
def test_xyz_spin_in_open_shell_mode(comment, body, n_electrons, spin):
    rec = _xyz(body, comment, open_shell=True, xyz_smiles=False)
    _check_spin_consistency(rec, n_electrons, spin)
    assert rec.name == comment.split()[0]
    closed = list(iter_xyz(_frame(body, comment.split()[0]), xyz_smiles=False))[0]
    if closed.ok:  # the given geometry is kept as is in both modes
        assert np.array_equal(closed.conformers[0].positions, rec.conformers[0].positions)


@pytest.mark.parametrize(
    "comment,body,words",
    [
        ("methyl spin=1 multiplicity=3", METHYL, "disagree"),
        ("methyl spin=2", METHYL, "impossible with 9 electrons"),
        ("methyl spin=0", METHYL, "impossible with 9 electrons"),
        ("O2 multiplicity=2", O2, "impossible with 16 electrons"),
        ("O2 spin=18", O2, "impossible with 16 electrons"),
        ("O2 spin=-2", O2, "negative"),
        ("O2 multiplicity=0", O2, "below 1"),
        ("proton charge=1", "H 0 0 0", "no electrons"),
    ],
)
@pytest.mark.parametrize("open_shell", [True, False])
def test_inconsistent_xyz_spin_is_invalid_input(comment, body, words, open_shell):
    rec = _xyz(body, comment, open_shell=open_shell)
    assert rec.status == Status.INVALID_INPUT, rec
    assert words in rec.message and rec.message.startswith("XYZ frame 0:")
    assert rec.spin == 0 and rec.conformers == ()


def test_xyz_closed_shell_mode():
    rec = _xyz(METHYL, "methyl")
    assert rec.status == Status.ODD_ELECTRONS
    assert "odd electron count (9 electrons, charge 0)" in rec.message
    assert rec.message.endswith(HINT)
    rec = _xyz(O2, "O2 spin=2")
    assert rec.status == Status.ODD_ELECTRONS
    assert "spin=2 given: an open-shell molecule" in rec.message and rec.message.endswith(HINT)
    rec = _xyz(O2, "O2 multiplicity=3")
    assert rec.status == Status.ODD_ELECTRONS and "multiplicity=3 given" in rec.message
    rec = _xyz(WATER, "water spin=0 multiplicity=1")
    assert rec.ok and rec.spin == 0 and rec.name == "water" and rec.smiles == "O"


def test_nine_heavy_atom_doublet_cation_from_xyz():
    neutral = smiles_record("O=Cc1ccncc1F", seed=0)
    xyz = neutral.conformers[0].to_xyz("cation charge=1")
    rec = _xyz_text(xyz, open_shell=True)
    _check_spin_consistency(rec, 6 * 6 + 4 + 9 + 7 + 8 - 1, 1)
    assert rec.charge == 1 and rec.name == "cation"
    assert np.allclose(rec.conformers[0].positions, neutral.conformers[0].positions, atol=1e-9)
    assert _xyz_text(xyz).status == Status.ODD_ELECTRONS


def _xyz_text(text: str, **options) -> InputRecord:
    (rec,) = list(iter_xyz(text, **options))
    return rec


# ----------------------------------------------------------------------------- SDF
def _block(smiles: str, name: str, props: dict | None = None, three_d: bool = True) -> str:
    mol = Chem.MolFromSmiles(smiles)
    if three_d:
        mol = Chem.AddHs(mol)
        assert rdDistGeom.EmbedMolecule(mol, randomSeed=11) == 0
    mol.SetProp("_Name", name)
    text = Chem.MolToMolBlock(mol)
    for key, value in (props or {}).items():
        text += f">  <{key}>\n{value}\n\n"
    return text + "$$$$\n"


def _sdf(tmp_path, blocks: list[str], **options) -> list[InputRecord]:
    path = tmp_path / "mols.sdf"
    path.write_text("".join(blocks))
    return list(read_molecules(path, **options))


def test_sdf_radicals_and_spin_properties(tmp_path):
    blocks = [
        _block("[CH3]", "methyl"),  # M  RAD: doublet
        _block("[CH2]", "methylene"),  # M  RAD: triplet (2 radical electrons)
        _block("O=O", "oxygen", {"multiplicity": "3"}),  # closed-shell structure + property
        _block("O=O", "singlet oxygen"),
        _block("CCO", "ethanol", {"Spin": "0"}),
        _block("[CH3]", "methyl 2D", three_d=False),  # embedded with ETKDG
        _block("O=O", "bad", {"spin": "two"}),
        _block("O=O", "inconsistent", {"spin": "2", "multiplicity": "2"}),
        _block("[CH3]", "parity", {"spin": "0"}),
        _block("[CH2]", "singlet carbene", {"spin": "0"}),  # explicit value overrides RAD
    ]
    recs = _sdf(tmp_path, blocks, n_conformers=2, open_shell=True)
    assert [r.name for r in recs][:2] == ["methyl", "methylene"]
    _check_spin_consistency(recs[0], 9, 1)
    _check_spin_consistency(recs[1], 8, 2)
    _check_spin_consistency(recs[2], 16, 2)
    assert "RDKit found 0 radical electrons" in recs[2].message
    _check_spin_consistency(recs[3], 16, 0)
    _check_spin_consistency(recs[4], 26, 0)
    _check_spin_consistency(recs[5], 9, 1)
    assert recs[5].n_conformers == 2
    assert recs[6].status == Status.INVALID_INPUT and "must be an integer" in recs[6].message
    assert recs[7].status == Status.INVALID_INPUT and "disagree" in recs[7].message
    assert (
        recs[8].status == Status.INVALID_INPUT and "impossible with 9 electrons" in recs[8].message
    )
    _check_spin_consistency(recs[9], 8, 0)
    # the given 3-D geometry is kept, in Bohr
    ref = Chem.MolFromMolBlock(blocks[0], removeHs=False).GetConformer().GetPositions()
    assert np.allclose(recs[0].conformers[0].positions, ref * BOHR_PER_ANGSTROM)

    closed = _sdf(tmp_path, blocks, n_conformers=2)
    statuses = [r.status for r in closed]
    assert statuses[:6] == [
        Status.ODD_ELECTRONS,
        Status.ODD_ELECTRONS,
        Status.ODD_ELECTRONS,
        Status.OK,
        Status.OK,
        Status.ODD_ELECTRONS,
    ]
    assert statuses[6:9] == [Status.INVALID_INPUT] * 3
    assert statuses[9] == Status.ODD_ELECTRONS  # a radical in the structure: as today
    assert all(r.message.endswith(HINT) for r in closed if r.status == Status.ODD_ELECTRONS)
    assert "SD property multiplicity=3 given: an open-shell molecule" in closed[2].message
    assert all(r.spin == 0 for r in closed)
    for a, b in zip(recs[3:5], closed[3:5], strict=True):
        assert np.array_equal(a.conformers[0].positions, b.conformers[0].positions)


def test_spin_beyond_what_a_dataset_stores_is_refused():
    from qmgen.chem.records import MAX_SPIN, ChemError, given_spin

    assert given_spin(MAX_SPIN, None, 300, 0, "frame")[0] == MAX_SPIN
    with pytest.raises(ChemError, match="above the 254 unpaired electrons"):
        given_spin(MAX_SPIN + 2, None, 300, 0, "frame")
