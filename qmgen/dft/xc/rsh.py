r"""Semilocal parts of range-separated hybrids in pure JAX: erf-attenuated (short-range)
exchange and the wB97 family, in libxc 7.0.0's definitions (which PySCF uses).

Conventions as in :mod:`qmgen.dft.xc.functionals`: the closed-shell functions take the total
density ``rho`` (electrons/Bohr^3, > 0) and ``grad`` = :math:`|\nabla\rho|` (electrons/Bohr^4,
> 0) and return the energy per particle :math:`\varepsilon` (Hartree) of the total density.
The physics is written per spin channel (``*_spin`` functions: spin density
:math:`\rho_\sigma` and :math:`x_\sigma = |\nabla\rho_\sigma|/\rho_\sigma^{4/3}`, energy per
electron of that spin); the closed-shell forms put :math:`\rho_\sigma = \rho/2`,
:math:`|\nabla\rho_\sigma| = |\nabla\rho|/2`, i.e. :math:`x_\sigma = 2^{1/3} x`.

Range separation: :math:`1/r_{12} = \mathrm{erfc}(\omega r_{12})/r_{12} +
\mathrm{erf}(\omega r_{12})/r_{12}`, ``omega`` in 1/Bohr. The short-range (erfc) part of the
exchange of a uniform gas of spin density :math:`\rho_\sigma` is
:math:`\varepsilon_{x\sigma}^{LDA} F(a)`, :math:`\varepsilon_{x\sigma}^{LDA} =
-\tfrac34 (6/\pi)^{1/3}\rho_\sigma^{1/3}`, with the attenuation function of :func:`att_erf`
at :math:`a = \omega/(2k_{F\sigma})`, :math:`k_{F\sigma} = (6\pi^2\rho_\sigma)^{1/3}`
(A. Savin in *Recent Developments of Modern Density Functional Theory*, Elsevier 1996;
P. M. W. Gill, R. D. Adamson & J. A. Pople, Mol. Phys. 88, 1005 (1996); J. Toulouse,
A. Savin & H.-J. Flad, Int. J. Quantum Chem. 100, 1047 (2004)).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from qmgen.dft.xc.functionals import (
    B88_BETA,
    B88_GAMMA,
    CBRT2,
    PI,
    RS_FACTOR,
    reduced_gradient,
)

X_SPIN_C = 0.75 * (6.0 / PI) ** (1.0 / 3.0)  # eps_x^LDA(rho_s) = -X_SPIN_C rho_s^(1/3)
KF_SPIN_C = (6.0 * PI * PI) ** (1.0 / 3.0)  # k_F(rho_s) = KF_SPIN_C rho_s^(1/3)

# ---------------------------------------------------------------- attenuation function
# F(b) = 1 - (4/(3b)) [sqrt(pi) erf(b) + (1/b - 1/(2b^3)) exp(-b^2) - 3/(2b) + 1/(2b^3)],
# b = 1/(2a). Its Taylor series (erf and exp are entire, so it converges for every b):
# F = sum_{m>=1} (-1)^(m+1) 2 b^(2m) / ((2m+1) (m+2)!); below _ATT_B_SWITCH the closed form
# loses digits to cancellation (F ~ b^2/9 is the difference of O(1) terms), the series does
# not (its terms fall from the first). 20 terms: truncation < 1e-19 at the switch.
_ATT_B_SWITCH = 1.25
_ATT_SERIES = tuple(
    (-1.0) ** (m + 1) * 2.0 / ((2 * m + 1) * math.factorial(m + 2)) for m in range(1, 21)
)


def _att_erf(b: jax.Array, over_b2: bool) -> jax.Array:
    small = b < _ATT_B_SWITCH
    bs = jnp.where(small, b, 0.0)
    b2 = bs * bs
    series = jnp.zeros_like(b)
    for c in reversed(_ATT_SERIES[1:]):
        series = (series + c) * b2
    series = series + _ATT_SERIES[0]
    if not over_b2:
        series = series * b2
    bl = jnp.where(small, _ATT_B_SWITCH, b)
    inv = 1.0 / bl
    inv3 = inv * inv * inv
    bracket = (
        math.sqrt(PI) * jax.lax.erf(bl)
        + (inv - 0.5 * inv3) * jnp.exp(-bl * bl)
        - 1.5 * inv
        + 0.5 * inv3
    )
    closed = 1.0 - (4.0 / 3.0) * inv * bracket
    if over_b2:
        closed = closed * inv * inv
    return jnp.where(small, series, closed)


def att_erf(b: jax.Array) -> jax.Array:
    r"""Attenuation function of erf-screened LDA exchange, as a function of
    :math:`b = 1/(2a) = k_F/\omega` (dimensionless, > 0):

    .. math::
        F(a) = 1 - \tfrac83 a\Big[\sqrt\pi\,\mathrm{erf}\big(\tfrac{1}{2a}\big)
        + (2a - 4a^3)\,e^{-1/(4a^2)} - 3a + 4a^3\Big]

    (the short-range fraction of the exchange energy of a uniform gas: 1 at
    :math:`\omega = 0`, :math:`\approx 1/(36a^2) = b^2/9` for :math:`a\to\infty`;
    T. Leininger, H. Stoll, H.-J. Werner & A. Savin, Chem. Phys. Lett. 275, 151 (1997)).
    For :math:`b < 1.25` (low density) it is evaluated from its Taylor series
    :math:`F = \sum_{m\ge1} (-1)^{m+1}\, 2b^{2m}/((2m+1)(m+2)!)` (20 terms), so values and
    derivatives keep full relative precision in float32 and float64 for every :math:`b`.
    """
    return _att_erf(b, over_b2=False)


def att_erf_over_b2(b: jax.Array) -> jax.Array:
    """:math:`F/b^2` (:func:`att_erf`), without the cancellation of forming F and dividing
    (the series starts at 1/9)."""
    return _att_erf(b, over_b2=True)


def lda_x_sr_spin(rho_s: jax.Array, omega: float) -> jax.Array:
    r"""Short-range (erfc-screened) LDA exchange per electron of a spin channel of density
    ``rho_s``: :math:`-\tfrac34(6/\pi)^{1/3}\rho_\sigma^{1/3}\,F(a)`,
    :math:`a = \omega/(2k_{F\sigma})` (libxc LDA_X_ERF per spin). Hartree."""
    c = jnp.cbrt(rho_s)
    return -X_SPIN_C * c * att_erf(KF_SPIN_C * c / omega)


# ---------------------------------------------------------------- ITYH-attenuated B88
def b88_enhancement(xs: jax.Array) -> jax.Array:
    r"""B88 exchange enhancement over LDA per spin (A. D. Becke, Phys. Rev. A 38, 3098
    (1988)): :math:`F(x_\sigma) = 1 + \frac{\beta x_\sigma^2}{X_c (1 + 6\beta x_\sigma
    \sinh^{-1}x_\sigma)}`, :math:`X_c = \tfrac34(6/\pi)^{1/3}`, :math:`\beta = 0.0042`."""
    return 1.0 + (B88_BETA / X_SPIN_C) * xs * xs / (
        1.0 + B88_GAMMA * B88_BETA * xs * jnp.arcsinh(xs)
    )


def ityh_b88_x_spin(rho_s: jax.Array, xs: jax.Array, omega: float) -> jax.Array:
    r"""Short-range B88 exchange per electron of a spin channel, by the scheme of H. Iikura,
    T. Tsuneda, T. Yanai & K. Hirao, J. Chem. Phys. 115, 3540 (2001) (libxc GGA_X_ITYH):
    the LDA attenuation with the Fermi momentum replaced by
    :math:`k_\sigma = k_{F\sigma}/\sqrt{F(x_\sigma)}`,

    .. math::
        \varepsilon_{x\sigma} = \varepsilon_{x\sigma}^{LDA} F(x_\sigma)\,
        F_{att}\big(a_\sigma = \omega/(2k_\sigma)\big).
    """
    c = jnp.cbrt(rho_s)
    b0 = KF_SPIN_C * c / omega
    b = b0 / jnp.sqrt(b88_enhancement(xs))
    # F(x) F_att(b) = b0^2 F_att(b)/b^2: at large x, F F_att tends to a constant, and this
    # form keeps its derivative (a difference of nearly equal terms otherwise) accurate
    return -X_SPIN_C * c * (b0 * b0) * att_erf_over_b2(b)


def ityh_b88_x(rho: jax.Array, grad: jax.Array, omega: float) -> jax.Array:
    """Closed-shell :func:`ityh_b88_x_spin` (libxc GGA_X_ITYH, id 529, with the omega of
    the hybrid: 0.33 in CAM-B3LYP). Hartree per electron."""
    return ityh_b88_x_spin(0.5 * rho, CBRT2 * reduced_gradient(rho, grad), omega)


# ---------------------------------------------------------------- PW92 (libxc LDA_C_PW)
# J. P. Perdew & Y. Wang, Phys. Rev. B 45, 13244 (1992), Table I: (A, alpha1, beta1..beta4)
# of -eps_c(zeta=0), -eps_c(zeta=1) and the spin stiffness -alpha_c; libxc's LDA_C_PW (the
# paper's decimals: A = 0.031091, not PW_MOD's 0.0310907), which its wB97 kernels use.
PW92_PARAMS = (
    (0.031091, 0.21370, 7.5957, 3.5876, 1.6382, 0.49294),
    (0.015545, 0.20548, 14.1189, 6.1977, 3.3662, 0.62517),
    (0.016887, 0.11125, 10.357, 3.6231, 0.88026, 0.49671),
)
PW92_FZ20 = 1.709921  # f''(0) as the paper rounds it


def _pw92_g(rs: jax.Array, p: tuple[float, ...]) -> jax.Array:
    """PW92 Eq. (10): G(rs) = -2A(1 + alpha1 rs) ln[1 + 1/(2A Q1)]."""
    a, alpha1, b1, b2, b3, b4 = p
    srs = jnp.sqrt(rs)
    q1 = srs * (b1 + srs * (b2 + srs * (b3 + srs * b4)))
    return -2.0 * a * (1.0 + alpha1 * rs) * jnp.log(1.0 + 1.0 / (2.0 * a * q1))


def pw92_c_spin(rho_a: jax.Array, rho_b: jax.Array) -> jax.Array:
    r"""PW92 correlation energy per electron of the gas with spin densities
    :math:`\rho_\alpha, \rho_\beta` (PW92 Eq. (8), with :math:`\zeta = (\rho_\alpha -
    \rho_\beta)/\rho` and :math:`f(\zeta) = [(1+\zeta)^{4/3} + (1-\zeta)^{4/3} - 2]/(2^{4/3}-2)`):

    .. math::
        \varepsilon_c = \varepsilon_c(r_s,0) + \alpha_c(r_s)\frac{f(\zeta)}{f''(0)}(1-\zeta^4)
        + [\varepsilon_c(r_s,1) - \varepsilon_c(r_s,0)] f(\zeta)\zeta^4.

    Below, :math:`\varepsilon_c^{PW92}(\rho_\alpha, \rho_\beta)` names this function of the
    two spin densities (so :math:`\varepsilon_c^{PW92}(\rho_\sigma, 0)` is the fully
    polarised gas, :func:`pw92_c_polarized`). Hartree.
    """
    rho = rho_a + rho_b
    rs = RS_FACTOR / jnp.cbrt(rho)
    zeta = (rho_a - rho_b) / rho
    # 1 -/+ zeta floored at the dtype's epsilon (libxc's zeta_threshold): no infinite
    # derivative of the cube root at full polarisation
    tiny = float(jnp.finfo(rs.dtype).eps)
    opz, omz = jnp.maximum(1.0 + zeta, tiny), jnp.maximum(1.0 - zeta, tiny)
    fz = (opz * jnp.cbrt(opz) + omz * jnp.cbrt(omz) - 2.0) / (2.0 * CBRT2 - 2.0)
    g0, g1, g2 = (_pw92_g(rs, p) for p in PW92_PARAMS)
    z4 = zeta**4
    return g0 + z4 * fz * (g1 - g0 + g2 / PW92_FZ20) - fz * g2 / PW92_FZ20


def pw92_c_polarized(rho_s: jax.Array) -> jax.Array:
    """PW92 correlation per electron of a fully spin-polarised gas of density ``rho_s``
    (the zeta = 1 G function). Hartree."""
    return _pw92_g(RS_FACTOR / jnp.cbrt(rho_s), PW92_PARAMS[1])


def pw92_c_unpolarized(rho: jax.Array) -> jax.Array:
    """PW92 correlation per electron of the unpolarised gas (the zeta = 0 G function)."""
    return _pw92_g(RS_FACTOR / jnp.cbrt(rho), PW92_PARAMS[0])


# ---------------------------------------------------------------- wB97 family
# Becke's power series in u = gamma x^2/(1 + gamma x^2) (A. D. Becke, J. Chem. Phys. 107,
# 8554 (1997)), with the gammas of B97.
B97_GAMMA_X, B97_GAMMA_SS, B97_GAMMA_OS = 0.004, 0.2, 0.006


def b97_g(x: jax.Array, gamma: float, coefs: tuple[float, ...]) -> jax.Array:
    r""":math:`g(x) = \sum_i c_i u^i`, :math:`u = \gamma x^2/(1+\gamma x^2)` (Becke 1997)."""
    # 1 - 1/(1 + gamma x^2): its derivative 2 gamma x/(1 + gamma x^2)^2 has no cancellation
    # as u -> 1 (the quotient rule applied to gamma x^2/(1 + gamma x^2) has)
    u = 1.0 - 1.0 / (1.0 + gamma * x * x)
    out = jnp.zeros_like(x)
    for c in reversed(coefs):
        out = out * u + c
    return out


def wb97_x_spin(rho_s: jax.Array, xs: jax.Array, omega: float, cx: tuple[float, ...]):
    r"""wB97 exchange per electron of a spin channel: short-range LDA exchange times the
    B97 series, :math:`\varepsilon_{x\sigma}^{SR-LDA}(\rho_\sigma)\,g_x(x_\sigma)`
    (J.-D. Chai & M. Head-Gordon, J. Chem. Phys. 128, 084106 (2008))."""
    return lda_x_sr_spin(rho_s, omega) * b97_g(xs, B97_GAMMA_X, cx)


def wb97_c_ss_spin(rho_s: jax.Array, xs: jax.Array, css: tuple[float, ...]):
    r"""Same-spin wB97 correlation per electron of a spin channel (Stoll partition): the
    PW92 energy of the fully polarised gas of density :math:`\rho_\sigma` times
    :math:`g_{ss}(x_\sigma)` (Chai & Head-Gordon 2008; Becke's B97)."""
    return pw92_c_polarized(rho_s) * b97_g(xs, B97_GAMMA_SS, css)


def wb97_c_os(rho_a, rho_b, xa, xb, cos: tuple[float, ...]) -> jax.Array:
    r"""Opposite-spin wB97 correlation energy per electron of the total density:

    .. math::
        \varepsilon_{c,\alpha\beta} = \Big[\varepsilon_c^{PW92}(\rho_\alpha,\rho_\beta)
        - \sum_\sigma \frac{\rho_\sigma}{\rho}\varepsilon_c^{PW92}(\rho_\sigma, 0)\Big]
        g_{ab}\Big(\sqrt{(x_\alpha^2 + x_\beta^2)/2}\Big)

    (Chai & Head-Gordon 2008; Becke's B97). For the closed shell libxc screens the
    same-spin terms (subtracted here too) per spin channel, so the closed-shell components
    in :mod:`~qmgen.dft.xc.registry` split this into :func:`wb97_c_os_pw` and the subtracted
    same-spin part.
    """
    rho = rho_a + rho_b
    sub = (rho_a * pw92_c_polarized(rho_a) + rho_b * pw92_c_polarized(rho_b)) / rho
    x_ab = jnp.sqrt(0.5 * (xa * xa + xb * xb))
    return (pw92_c_spin(rho_a, rho_b) - sub) * b97_g(x_ab, B97_GAMMA_OS, cos)


def _xs(rho, grad):
    return CBRT2 * reduced_gradient(rho, grad)


def wb97_x(rho, grad, omega: float, cx: tuple[float, ...]) -> jax.Array:
    """Closed-shell wB97 exchange (:func:`wb97_x_spin` of each spin), Hartree per electron."""
    return wb97_x_spin(0.5 * rho, _xs(rho, grad), omega, cx)


def wb97_c_ss(rho, grad, css: tuple[float, ...], cos: tuple[float, ...]) -> jax.Array:
    r"""Closed-shell same-spin wB97 correlation together with the same-spin energy the
    opposite-spin term subtracts: :math:`\varepsilon_c^{PW92}(\rho/2, 0)\,[g_{ss}(x_\sigma)
    - g_{ab}(x_\sigma)]` (what libxc zeroes where :math:`\rho/2` is below its threshold)."""
    xs = _xs(rho, grad)
    ec1 = pw92_c_polarized(0.5 * rho)
    return ec1 * (b97_g(xs, B97_GAMMA_SS, css) - b97_g(xs, B97_GAMMA_OS, cos))


def wb97_c_os_pw(rho, grad, cos: tuple[float, ...]) -> jax.Array:
    r"""Closed-shell opposite-spin wB97 correlation without the subtracted same-spin
    energies: :math:`\varepsilon_c^{PW92}(\rho/2,\rho/2)\,g_{ab}(x_\sigma)`."""
    return pw92_c_unpolarized(rho) * b97_g(_xs(rho, grad), B97_GAMMA_OS, cos)


# libxc 7.0.0 (HYB_GGA_XC_WB97X, id 464; HYB_GGA_XC_WB97X_V, id 466) coefficients
# c_0..c_4 of g_x, g_ss, g_ab and the hybrid's (alpha, beta): exact exchange
# alpha K + beta K^SR_omega, i.e. short-range fraction alpha + beta.
WB97X_PARAMS = {
    "cx": (0.842294, 0.726479, 1.0476, -5.70635, 13.2794),
    "css": (1.0, -4.33879, 18.2308, -31.743, 17.2901),
    "cos": (1.0, 2.37031, -11.3995, 6.58405, -3.78132),
}
WB97X_CAM = (1.0, -0.842294, 0.3)  # alpha, beta, omega (Chai & Head-Gordon 2008)
# N. Mardirossian & M. Head-Gordon, Phys. Chem. Chem. Phys. 16, 9904 (2014)
WB97X_V_PARAMS = {
    "cx": (0.833, 0.603, 1.194, 0.0, 0.0),
    "css": (0.556, -0.257, 0.0, 0.0, 0.0),
    "cos": (1.219, -1.85, 0.0, 0.0, 0.0),
}
WB97X_V_CAM = (1.0, -0.833, 0.3)
# CAM-B3LYP: T. Yanai, D. P. Tew & N. C. Handy, Chem. Phys. Lett. 393, 51 (2004), libxc
# HYB_GGA_XC_CAM_B3LYP (id 433): ac, alpha, beta, omega
CAM_B3LYP = (0.81, 0.65, -0.46, 0.33)
