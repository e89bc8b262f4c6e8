"""``qmgen validate``: recompute a random sample of stored conformers with PySCF.

Picks ``sample`` converged conformers (seeded), runs :func:`qmgen.dft.reference.reference_labels`
at the level of theory recorded in the dataset, and compares label by label: the maximum
and mean absolute error of each, against the tolerances of the SCF parity tests
(:data:`TOLERANCES`). Writes a parity plot (PNG) and a JSON report next to the dataset
and fails (exit code 1) when any label is out of tolerance.

Each conformer is recomputed with its stored net charge and multiplicity (shard schema
version 2); a dataset of version 1, which did not store them, is refused rather than
guessed. Unrestricted rows of open-shell datasets (``--open-shell``, ``--unrestricted``)
are recomputed with PySCF's UKS/UHF, and their <S^2> and Mulliken spin populations are
compared too.

Functionals with D3(BJ) dispersion (``b3lyp-d3bj``, ...) are recomputed as PySCF's own
``<xc>-d3bj`` (pyscf-dispersion), so the total energies (and forces) compare with the
dispersion in them, and the stored ``dispersion`` label is compared with PySCF's.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from qmgen.status import Status

log = logging.getLogger("qmgen.pipeline")

# label -> (float64 tolerance, float32 tolerance, unit); float64 values are the SCF issue's
TOLERANCES = {
    "energy": (1e-6, 1e-5, "hartree"),
    "homo": (1e-5, 1e-4, "hartree"),
    "lumo": (1e-5, 1e-4, "hartree"),
    "gap": (1e-5, 1e-4, "hartree"),
    "dipole": (1e-4, 1e-3, "e*bohr"),
    "charges": (1e-4, 1e-3, "e"),
    "forces": (1e-5, 1e-4, "hartree/bohr"),
    # D3(BJ) part of energy (functionals ``<xc>-d3bj``): geometry only, the same library as
    # PySCF's (pyscf-dispersion), evaluated in float64 in both precisions
    "dispersion": (1e-9, 1e-9, "hartree"),
    # open-shell datasets, unrestricted rows: PySCF's spin_square and mulliken_spin_pop
    "s2": (1e-5, 1e-4, "1"),
    "spin_populations": (1e-4, 1e-3, "e"),
}
# compared when both sides have them
OPTIONAL_LABELS = ("forces", "dispersion", "s2", "spin_populations")


def _molecule(row: dict):
    from qmgen.molecule import Molecule

    spin = int(row["multiplicity"]) - 1
    z, pos = np.asarray(row["z"]), np.asarray(row["positions"])
    return Molecule(z, pos, charge=int(row["charge"]), spin=spin)


def _reference_row(row: dict) -> dict:
    """A stored conformer with the labels to compare: a restricted row of an open-shell
    dataset has no <S^2> or spin populations worth comparing (PySCF's RKS has none)."""
    out = dict(row)
    if not row.get("unrestricted"):
        out["s2"] = out["spin_populations"] = None
    return out


def sample_rows(ds, n: int, seed: int) -> np.ndarray:
    """Sorted positions of ``n`` random converged conformers of ``ds`` (all if fewer)."""
    status = ds.column("status")
    ok = np.flatnonzero(status == int(Status.OK))
    rng = np.random.default_rng(seed)
    if ok.size <= n:
        return ok
    return np.sort(rng.choice(ok, size=n, replace=False))


def _check_level(level: dict, root) -> None:
    """The stored level of theory must be usable before PySCF is asked to reproduce it."""
    from qmgen.dft.grid import GRID_LEVELS
    from qmgen.dft.precision import PRECISIONS
    from qmgen.errors import UserError, excerpt

    ok = isinstance(level["xc"], str) and isinstance(level["basis"], str)
    ok = ok and type(level["grid_level"]) is int and level["grid_level"] in GRID_LEVELS
    ok = ok and level["precision"] in PRECISIONS
    if not ok:
        shown = ", ".join(f"{k}={excerpt(v, 30)}" for k, v in level.items())
        raise UserError(f"{root}/index.json: attrs hold no usable level of theory ({shown})")


def validate_dataset(
    root,
    sample: int = 8,
    seed: int = 0,
    plot: str | Path | None = None,
    conv_tol: float = 1e-10,
) -> dict:
    """Compare ``sample`` stored conformers of the dataset at ``root`` with PySCF.

    Returns dict(root, n, level (attrs), labels {name: dict(n, max, mean, tol, unit,
    ok)}, conformers [per-conformer errors], ok, plot, report). ``plot``: PNG path
    (default ``ROOT/validation-parity.png``).
    """
    from qmgen.dataset import open_dataset
    from qmgen.dft.reference import reference_labels

    root = Path(root)
    ds = open_dataset(root)
    attrs = ds.attrs
    level = {k: attrs.get(k) for k in ("xc", "basis", "grid_level", "precision", "forces")}
    _check_level(level, root)
    if "charge" in ds.unknown_fields:
        from qmgen.errors import UserError

        raise UserError(
            f"{root}: shard schema version {ds.schema_version} (an older qmgen) did not store "
            "net charges, which validate needs; regenerate the dataset with this qmgen"
        )
    column = 1 if level["precision"] == "float32" else 0
    picks = sample_rows(ds, sample, seed)
    pairs: dict[str, list] = {k: [] for k in TOLERANCES}
    per_conf: list[dict] = []
    for pos in picks.tolist():
        row = _reference_row(ds[pos])
        t0 = time.perf_counter()
        ref = reference_labels(
            _molecule(row),
            basis=level["basis"],
            xc=level["xc"],
            grid_level=int(level["grid_level"] or 0),  # checked by _check_level
            forces=bool(ds.has_forces),
            conv_tol=conv_tol,
            density_fit=attrs.get("density_fit"),
            unrestricted=bool(row.get("unrestricted")),
        )
        errs = {}
        for key in TOLERANCES:
            if key in OPTIONAL_LABELS and (ref.get(key) is None or row.get(key) is None):
                continue
            mine, theirs = np.ravel(row[key]), np.ravel(ref[key])
            pairs[key].append((theirs, mine))
            errs[key] = float(np.max(np.abs(mine - theirs)))
        per_conf.append(
            dict(
                index=int(pos),
                molecule_index=int(row["molecule_index"]),
                conformer_index=int(row["conformer_index"]),
                smiles=row["smiles"],
                pyscf_converged=bool(ref["converged"]),
                seconds=round(time.perf_counter() - t0, 3),
                errors=errs,
            )
        )
        log.info("validated conformer %d (%s): %s", pos, row["smiles"], errs)
    labels = {}
    for key, (tol64, tol32, unit) in TOLERANCES.items():
        if not pairs[key]:
            continue
        err = np.concatenate([np.abs(m - t) for t, m in pairs[key]])
        tol = (tol64, tol32)[column]
        labels[key] = dict(
            n=len(pairs[key]),
            max=float(err.max()),
            mean=float(err.mean()),
            tol=tol,
            unit=unit,
            ok=bool(err.max() <= tol),
        )
    report = dict(
        root=str(root),
        n=len(per_conf),
        seed=seed,
        level=level,
        labels=labels,
        conformers=per_conf,
        ok=bool(per_conf) and all(v["ok"] for v in labels.values()),
    )
    if per_conf:
        target = plot or root / "validation-parity.png"
        report["plot"] = str(write_parity_plot(pairs, labels, target))
    path = root / "validation.json"
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    report["report"] = str(path)
    return report


def write_parity_plot(pairs: dict, labels: dict, path) -> Path:
    """qmgen against PySCF, one panel per label, with the diagonal and max error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in TOLERANCES if pairs.get(k)]
    ncols = min(4, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        ref = np.concatenate([t for t, _ in pairs[key]])
        mine = np.concatenate([m for _, m in pairs[key]])
        lo, hi = float(min(ref.min(), mine.min())), float(max(ref.max(), mine.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=1)
        ax.scatter(ref, mine, s=12, color="tab:blue" if labels[key]["ok"] else "tab:red")
        info = labels[key]
        ax.set_title(f"{key}: max |err| {info['max']:.1e} (tol {info['tol']:.0e})", fontsize=9)
        ax.set_xlabel(f"PySCF ({info['unit']})", fontsize=8)
        ax.set_ylabel(f"qmgen ({info['unit']})", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle("qmgen validate: stored labels against PySCF", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_report(report: dict) -> str:
    """The text table printed by ``qmgen validate``."""
    lv = report["level"]
    lines = [
        f"validated {report['n']} conformers of {report['root']} against PySCF "
        f"({lv['xc']}/{lv['basis']}, grid level {lv['grid_level']}, {lv['precision']})",
        f"{'label':<10} {'unit':<13} {'n':>4} {'max |err|':>10} {'mean |err|':>11} "
        f"{'tolerance':>10}  result",
    ]
    for key, v in report["labels"].items():
        lines.append(
            f"{key:<10} {v['unit']:<13} {v['n']:>4} {v['max']:>10.2e} {v['mean']:>11.2e} "
            f"{v['tol']:>10.0e}  {'ok' if v['ok'] else 'FAIL'}"
        )
    if not report["n"]:
        lines.append("no converged conformers to validate")
    lines.append(f"result: {'PASS' if report['ok'] else 'FAIL'}")
    if report.get("plot"):
        lines.append(f"parity plot: {report['plot']}")
    lines.append(f"report: {report['report']}")
    return "\n".join(lines)
