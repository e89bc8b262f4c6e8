"""Looking at a dataset directory: ``qmgen info``, ``qmgen verify``, ``qmgen export``.

- :func:`dataset_info` counts conformers, molecules and failures (by status), reports the
  level of theory and label statistics; :func:`write_plots` draws histograms.
- :func:`verify_dataset` checks every shard (existence, size, SHA-256, HDF5 schema, CSR
  offsets, row counts) against index.json and manifest.jsonl.
- :func:`export_parquet` writes QM1B-compatible Parquet. QM1B's schema (graphcore-research
  qm1b-dataset DATASHEET.md; pyscf-ipu's generator): ``smile`` str; ``atoms`` str, the
  element symbols concatenated in atom order ("CCOHHHHHH"); ``z`` list of atomic numbers;
  ``energy``, ``homo``, ``lumo`` eV; ``N`` number of atomic orbitals (not atoms);
  ``std`` eV, the std of the last five SCF energies (QM1B kept std < 0.01); ``y`` the
  HOMO-LUMO gap, eV; ``pos`` positions in Bohr, flattened (x0, y0, z0, x1, ...). qmgen
  has no SCF energy history, so ``std`` holds the closest stored quantity, |scf_error|
  (the final SCF residual, Hartree) converted to eV. Optional extra columns: ``forces``
  (flattened, eV/Bohr) and ``dipole`` (3 values, e*Bohr). Like QM1B, only converged
  conformers are exported unless asked otherwise.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from qmgen.dataset import open_dataset
from qmgen.molecule import SYMBOLS
from qmgen.pipeline import manifest as mf
from qmgen.pipeline.shards import check_shard, sha256_file
from qmgen.status import Status

STAT_FIELDS = ("energy_per_atom", "gap", "homo", "lumo", "n_atoms", "n_iter")
PLOTS = (("energy_per_atom", "energy per atom"), ("gap", "HOMO-LUMO gap"), ("n_atoms", "atoms"))
EXPORT_FORMATS = ("parquet",)


def _status_name(code: int) -> str:
    try:
        return Status(int(code)).label
    except ValueError:
        return f"unknown({int(code)})"


# ----------------------------------------------------------------------------- info


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


def verify_dataset(root) -> tuple[list[tuple[str, str, str]], dict]:
    """Check a dataset directory; return (problems, summary).

    Each problem is (kind, file, message) with kind "MISSING", "CORRUPT" or "INDEX".
    Checked: index.json, manifest.jsonl, config.json and plan.json parse and hold valid
    values that agree with each other; every shard file lies inside ``shards/`` (after
    symlinks) and is listed once; its size, SHA-256, HDF5 schema, CSR offsets and row
    counts; no shard refers to data outside itself (external links, virtual datasets,
    external storage). A file outside the dataset is never opened. The summary counts
    shards, conformers and failure records and lists notes (torn manifest tail, orphan or
    temporary files) that are not errors.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    problems, notes = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            manifest = {int(e["shard_id"]): e for e in mf.read_manifest(root)}
        except mf.DatasetIndexError as err:
            problems.append(("INDEX", mf.MANIFEST_NAME, str(err)))
            manifest = {}
    notes += [str(w.message) for w in caught]
    try:
        index = mf.read_index(root)
    except FileNotFoundError:
        problems.append(("INDEX", mf.INDEX_NAME, "missing (unfinished run?)"))
        index = mf.build_index({}, list(manifest.values()))
    except mf.DatasetIndexError as err:
        problems.append(("INDEX", mf.INDEX_NAME, str(err)))
        index = mf.build_index({}, list(manifest.values()))
    problems += _verify_run_files(root, index)
    shards = index["shards"]
    ids = [int(s["shard_id"]) for s in shards]
    inodes: dict = {}
    for shard in shards:
        problems += _verify_shard(root, shard, manifest.get(int(shard["shard_id"])), inodes)
    for sid in sorted(set(manifest) - set(ids)):
        entry = manifest[sid]
        if not (root / entry["file"]).is_file():
            problems.append(("MISSING", entry["file"], "listed in manifest.jsonl, file not found"))
        else:
            problems.append(("INDEX", entry["file"], "in manifest.jsonl but not in index.json"))
    known = {(root / s["file"]).resolve() for s in shards} | {
        (root / e["file"]).resolve() for e in manifest.values()
    }
    shard_dir = root / mf.SHARDS_DIR
    for path in sorted(shard_dir.glob("*.h5")) if shard_dir.is_dir() else []:
        if path.resolve() not in known:
            notes.append(f"{path.relative_to(root)}: shard file not in index or manifest")
    for path in sorted(shard_dir.glob(".*.tmp-*")) if shard_dir.is_dir() else []:
        notes.append(f"{path.relative_to(root)}: temporary file of an interrupted write")
    summary = dict(
        n_shards=len(shards),
        n_rows=sum(int(s["n_rows"]) for s in shards),
        n_failures=sum(int(s["n_failures"]) for s in shards),
        notes=notes,
    )
    return problems, summary


