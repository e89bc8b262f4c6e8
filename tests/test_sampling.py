"""Issue 16, off-equilibrium sampling (``--sample rattle|nms|md``): reproducible from the
seed, the minimum-distance rule, qmgen forces whose RMS grows with the amplitude or the
temperature, and the textbook equipartition check of NMS and Langevin MD on the force
field (mean potential energy of n_vib harmonic modes at T: n_vib kT / 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import qmgen
from qmgen.chem import ChemOptions, smiles_to_molecules
from qmgen.chem.sampling import KCAL_PER_MOL_K, SampleOptions, closest_pair, sample_positions
from qmgen.chem.smiles import smiles_record
from qmgen.pipeline.options import GenerateOptions
from qmgen.status import Status
from qmgen.units import BOHR


def sampled(smiles, sample, n=3, seed=0):
    return [
        m.positions for m in smiles_to_molecules(smiles, n_conformers=n, seed=seed, sample=sample)
    ]


@pytest.mark.parametrize("method", ["rattle", "nms", "md"])
def test_same_seed_same_geometries(method):
    opts = SampleOptions(method, steps=50)
    first, again = sampled("CCO", opts), sampled("CCO", opts)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    plain = sampled("CCO", None)
    other = sampled("CCO", opts, seed=1)
    for a, p, o in zip(first, plain, other, strict=True):
        assert np.abs(a - p).max() > 1e-3  # moved off the embedded conformer
        assert np.abs(a - o).max() > 1e-3  # another seed, another draw
    assert not np.array_equal(first[0], first[1])  # conformers draw independently


def test_rattle_amplitude_and_minimum_distance():
    plain = np.concatenate(sampled("CCO", None, n=4))
    moved = np.concatenate(sampled("CCO", SampleOptions("rattle", amplitude=0.1), n=4))
    rms = np.sqrt(np.mean((moved - plain) ** 2)) * BOHR  # per coordinate, Angstrom
    assert 0.075 < rms < 0.125  # the requested standard deviation, 108 draws
    big = SampleOptions("rattle", amplitude=0.4, min_distance=0.8)
    for pos in sampled("CCO", big, n=5):
        assert closest_pair(pos * BOHR) >= 0.8
    rec = smiles_record(
        "CCO", "", 0, "CCO", ChemOptions(sample=SampleOptions("rattle", min_distance=3.0))
    )
    assert rec.status == Status.EMBED_FAILED
    assert "min_distance 3.0 Angstrom" in rec.message


def test_sample_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="unknown sample='shake'"):
        SampleOptions("shake")
    with pytest.raises(ValueError, match="amplitude"):
        GenerateOptions(sample="rattle", sample_amplitude=0)
    with pytest.raises(ValueError, match="temperature"):
        GenerateOptions(sample="md", sample_temperature=-1)
    # a run without sampling hashes as before sampling existed
    assert not {"sample", "min_distance"} & set(GenerateOptions().to_dict())
    assert GenerateOptions(sample="nms").to_dict()["sample_temperature"] == 300.0
    from molecules import WATER

    from qmgen.pipeline.plan import make_plan

    (tmp_path / "w.xyz").write_text(WATER)
    with pytest.raises(ValueError, match="XYZ frames of w.xyz are geometries given"):
        make_plan(tmp_path / "w.xyz", GenerateOptions(sample="rattle"))


def _mmff_energy(mh, pos):
    from rdkit.Chem import rdForceFieldHelpers as ff

    field = ff.MMFFGetMoleculeForceField(mh, ff.MMFFGetMoleculeProperties(mh))
    return field.CalcEnergy(pos.ravel().tolist())


@pytest.mark.parametrize("method", ["nms", "md"])
def test_equipartition_of_water_on_the_force_field(method):
    """Mean MMFF energy above the minimum of 150 draws at 300 K: 3 modes x kT/2 (both
    methods sample the Boltzmann distribution; water is nearly harmonic at 300 K)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mh = Chem.AddHs(Chem.MolFromSmiles("O"))
    AllChem.EmbedMolecule(mh, randomSeed=1)
    AllChem.MMFFOptimizeMolecule(mh, maxIters=2000)
    e_min = _mmff_energy(mh, np.asarray(mh.GetConformer().GetPositions()))
    opts = SampleOptions(method, temperature=300.0, steps=400)
    energies = [_mmff_energy(mh, sample_positions(mh, 0, opts, 7, i)) - e_min for i in range(150)]
    want = 1.5 * KCAL_PER_MOL_K * 300.0
    assert abs(np.mean(energies) / want - 1) < 0.25, (np.mean(energies), want)


def _rms_force(geometries):
    mols = [qmgen.Molecule(np.array([8, 1, 1]), p) for p in geometries]
    recs = qmgen.compute(mols, xc="hf", basis="sto-3g", forces=True)
    assert all(r["status"] == Status.OK for r in recs)
    return np.sqrt(np.mean([np.mean(r["forces"] ** 2) for r in recs]))


def test_forces_grow_with_amplitude_and_temperature():
    """qmgen HF/STO-3G forces of sampled water: RMS rises with rattle's amplitude and with
    the NMS temperature (about the force-field minimum, not HF's, hence the offset)."""
    rattle = [
        _rms_force(sampled("O", SampleOptions("rattle", amplitude=a), n=6))
        for a in (0.01, 0.05, 0.15)
    ]
    nms = [
        _rms_force(sampled("O", SampleOptions("nms", temperature=t), n=6)) for t in (50, 500, 3000)
    ]
    print("RMS forces (Ha/Bohr): rattle", rattle, "nms", nms)
    assert rattle[0] < rattle[1] < rattle[2]
    assert nms[0] < nms[1] < nms[2]


def test_generate_stores_sampled_geometries(tmp_path):
    (tmp_path / "in.smi").write_text("O water\nCO methanol\n")
    kw = dict(workers=1, progress=False, conformers=2, xc="hf")
    qmgen.generate(tmp_path / "in.smi", tmp_path / "plain", **kw)
    qmgen.generate(tmp_path / "in.smi", tmp_path / "md", sample="md", sample_steps=40, **kw)
    plain, md = qmgen.open_dataset(tmp_path / "plain"), qmgen.open_dataset(tmp_path / "md")
    assert len(plain) == len(md) == 4
    for a, b in zip(plain, md, strict=True):
        assert a["smiles"] == b["smiles"] and a["converged"] and b["converged"]
        assert np.abs(a["positions"] - b["positions"]).max() > 1e-3
    options = json.loads((tmp_path / "md" / "config.json").read_text())["options"]
    assert options["sample"] == "md" and options["sample_steps"] == 40
    assert "sample" not in json.loads((tmp_path / "plain" / "config.json").read_text())["options"]
