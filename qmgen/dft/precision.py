"""Numerical precision of the JAX core: the two modes and the scoped float64 switch.

``import qmgen`` changes no global JAX setting. Every public entry point of the core
(``qmgen.compute``, ``qmgen.integrals``, ``qmgen.dft.nr_rks`` and the pipeline's compute
task) runs its tracing and execution inside :func:`x64`, JAX's thread-local
``enable_x64`` context: float64 work is float64, and a caller's own JAX code keeps the
default it chose (float32 unless it set ``jax_enable_x64``). Code that calls the internal
kernels directly (benchmarks, tests) enters the same context itself.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

PRECISIONS = ("float64", "float32")


def check_precision(precision: str):
    """The JAX dtype of ``precision`` ("float64" or "float32"); ValueError otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return jnp.float64 if precision == "float64" else jnp.float32


def x64():
    """Context in which JAX allows 64-bit types, on this thread only."""
    state = getattr(jax, "enable_x64", None)  # a config context from JAX 0.7 on
    if state is not None and callable(state):
        return state(True)
    from jax.experimental import enable_x64  # older JAX

    return enable_x64()


def with_x64(fn):
    """Decorate ``fn`` to run inside :func:`x64`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with x64():
            return fn(*args, **kwargs)

    return wrapper


__all__ = ["PRECISIONS", "check_precision", "x64", "with_x64"]
