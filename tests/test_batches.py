"""Batches on accelerators: the batch-size ladder, stragglers leaving their batch, and the
batched Jacobi eigensolver inside the SCF, each against PySCF or against the molecule
computed alone (conv_tol 1e-10)."""

from functools import cache

import numpy as np
import pytest
from molecules import AMMONIUM, METHANE, WATER

import qmgen
from qmgen import Molecule
from qmgen.dft import engine
from qmgen.dft.engine import TRACE_COUNT, batch_ladder, split_batches
from qmgen.dft.reference import reference_labels
from qmgen.status import Status
from qmgen.units import HARTREE_TO_EV

KW = dict(conv_tol=1e-10, batch_size=2, min_bucket_size=3)


@cache
def small():
    return (
        Molecule.from_xyz(WATER),
        Molecule.from_xyz(AMMONIUM, charge=1),
        Molecule.from_xyz(METHANE),
    )


@cache
def ref(k):
    return reference_labels(small()[k], conv_tol=1e-10)


@cache
def run(**kw):
    return qmgen.compute(list(small()), **KW, **kw)


def test_ladder_rungs():
    assert batch_ladder(1) == (1,)
    assert batch_ladder(2) == (2,)
    assert batch_ladder(256) == (256, 64, 16, 4, 1)
    assert batch_ladder(1000) == (1000, 250, 62, 15, 3)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 256, 1000])
def test_split_covers_every_molecule_and_pads_only_the_last_call(size):
    rungs = batch_ladder(size)
    for n in range(1, 700):
        calls = split_batches(n, size)
        assert sum(real for real, _ in calls) == n
        assert all(bs in rungs for _, bs in calls)
        assert all(real == bs for real, bs in calls[:-1])  # only the last call is padded
        real, bs = calls[-1]
        assert bs - real < bs * 3 / 4 + 1  # never a whole batch of copies
    # at most one call per rung below the full batch size, so few compiled shapes
    assert len({bs for _, bs in split_batches(699, 256)}) <= len(batch_ladder(256))


def test_padding_is_bounded_not_a_full_batch():
    # 3 molecules at batch size 256: calls of 1 (x3 rung 1) instead of one 256-wide call
    assert split_batches(3, 256) == [(1, 1), (1, 1), (1, 1)]
    assert split_batches(70, 256) == [(64, 64), (4, 4), (1, 1), (1, 1)]
    assert split_batches(3, 2) == [(2, 2), (1, 2)]


@pytest.mark.parametrize("k", [0, 1, 2], ids=["water", "ammonium", "methane"])
def test_stragglers_continue_and_match_pyscf(k):
    """A cycle budget of 3 sends every molecule to the straggler pass; the continued SCF
    (from its last density, same compiled program) reaches PySCF's energy."""
    base = run()
    got = run(cycle_budget=3)[k]
    want = ref(k)
    assert got["status"] == Status.OK and got["converged"]
    assert got["n_iter"] > 3  # it really left the first pass unconverged and went on
    assert abs(got["energy"] - want["energy"]) < 1e-8
    assert np.max(np.abs(got["mo_energy"] - want["mo_energy"])) < 1e-6
    assert abs(got["energy"] - base[k]["energy"]) < 1e-9


def test_straggler_pass_reuses_the_program():
    run()
    before = dict(TRACE_COUNT)
    qmgen.compute(list(small()), **KW, cycle_budget=2)
    assert TRACE_COUNT == before  # the cycle cap is an argument, not a new program


def test_cycle_budget_never_exceeds_max_cycle():
    out = qmgen.compute(list(small()), **KW, cycle_budget=3, max_cycle=5)
    for rec in out:
        assert rec["n_iter"] <= 5
        assert rec["status"] in (Status.OK, Status.NOT_CONVERGED)


@pytest.mark.parametrize("k", [0, 1, 2], ids=["water", "ammonium", "methane"])
def test_jacobi_eigensolver_in_the_scf_matches_pyscf(k):
    """The accelerator eigensolver (batched Jacobi, warm-started) through the whole SCF."""
    got = run(eigensolver="jacobi")[k]
    want = ref(k)
    assert got["status"] == Status.OK
    assert abs(got["energy"] - want["energy"]) < 1e-8
    assert np.max(np.abs(got["mo_energy"] - want["mo_energy"])) < 1e-6
    assert abs(got["gap"] - want["gap"]) < 1e-6


