"""Memory-bounded maps over a long leading axis: the one chunking helper of the core.

ERI quartets (``integrals.eri``) and Becke weights of grid points (``grid``) are computed
over many rows at once; a whole class or grid in one step would hold every intermediate
for every row. :func:`map_chunks` runs the row-wise function over fixed-size chunks with
``lax.map``, so memory is bounded by one chunk and the function is traced once. The last
chunk is padded with zero rows (results for them are dropped), so no second trace handles
a remainder (``lax.map(batch_size=)`` traces the function again for it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def map_chunks(fn, xs, chunk: int, checkpoint: bool = False):
    """``fn(xs)`` computed in chunks of ``chunk`` rows.

    Args:
      fn: row-wise function from a pytree of arrays with leading axis m to a pytree of
        arrays with leading axis m (row i of the output depends on row i of the input only).
      xs: pytree of arrays with a common leading axis n (NumPy arrays stay host constants).
      chunk: rows per step (static); n <= chunk calls ``fn`` once on all rows.
      checkpoint: recompute each chunk in reverse mode instead of storing its
        intermediates (``jax.checkpoint``).

    Returns ``fn``'s pytree with leading axis n.
    """
    leaves = jax.tree_util.tree_leaves(xs)
    n = leaves[0].shape[0]
    chunk = max(1, int(chunk))
    if n <= chunk:
        return fn(xs)
    nchunk = -(-n // chunk)
    pad = nchunk * chunk - n

    def split(x):
        xp = np if isinstance(x, np.ndarray) else jnp
        x = xp.concatenate([x, xp.zeros((pad,) + x.shape[1:], x.dtype)])
        return x.reshape((nchunk, chunk) + x.shape[1:])

    out = jax.lax.map(jax.checkpoint(fn) if checkpoint else fn, jax.tree_util.tree_map(split, xs))
    return jax.tree_util.tree_map(lambda y: y.reshape((nchunk * chunk,) + y.shape[2:])[:n], out)
