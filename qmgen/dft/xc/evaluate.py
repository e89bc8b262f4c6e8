r"""Evaluate a functional on a grid: energy per particle and its first derivatives, with
libxc 7.0.0's screening of tiny densities, as ``pyscf.dft.libxc.eval_xc(..., spin=0,
deriv=1)`` returns them.

libxc's screening, reproduced per component (the thresholds live in
:mod:`qmgen.dft.xc.registry`; libxc's work_lda/work_gga drivers and maple-generated kernels):

* points with :math:`\rho <` ``dens_threshold`` give zero (exc, vrho, vsigma);
* exchange kernels (Slater, B88, PBE-x) also give zero where the spin density
  :math:`\rho/2 \le` ``dens_threshold``;
* :math:`\sigma` is raised to ``sigma_threshold**2`` with
  ``sigma_threshold = dens_threshold**(4/3)`` (set by ``xc_func_init``), and the outputs,
  vsigma included, are those at the raised value (no chain rule through the clamp).

Derivatives come from JAX autodiff of :math:`\rho\varepsilon(\rho, |\nabla\rho|)`;
:math:`v_\sigma = \partial_{|\nabla\rho|}(\rho\varepsilon) / (2|\nabla\rho|)`. Screened points
are evaluated at a harmless stand-in (rho = 1) and masked with ``where``, so values *and*
gradients (``jax.grad`` of :math:`\sum \rho\varepsilon`) are finite for every input from
zero upwards.

float32: libxc's thresholds are sized for float64 (sigma floors near 1e-40 underflow and
powers such as :math:`\rho^{-8/3}` overflow in float32 below about 1e-14), so in float32
every component screens at ``max(dens_threshold, F32_DENS_FLOOR)``; densities below 1e-10
contribute nothing measurable to an energy. float16/bfloat16 inputs are computed in
float32 and cast back. NaN in ``rho`` or ``sigma`` gives NaN outputs (never a silent zero).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from qmgen.dft.xc.registry import COMPONENTS, Component, get_functional

if TYPE_CHECKING:  # shape annotations only (jaxtyping is a test dependency)
    from jaxtyping import Array, Float

F32_DENS_FLOOR = 1e-10


def _dens_threshold(comp: Component, dtype) -> float:
    if jnp.finfo(dtype).bits < 64:
        return max(comp.dens_threshold, F32_DENS_FLOOR)
    return comp.dens_threshold


def eval_component(
    comp: Component, rho: jax.Array, sigma: jax.Array | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(exc, vrho, vsigma) of one libxc component with libxc's screening; shapes of ``rho``.

    ``rho`` is a floating array; ``sigma`` an array of the same shape and dtype (ignored by
    LDA components). vsigma is zero for LDA components.
    """
    dtype = rho.dtype
    thr = _dens_threshold(comp, dtype)
    # libxc: skip rho < thr; exchange kernels also zero rho/2 <= thr (per spin channel)
    active = rho * 0.5 > thr if comp.spin_screen else rho >= thr
    rho_c = jnp.where(active, rho, 1.0)
    ones = jnp.ones_like(rho)
    if comp.is_gga:
        assert sigma is not None, "a GGA component needs sigma"
        # sigma >= sigma_threshold^2 = thr^(8/3); |grad rho| = sqrt of that, floored the same
        sigma_floor = max(thr ** (8.0 / 3.0), float(jnp.finfo(dtype).tiny))
        use = active & (sigma > sigma_floor)
        grad = jnp.where(use, jnp.sqrt(jnp.where(use, sigma, 1.0)), sigma_floor**0.5)
        energy, pullback = jax.vjp(lambda r, g: r * comp.eps(r, g), rho_c, grad)
        v_rho, v_grad = pullback(ones)
        v_sigma = v_grad / (2.0 * grad)
    else:
        energy, pullback = jax.vjp(lambda r: r * comp.eps(r), rho_c)
        (v_rho,) = pullback(ones)
        v_sigma = jnp.zeros_like(rho)
    exc = energy / rho_c
    zero = jnp.zeros_like(rho)
    return (
        jnp.where(active, exc, zero),
        jnp.where(active, v_rho, zero),
        jnp.where(active, v_sigma, zero),
    )


def eval_xc(
    name: str, rho: Float[Array, "*g"], sigma: Float[Array, "*g"] | None = None
) -> tuple[Float[Array, "*g"], Float[Array, "*g"], Float[Array, "*g"]]:
    r"""Spin-unpolarised exchange-correlation energy and potential terms of functional
    ``name`` (see :data:`qmgen.dft.xc.XC_NAMES`), libxc's conventions.

    Args:
        name: functional name, case-insensitive (a Python string: static under ``jax.jit``).
        rho: total electron density, shape ``(n,)`` (any shape works), electrons/Bohr^3,
            float32 or float64.
        sigma: :math:`|\nabla\rho|^2`, same shape, electrons^2/Bohr^8; required for GGAs,
            may be ``None`` for LDA and HF.

    Returns:
        ``(exc, vrho, vsigma)``, each of ``rho``'s shape and dtype: energy per particle
        (Hartree, libxc's zk; :math:`E_{xc} = \sum_g w_g \rho_g \varepsilon_g`),
        :math:`\partial(\rho\varepsilon)/\partial\rho` (Hartree) and
        :math:`\partial(\rho\varepsilon)/\partial\sigma` (Hartree Bohr^5; zeros for LDA and HF).
        The exact-exchange fraction is ``get_functional(name).hyb``.

    The work is one ``jax.jit``-compiled program per (functional, shape, dtype), so eager
    calls are fast too; inside an outer ``jit``/``vmap``/``grad`` it is simply inlined.
    """
    func = get_functional(name)
    rho = jnp.asarray(rho)
    out_dtype = rho.dtype if jnp.issubdtype(rho.dtype, jnp.floating) else jnp.result_type(float)
    if func.is_gga:
        if sigma is None:
            raise ValueError(f"functional {func.name!r} is a GGA and needs sigma")
        sigma = jnp.broadcast_to(jnp.asarray(sigma, out_dtype), rho.shape)
    else:
        sigma = jnp.zeros(rho.shape, out_dtype)
    return _eval_xc(func.name, rho.astype(out_dtype), sigma)


@partial(jax.jit, static_argnums=0)
def _eval_xc(name: str, rho: jax.Array, sigma: jax.Array):
    func = get_functional(name)
    out_dtype = rho.dtype
    dtype = out_dtype if jnp.finfo(out_dtype).bits >= 32 else jnp.float32
    rho = rho.astype(dtype)
    sigma = sigma.astype(dtype)
    exc = jnp.zeros_like(rho)
    vrho = jnp.zeros_like(rho)
    vsigma = jnp.zeros_like(rho)
    for coef, key in func.components:
        e, vr, vs = eval_component(COMPONENTS[key], rho, sigma)
        exc = exc + coef * e
        vrho = vrho + coef * vr
        vsigma = vsigma + coef * vs
    # propagate NaN inputs instead of screening them to zero
    bad = jnp.isnan(rho) | jnp.isnan(sigma)
    nan = jnp.full_like(rho, jnp.nan)
    return tuple(jnp.where(bad, nan, a).astype(out_dtype) for a in (exc, vrho, vsigma))