def test_bad_eigensolver_is_refused():
    with pytest.raises(ValueError, match="valid: auto, lapack, jacobi"):
        qmgen.compute([small()[0]], eigensolver="qr")


@pytest.mark.parametrize("budget", [0, -3, 2.5])
def test_bad_cycle_budget_is_refused(budget):
    with pytest.raises(ValueError, match="cycle_budget must be a positive number"):
        qmgen.compute([small()[0]], cycle_budget=budget)


@pytest.fixture
def vmap_batches():
    """Force the accelerators' batching (one vmapped program) on the CPU."""
    engine.BATCHING = "vmap"
    yield
    engine.BATCHING = "auto"


def test_vmapped_batches_with_stragglers_match_pyscf(vmap_batches):
    assert engine.batching_mode() == "vmap"
    out = qmgen.compute(list(small()), **KW, cycle_budget=3)
    for k, got in enumerate(out):
        assert got["status"] == Status.OK and got["n_iter"] > 3
        assert abs(got["energy"] - ref(k)["energy"]) < 1e-8
        assert np.max(np.abs(got["mo_energy"] - ref(k)["mo_energy"])) < 1e-6


def test_float32_batches_on_cpu_finish_and_match_pyscf():
    """float32 mode with several molecules per call (on CPU a lax.map over molecules: two
    concurrent batched LAPACK eigh calls deadlock jaxlib's 2-thread CPU pool)."""
    assert engine.batching_mode() == "map"
    out = run(precision="float32")
    for k, got in enumerate(out):
        assert got["status"] == Status.OK
        # the documented float32 figures (README.md): 0.05 meV in energy, 0.3 meV in gap
        assert abs(got["energy"] - ref(k)["energy"]) * HARTREE_TO_EV < 0.05e-3
        assert abs(got["gap"] - ref(k)["gap"]) * HARTREE_TO_EV < 0.3e-3


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_converged_means_conv_tol_met(precision):
    """converged: energy change of the last cycle below conv_tol (1e-10 here) and |g| (the
    stored scf_error) below sqrt(conv_tol), in float64 on the final state."""
    for rec in run(precision=precision):
        assert rec["converged"] and rec["status"] == Status.OK, rec["message"]
        assert rec["scf_error"] < 1e-5 and abs(rec["delta_e"]) < 1e-10


def test_unknown_batching_is_refused():
    engine.BATCHING = "pmap"
    try:
        with pytest.raises(ValueError, match="valid: auto, vmap, map"):
            engine.batching_mode()
    finally:
        engine.BATCHING = "auto"


def test_a_failing_straggler_pass_gives_failure_records(monkeypatch):
    """If the continuation call raises (device error, out of memory), its molecules become
    COMPUTE_ERROR records and the others keep their labels."""
    real = engine._batched

    def flaky(settings, bucket, mode):
        fn = real(settings, bucket, mode)

        def run(batch, cycles):
            if int(np.max(cycles)) < settings.max_cycle:  # the straggler pass
                raise RuntimeError("device lost")
            return fn(batch, cycles)

        return run

    monkeypatch.setattr(engine, "_batched", flaky)
    # budget 1: every molecule goes on to the straggler pass, which raises
    out = qmgen.compute(list(small()), **KW, cycle_budget=1)
    assert all(r["status"] == Status.COMPUTE_ERROR for r in out)
    assert all("device lost" in r["message"] for r in out)


def test_map_chunks_pads_the_last_chunk_and_trims():
    """The core's one chunking helper (ERI quartets, Becke weights)."""
    from qmgen.dft.chunking import map_chunks

    x = np.arange(10.0)
    calls = []

    def square(v):
        calls.append(v.shape)
        return v * v

    np.testing.assert_array_equal(map_chunks(square, x, 4), x * x)
    np.testing.assert_array_equal(map_chunks(square, x, 16), x * x)
    assert calls == [(4,), (10,)]  # traced once per call: no separate remainder
