"""Exchange-correlation functionals in pure JAX, matching PySCF/libxc 7.0.0.

Usage::

    from qmgen.dft.xc import get_functional, eval_xc, XC_NAMES
    f = get_functional("b3lyp5")                   # name, pyscf_name, hyb, is_gga
    exc, vrho, vsigma = eval_xc("b3lyp5", rho, sigma)  # rho, sigma: (n,) float32/float64

``exc``, ``vrho``, ``vsigma`` equal PySCF's ``dft.libxc.eval_xc(f.pyscf_name, ..., spin=0,
deriv=1)`` (exc, vxc[0], vxc[1]), libxc's screening of tiny densities included.
Spin-polarised (unrestricted) densities: ``eval_xc_spin(name, rho, sigma)`` with ``rho``
``(2, n)`` and ``sigma`` ``(3, n)`` (aa, ab, bb), as ``eval_xc(..., spin=1)``.

Modules: :mod:`~qmgen.dft.xc.functionals` (energy densities, the physics),
:mod:`~qmgen.dft.xc.rsh` (semilocal parts of range-separated hybrids: wB97X, CAM-B3LYP,
wB97X-V), :mod:`~qmgen.dft.xc.registry` (names -> combinations, libxc thresholds,
range-separation coefficients),
:mod:`~qmgen.dft.xc.evaluate` (screening and derivatives),
:mod:`~qmgen.dft.xc.functionals_spin` and :mod:`~qmgen.dft.xc.polarized` (the same for
spin-polarised densities).
"""

from qmgen.dft.xc.evaluate import eval_xc
from qmgen.dft.xc.polarized import eval_xc_spin
from qmgen.dft.xc.registry import XC_NAMES, Functional, get_functional

__all__ = ["XC_NAMES", "Functional", "eval_xc", "eval_xc_spin", "get_functional"]