def _verify_run_files(root: Path, index: dict) -> list[tuple[str, str, str]]:
    """config.json and plan.json of ``qmgen generate``: valid, and agreeing with the index
    (options hash, plan hash, shard ids). A dataset without them (made by another tool)
    is not an error."""
    from qmgen.pipeline.plan import CONFIG_NAME, PLAN_NAME, check_config, check_plan, read_json

    docs = {}
    for name, check in ((CONFIG_NAME, check_config), (PLAN_NAME, check_plan)):
        try:
            doc = read_json(root / name)
            docs[name] = None if doc is None else check(doc, name)
        except mf.DatasetIndexError as err:
            return [("INDEX", name, str(err))]
    config, plan = docs[CONFIG_NAME], docs[PLAN_NAME]
    out = []
    stored_hash = index["attrs"].get("options_hash")
    if config is not None and stored_hash is not None and stored_hash != config["options_hash"]:
        out.append(("INDEX", CONFIG_NAME, "options_hash differs from index.json's"))
    if config is not None and plan is not None:
        if config.get("plan_hash") not in (None, plan["plan_hash"]):
            out.append(("INDEX", PLAN_NAME, "plan_hash differs from config.json's"))
        if plan.get("options_hash") != config["options_hash"]:
            out.append(("INDEX", PLAN_NAME, "options_hash differs from config.json's"))
    if plan is not None and (root / mf.INDEX_NAME).exists():
        planned = [s["shard_id"] for s in plan["shards"]]
        if sorted(int(s["shard_id"]) for s in index["shards"]) != planned:
            out.append(("INDEX", mf.INDEX_NAME, "its shard ids are not those of plan.json"))
    return out


def _verify_shard(
    root: Path, shard: dict, entry: dict | None, inodes: dict
) -> list[tuple[str, str, str]]:
    name = shard["file"]
    try:
        path = mf.shard_file(root, name, f"shard {shard['shard_id']}")
    except mf.DatasetIndexError as err:
        return [("INDEX", str(name)[:200], str(err))]  # never opened
    if not path.is_file():
        return [("MISSING", name, "listed in index.json, file not found")]
    out = []
    if entry is None:
        out.append(("INDEX", name, "in index.json but has no manifest.jsonl line"))
    elif entry["sha256"] != shard["sha256"]:
        out.append(("INDEX", name, "manifest.jsonl and index.json record different sha256"))
    st = path.stat()
    other = inodes.setdefault((st.st_dev, st.st_ino), name)
    if other != name:
        out.append(("INDEX", name, f"is the same file as {other} (hard link or symlink)"))
    if shard.get("size") is not None and st.st_size != int(shard["size"]):
        out.append(("CORRUPT", name, f"size {st.st_size} bytes, index.json says {shard['size']}"))
    digest = sha256_file(path)
    if digest != shard["sha256"]:
        out.append(("CORRUPT", name, f"sha256 {digest} != index.json {shard['sha256']}"))
    for problem in check_shard(path, int(shard["n_rows"]), int(shard["n_failures"])):
        out.append(("CORRUPT", name, problem))
    return out


# --------------------------------------------------------------------------- export


def _atoms_string(z: np.ndarray, cache: dict) -> str:
    key = z.tobytes()
    text = cache.get(key)
    if text is None:
        text = cache[key] = "".join(SYMBOLS[int(a)] for a in z)
    return text


