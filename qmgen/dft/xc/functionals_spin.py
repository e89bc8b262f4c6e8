r"""Spin-polarised exchange-correlation energy densities in pure JAX (libxc 7.0.0's forms).

Every kernel here has the signature::

    kernel(rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb, *, dens_threshold, zeta_threshold)

and returns the energy per volume :math:`e = \rho\,\varepsilon_{xc}` (Hartree/Bohr^3) of
the spin densities :math:`\rho_\alpha, \rho_\beta` (electrons/Bohr^3) and the gradient
products :math:`\sigma_{\alpha\alpha} = |\nabla\rho_\alpha|^2`,
:math:`\sigma_{\alpha\beta} = \nabla\rho_\alpha\cdot\nabla\rho_\beta`,
:math:`\sigma_{\beta\beta}` (electrons^2/Bohr^8; LDA kernels ignore them). All arrays share
one shape (``(n,)``; everything is elementwise) and dtype (float32 or float64).

The caller (:mod:`qmgen.dft.xc.polarized`) applies libxc's input sanitation first, so here
``rho_a, rho_b >= dens_threshold > 0`` and ``sigma_aa, sigma_bb`` are at least libxc's
sigma floor; ``dens_threshold`` is then used only by the exchange-type kernels, whose spin
channel :math:`\sigma` contributes nothing where :math:`\rho_\sigma \le` ``dens_threshold``.
``zeta_threshold`` (libxc's, DBL_EPSILON in float64) guards :math:`1\pm\zeta`, with
:math:`\zeta = (\rho_\alpha-\rho_\beta)/\rho`:

* powers :math:`(1\pm\zeta)^p` are replaced by ``zeta_threshold**p`` where
  :math:`1\pm\zeta \le` ``zeta_threshold`` (no infinite derivative at full polarisation);
* libxc 7.0.0's GGA exchange kernels (B88, PBE, ITYH) write a channel's density factor as
  :math:`(1\pm\zeta)\rho/2` and moreover clamp :math:`\zeta` itself to the constant
  :math:`\pm(1 -` ``zeta_threshold``:math:`)` where :math:`2\rho_\sigma/\rho \le`
  ``zeta_threshold`` for either spin: there the density factor depends on the total density
  only, so libxc's :math:`v_{\rho_\beta}` at a fully polarised point with
  :math:`\rho > 2\,` ``dens_threshold/zeta_threshold`` (9 Bohr^-3 for B88 and PBE, 90 for
  ITYH) is the density-factor part of :math:`v_{\rho_\alpha}` instead of zero.
  :func:`_exchange` reproduces this; LDA exchange and the wB97 kernels use the spin
  densities themselves.

Exchange follows from the closed-shell functional by the spin-scaling relation
:math:`E_x[\rho_\alpha,\rho_\beta] = (E_x[2\rho_\alpha] + E_x[2\rho_\beta])/2` (G. L. Oliver &
J. P. Perdew, Phys. Rev. A 20, 397 (1979)); per spin channel it is written with
:math:`x_\sigma = |\nabla\rho_\sigma|/\rho_\sigma^{4/3}`. Correlation kernels are functions
of :math:`r_s` of the total density, :math:`\zeta` and gradients; constants and references
are those of :mod:`qmgen.dft.xc.functionals` and :mod:`qmgen.dft.xc.rsh`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qmgen.dft.xc import functionals as fn
from qmgen.dft.xc import rsh
from qmgen.dft.xc.functionals import CBRT2, PI, RS_FACTOR

_X2_CAP_POW = 0.4  # x^2 <= finfo.max^0.4 (x <= max_reduced_gradient)


# ---------------------------------------------------------------- shared helpers
def _rounded(x: jax.Array) -> jax.Array:
    """``x`` itself, but opaque to floating-point contraction: a product formed before this
    is rounded before it is added to anything (XLA's CPU and GPU backends otherwise fuse
    ``1 - a*b`` into one FMA, which rounds differently from libxc's C)."""
    return jnp.where(x == x, x, jnp.nan)


def zeta(rho_a: jax.Array, rho_b: jax.Array):
    r"""Total density, :math:`\zeta = (\rho_\alpha-\rho_\beta)/\rho` and :math:`1\pm\zeta`,
    formed as libxc 7.0.0's correlation kernels do: :math:`\zeta` as
    :math:`(\rho_\alpha-\rho_\beta)\cdot(1/\rho)`, rounded, then :math:`1\pm\zeta`. Near
    full polarisation :math:`1-\zeta` so carries libxc's absolute rounding error (of order
    DBL_EPSILON), which its outputs show and these kernels reproduce."""
    rho = rho_a + rho_b
    z = _rounded((rho_a - rho_b) * (1.0 / rho))
    return rho, z, 1.0 + z, 1.0 - z


def spin_fractions(rho_a: jax.Array, rho_b: jax.Array):
    r"""Total density and :math:`1\pm\zeta` as :math:`2\rho_\alpha/\rho`,
    :math:`2\rho_\beta/\rho` (no cancellation), as libxc 7.0.0's exchange kernels form
    them."""
    rho = rho_a + rho_b
    inv = 1.0 / rho
    return rho, 2.0 * rho_a * inv, 2.0 * rho_b * inv


def opz_pow(opz: jax.Array, p: float, zeta_threshold: float) -> jax.Array:
    r""":math:`(1\pm\zeta)^p` given ``opz`` :math:`= 1\pm\zeta`, replaced by
    ``zeta_threshold**p`` (derivative zero) where ``opz <= zeta_threshold`` (libxc)."""
    small = opz <= zeta_threshold
    safe = jnp.where(small, 1.0, opz)
    return jnp.where(small, zeta_threshold**p, safe**p)


def f_zeta(opz: jax.Array, omz: jax.Array, zeta_threshold: float) -> jax.Array:
    r"""Spin interpolation :math:`f(\zeta) = [(1+\zeta)^{4/3} + (1-\zeta)^{4/3} - 2]/(2^{4/3}-2)`
    (U. von Barth & L. Hedin, J. Phys. C 5, 1629 (1972); VWN 1980 Eq. (2.3))."""
    t = opz_pow(opz, 4.0 / 3.0, zeta_threshold) + opz_pow(omz, 4.0 / 3.0, zeta_threshold)
    return (t - 2.0) / (2.0 * CBRT2 - 2.0)


def reduced_sq(sigma: jax.Array, rho: jax.Array) -> jax.Array:
    r""":math:`\sigma/\rho^{8/3}` (a squared reduced gradient, e.g. :math:`x_\sigma^2`), capped
    at ``finfo.max**0.4`` (:math:`x \le` :func:`~qmgen.dft.xc.functionals.max_reduced_gradient`).
    Formed as :math:`\sigma\,(1/\rho)^{8/3}` without square roots: finite, and so are its
    derivatives (no :math:`\rho^{16/3}` underflows), for ``rho`` down to the float32 floor."""
    inv = 1.0 / rho
    cap = float(jnp.finfo(rho.dtype).max) ** _X2_CAP_POW
    return jnp.minimum(sigma * (inv * inv * jnp.cbrt(inv) ** 2), cap)


def _exchange(
    channel,
    rho_a,
    rho_b,
    sigma_aa,
    sigma_bb,
    dens_threshold: float,
    zeta_threshold: float,
    zclamp: bool,
):
    r"""Spin-scaled exchange :math:`\sum_\sigma e_\sigma`; ``channel(p, rho_s, sigma_s)`` is
    the energy per volume of a spin channel with density factor ``p``, density ``rho_s`` and
    :math:`\sigma_{\sigma\sigma}` ``sigma_s``. A channel with :math:`\rho_\sigma \le`
    ``dens_threshold`` gives zero.

    Without ``zclamp`` (libxc's LDA exchange) ``p`` is :math:`\rho_\sigma` and a channel
    with :math:`2\rho_\sigma/\rho \le` ``zeta_threshold`` also gives zero. With ``zclamp``
    (libxc's GGA exchange) ``p`` is :math:`(1\pm\zeta)\rho/2` with :math:`1\pm\zeta` of
    :func:`zeta`, except where :math:`2\rho_{\sigma'}/\rho \le` ``zeta_threshold`` for
    either channel: there :math:`\zeta` is clamped to the constant
    :math:`\pm(1 -` ``zeta_threshold``:math:`)`, so ``p`` is ``2 - zeta_threshold`` or
    ``zeta_threshold`` times :math:`\rho/2`, a function of :math:`\rho` alone."""
    rho, fa, fb = spin_fractions(rho_a, rho_b)
    _, _, opz, omz = zeta(rho_a, rho_b)
    out = jnp.zeros_like(rho)
    for rho_s, sigma_s, f_this, f_other, o_this in (
        (rho_a, sigma_aa, fa, fb, opz),
        (rho_b, sigma_bb, fb, fa, omz),
    ):
        active = rho_s > dens_threshold
        if zclamp:
            big = f_other <= zeta_threshold  # this channel carries (almost) everything
            small = f_this <= zeta_threshold
            clamped = jnp.where(big, 1.0 + (1.0 - zeta_threshold), zeta_threshold)
            p = jnp.where(big | small, clamped, o_this) * rho * 0.5
        else:
            active &= f_this > zeta_threshold
            p = rho_s
        out = out + jnp.where(active, channel(p, rho_s, sigma_s), 0.0)
    return out


# ---------------------------------------------------------------- exchange
def slater_x_spin(rho_a, rho_b, sigma_aa=None, sigma_ab=None, sigma_bb=None, **thr):
    r"""Slater exchange, libxc LDA_X (id 1), spin-polarised:
    :math:`e_x = -\tfrac34(6/\pi)^{1/3}\sum_\sigma\rho_\sigma^{4/3}` (Dirac 1930; the
    spin-scaled :func:`qmgen.dft.xc.functionals.slater_x`)."""

    def channel(p, rho_s, sigma_s):
        return -rsh.X_SPIN_C * p * jnp.cbrt(p)

    return _exchange(channel, rho_a, rho_b, None, None, zclamp=False, **thr)


def b88_x_spin(rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb, **thr):
    r"""Becke 1988 exchange, libxc GGA_X_B88 (id 106), A. D. Becke, Phys. Rev. A 38, 3098
    (1988), Eq. (8):

    .. math::
        e_x = \sum_\sigma \rho_\sigma^{4/3}\Big[-\tfrac34\big(\tfrac6\pi\big)^{1/3}
        - \frac{\beta x_\sigma^2}{1 + 6\beta x_\sigma\sinh^{-1}x_\sigma}\Big],
        \quad \beta = 0.0042.
    """

    def channel(p, rho_s, sigma_s):
        xs = fn.reduced_gradient(rho_s, jnp.sqrt(sigma_s))
        return -rsh.X_SPIN_C * p * jnp.cbrt(p) * rsh.b88_enhancement(xs)

    return _exchange(channel, rho_a, rho_b, sigma_aa, sigma_bb, zclamp=True, **thr)


def pbe_x_spin(rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb, **thr):
    r"""PBE exchange, libxc GGA_X_PBE (id 101), PBE 1996 Eq. (14) spin-scaled:
    :math:`e_x = \sum_\sigma \rho_\sigma\,\varepsilon_x^{LDA}(2\rho_\sigma)\,F_x(s_\sigma)`,
    :math:`F_x = 1 + \kappa - \kappa/(1 + \mu s^2/\kappa)`,
    :math:`s_\sigma = |\nabla\rho_\sigma| / (2(6\pi^2)^{1/3}\rho_\sigma^{4/3})`."""
    s2_per_x2 = 1.0 / (4.0 * (6.0 * PI * PI) ** (2.0 / 3.0))
    kappa, mu = fn.PBE_KAPPA, fn.PBE_MU

    def channel(p, rho_s, sigma_s):
        x2 = reduced_sq(sigma_s, rho_s)
        fx = 1.0 + kappa - kappa * kappa / (kappa + mu * s2_per_x2 * x2)
        return -rsh.X_SPIN_C * p * jnp.cbrt(p) * fx

    return _exchange(channel, rho_a, rho_b, sigma_aa, sigma_bb, zclamp=True, **thr)


def ityh_b88_x_spin(rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb, *, omega: float, **thr):
    r"""Short-range B88 exchange of Iikura, Tsuneda, Yanai & Hirao, J. Chem. Phys. 115, 3540
    (2001) (libxc GGA_X_ITYH, id 529): :math:`\sum_\sigma \rho_\sigma\,
    \varepsilon_{x\sigma}(\rho_\sigma, x_\sigma)` of :func:`qmgen.dft.xc.rsh.ityh_b88_x_spin`
    (its attenuation uses the spin Fermi momentum
    :math:`k_{F\sigma} = (6\pi^2\rho_\sigma)^{1/3}`)."""

    def channel(p, rho_s, sigma_s):
        xs = fn.reduced_gradient(rho_s, jnp.sqrt(sigma_s))
        return p * rsh.ityh_b88_x_spin(p, xs, omega)

    return _exchange(channel, rho_a, rho_b, sigma_aa, sigma_bb, zclamp=True, **thr)


# ---------------------------------------------------------------- VWN correlation
# Vosko, Wilk & Nusair, Can. J. Phys. 58, 1200 (1980): (A, b, c, x0) of the paramagnetic
# and ferromagnetic fits (A halved from Rydberg to Hartree) and of the spin stiffness
# alpha_c (A = -1/(6 pi^2)); Ceperley-Alder ("VWN5") and RPA fits.
VWN5_FERRO = (0.01554535, 7.06042, 18.0578, -0.32500)
VWN5_STIFF = (-1.0 / (6.0 * PI * PI), 1.13107, 13.0045, -0.0047584)
VWN_RPA_FERRO = (0.01554535, 20.1231, 101.578, -0.743294)
VWN_FPP0 = 4.0 / (9.0 * (CBRT2 - 1.0))  # f''(0)


def vwn5_c_spin(rho_a, rho_b, sigma_aa=None, sigma_ab=None, sigma_bb=None, **thr):
    r"""VWN5 correlation, libxc LDA_C_VWN (id 7): VWN 1980 Eq. (4.4) fits of
    :math:`\varepsilon_P`, :math:`\varepsilon_F` and the spin stiffness :math:`\alpha_c`
    interpolated as

    .. math::
        \varepsilon_c = \varepsilon_P + \alpha_c\frac{f(\zeta)}{f''(0)}(1-\zeta^4)
        + [\varepsilon_F - \varepsilon_P] f(\zeta)\zeta^4

    (the spin-stiffness interpolation of VWN 1980, Eq. (3.2) with the Ceperley-Alder fits).
    """
    zt = thr["zeta_threshold"]
    rho, z, opz, omz = zeta(rho_a, rho_b)
    ep = fn._vwn_paramagnetic(rho, fn.VWN5_PARAMS)
    ef = fn._vwn_paramagnetic(rho, VWN5_FERRO)
    ac = fn._vwn_paramagnetic(rho, VWN5_STIFF)
    fz = f_zeta(opz, omz, zt)
    z4 = z**4
    return rho * (ep + ac * fz / VWN_FPP0 * (1.0 - z4) + (ef - ep) * fz * z4)


def vwn_rpa_c_spin(rho_a, rho_b, sigma_aa=None, sigma_ab=None, sigma_bb=None, **thr):
    r"""VWN-RPA correlation, libxc LDA_C_VWN_RPA (id 8): the RPA fits of VWN 1980 Eq. (4.4)
    with the simple von Barth-Hedin interpolation libxc uses for this functional,
    :math:`\varepsilon_c = \varepsilon_P + [\varepsilon_F - \varepsilon_P] f(\zeta)`."""
    rho, _, opz, omz = zeta(rho_a, rho_b)
    ep = fn._vwn_paramagnetic(rho, fn.VWN_RPA_PARAMS)
    ef = fn._vwn_paramagnetic(rho, VWN_RPA_FERRO)
    return rho * (ep + (ef - ep) * f_zeta(opz, omz, thr["zeta_threshold"]))


# ---------------------------------------------------------------- PW92 and PBE correlation
# Perdew & Wang, Phys. Rev. B 45, 13244 (1992), Table I, with libxc LDA_C_PW_MOD's more
# precise A and f''(0): (A, alpha1, beta1..beta4) of -eps_c(zeta=0), -eps_c(zeta=1), -alpha_c
PW92_MOD_PARAMS = (
    (fn.PW92_A, fn.PW92_ALPHA1, *fn.PW92_BETA),
    (0.01554535, 0.20548, 14.1189, 6.1977, 3.3662, 0.62517),
    (0.0168869, 0.11125, 10.357, 3.6231, 0.88026, 0.49671),
)
PW92_MOD_FZ20 = 1.709920934161365617563962776245


def pw92_c_spin(
    rho, z, opz, omz, zeta_threshold: float, params=PW92_MOD_PARAMS, fz20=PW92_MOD_FZ20
):
    r"""PW92 correlation energy per electron, PRB 45, 13244 Eq. (8), of total density ``rho``
    and polarisation ``z``:

    .. math::
        \varepsilon_c = \varepsilon_c(r_s,0) + \alpha_c(r_s)\frac{f(\zeta)}{f''(0)}(1-\zeta^4)
        + [\varepsilon_c(r_s,1) - \varepsilon_c(r_s,0)] f(\zeta)\zeta^4

    with the G(rs) fits of Eq. (10) (libxc LDA_C_PW_MOD parameters by default). Hartree.
    """
    rs = RS_FACTOR / jnp.cbrt(rho)
    g0, g1, g2 = (rsh._pw92_g(rs, p) for p in params)
    fz = f_zeta(opz, omz, zeta_threshold)
    z4 = z**4
    return g0 + z4 * fz * (g1 - g0 + g2 / fz20) - fz * g2 / fz20


def pbe_c_spin(rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb, **thr):
    r"""PBE correlation, libxc GGA_C_PBE (id 130), PBE 1996 Eqs. (3), (7), (8):

    .. math::
        \varepsilon_c = \varepsilon_c^{PW92}(r_s,\zeta) + \gamma\phi^3\ln\Big[1
        + \frac\beta\gamma t^2\frac{1 + At^2}{1 + At^2 + A^2t^4}\Big],\quad
        A = \frac{\beta/\gamma}{e^{-\varepsilon_c^{PW92}/(\gamma\phi^3)} - 1},\quad
        t = \frac{|\nabla\rho|}{2\phi k_s\rho},

    :math:`\phi = [(1+\zeta)^{2/3} + (1-\zeta)^{2/3}]/2`, :math:`k_s = \sqrt{4k_F/\pi}`,
    :math:`|\nabla\rho|^2 = \sigma_{\alpha\alpha} + 2\sigma_{\alpha\beta} + \sigma_{\beta\beta}`;
    for :math:`y = At^2 > 1` the cancellation-free form of
    :func:`qmgen.dft.xc.functionals.pbe_c` with :math:`\gamma \to \gamma\phi^3`.
    """
    zt = thr["zeta_threshold"]
    rho, z, opz, omz = zeta(rho_a, rho_b)
    ec = pw92_c_spin(rho, z, opz, omz, zt)
    phi = 0.5 * (opz_pow(opz, 2.0 / 3.0, zt) + opz_pow(omz, 2.0 / 3.0, zt))
    gphi3 = fn.PBE_GAMMA * phi**3
    sigma = sigma_aa + 2.0 * sigma_ab + sigma_bb
    t2 = fn._T2_PER_X2 * reduced_sq(sigma, rho) * jnp.cbrt(rho) / (phi * phi)
    e = jnp.expm1(-ec / gphi3)
    a = (fn.PBE_BETA / fn.PBE_GAMMA) / e
    y = a * t2
    small = y <= 1.0
    y_lo = jnp.where(small, y, 0.0)
    frac = t2 * (1.0 + y_lo) / (1.0 + y_lo * (1.0 + y_lo))
    eps_small = ec + gphi3 * jnp.log1p((fn.PBE_BETA / fn.PBE_GAMMA) * frac)
    u = 1.0 / jnp.where(small, 1.0, y)
    w = u * u / (1.0 + u * (1.0 + u))
    eps_large = gphi3 * jnp.log1p(w * jnp.expm1(ec / gphi3))
    return rho * jnp.where(small, eps_small, eps_large)


# ---------------------------------------------------------------- LYP correlation
def lyp_c_spin(rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb, **thr):
    r"""Lee-Yang-Parr correlation, libxc GGA_C_LYP (id 131), in the form of B. Miehlich,
    A. Savin, H. Stoll & H. Preuss, Chem. Phys. Lett. 157, 200 (1989), Eq. (2):

    .. math::
        E_c = -\frac{4a}{1+d\rho^{-1/3}}\frac{\rho_\alpha\rho_\beta}{\rho}
        - ab\,\omega\Big\{\rho_\alpha\rho_\beta\Big[2^{11/3}C_F(\rho_\alpha^{8/3}
        + \rho_\beta^{8/3}) + \big(\tfrac{47}{18} - \tfrac{7}{18}\delta\big)|\nabla\rho|^2
        - \big(\tfrac52 - \tfrac{\delta}{18}\big)(\sigma_{\alpha\alpha} + \sigma_{\beta\beta})
        - \tfrac{\delta-11}{9}\Big(\frac{\rho_\alpha}{\rho}\sigma_{\alpha\alpha}
        + \frac{\rho_\beta}{\rho}\sigma_{\beta\beta}\Big)\Big]
        - \tfrac23\rho^2|\nabla\rho|^2 + \big(\tfrac23\rho^2 - \rho_\alpha^2\big)
        \sigma_{\beta\beta} + \big(\tfrac23\rho^2 - \rho_\beta^2\big)\sigma_{\alpha\alpha}\Big\}

    with :math:`\omega = e^{-c\rho^{-1/3}}\rho^{-11/3}/(1+d\rho^{-1/3})`,
    :math:`\delta = c\rho^{-1/3} + d\rho^{-1/3}/(1+d\rho^{-1/3})`. Evaluated per particle:
    with :math:`n_\sigma = \rho_\sigma/\rho = (1\pm\zeta)/2`, :math:`x_t^2 =
    |\nabla\rho|^2/\rho^{8/3}` and :math:`\sigma_{\sigma\sigma}/\rho^{8/3} =
    x_\sigma^2 n_\sigma^{8/3}` the powers of :math:`\rho` cancel (no overflow at low
    density); :math:`1\pm\zeta` from :math:`\zeta`, with ``zeta_threshold``, as libxc.
    """
    zt = thr["zeta_threshold"]
    rho, z, opz, omz = zeta(rho_a, rho_b)
    na83 = opz_pow(opz, 8.0 / 3.0, zt) / 2.0 ** (8.0 / 3.0)
    nb83 = opz_pow(omz, 8.0 / 3.0, zt) / 2.0 ** (8.0 / 3.0)
    na2, nb2 = opz_pow(opz, 2.0, zt) / 4.0, opz_pow(omz, 2.0, zt) / 4.0
    ga = reduced_sq(sigma_aa, rho_a) * na83  # sigma_aa / rho^(8/3)
    gb = reduced_sq(sigma_bb, rho_b) * nb83
    gt = reduced_sq(sigma_aa + 2.0 * sigma_ab + sigma_bb, rho)
    nanb = 0.25 * (1.0 - z * z)
    r = 1.0 / jnp.cbrt(rho)
    dr = fn.LYP_D * r
    denom = 1.0 + dr
    delta = fn.LYP_C * r + dr / denom
    bracket = (
        2.0 ** (11.0 / 3.0) * fn.LYP_CF * (na83 + nb83)
        + (47.0 - 7.0 * delta) / 18.0 * gt
        - (2.5 - delta / 18.0) * (ga + gb)
        - (delta - 11.0) / 18.0 * (opz * ga + omz * gb)
    )
    w = nanb * bracket - (2.0 / 3.0) * gt + (2.0 / 3.0 - na2) * gb + (2.0 / 3.0 - nb2) * ga
    damp = jnp.exp(-fn.LYP_C * r)  # underflows to 0 (value and derivative) at tiny densities
    return -rho * (fn.LYP_A / denom) * (4.0 * nanb + fn.LYP_B * damp * w)


# ---------------------------------------------------------------- wB97 family
def _b97_g2(x2, gamma: float, coefs):
    """Becke's series :func:`qmgen.dft.xc.rsh.b97_g` as a function of x^2."""
    u = 1.0 - 1.0 / (1.0 + gamma * x2)
    out = jnp.zeros_like(x2)
    for c in reversed(coefs):
        out = out * u + c
    return out


def _wb97_channels(rho_a, rho_b, sigma_aa, sigma_bb, thr, term):
    """Sum over spin channels of ``term(rho_s, x_s^2, g_ab)``, zero for a channel with
    rho_s <= dens_threshold or 2 rho_s / rho <= zeta_threshold (libxc's screening)."""
    rho = rho_a + rho_b
    xa2, xb2 = reduced_sq(sigma_aa, rho_a), reduced_sq(sigma_bb, rho_b)
    x_ab2 = 0.5 * (xa2 + xb2)
    out = jnp.zeros_like(rho)
    for rho_s, x2 in ((rho_a, xa2), (rho_b, xb2)):
        active = (rho_s > thr["dens_threshold"]) & (2.0 * rho_s / rho > thr["zeta_threshold"])
        out = out + jnp.where(active, term(rho_s, x2, x_ab2), 0.0)
    return out


def wb97_x_spin(rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb, *, omega: float, cx, **thr):
    r"""wB97 exchange, :math:`\sum_\sigma \rho_\sigma\varepsilon^{SR-LDA}_{x\sigma}
    (\rho_\sigma)\,g_x(x_\sigma)` (J.-D. Chai & M. Head-Gordon, J. Chem. Phys. 128, 084106
    (2008); libxc HYB_GGA_XC_WB97X, id 464, and HYB_GGA_XC_WB97X_V, id 466; pieces in
    :mod:`qmgen.dft.xc.rsh`)."""

    def term(rho_s, x2, x_ab2):
        return rho_s * rsh.lda_x_sr_spin(rho_s, omega) * _b97_g2(x2, rsh.B97_GAMMA_X, cx)

    return _wb97_channels(rho_a, rho_b, sigma_aa, sigma_bb, thr, term)


def wb97_c_ss_spin(rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb, *, css, **thr):
    r"""Same-spin wB97 correlation (Becke's B97 partition, J. Chem. Phys. 107, 8554 (1997);
    Chai & Head-Gordon 2008): :math:`\sum_\sigma \rho_\sigma\varepsilon_c^{PW92}(\rho_\sigma,0)
    \,g_{ss}(x_\sigma)`, the Stoll same-spin energy of a fully polarised gas of density
    :math:`\rho_\sigma` (PW92 with libxc LDA_C_PW's parameters); a channel below libxc's
    threshold gives zero."""

    def term(rho_s, x2, x_ab2):
        return rho_s * rsh.pw92_c_polarized(rho_s) * _b97_g2(x2, rsh.B97_GAMMA_SS, css)

    return _wb97_channels(rho_a, rho_b, sigma_aa, sigma_bb, thr, term)


def wb97_c_os_spin(rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb, *, cos, **thr):
    r"""Opposite-spin wB97 correlation, the rest of the PW92 energy after the same-spin
    (Stoll) parts:

    .. math::
        e_{c,\alpha\beta} = \Big[\rho\,\varepsilon_c^{PW92}(\rho_\alpha,\rho_\beta)
        - \sum_\sigma\rho_\sigma\varepsilon_c^{PW92}(\rho_\sigma,0)\Big]\,
        g_{ab}\Big(\sqrt{(x_\alpha^2+x_\beta^2)/2}\Big)

    (PW92 Eq. (8), libxc LDA_C_PW parameters), the subtracted same-spin energy of a channel
    below libxc's threshold dropped. The bracket is formed before multiplying by
    :math:`g_{ab}`: at full polarisation it nearly vanishes while :math:`g_{ab}` varies fast
    with the floored :math:`\rho_\beta`."""
    rho, z, opz, omz = zeta(rho_a, rho_b)
    x_ab2 = 0.5 * (reduced_sq(sigma_aa, rho_a) + reduced_sq(sigma_bb, rho_b))
    ec = pw92_c_spin(rho, z, opz, omz, thr["zeta_threshold"], rsh.PW92_PARAMS, rsh.PW92_FZ20)
    same = _wb97_channels(
        rho_a,
        rho_b,
        sigma_aa,
        sigma_bb,
        thr,
        lambda rho_s, x2, x_ab2: rho_s * rsh.pw92_c_polarized(rho_s),
    )
    return (rho * ec - same) * _b97_g2(x_ab2, rsh.B97_GAMMA_OS, cos)


__all__ = [
    "b88_x_spin",
    "f_zeta",
    "ityh_b88_x_spin",
    "lyp_c_spin",
    "opz_pow",
    "pbe_c_spin",
    "pbe_x_spin",
    "pw92_c_spin",
    "reduced_sq",
    "slater_x_spin",
    "spin_fractions",
    "vwn5_c_spin",
    "vwn_rpa_c_spin",
    "wb97_c_os_spin",
    "wb97_c_ss_spin",
    "wb97_x_spin",
    "zeta",
]
