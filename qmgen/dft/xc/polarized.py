r"""Evaluate a functional on a grid for spin-polarised (unrestricted) densities: energy per
particle and first derivatives with libxc 7.0.0's screening, as
``pyscf.dft.libxc.eval_xc(..., spin=1, deriv=1)`` returns them.

libxc's rules for polarised input, per component (thresholds in
:mod:`qmgen.dft.xc.registry`; probed through ``pyscf.dft.libxc.eval_xc``, libxc 7.0.0, and
checked in tests/test_xc_polarized.py):

* points with total density :math:`\rho_\alpha + \rho_\beta <` ``dens_threshold`` give zero;
* otherwise each spin density is raised to ``dens_threshold``
  (:math:`\rho_\sigma \to \max(\rho_\sigma, \text{dens\_threshold})`) and the outputs are
  those at the raised values: exc is the energy per particle of the raised total density,
  e.g. a fully polarised point (:math:`\rho_\beta = 0`) is evaluated at
  :math:`\rho_\beta =` ``dens_threshold``, and vrho_b is the derivative there;
* exchange-type kernels drop a spin channel with :math:`\rho_\sigma \le` ``dens_threshold``
  (it contributes nothing, not even to vrho of that spin); the wB97 same-spin terms too;
* :math:`\zeta` is guarded at :math:`1\pm\zeta \le` ``zeta_threshold`` = DBL_EPSILON (see
  :mod:`qmgen.dft.xc.functionals_spin`, including libxc's clamp of :math:`\zeta` in its GGA
  exchange kernels);
* :math:`\sigma_{\alpha\alpha}, \sigma_{\beta\beta}` are raised to ``sigma_threshold**2``
  (``sigma_threshold = dens_threshold**(4/3)``), then :math:`\sigma_{\alpha\beta}` is
  clamped to :math:`|\sigma_{\alpha\beta}| \le (\sigma_{\alpha\alpha}+\sigma_{\beta\beta})/2`;
  outputs are those at the modified values (no chain rule through the clamps).

Derivatives come from JAX autodiff (``jax.vjp``) of :math:`\rho\varepsilon` with respect to
the five sanitised inputs. Screened points are evaluated at a harmless stand-in and masked
with ``where``, so values and gradients (``jax.grad`` of :math:`\sum\rho\varepsilon`) are
finite for every input from zero upwards. float32 uses the density floor
:data:`qmgen.dft.xc.evaluate.F32_DENS_FLOOR` and ``zeta_threshold`` = float32 epsilon, as the
closed-shell :func:`qmgen.dft.xc.evaluate.eval_xc`; NaN inputs give NaN outputs.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from qmgen.dft.xc.evaluate import _dens_threshold
from qmgen.dft.xc.registry import COMPONENTS, Component, get_functional

if TYPE_CHECKING:  # shape annotations only (jaxtyping is a test dependency)
    from jaxtyping import Array, Float


def eval_component_spin(
    comp: Component, rho: jax.Array, sigma: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(exc, vrho, vsigma) of one libxc component with libxc's polarised screening.

    ``rho``: ``(2, n)`` spin densities; ``sigma``: ``(3, n)`` (aa, ab, bb), ignored by LDA
    components. Returns shapes ``(n,)``, ``(2, n)``, ``(3, n)`` (vsigma zero for LDA).
    """
    assert comp.energy_spin is not None  # the registry checks every component at import
    dtype = rho.dtype
    thr = _dens_threshold(comp, dtype)
    zt = float(jnp.finfo(dtype).eps)
    ra, rb = rho[0], rho[1]
    active = ra + rb >= thr
    ra_c = jnp.where(active, jnp.maximum(ra, thr), 1.0)
    rb_c = jnp.where(active, jnp.maximum(rb, thr), 1.0)
    kernel = partial(comp.energy_spin, dens_threshold=thr, zeta_threshold=zt)
    zero = jnp.zeros_like(ra)
    if comp.is_gga:
        # sigma_ss >= sigma_threshold^2 = thr^(8/3); |sigma_ab| <= (sigma_aa + sigma_bb)/2
        floor = max(thr ** (8.0 / 3.0), float(jnp.finfo(dtype).tiny))
        saa = jnp.where(active & (sigma[0] > floor), sigma[0], floor)
        sbb = jnp.where(active & (sigma[2] > floor), sigma[2], floor)
        s_ave = 0.5 * (saa + sbb)
        sab = jnp.where(active, jnp.clip(sigma[1], -s_ave, s_ave), 0.0)
        energy, pullback = jax.vjp(kernel, ra_c, rb_c, saa, sab, sbb)
        va, vb, vaa, vab, vbb = pullback(jnp.ones_like(ra))
        v_sigma = jnp.stack([vaa, vab, vbb])
    else:
        energy, pullback = jax.vjp(lambda a, b: kernel(a, b), ra_c, rb_c)
        va, vb = pullback(jnp.ones_like(ra))
        v_sigma = jnp.stack([zero, zero, zero])
    exc = energy / (ra_c + rb_c)
    return (
        jnp.where(active, exc, zero),
        jnp.where(active, jnp.stack([va, vb]), 0.0),
        jnp.where(active, v_sigma, 0.0),
    )


