"""The JAX core: basis, integrals, grids, XC, SCF, properties and the batched engine.

Nothing here imports RDKit, h5py, Dask or the CLI; geometry enters every compiled
function as an array argument. Public functions run in float64-enabled JAX
(``qmgen.dft.precision.x64``) without changing the caller's global setting.
"""

from qmgen.dft.api import nr_rks

__all__ = ["nr_rks"]
