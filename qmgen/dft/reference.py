"""PySCF reference calculations: the independent check used by tests, benchmarks and
``qmgen validate``. Never on the compute path.

``reference_labels`` runs PySCF's RKS (or RHF for ``xc="hf"``; UKS/UHF for molecules with
spin > 0 or with ``unrestricted=True``) with the same basis,
functional variant and grid level as qmgen and returns a record with qmgen's label names.
Functionals with D3(BJ) dispersion (``b3lyp-d3bj``, ...) run as PySCF's own ``<xc>-d3bj``,
which needs the pyscf-dispersion package: its energy and nuclear gradient include the
dispersion, and ``dispersion`` is PySCF's ``scf_summary["dispersion"]``.
"""

from __future__ import annotations

import numpy as np

from qmgen.dft.xc import get_functional
from qmgen.molecule import Molecule


def pyscf_mol(mol: Molecule, basis: str = "sto-3g"):
    """The PySCF ``gto.Mole`` of ``mol`` (Bohr, spherical AOs)."""
    from pyscf import gto

    atoms = [(s, tuple(p)) for s, p in zip(mol.symbols, mol.positions.tolist(), strict=True)]
    return gto.M(
        atom=atoms,
        unit="Bohr",
        basis=basis,
        charge=mol.charge,
        spin=mol.spin or mol.n_electrons % 2,
        verbose=0,
    )


def pyscf_scf(
    mol: Molecule,
    basis="sto-3g",
    xc="b3lyp5",
    grid_level=0,
    conv_tol=1e-10,
    density_fit=None,
    unrestricted=False,
):
    """A converged PySCF RKS/RHF (UKS/UHF) object at qmgen's level of theory.

    ``density_fit``: None for exact ERIs, "default" for ``mf.density_fit()`` (PySCF's
    auxiliary basis), or an auxiliary basis name. ``unrestricted``: UKS/UHF even for
    spin 0 (always for spin > 0)."""
    from pyscf import dft, scf

    functional = get_functional(xc)
    if functional.dispersion is not None:
        try:
            import pyscf.dispersion  # noqa: F401 - PySCF's -d3bj needs it at kernel time
        except ImportError as err:
            raise ImportError(
                f"the PySCF reference of {functional.name} needs pyscf-dispersion: "
                "pip install pyscf-dispersion"
            ) from err
    pm = pyscf_mol(mol, basis)
    uks = unrestricted or mol.spin > 0
    if functional.name == "hf":
        mf = scf.UHF(pm) if uks else scf.RHF(pm)
    else:
        mf = dft.UKS(pm) if uks else dft.RKS(pm)
        mf.xc = functional.pyscf_name
        mf.grids.level = grid_level
    if density_fit is not None:
        mf = mf.density_fit(auxbasis=None if density_fit == "default" else density_fit)
    mf.conv_tol = conv_tol
    mf.kernel()
    return mf


def reference_labels(
    mol: Molecule,
    basis="sto-3g",
    xc="b3lyp5",
    grid_level=0,
    forces=False,
    conv_tol=1e-10,
    density_fit=None,
    unrestricted=False,
) -> dict:
    """PySCF labels under qmgen's names: energy, homo, lumo, gap, mo_energy, dipole,
    charges, forces (or None), dispersion (or None), converged, n_iter. Energies in
    Hartree, dipole in e*Bohr; energy and forces include the dispersion. ``density_fit``
    and ``unrestricted`` as ``pyscf_scf``; unrestricted records add ``s2`` (PySCF's
    ``spin_square``) and ``spin_populations`` (``mulliken_spin_pop``), with ``mo_energy``
    (2, n) and homo/lumo over both spins, as ``qmgen.compute``."""
    mf = pyscf_scf(mol, basis, xc, grid_level, conv_tol, density_fit, unrestricted)
    disp = None
    if get_functional(xc).dispersion is not None:
        disp = float(mf.scf_summary["dispersion"])
    extra: dict = {}
    if np.ndim(mf.mo_energy) == 2:
        from pyscf.scf.uhf import mulliken_spin_pop

        (n_a, n_b), (e_a, e_b) = mf.mol.nelec, mf.mo_energy
        homo = max(e_a[n_a - 1], e_b[n_b - 1] if n_b else -np.inf)
        # a spin with every orbital filled (an H atom's alpha in STO-3G) has no LUMO
        lumo = min(e_a[n_a] if n_a < e_a.size else np.inf, e_b[n_b] if n_b < e_b.size else np.inf)
        dm = mf.make_rdm1()
        spin_pop = mulliken_spin_pop(mf.mol, dm, mf.get_ovlp(), verbose=0)[1]
        extra = dict(s2=float(mf.spin_square()[0]), spin_populations=np.asarray(spin_pop))
    else:
        n_occ = mol.n_electrons // 2
        homo, lumo = mf.mo_energy[n_occ - 1], mf.mo_energy[n_occ]
    return extra | dict(
        energy=float(mf.e_tot),
        homo=float(homo),
        lumo=float(lumo),
        gap=float(lumo - homo),
        mo_energy=np.asarray(mf.mo_energy),
        dipole=np.asarray(mf.dip_moment(unit="au", verbose=0)),
        charges=np.asarray(mf.mulliken_pop(verbose=0)[1]),
        forces=-np.asarray(mf.nuc_grad_method().kernel()) if forces else None,
        dispersion=disp,
        converged=bool(mf.converged),
        n_iter=int(getattr(mf, "cycles", -1)),
    )