def eval_xc_spin(
    name: str, rho: Float[Array, "2 n"], sigma: Float[Array, "3 n"] | None = None
) -> tuple[Float[Array, " n"], Float[Array, "2 n"], Float[Array, "3 n"]]:
    r"""Spin-polarised exchange-correlation energy and potential terms of functional
    ``name`` (see :data:`qmgen.dft.xc.XC_NAMES`), libxc's conventions.

    Args:
        name: functional name, case-insensitive (a Python string: static under ``jax.jit``).
        rho: ``(2, n)`` spin densities :math:`(\rho_\alpha, \rho_\beta)`, electrons/Bohr^3,
            float32 or float64.
        sigma: ``(3, n)`` gradient products :math:`(\nabla\rho_\alpha\cdot\nabla\rho_\alpha,
            \nabla\rho_\alpha\cdot\nabla\rho_\beta, \nabla\rho_\beta\cdot\nabla\rho_\beta)`
            (libxc's order), electrons^2/Bohr^8; required for GGAs, may be ``None`` for LDA
            and HF.

    Returns:
        ``(exc, vrho, vsigma)`` of shapes ``(n,)``, ``(2, n)``, ``(3, n)`` in ``rho``'s
        dtype: energy per particle of the total density (Hartree;
        :math:`E_{xc} = \sum_g w_g (\rho_\alpha+\rho_\beta)\varepsilon_g`),
        :math:`\partial(\rho\varepsilon)/\partial\rho_{\alpha,\beta}` (Hartree) and
        :math:`\partial(\rho\varepsilon)/\partial\sigma_{\alpha\alpha,\alpha\beta,\beta\beta}`
        (Hartree Bohr^5; zeros for LDA and HF): ``pyscf.dft.libxc.eval_xc(pyscf_name,
        (rho_a, rho_b), spin=1, deriv=1)``'s exc, ``vxc[0].T``, ``vxc[1].T``.

    For :math:`\rho_\alpha = \rho_\beta = \rho/2` and all three sigmas :math:`\sigma/4`,
    exc and vrho equal the closed-shell :func:`~qmgen.dft.xc.eval_xc`'s and
    ``vsigma_aa + vsigma_ab + vsigma_bb = 4 vsigma`` (closed shell). One ``jax.jit``
    program per (semilocal part, shape, dtype): names with the same semilocal combination
    (``lda``/``svwn``, ``b3lyp``/``b3lyp-d3bj``) share it.
    """
    func = get_functional(name)
    rho = jnp.asarray(rho)
    out_dtype = rho.dtype if jnp.issubdtype(rho.dtype, jnp.floating) else jnp.result_type(float)
    if rho.ndim != 2 or rho.shape[0] != 2:
        raise ValueError(f"rho must have shape (2, n), got {rho.shape}")
    shape = (3, rho.shape[1])
    if func.is_gga:
        if sigma is None:
            raise ValueError(f"functional {func.name!r} is a GGA and needs sigma")
        sigma = jnp.asarray(sigma, out_dtype)
        if sigma.shape != shape:
            raise ValueError(f"sigma must have shape {shape}, got {sigma.shape}")
    else:
        sigma = jnp.zeros(shape, out_dtype)
    return _eval_xc_spin(func.components, rho.astype(out_dtype), sigma)


@partial(jax.jit, static_argnums=0)
def _eval_xc_spin(components: tuple[tuple[float, str], ...], rho: jax.Array, sigma: jax.Array):
    # keyed by the semilocal part, so names for the same one (lda/svwn, x/x-d3bj) share it
    out_dtype = rho.dtype
    dtype = out_dtype if jnp.finfo(out_dtype).bits >= 32 else jnp.float32
    rho = rho.astype(dtype)
    sigma = sigma.astype(dtype)
    exc = jnp.zeros(rho.shape[1:], dtype)
    vrho = jnp.zeros_like(rho)
    vsigma = jnp.zeros_like(sigma)
    for coef, key in components:
        e, vr, vs = eval_component_spin(COMPONENTS[key], rho, sigma)
        exc = exc + coef * e
        vrho = vrho + coef * vr
        vsigma = vsigma + coef * vs
    # propagate NaN inputs instead of screening them to zero
    bad = jnp.any(jnp.isnan(rho), axis=0) | jnp.any(jnp.isnan(sigma), axis=0)
    return tuple(jnp.where(bad, jnp.nan, a).astype(out_dtype) for a in (exc, vrho, vsigma))
