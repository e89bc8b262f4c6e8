"""``qmgen info``: counts, level of theory, label statistics and histograms of a dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from qmgen.dataset import open_dataset
from qmgen.status import Status
from qmgen.units import HARTREE_TO_EV

STAT_FIELDS = ("energy_per_heavy_atom", "gap", "homo", "lumo", "n_atoms", "n_heavy", "n_iter")
# (column, title): energies are drawn in eV whatever the energy unit of the text
PLOTS = (
    ("energy_per_heavy_atom", "energy per heavy atom"),
    ("gap", "HOMO-LUMO gap"),
    ("n_atoms", "atoms per conformer"),
)
# the level of theory, printed first and once (config.json repeats it among the options)
LEVEL_KEYS = (
    "xc",
    "basis",
    "grid_level",
    "precision",
    "forces",
    "conv_tol",
    "max_cycle",
    "density_fit",
    "method",
)


def _status_name(code: int) -> str:
    try:
        return Status(int(code)).label
    except ValueError:
        return f"unknown({int(code)})"


def dataset_info(root, energy_unit: str = "hartree") -> dict:
    """Counts, level of theory and label statistics of the dataset at ``root``.

    Returns dict(root, n_shards, n_conformers, n_molecules, n_converged, conformer_status
    {name: count}, failures {status name: count}, n_failures, attrs, energy_unit, stats
    {field: dict(mean, std, min, max)}) with energies in ``energy_unit``. Energy per heavy
    atom is energy / n_heavy (hydrogens add little to a total energy, so per heavy atom
    compares molecules of one size class; a molecule without heavy atoms counts 1).
    """
    ds = open_dataset(root, energy_unit=energy_unit, verify="none")
    attrs = dict(ds.attrs)
    keys = ("energy", "gap", "homo", "lumo", "n_atoms", "n_heavy", "n_iter")
    columns = {k: ds.column(k) for k in keys}
    columns["energy_per_heavy_atom"] = columns["energy"] / np.maximum(columns["n_heavy"], 1)
    stats = {}
    for key in STAT_FIELDS:
        v = columns[key].astype(np.float64)
        stats[key] = dict(mean=v.mean(), std=v.std(), min=v.min(), max=v.max()) if v.size else None
    failures = Counter(_status_name(f["status"]) for f in ds.failures)
    status = Counter(_status_name(c) for c in ds.column("status").tolist())
    return dict(
        root=str(root),
        n_shards=len(ds.shards),
        n_conformers=len(ds),
        n_molecules=int(np.unique(ds.column("molecule_index")).size),
        n_converged=int(ds.column("converged").sum()),
        conformer_status=dict(status),
        n_failures=sum(failures.values()),
        failures=dict(failures),
        attrs=attrs,
        energy_unit=energy_unit,
        stats=stats,
        columns=columns,
    )


def format_info(info: dict) -> str:
    """Human-readable text of :func:`dataset_info`."""
    unit = {"hartree": "Ha", "ev": "eV"}[info["energy_unit"]]
    lines = [
        f"dataset      {info['root']}",
        f"shards       {info['n_shards']}",
        f"conformers   {info['n_conformers']} ({info['n_converged']} converged"
        + "".join(f"; {k}: {v}" for k, v in sorted(info["conformer_status"].items()))
        + ")",
        f"molecules    {info['n_molecules']} with stored conformers",
        f"failures     {info['n_failures']}"
        + (" (" + ", ".join(f"{k}: {v}" for k, v in sorted(info["failures"].items())) + ")")
        * bool(info["failures"]),
    ]
    attrs = dict(info["attrs"])
    config = attrs.pop("config", None)
    config = dict(config) if isinstance(config, dict) else {}
    level = {k: attrs.pop(k, config.get(k)) for k in LEVEL_KEYS}
    lines.append(
        "level of theory " + ", ".join(f"{k} {v}" for k, v in level.items() if v is not None)
    )
    other = {k: v for k, v in config.items() if k not in LEVEL_KEYS}
    if other:
        lines.append("options         " + ", ".join(f"{k} {v}" for k, v in sorted(other.items())))
    lines.append("provenance:")
    for key, value in sorted(attrs.items()):
        if isinstance(value, dict):
            lines.append(f"  {key}:")
            lines += [f"    {k}: {v}" for k, v in sorted(value.items())]
        else:
            lines.append(f"  {key}: {value}")
    header = " ".join(f"{k:>12}" for k in ("mean", "std", "min", "max"))
    lines.append(f"label statistics            {header}")
    units = {"energy_per_heavy_atom": unit, "gap": unit, "homo": unit, "lumo": unit}
    for key in STAT_FIELDS:
        s = info["stats"][key]
        label = f"{key} ({units.get(key, '1')})"
        if s is None:
            lines.append(f"  {label:<27} (no conformers)")
        else:
            values = " ".join(f"{s[k]:12.6g}" for k in ("mean", "std", "min", "max"))
            lines.append(f"  {label:<27} {values}")
    return "\n".join(lines)


def write_plots(info: dict, out_dir=None) -> list[Path]:
    """PNG histograms of energy per heavy atom and HOMO-LUMO gap (eV) and atom counts;
    returns their paths. Count axes have integer ticks.

    Written next to the dataset (``DIR/info_<field>.png``) unless ``out_dir`` is given.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    out_dir = Path(info["root"] if out_dir is None else out_dir)
    to_ev = HARTREE_TO_EV if info["energy_unit"] == "hartree" else 1.0
    paths = []
    for key, title in PLOTS:
        values = info["columns"][key]
        fig = Figure(figsize=(5, 3.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if key == "n_atoms":
            lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
            ax.hist(values, bins=list(np.arange(lo, hi + 2) - 0.5), color="tab:blue")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(title)
        else:
            ax.hist(values * to_ev, bins=50, color="tab:blue")
            ax.set_xlabel(f"{title} (eV)")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("conformers")
        ax.set_title(f"{title}: {values.size} conformers")
        fig.tight_layout()
        path = out_dir / f"info_{key}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- verify