def export_parquet(
    root,
    out,
    forces: bool = False,
    dipoles: bool = False,
    include_unconverged: bool = False,
    rows_per_group: int = 65536,
) -> dict:
    """Write the dataset as QM1B-compatible Parquet (see module docstring); return counts.

    Streams row groups of ``rows_per_group`` conformers, so memory stays bounded.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    ds = open_dataset(root, energy_unit="ev", length_unit="bohr")
    if forces and not ds.has_forces:
        raise ValueError(f"{root}: the dataset stores no forces; export without --forces")
    sel = ds if include_unconverged else ds.filter(converged=True)
    fields = [
        ("smile", pa.string()),
        ("atoms", pa.string()),
        ("z", pa.list_(pa.int64())),
        ("energy", pa.float64()),
        ("homo", pa.float64()),
        ("lumo", pa.float64()),
        ("N", pa.int64()),
        ("std", pa.float64()),
        ("y", pa.float64()),
        ("pos", pa.list_(pa.float64())),
    ]
    if forces:
        fields.append(("forces", pa.list_(pa.float64())))
    if dipoles:
        fields.append(("dipole", pa.list_(pa.float64())))
    schema = pa.schema(fields)
    schema = schema.with_metadata(
        {"qmgen": "QM1B-compatible export: energies eV, positions Bohr, forces eV/Bohr"}
    )
    symbols: dict = {}
    n = 0
    with pq.ParquetWriter(str(out), schema) as writer:
        for b in sel.batches(rows_per_group, shuffle=False, layout="packed", strings=True):
            ao = b["atom_offset"]
            ao32 = pa.array(ao.astype(np.int32))
            ao96 = pa.array((3 * ao).astype(np.int32))
            z = b["z"].astype(np.int64)
            atoms = [_atoms_string(z[ao[i] : ao[i + 1]], symbols) for i in range(len(ao) - 1)]
            cols = {
                "smile": pa.array(b["smiles"], pa.string()),
                "atoms": pa.array(atoms, pa.string()),
                "z": pa.ListArray.from_arrays(ao32, pa.array(z)),
                "energy": pa.array(b["energy"]),
                "homo": pa.array(b["homo"]),
                "lumo": pa.array(b["lumo"]),
                "N": pa.array(b["n_basis"].astype(np.int64)),
                "std": pa.array(np.abs(b["scf_error"])),
                "y": pa.array(b["gap"]),
                "pos": pa.ListArray.from_arrays(ao96, pa.array(b["positions"].reshape(-1))),
            }
            if forces:
                cols["forces"] = pa.ListArray.from_arrays(ao96, pa.array(b["forces"].reshape(-1)))
            if dipoles:
                off = pa.array(np.arange(0, 3 * len(ao) - 2, 3, dtype=np.int32))
                cols["dipole"] = pa.ListArray.from_arrays(off, pa.array(b["dipole"].reshape(-1)))
            writer.write_table(pa.table([cols[name] for name, _ in fields], schema=schema))
            n += len(ao) - 1
    return dict(path=str(out), n_rows=n, n_skipped=len(ds) - len(sel))


# ------------------------------------------------------------------------------ cli


def _cmd_info(args) -> int:
    info = dataset_info(args.dir, energy_unit=args.energy_unit)
    print(format_info(info))
    if args.plot:
        for path in write_plots(info):
            print(f"wrote {path}")
    return 0


def _cmd_verify(args) -> int:
    problems, summary = verify_dataset(args.dir)
    for note in summary["notes"]:
        print(f"note: {note}")
    for kind, name, message in problems:
        print(f"{kind} {name}: {message}")
    if problems:
        bad = len({name for _, name, _ in problems})
        print(f"FAILED: {len(problems)} problem(s) in {bad} file(s) of {args.dir}", file=sys.stderr)
        return 1
    print(
        f"OK: {args.dir}: {summary['n_shards']} shards, {summary['n_rows']} conformers, "
        f"{summary['n_failures']} failure records; checksums, schema and row counts verified"
    )
    return 0


def _cmd_export(args) -> int:
    result = export_parquet(
        args.dir,
        args.out,
        forces=args.forces,
        dipoles=args.dipoles,
        include_unconverged=args.include_unconverged,
    )
    skipped = f" ({result['n_skipped']} unconverged skipped)" if result["n_skipped"] else ""
    print(f"wrote {result['n_rows']} conformers to {result['path']}{skipped}")
    return 0


def register(subparsers) -> None:
    """Add the ``info``, ``verify`` and ``export`` subcommands."""
    p = subparsers.add_parser("info", help="counts, level of theory and label statistics")
    p.add_argument("dir", help="dataset directory")
    p.add_argument("--plot", action="store_true", help="write PNG histograms next to it")
    p.add_argument("--energy-unit", default="hartree", choices=("hartree", "ev"))
    p.set_defaults(func=_cmd_info)

    p = subparsers.add_parser("verify", help="check checksums, schema and row counts")
    p.add_argument("dir", help="dataset directory")
    p.set_defaults(func=_cmd_verify)

    p = subparsers.add_parser("export", help="export to QM1B-compatible Parquet")
    p.add_argument("dir", help="dataset directory")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("out", help="output file")
    p.add_argument("--forces", action="store_true", help="add a forces column (eV/Bohr)")
    p.add_argument("--dipoles", action="store_true", help="add a dipole column (e*Bohr)")
    p.add_argument(
        "--include-unconverged",
        action="store_true",
        help="also export conformers whose SCF did not converge (QM1B has none)",
    )
    p.set_defaults(func=_cmd_export)
