"""Functional names -> libxc-equivalent combinations of the components in
:mod:`qmgen.dft.xc.functionals`.

Each :class:`Component` carries the libxc 7.0.0 screening data that PySCF's results depend
on at tiny densities (see :mod:`qmgen.dft.xc.evaluate`): the density threshold
``dens_threshold`` of the libxc functional info, and whether libxc additionally screens per
spin channel (``rho/2 <= dens_threshold`` gives zero, as its maple-generated exchange code
does). The thresholds were measured by probing ``pyscf.dft.libxc.eval_xc`` (libxc 7.0.0)
bisecting on the first non-zero output; tests/test_xc.py checks them on both sides.

Mixing coefficients are those of libxc's hybrid definitions; PySCF's B3LYP is libxc
HYB_GGA_XC_B3LYP (id 402): 0.08 Slater + 0.72 B88 + 0.19 VWN-RPA + 0.81 LYP + 0.20 HF
exchange (Stephens, Devlin, Chabalowski & Frisch, J. Phys. Chem. 98, 11623 (1994));
PySCF's B3LYP5 is its own alias ``.2*HF + .08*SLATER + .72*B88, .81*LYP + .19*VWN``
(VWN = VWN5): the same combination with VWN5 correlation. PBE0 (libxc HYB_GGA_XC_PBEH,
id 406; Adamo & Barone, J. Chem. Phys. 110, 6158 (1999)) is 0.75 PBE exchange + PBE
correlation + 0.25 HF.

Range-separated hybrids (semilocal parts in :mod:`qmgen.dft.xc.rsh`; ``omega``, ``alpha`` and
``hyb`` as PySCF's ``rsh_and_hybrid_coeff``, formed from libxc's (alpha, beta) as libxc does,
hyb = alpha + beta):

* ``wb97x``: libxc HYB_GGA_XC_WB97X (id 464; Chai & Head-Gordon, J. Chem. Phys. 128, 084106
  (2008)), omega 0.3, 100 % long-range and 15.7706 % short-range exact exchange;
* ``camb3lyp``: libxc HYB_GGA_XC_CAM_B3LYP (id 433; Yanai, Tew & Handy, Chem. Phys. Lett.
  393, 51 (2004)): 0.35 B88 + 0.46 ITYH short-range B88 (omega 0.33) + 0.19 VWN5 (libxc's
  LDA_C_VWN, not VWN-RPA as in its B3LYP; checked by fitting libxc's output) + 0.81 LYP,
  65 % long-range and 19 % short-range exact exchange;
* ``wb97x-d3bj``: what PySCF (2.14, pyscf-dispersion) runs for this name: the semilocal part
  of HYB_GGA_XC_WB97X_V (id 466; Mardirossian & Head-Gordon, Phys. Chem. Chem. Phys. 16,
  9904 (2014)) with the VV10 nonlocal correlation switched off, plus D3(BJ) dispersion
  with the wB97X parameters of Najibi & Goerigk, J. Chem. Theory Comput. 14, 5725 (2018).

libxc 7.0.0 screens the wB97 kernels (dens_threshold 1e-14) in two ways at once: the total
density below 1e-14 gives zero, and the exchange and same-spin correlation terms are zero
where rho/2 <= 1e-14 (the opposite-spin term then keeps its full PW92 energy). The
closed-shell wB97 is therefore registered as three components (``*_x``, ``*_css``: spin
screened; ``*_cos``: not), which add up to the functional; they have no standalone PySCF
name (``pyscf_name`` None). GGA_X_ITYH also has dens_threshold 1e-14 and screens per spin.
Their spin-polarised kernels (``energy_spin``) split the same sum differently: the ``*_css``
kernel is the same-spin correlation alone and ``*_cos`` the whole opposite-spin term, same-spin
subtraction included (see :mod:`qmgen.dft.xc.functionals_spin`).

``energy_spin`` is each component's spin-polarised kernel (energy per volume of the spin
densities and sigma_aa, sigma_ab, sigma_bb), evaluated by :mod:`qmgen.dft.xc.polarized` with
libxc's polarised screening at the same ``dens_threshold``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from qmgen.dft.xc import functionals as fn
from qmgen.dft.xc import functionals_spin as fs
from qmgen.dft.xc import rsh


@dataclass(frozen=True)
class Component:
    """One libxc functional: its energy per particle and libxc's screening parameters."""

    name: str
    libxc_id: int
    eps: Callable  # (rho) -> eps for LDA, (rho, |grad rho|) -> eps for GGA
    is_gga: bool
    dens_threshold: float  # libxc 7.0.0 func->dens_threshold (info default)
    spin_screen: bool  # zero where rho/2 <= dens_threshold (libxc exchange kernels)
    pyscf_name: str | None  # PySCF string for this component alone (None: part of one)
    omega: float = 0.0  # range separation the component is evaluated at (pass to PySCF)
    # spin-polarised kernel, energy per volume: (rho_a, rho_b, sigma_aa, sigma_ab, sigma_bb,
    # *, dens_threshold, zeta_threshold) -> rho eps (qmgen.dft.xc.functionals_spin)
    energy_spin: Callable | None = None


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component("slater", 1, fn.slater_x, False, 1e-15, True, "slater,", 0.0, fs.slater_x_spin),
        Component("vwn5", 7, fn.vwn5_c, False, 1e-15, False, ",vwn5", 0.0, fs.vwn5_c_spin),
        Component(
            "vwn_rpa", 8, fn.vwn_rpa_c, False, 1e-15, False, ",vwn_rpa", 0.0, fs.vwn_rpa_c_spin
        ),
        Component("b88", 106, fn.b88_x, True, 1e-15, True, "b88,", 0.0, fs.b88_x_spin),
        Component("lyp", 131, fn.lyp_c, True, 1e-14, False, ",lyp", 0.0, fs.lyp_c_spin),
        Component("pbe_x", 101, fn.pbe_x, True, 1e-15, True, "pbe,", 0.0, fs.pbe_x_spin),
        Component("pbe_c", 130, fn.pbe_c, True, 1e-12, False, ",pbe", 0.0, fs.pbe_c_spin),
    )
}

