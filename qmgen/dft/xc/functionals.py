r"""Spin-unpolarised exchange-correlation energy densities in pure JAX.

Every function here returns the energy per particle :math:`\varepsilon_{xc}` (Hartree),
libxc's ``zk``, so that :math:`E_{xc} = \int \rho\,\varepsilon_{xc}\,d^3r` (the integrand
:math:`\rho\varepsilon` is in Hartree/Bohr^3). Arguments are arrays of one shape ``(n,)``
(any shape works: everything is elementwise):

* ``rho``  -- total electron density in electrons/Bohr^3, **strictly positive** (the caller,
  :mod:`qmgen.dft.xc.evaluate`, applies libxc's density screening and passes a safe value on
  screened points);
* ``grad`` -- :math:`|\nabla\rho|` in electrons/Bohr^4, **strictly positive** (GGA only).

GGAs take :math:`|\nabla\rho| = \sqrt\sigma` rather than :math:`\sigma`: the caller floors it
at libxc's ``sigma_threshold`` before the square root, so no square root is ever
differentiated at zero. All functions work in the dtype of ``rho`` (float32 or float64):
constants are Python floats, which JAX treats as weakly typed.

Notation: :math:`r_s = (3/(4\pi\rho))^{1/3}` (Wigner-Seitz radius, Bohr) and
:math:`x = |\nabla\rho|/\rho^{4/3}` (dimensionless reduced gradient of the total density).
Parameters are those of libxc 7.0.0 (which PySCF uses), with references below.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# ---------------------------------------------------------------- shared constants
PI = math.pi
RS_FACTOR = (3.0 / (4.0 * PI)) ** (1.0 / 3.0)  # r_s = RS_FACTOR * rho^(-1/3)
SLATER_C = 0.75 * (3.0 / PI) ** (1.0 / 3.0)  # e_x^LDA = -SLATER_C rho^(1/3)
CBRT2 = 2.0 ** (1.0 / 3.0)


def max_reduced_gradient(dtype) -> float:
    """Cap on :math:`x = |\\nabla\\rho|/\\rho^{4/3}` so that x^2, t^2 and their products stay
    finite in ``dtype`` (about 5e7 in float32, 1.6e61 in float64; s = 0.16 x). Reached only for
    unphysical gradients, far beyond any s that libxc or a grid produces."""
    return float(jnp.finfo(dtype).max) ** 0.2


def reduced_gradient(rho: jax.Array, grad: jax.Array) -> jax.Array:
    """:math:`x = |\\nabla\\rho| / \\rho^{4/3}`, shape of ``rho``, capped by
    :func:`max_reduced_gradient`. The PBE reduced gradient is
    :math:`s = x / (2 (3\\pi^2)^{1/3})`."""
    x = grad / (rho * jnp.cbrt(rho))
    return jnp.minimum(x, max_reduced_gradient(rho.dtype))


# ---------------------------------------------------------------- LDA exchange
def slater_x(rho: jax.Array) -> jax.Array:
    r"""Slater (Dirac) exchange of the uniform gas, libxc LDA_X (id 1).

    :math:`\varepsilon_x = -\tfrac34 (3/\pi)^{1/3} \rho^{1/3}`
    (P. A. M. Dirac, Proc. Camb. Phil. Soc. 26, 376 (1930); J. C. Slater, Phys. Rev. 81,
    385 (1951) with alpha = 2/3).
    """
    return -SLATER_C * jnp.cbrt(rho)


# ---------------------------------------------------------------- VWN correlation
# Paramagnetic parameters of Vosko, Wilk & Nusair, Can. J. Phys. 58, 1200 (1980), with A
# halved from Rydberg to Hartree: (A, b, c, x0).
VWN5_PARAMS = (0.0310907, 3.72744, 12.9352, -0.10498)  # fit to Ceperley-Alder (VWN "5")
VWN_RPA_PARAMS = (0.0310907, 13.0720, 42.7198, -0.409286)  # fit to the RPA energies


def _vwn_paramagnetic(rho: jax.Array, params: tuple[float, float, float, float]) -> jax.Array:
    r"""VWN interpolation formula, Eq. (4.4) of VWN 1980, for the unpolarised gas:

    .. math::
        \varepsilon_c = A\Big[\ln\frac{x^2}{X(x)} + \frac{2b}{Q}\arctan\frac{Q}{2x+b}
        - \frac{b x_0}{X(x_0)}\Big(\ln\frac{(x-x_0)^2}{X(x)}
        + \frac{2(b+2x_0)}{Q}\arctan\frac{Q}{2x+b}\Big)\Big]

    with :math:`x = \sqrt{r_s}`, :math:`X(x) = x^2 + bx + c`, :math:`Q = \sqrt{4c-b^2}`.
    """
    a, b, c, x0 = params
    q = math.sqrt(4.0 * c - b * b)
    f2 = b * x0 / (x0 * x0 + b * x0 + c)
    c_atan = 2.0 * b / q - f2 * 2.0 * (b + 2.0 * x0) / q  # f1 - f2 f3 in libxc's notation
    rs = RS_FACTOR / jnp.cbrt(rho)
    x = jnp.sqrt(rs)
    big_x = rs + b * x + c
    atan = jnp.arctan(q / (2.0 * x + b))
    return a * (jnp.log(rs / big_x) + c_atan * atan - f2 * jnp.log((x - x0) ** 2 / big_x))


def vwn5_c(rho: jax.Array) -> jax.Array:
    """VWN5 correlation (libxc LDA_C_VWN, id 7), paramagnetic fit to Ceperley-Alder
    (Vosko, Wilk & Nusair, Can. J. Phys. 58, 1200 (1980)). Hartree per electron."""
    return _vwn_paramagnetic(rho, VWN5_PARAMS)


def vwn_rpa_c(rho: jax.Array) -> jax.Array:
    """VWN-RPA correlation (libxc LDA_C_VWN_RPA, id 8; "VWN1RPA"/"VWN3"-style fit to the RPA
    energies, the one Gaussian's and PySCF's B3LYP use). Hartree per electron."""
    return _vwn_paramagnetic(rho, VWN_RPA_PARAMS)


# ---------------------------------------------------------------- B88 exchange
B88_BETA = 0.0042
B88_GAMMA = 6.0
_B88_SPIN_C = 1.5 * RS_FACTOR  # (3/2)(3/(4 pi))^(1/3), LDA exchange per spin density^(4/3)


def b88_x(rho: jax.Array, grad: jax.Array) -> jax.Array:
    r"""Becke 1988 exchange (libxc GGA_X_B88, id 106), A. D. Becke, Phys. Rev. A 38, 3098
    (1988), Eq. (8), for equal spin densities :math:`\rho_\sigma = \rho/2`:

    .. math::
        \rho\varepsilon_x = 2\rho_\sigma^{4/3}\Big[-\tfrac32\big(\tfrac{3}{4\pi}\big)^{1/3}
        - \frac{\beta x_\sigma^2}{1 + 6\beta x_\sigma \sinh^{-1} x_\sigma}\Big],\qquad
        x_\sigma = \frac{|\nabla\rho_\sigma|}{\rho_\sigma^{4/3}} = 2^{1/3} x,

    with :math:`\beta = 0.0042`.
    """
    xs = CBRT2 * reduced_gradient(rho, grad)
    enhancement = B88_BETA * xs * xs / (1.0 + B88_GAMMA * B88_BETA * xs * jnp.arcsinh(xs))
    # 2 (rho/2)^(4/3) / rho = 2^(-1/3) rho^(1/3)
    return (jnp.cbrt(rho) / CBRT2) * (-_B88_SPIN_C - enhancement)


# ---------------------------------------------------------------- PBE exchange
PBE_KAPPA = 0.804
PBE_BETA = 0.06672455060314922  # libxc's value of beta (PBE 1996: 0.066725)
PBE_MU = PBE_BETA * PI * PI / 3.0  # 0.2195149727645171
_S2_PER_X2 = 1.0 / (4.0 * (3.0 * PI * PI) ** (2.0 / 3.0))  # s^2 = _S2_PER_X2 * x^2


def pbe_x(rho: jax.Array, grad: jax.Array) -> jax.Array:
    r"""PBE exchange (libxc GGA_X_PBE, id 101), J. P. Perdew, K. Burke & M. Ernzerhof,
    Phys. Rev. Lett. 77, 3865 (1996), Eq. (14):

    .. math::
        \varepsilon_x = \varepsilon_x^{LDA}(\rho)\,F_x(s),\quad
        F_x = 1 + \kappa - \frac{\kappa}{1 + \mu s^2/\kappa},\quad
        s = \frac{|\nabla\rho|}{2 (3\pi^2)^{1/3} \rho^{4/3}},

    :math:`\kappa = 0.804`, :math:`\mu = \beta\pi^2/3`. (For a spin-unpolarised density the
    spin-scaling relation leaves this form unchanged.)
    """
    x = reduced_gradient(rho, grad)
    s2 = _S2_PER_X2 * x * x
    fx = 1.0 + PBE_KAPPA - PBE_KAPPA * PBE_KAPPA / (PBE_KAPPA + PBE_MU * s2)
    return -SLATER_C * jnp.cbrt(rho) * fx


# ---------------------------------------------------------------- PBE correlation
# Perdew & Wang, Phys. Rev. B 45, 13244 (1992), Table I, unpolarised column, with the more
# precise A of libxc's LDA_C_PW_MOD (the variant PBE correlation is built on).
PW92_A = 0.0310907
PW92_ALPHA1 = 0.21370
PW92_BETA = (7.5957, 3.5876, 1.6382, 0.49294)
PBE_GAMMA = (1.0 - math.log(2.0)) / (PI * PI)
_T2_PER_X2 = (PI / 3.0) ** (1.0 / 3.0) / 16.0  # t^2 = _T2_PER_X2 * x^2 * rho^(1/3)


def pw92_c(rho: jax.Array) -> jax.Array:
    r"""Perdew-Wang 1992 correlation of the unpolarised gas, Eq. (10) of PRB 45, 13244:

    .. math::
        \varepsilon_c = -2A(1+\alpha_1 r_s)\ln\Big[1 + \frac{1}{2A(\beta_1 r_s^{1/2}
        + \beta_2 r_s + \beta_3 r_s^{3/2} + \beta_4 r_s^2)}\Big]

    (libxc LDA_C_PW_MOD parameters). Hartree per electron.
    """
    b1, b2, b3, b4 = PW92_BETA
    rs = RS_FACTOR / jnp.cbrt(rho)
    srs = jnp.sqrt(rs)
    poly = srs * (b1 + srs * (b2 + srs * (b3 + srs * b4)))
    # log(1 + u) as libxc writes it (not log1p), so low densities round the same way
    return -2.0 * PW92_A * (1.0 + PW92_ALPHA1 * rs) * jnp.log(1.0 + 1.0 / (2.0 * PW92_A * poly))


def pbe_c(rho: jax.Array, grad: jax.Array) -> jax.Array:
    r"""PBE correlation (libxc GGA_C_PBE, id 130), PBE 1996 Eqs. (3), (7), (8) with
    :math:`\phi = 1`:

    .. math::
        \varepsilon_c = \varepsilon_c^{PW92}(r_s) + \gamma\ln\Big[1 + \frac{\beta}{\gamma}t^2
        \frac{1 + At^2}{1 + At^2 + A^2t^4}\Big],\quad
        A = \frac{\beta/\gamma}{E},\ E = e^{-\varepsilon_c^{PW92}/\gamma} - 1,\quad
        t = \frac{|\nabla\rho|}{2 k_s \rho},\ k_s = \sqrt{4 k_F/\pi},

    :math:`\beta = 0.06672455060314922`, :math:`\gamma = (1-\ln 2)/\pi^2`.

    For :math:`y = At^2 > 1` the gradient term nearly cancels :math:`\varepsilon_c^{PW92}`
    (:math:`\varepsilon_c \to 0` as :math:`t\to\infty`). There the identical closed form
    :math:`\varepsilon_c = \gamma\ln\big[1 + w\,(e^{\varepsilon_c^{PW92}/\gamma} - 1)\big]`,
    :math:`w = u^2/(1+u+u^2)`, :math:`u = 1/y`, is used: no cancellation and no overflow
    for huge gradients (libxc evaluates the sum and loses up to ~1e-13 of
    :math:`|\varepsilon_c^{PW92}|` there).
    """
    ec = pw92_c(rho)
    x = reduced_gradient(rho, grad)
    t2 = _T2_PER_X2 * x * x * jnp.cbrt(rho)
    e = jnp.expm1(-ec / PBE_GAMMA)  # beta / (gamma A)
    a = (PBE_BETA / PBE_GAMMA) / e
    y = a * t2
    small = y <= 1.0
    y_lo = jnp.where(small, y, 0.0)
    frac = t2 * (1.0 + y_lo) / (1.0 + y_lo * (1.0 + y_lo))
    eps_small = ec + PBE_GAMMA * jnp.log1p((PBE_BETA / PBE_GAMMA) * frac)
    u = 1.0 / jnp.where(small, 1.0, y)
    w = u * u / (1.0 + u * (1.0 + u))
    eps_large = PBE_GAMMA * jnp.log1p(w * jnp.expm1(ec / PBE_GAMMA))
    return jnp.where(small, eps_small, eps_large)


# ---------------------------------------------------------------- LYP correlation
LYP_A = 0.04918
LYP_B = 0.132
LYP_C = 0.2533
LYP_D = 0.349
LYP_CF = 0.3 * (3.0 * PI * PI) ** (2.0 / 3.0)


def lyp_c(rho: jax.Array, grad: jax.Array) -> jax.Array:
    r"""Lee-Yang-Parr correlation (libxc GGA_C_LYP, id 131), C. Lee, W. Yang & R. G. Parr,
    Phys. Rev. B 37, 785 (1988), in the closed-shell form of B. Miehlich, A. Savin, H. Stoll
    & H. Preuss, Chem. Phys. Lett. 157, 200 (1989), Eq. (2) with
    :math:`\rho_\alpha=\rho_\beta=\rho/2`:

    .. math::
        \varepsilon_c = -\frac{a}{1+d\rho^{-1/3}}\Big[1 + b\,e^{-c\rho^{-1/3}}\Big(C_F
        - \frac{3 + 7\delta}{72}\,x^2\Big)\Big],\quad
        \delta = c\rho^{-1/3} + \frac{d\rho^{-1/3}}{1+d\rho^{-1/3}},

    :math:`C_F = \tfrac{3}{10}(3\pi^2)^{2/3}`, a = 0.04918, b = 0.132, c = 0.2533, d = 0.349.
    """
    r = 1.0 / jnp.cbrt(rho)
    dr = LYP_D * r
    denom = 1.0 + dr
    delta = LYP_C * r + dr / denom
    x = reduced_gradient(rho, grad)
    damp = jnp.exp(-LYP_C * r)  # underflows to 0 (value and derivative) at tiny densities
    return -(LYP_A / denom) * (1.0 + LYP_B * damp * (LYP_CF - (3.0 + 7.0 * delta) / 72.0 * x * x))
