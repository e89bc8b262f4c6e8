"""qmgen: GPU-accelerated generation of DFT datasets.

Public API: ``Molecule``, ``integrals``, ``compute``, ``generate``, ``open_dataset``,
``dft.nr_rks``. Every name loads on first use, so ``import qmgen`` imports neither JAX nor
PySCF and changes no global JAX setting: reading a dataset never pays for the compute
stack, and a user's own float32 JAX code keeps working. The JAX core (``qmgen.dft``)
turns on float64 only inside its own calls (``qmgen.dft.precision.x64``).
"""

__version__ = "0.1.0"

__all__ = ["Molecule", "MoleculeError", "integrals", "compute", "generate", "open_dataset", "dft"]


def __getattr__(name):
    if name in ("Molecule", "MoleculeError"):
        from qmgen import molecule

        return getattr(molecule, name)
    if name == "integrals":
        from qmgen.dft.integrals.api import integrals

        return integrals
    if name == "compute":
        from qmgen.dft.engine import compute

        return compute
    if name == "open_dataset":
        from qmgen.dataset import open_dataset

        return open_dataset
    if name == "generate":
        from qmgen.pipeline.run import generate

        return generate
    if name == "dft":
        import qmgen.dft as dft

        return dft
    raise AttributeError(f"module 'qmgen' has no attribute {name!r}")