# libxc HYB_GGA_XC_CAM_B3LYP's (ac, alpha, beta, omega) and its mixing of the components
_CAM_AC, _CAM_ALPHA, _CAM_BETA, _CAM_OMEGA = rsh.CAM_B3LYP
COMPONENTS["ityh_cam_b3lyp"] = Component(
    "ityh_cam_b3lyp",
    529,
    partial(rsh.ityh_b88_x, omega=_CAM_OMEGA),
    True,
    1e-14,
    True,
    "ityh,",
    _CAM_OMEGA,
    partial(fs.ityh_b88_x_spin, omega=_CAM_OMEGA),
)


def _wb97_components(prefix: str, libxc_id: int, params: dict, omega: float) -> None:
    """The three closed-shell parts of a wB97-type functional (see the module docstring)."""
    cx, css, cos = params["cx"], params["css"], params["cos"]
    for suffix, eps, spin_screen, energy_spin in (
        (
            "x",
            partial(rsh.wb97_x, omega=omega, cx=cx),
            True,
            partial(fs.wb97_x_spin, omega=omega, cx=cx),
        ),
        (
            "css",
            partial(rsh.wb97_c_ss, css=css, cos=cos),
            True,
            partial(fs.wb97_c_ss_spin, css=css),
        ),
        ("cos", partial(rsh.wb97_c_os_pw, cos=cos), False, partial(fs.wb97_c_os_spin, cos=cos)),
    ):
        name = f"{prefix}_{suffix}"
        COMPONENTS[name] = Component(
            name, libxc_id, eps, True, 1e-14, spin_screen, None, omega, energy_spin
        )


_WB97X_ALPHA, _WB97X_BETA, _WB97X_OMEGA = rsh.WB97X_CAM
_WB97XV_ALPHA, _WB97XV_BETA, _WB97XV_OMEGA = rsh.WB97X_V_CAM
_wb97_components("wb97x", 464, rsh.WB97X_PARAMS, _WB97X_OMEGA)
_wb97_components("wb97x_v", 466, rsh.WB97X_V_PARAMS, _WB97XV_OMEGA)
_WB97_PARTS = ("x", "css", "cos")
# unrestricted SCF evaluates every component spin-polarised: a component without its
# kernel is a registry error, found at import rather than in the middle of a UKS run
_NO_SPIN = [name for name, comp in COMPONENTS.items() if comp.energy_spin is None]
if _NO_SPIN:
    raise RuntimeError(f"xc components without a spin-polarised kernel: {_NO_SPIN}")


@dataclass(frozen=True)
class Functional:
    """An exchange-correlation functional by name.

    ``name``: qmgen's name; ``pyscf_name``: a string PySCF (``dft.RKS(...).xc``,
    ``pyscf.dft.libxc.eval_xc``) accepts for the same functional; ``hyb``: fraction of exact
    (Hartree-Fock) exchange; ``is_gga``: whether the semilocal part needs
    :math:`\\sigma = |\\nabla\\rho|^2`; ``components``: ``(coefficient, component name)`` pairs
    of the semilocal part (empty for HF).

    Range-separated hybrids (PySCF's ``rsh_and_hybrid_coeff(xc) == (omega, alpha, hyb)``):
    ``omega`` (1/Bohr) > 0 splits 1/r12 = erfc(omega r12)/r12 + erf(omega r12)/r12, and the
    exact exchange is :math:`c_x K + (\\alpha - c_x) K^{LR}_\\omega` with ``hyb`` = c_x (the
    full-range fraction, i.e. the short-range one) and ``alpha`` the long-range fraction
    (``alpha`` None: equal to ``hyb``, no range separation). ``dispersion``: ``"d3bj"`` for
    functionals with Grimme's D3 and Becke-Johnson damping added (``d3_method`` names the
    functional in the dftd3 library's parameter table), else ``None``.
    """

    name: str
    pyscf_name: str
    hyb: float
    is_gga: bool
    components: tuple[tuple[float, str], ...]
    omega: float = 0.0
    alpha: float | None = None
    dispersion: str | None = None
    d3_method: str | None = None

    @property
    def lr_coef(self) -> float:
        """Coefficient of the long-range exchange :math:`K^{LR}_\\omega`: alpha - hyb
        (0 for functionals without range separation)."""
        if self.omega == 0.0 or self.alpha is None:
            return 0.0
        return self.alpha - self.hyb

    @property
    def has_exchange(self) -> bool:
        """Whether the SCF needs exact exchange (full-range or long-range K)."""
        return self.hyb != 0.0 or self.lr_coef != 0.0


