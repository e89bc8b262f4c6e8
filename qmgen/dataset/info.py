"""``qmgen info``: counts, level of theory, label statistics and histograms of a dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from qmgen.dataset import open_dataset
from qmgen.status import Status

STAT_FIELDS = ("energy_per_atom", "gap", "homo", "lumo", "n_atoms", "n_iter")
PLOTS = (("energy_per_atom", "energy per atom"), ("gap", "HOMO-LUMO gap"), ("n_atoms", "atoms"))


def _status_name(code: int) -> str:
    try:
        return Status(int(code)).label
    except ValueError:
        return f"unknown({int(code)})"


def dataset_info(root, energy_unit: str = "hartree") -> dict:
    """Counts, level of theory and label statistics of the dataset at ``root``.

    Returns dict(root, n_shards, n_conformers, n_molecules, n_converged, conformer_status
    {name: count}, failures {status name: count}, n_failures, attrs, energy_unit, stats
    {field: dict(mean, std, min, max)}) with energies in ``energy_unit`` (energy per atom
    is energy / n_atoms).
    """
    ds = open_dataset(root, energy_unit=energy_unit, verify="none")
    attrs = dict(ds.attrs)
    columns = {k: ds.column(k) for k in ("energy", "gap", "homo", "lumo", "n_atoms", "n_iter")}
    columns["energy_per_atom"] = columns["energy"] / np.maximum(columns["n_atoms"], 1)
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
        "level of theory and provenance:",
    ]
    for key, value in sorted(info["attrs"].items()):
        if isinstance(value, dict):
            lines.append(f"  {key}:")
            lines += [f"    {k}: {v}" for k, v in sorted(value.items())]
        else:
            lines.append(f"  {key}: {value}")
    header = " ".join(f"{k:>12}" for k in ("mean", "std", "min", "max"))
    lines.append(f"label statistics     {header}")
    units = {"energy_per_atom": unit, "gap": unit, "homo": unit, "lumo": unit}
    for key in STAT_FIELDS:
        s = info["stats"][key]
        label = f"{key} ({units.get(key, '1')})"
        if s is None:
            lines.append(f"  {label:<20} (no conformers)")
        else:
            values = " ".join(f"{s[k]:12.6g}" for k in ("mean", "std", "min", "max"))
            lines.append(f"  {label:<20} {values}")
    return "\n".join(lines)


def write_plots(info: dict, out_dir=None) -> list[Path]:
    """PNG histograms of energy per atom, gap and atom counts; returns their paths.

    Written next to the dataset (``DIR/info_<field>.png``) unless ``out_dir`` is given.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(info["root"] if out_dir is None else out_dir)
    unit = {"hartree": "Hartree", "ev": "eV"}[info["energy_unit"]]
    paths = []
    for key, title in PLOTS:
        values = info["columns"][key]
        fig = Figure(figsize=(5, 3.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if key == "n_atoms" and values.size:
            bins = np.arange(values.min(), values.max() + 2) - 0.5
        else:
            bins = 50
        ax.hist(values, bins=bins, color="tab:blue")
        ax.set_xlabel(f"{title} ({unit})" if key != "n_atoms" else "atoms per conformer")
        ax.set_ylabel("conformers")
        ax.set_title(f"{title}: {values.size} conformers")
        fig.tight_layout()
        path = out_dir / f"info_{key}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- verify
