"""qmgen: GPU-accelerated generation of DFT datasets."""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