# libxc (B3LYP, id 402) forms its coefficients as 1 - a0 - ax and 1 - ac; PySCF's B3LYP5 alias
# writes the decimals. Same arithmetic here, so the sums round alike.
_B3_A0, _B3_AX, _B3_AC = 0.20, 0.72, 0.81

_FUNCTIONALS: dict[str, Functional] = {
    f.name: f
    for f in (
        Functional("lda", "lda,vwn", 0.0, False, ((1.0, "slater"), (1.0, "vwn5"))),
        Functional("svwn", "lda,vwn", 0.0, False, ((1.0, "slater"), (1.0, "vwn5"))),
        Functional("pbe", "pbe", 0.0, True, ((1.0, "pbe_x"), (1.0, "pbe_c"))),
        Functional("pbe0", "pbe0", 0.25, True, ((0.75, "pbe_x"), (1.0, "pbe_c"))),
        Functional(
            "b3lyp",
            "b3lyp",
            _B3_A0,
            True,
            ((1.0 - _B3_A0 - _B3_AX, "slater"), (_B3_AX, "b88"))
            + ((1.0 - _B3_AC, "vwn_rpa"), (_B3_AC, "lyp")),
        ),
        Functional(
            "b3lyp5",
            "b3lyp5",
            _B3_A0,
            True,
            ((0.08, "slater"), (0.72, "b88"), (0.19, "vwn5"), (0.81, "lyp")),
        ),
        Functional("hf", "hf", 1.0, False, ()),
        Functional(
            "wb97x",
            "wb97x",
            _WB97X_ALPHA + _WB97X_BETA,
            True,
            tuple((1.0, f"wb97x_{p}") for p in _WB97_PARTS),
            omega=_WB97X_OMEGA,
            alpha=_WB97X_ALPHA,
        ),
        Functional(
            "camb3lyp",
            "camb3lyp",
            _CAM_ALPHA + _CAM_BETA,
            True,
            ((1.0 - _CAM_ALPHA, "b88"), (-_CAM_BETA, "ityh_cam_b3lyp"))
            + ((1.0 - _CAM_AC, "vwn5"), (_CAM_AC, "lyp")),
            omega=_CAM_OMEGA,
            alpha=_CAM_ALPHA,
        ),
        # PySCF: ('wb97x-v', nlc=False, 'd3bj'); pyscf.dft.libxc.eval_xc('wb97x-d3bj') is
        # wB97X-V's semilocal part
        Functional(
            "wb97x-d3bj",
            "wb97x-d3bj",
            _WB97XV_ALPHA + _WB97XV_BETA,
            True,
            tuple((1.0, f"wb97x_v_{p}") for p in _WB97_PARTS),
            omega=_WB97XV_OMEGA,
            alpha=_WB97XV_ALPHA,
            dispersion="d3bj",
            d3_method="wb97x",
        ),
    )
}


def _with_d3bj(base: str, d3_method: str) -> Functional:
    """``base`` with D3(BJ) dispersion added: PySCF's ``<base>-d3bj`` (pyscf-dispersion)."""
    f = _FUNCTIONALS[base]
    return dataclasses.replace(
        f,
        name=f"{base}-d3bj",
        pyscf_name=f"{f.pyscf_name}-d3bj",
        dispersion="d3bj",
        d3_method=d3_method,
    )


for _f in (_with_d3bj("b3lyp", "b3lyp"), _with_d3bj("pbe0", "pbe0")):
    _FUNCTIONALS[_f.name] = _f

XC_NAMES: tuple[str, ...] = tuple(_FUNCTIONALS)


def get_functional(name: str) -> Functional:
    """The :class:`Functional` called ``name`` (case-insensitive, surrounding blanks ignored).

    Raises ``ValueError`` listing the supported names for anything else.
    """
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in _FUNCTIONALS:
        raise ValueError(
            f"unknown exchange-correlation functional {name!r}; supported: {', '.join(XC_NAMES)}"
        )
    return _FUNCTIONALS[key]
