"""The PyTorch collate: what its docstring promises, energies in float64 by default."""

from __future__ import annotations

import numpy as np
import pytest
from test_shards import write_dataset

from qmgen import open_dataset

torch = pytest.importorskip("torch")


def test_collate_pads_orbitals_and_keeps_energies_float64(tmp_path):
    root = tmp_path / "ds"
    rows, _ = write_dataset(root)
    ds = open_dataset(root)
    picks = [0, 3, 17, 30]
    batch = ds.to_torch().collate([ds[i] for i in picks])
    k = max(len(rows[i]["mo_energy"]) for i in picks)
    assert batch["mo_energy"].shape == (len(picks), k) and batch["mo_mask"].dtype == torch.bool
    for b, i in enumerate(picks):
        n_mo = len(rows[i]["mo_energy"])
        assert batch["mo_mask"][b].sum().item() == n_mo
        np.testing.assert_allclose(
            batch["mo_energy"][b, :n_mo].numpy(), rows[i]["mo_energy"], rtol=1e-6
        )
        assert not batch["mo_energy"][b, n_mo:].any()
        # energies stay float64: equal to the stored value, bit for bit
        assert batch["energy"].dtype == torch.float64
        assert batch["energy"][b].item() == rows[i]["energy"]
        assert batch["gap"][b].item() == rows[i]["gap"]
        assert batch["charge"][b].item() == rows[i]["charge"]
    assert batch["positions"].dtype == torch.float32  # features in the default dtype
    small = ds.to_torch(energy_dtype=torch.float32).collate([ds[i] for i in picks])
    assert small["energy"].dtype == torch.float32
    assert small["energy"][0].item() == pytest.approx(rows[0]["energy"], rel=1e-7)
    with pytest.raises(ValueError, match="unsupported energy_dtype"):
        ds.to_torch(energy_dtype=torch.int32)
