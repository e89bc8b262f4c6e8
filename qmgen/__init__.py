"""qmgen: GPU-accelerated generation of DFT datasets.

Public API: ``Molecule``, ``integrals``, ``compute``, ``generate``, ``open_dataset``.
Heavy submodules load on first use.
"""

import jax

jax.config.update("jax_enable_x64", True)

from qmgen.integrals.api import integrals  # noqa: E402  (the function shadows the subpackage)
from qmgen.molecule import Molecule, MoleculeError  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Molecule", "MoleculeError", "integrals", "compute", "generate", "open_dataset", "dft"]


def __getattr__(name):
    if name == "compute":
        from qmgen.engine import compute

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
