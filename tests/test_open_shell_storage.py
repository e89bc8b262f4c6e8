"""Open-shell labels in shards (issue 15): what a UKS row stores, checked against PySCF UKS.

Methyl (UKS) and water (RKS) are computed once with ``qmgen.compute`` (b3lyp5/sto-3g),
turned into rows as the pipeline does, written to a real HDF5 shard and read back: the
per-spin frontier orbital energies equal PySCF's alpha and beta orbital energies, the
spin populations sum to 2S and match PySCF's ``mulliken_spin_pop``, and the schema
check accepts the file and refuses mixed or misshaped open-shell rows.
"""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace

import numpy as np
import pytest
from molecules import METHYL, WATER

import qmgen
from qmgen.dft.reference import pyscf_scf
from qmgen.pipeline.task import _row
from qmgen.storage.check import check_shard
from qmgen.storage.reader import read_shard
from qmgen.storage.writer import write_shard


@cache
def computed():
    water = qmgen.Molecule.from_xyz(WATER)
    methyl = qmgen.Molecule.from_xyz(METHYL, spin=1)
    recs = qmgen.compute([water, methyl], conv_tol=1e-10)
    assert [r["status"] for r in recs] == [0, 0]
    return (water, methyl), recs


def rows(spin_labels=True):
    mols, recs = computed()
    out = []
    for i, (mol, rec) in enumerate(zip(mols, recs, strict=True)):
        record = SimpleNamespace(molecule_index=i, smiles=["O", "[CH3]"][i], name="")
        out.append(_row(record, 0, mol, dict(rec, forces=None), spin_labels))
    return out


def test_uks_row_labels_match_pyscf_per_spin():
    (water, methyl), _ = computed()
    row_w, row_m = rows()
    assert (row_w["unrestricted"], row_m["unrestricted"]) == (False, True)
    assert (row_w["multiplicity"], row_m["multiplicity"]) == (1, 2)
    mf = pyscf_scf(methyl, "sto-3g", "b3lyp5", 0, 1e-10)
    (n_a, n_b), (e_a, e_b) = mf.mol.nelec, mf.mo_energy
    assert (n_a, n_b) == (5, 4)
    for key, want in dict(
        homo_alpha=e_a[n_a - 1], lumo_alpha=e_a[n_a], homo_beta=e_b[n_b - 1], lumo_beta=e_b[n_b]
    ).items():
        assert abs(row_m[key] - want) < 1e-5, key
    np.testing.assert_allclose(row_m["mo_energy"], np.concatenate([e_a, e_b]), atol=1e-5)
    assert row_m["n_basis"] == e_a.size and row_m["mo_energy"].size == 2 * e_a.size
    assert abs(row_m["s2"] - mf.spin_square()[0]) < 1e-5
    assert abs(row_m["spin_populations"].sum() - 1.0) < 1e-8  # n_alpha - n_beta
    # water through the restricted path: alpha = beta, no spin, PySCF RKS orbitals
    mf_w = pyscf_scf(water, "sto-3g", "b3lyp5", 0, 1e-10)
    assert row_w["s2"] == 0.0 and not np.any(row_w["spin_populations"])
    assert row_w["homo_alpha"] == row_w["homo_beta"] == row_w["homo"]
    assert abs(row_w["lumo_beta"] - mf_w.mo_energy[5]) < 1e-5


def test_shard_round_trip_with_open_shell_labels(tmp_path):
    path = tmp_path / "shard.h5"
    info = write_shard(path, 0, rows(), [], {"xc": "b3lyp5"})
    assert info["n_rows"] == 2 and check_shard(path) == []
    back = read_shard(path)
    assert back["attrs"]["xc"] == "b3lyp5"
    for n_basis, want, got in zip((7, 8), rows(), back["rows"], strict=True):
        for key in ("unrestricted", "s2", "homo_alpha", "lumo_beta", "multiplicity"):
            assert got[key] == want[key], key
        assert got["n_basis"] == n_basis  # sto-3g; methyl's 16 energies are alpha + beta
        np.testing.assert_array_equal(got["mo_energy"], want["mo_energy"])
        np.testing.assert_array_equal(got["spin_populations"], want["spin_populations"])
    # closed-shell datasets keep the old layout: no open-shell datasets at all
    plain = tmp_path / "plain.h5"
    write_shard(plain, 1, rows(spin_labels=False)[:1], [], {})
    assert check_shard(plain) == []
    assert "s2" not in read_shard(plain)["rows"][0]
    import h5py

    with h5py.File(plain) as f:
        assert not f.attrs["has_spin"] and "spin_populations" not in f["atoms"]
    with h5py.File(path) as f:
        assert f.attrs["has_spin"] and f["conformers/s2"].attrs["units"] == "1"


def test_mixed_or_misshaped_open_shell_rows_are_refused(tmp_path):
    with_spin, without = rows(), rows(spin_labels=False)
    with pytest.raises(ValueError, match="open-shell labels must be given for all rows"):
        write_shard(tmp_path / "a.h5", 0, [with_spin[1], without[0]], [], {})
    bad = dict(with_spin[1], mo_energy=with_spin[1]["mo_energy"][:8])  # beta half lost
    with pytest.raises(ValueError, match="alpha then beta"):
        write_shard(tmp_path / "b.h5", 0, [bad], [], {})
    assert not list(tmp_path.iterdir())
