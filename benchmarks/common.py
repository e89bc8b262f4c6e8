"""Shared pieces of the benchmark scripts: the molecule set, the machine, timing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import jax

# Benchmarks call internal kernels, which qmgen's public functions would run inside
# qmgen.dft.precision.x64; a script may instead turn float64 on for the whole process.
jax.config.update("jax_enable_x64", True)

OUT = Path(__file__).resolve().parent / "out"

# Real molecules with 9-11 heavy atoms (C, N, O, F), the size range of QM1B (GDB-11)
MOLECULES = (
    ("OCC1OC(O)C(O)C1", "2-deoxyribose"),
    ("CC(=O)Oc1ccccc1", "phenyl acetate"),
    ("O=Cc1ccncc1F", "3-fluoroisonicotinaldehyde"),
    ("CC(N)Cc1ccccc1", "amphetamine"),
    ("OC(=O)c1ccccc1O", "salicylic acid"),
    ("CC(=O)Nc1ccc(O)cc1", "paracetamol"),
    ("Cc1ccc(cc1)C(C)C", "p-cymene"),
    ("OC(=O)CC(O)(CC(=O)O)C(=O)O", "citric acid"),
    ("CN1C=NC2=C1C(=O)NC(=O)N2", "theobromine-like purine"),
    ("NC(Cc1ccccc1)C(=O)O", "phenylalanine"),
)


def conformers(n: int | None = None, seed: int = 0):
    """RDKit conformers (qmgen.Molecule, Bohr) of the benchmark set."""
    from qmgen.chem import smiles_to_molecules

    out = []
    for smiles, name in MOLECULES[:n]:
        mol = smiles_to_molecules(smiles, seed=seed)[0]
        out.append(type(mol)(mol.z, mol.positions, mol.charge, name=name))
    return out


def machine() -> str:
    """CPU model, core count and the JAX device, for the results tables."""
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import jax

    dev = jax.devices()[0]
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()}; JAX {jax.__version__} on "
        f"{dev.platform} ({getattr(dev, 'device_kind', '')})"
    )


def median_time(fn, repeat: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeat`` calls (seconds)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table."""
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
