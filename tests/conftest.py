import os

# Tests compile many small programs: LLVM's cheaper optimisation level halves XLA compile
# time on CPU and changes no result beyond rounding (QMGEN_TEST_XLA_FLAGS overrides).
os.environ.setdefault(
    "XLA_FLAGS", os.environ.get("QMGEN_TEST_XLA_FLAGS", "--xla_backend_optimization_level=0")
)

import pytest  # noqa: E402
from molecules import (  # noqa: E402
    AMMONIA,
    AMMONIUM,
    FORMALDEHYDE,
    METHANE,
    NINE_HEAVY,
    SCF_LARGE,
    WATER,
)

from qmgen import Molecule  # noqa: E402
from qmgen.dft.precision import x64  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _float64_kernels():
    """Tests call internal kernels directly, which the public entry points would wrap in
    ``x64``; one context for the session (session fixtures included) does the same.
    test_layout.py checks in fresh processes that the public API needs no such help."""
    with x64():
        yield


@pytest.fixture(scope="session")
def water():
    return Molecule.from_xyz(WATER)


@pytest.fixture(scope="session")
def ammonia():
    return Molecule.from_xyz(AMMONIA)


@pytest.fixture(scope="session")
def formaldehyde():
    return Molecule.from_xyz(FORMALDEHYDE)


@pytest.fixture(scope="session")
def ammonium():
    return Molecule.from_xyz(AMMONIUM, charge=1)


@pytest.fixture(scope="session")
def methane():
    return Molecule.from_xyz(METHANE)


def embed(smiles: str) -> Molecule:
    from qmgen.chem import smiles_to_molecules

    return smiles_to_molecules(smiles, seed=0)[0]


@pytest.fixture(scope="session")
def nine_heavy():
    return embed(NINE_HEAVY)


@pytest.fixture(scope="session")
def scf_large():
    return [embed(s) for s in SCF_LARGE]


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Drop JAX's in-memory compiled programs after each test module.

    XLA:CPU maps each loaded executable's code into its own memory regions and keeps them
    while JAX's caches hold the program. One pytest process compiles several hundred SCF
    programs; without this the process passes Linux's ``vm.max_map_count`` (65530 maps)
    after about 365 tests, and the next compile segfaults or aborts when mmap fails.
    Programs a later module needs again come back from the persistent cache."""
    yield
    import gc

    import jax

    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session", autouse=True)
def _compile_cache(tmp_path_factory):
    """One persistent XLA cache per test session (shared with subprocesses)."""
    if "QMGEN_CACHE_DIR" not in os.environ:
        os.environ["QMGEN_CACHE_DIR"] = str(tmp_path_factory.mktemp("xla-cache"))
    yield
