"""``qmgen generate`` and ``qmgen validate`` (heavy imports happen when a command runs)."""

from __future__ import annotations

import argparse
import logging
import sys

DEFAULTS_NOTE = "defaults reproduce QM1B: b3lyp5 / sto-3g / grid level 0"


def register(subparsers) -> None:
    """Add the ``generate`` and ``validate`` subcommands to ``subparsers``."""
    p = subparsers.add_parser(
        "generate",
        help="compute a dataset of DFT labels from a file of molecules",
        description=(
            "Turn INPUT (SMILES .smi/.csv/.txt, XYZ or SDF) into a dataset directory of "
            f"checksummed HDF5 shards ({DEFAULTS_NOTE}). Rerunning the same command "
            "resumes an interrupted run."
        ),
    )
    p.add_argument("input", help="input file: .smi/.smiles/.txt/.csv, .xyz, .sdf/.sd/.mol")
    p.add_argument("--out", "-o", required=True, help="dataset directory (created)")
    p.add_argument("--format", choices=("smiles", "xyz", "sdf"), help="override the extension")
    p.add_argument("--limit", type=int, default=None, help="only the first N molecules of INPUT")
    p.add_argument(
        "--split",
        default=None,
        metavar="K/N",
        help="job K of N (e.g. a SLURM array task): only the input records whose index "
        "modulo N is K-1 (after --limit); merge the N datasets with `qmgen merge`",
    )
    g = p.add_argument_group("level of theory")
    g.add_argument("--xc", default="b3lyp5", help="functional (default b3lyp5, QM1B's)")
    g.add_argument("--basis", default="sto-3g", help="basis set (default sto-3g)")
    g.add_argument("--grid-level", type=int, default=0, help="PySCF grid level (default 0)")
    g.add_argument("--precision", choices=("float64", "float32"), default="float64")
    g.add_argument("--forces", action="store_true", help="also compute forces")
    g.add_argument("--conv-tol", type=float, default=1e-9, help="SCF energy tolerance")
    g.add_argument("--max-cycle", type=int, default=50, help="SCF iteration limit")
    g.add_argument(
        "--density-fit",
        nargs="?",
        const="default",
        default=None,
        metavar="AUXBASIS",
        help="density-fitted J and K; AUXBASIS defaults to PySCF's choice for the basis "
        "(def2-svp-jkfit = def2-universal-jkfit for def2-SVP, cc-pvdz-jkfit for 6-31G*)",
    )
    g.add_argument(
        "--open-shell",
        action="store_true",
        help="compute radicals and odd electron counts with UKS (spin from RDKit radicals, "
        "spin=/multiplicity= in XYZ comments or SDF properties) instead of recording them "
        "as odd_electrons failures",
    )
    g.add_argument(
        "--unrestricted",
        action="store_true",
        help="run every molecule, closed-shell ones too, unrestricted (UKS/UHF; for checks)",
    )
    g = p.add_argument_group("conformers")
    g.add_argument("--conformers", type=int, default=1, help="conformers per molecule (ETKDG)")
    g.add_argument("--optimize", choices=("none", "mmff", "uff"), default="none")
    g.add_argument("--prune-rms", type=float, default=None, help="RMSD pruning (Angstrom)")
    g.add_argument("--seed", type=int, default=0, help="conformer seed (default 0)")
    g.add_argument("--elements", default="H,C,N,O,F", help="allowed elements (default HCNOF)")
    g.add_argument("--max-atoms", type=int, default=64, help="largest molecule, with H")
    g = p.add_argument_group("off-equilibrium geometries (each conformer moved, seeded)")
    g.add_argument(
        "--sample",
        choices=("rattle", "nms", "md"),
        default=None,
        help="rattle: Gaussian displacements; nms: normal-mode sampling on the MMFF94 "
        "Hessian; md: short Langevin MD on MMFF94 (default: the conformers as embedded)",
    )
    g.add_argument(
        "--sample-amplitude", type=float, default=0.05, help="rattle sigma, Angstrom (0.05)"
    )
    g.add_argument(
        "--sample-temperature", type=float, default=300.0, help="nms/md temperature, K (300)"
    )
    g.add_argument("--sample-steps", type=int, default=200, help="md steps of 0.5 fs (200)")
    g.add_argument(
        "--min-distance",
        type=float,
        default=0.5,
        help="redraw a sample with two atoms closer than this, Angstrom (0.5)",
    )
    g = p.add_argument_group("work layout and execution")
    g.add_argument(
        "--shard-size", type=int, default=0, help="conformers per shard (default: automatic)"
    )
    g.add_argument("--batch-size", type=int, default=None, help="molecules per compiled call")
    g.add_argument("--workers", type=int, default=None, help="local worker processes")
    g.add_argument(
        "--conformer-processes",
        type=int,
        default=None,
        metavar="N",
        help="CPU processes per worker that make conformers ahead of the compute "
        "(default: min(8, cores/GPUs - 2) on GPU workers, 0 on CPU; 0: made in a thread)",
    )
    g.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    g.add_argument(
        "--new",
        "--overwrite",
        action="store_true",
        help="delete a dataset already in --out instead of resuming it",
    )
    g.add_argument(
        "--wait",
        action="store_true",
        help="when another run is writing --out, wait for it to end instead of refusing",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--quiet", "-q", action="store_true", help="warnings only")
    p.set_defaults(func=run_generate)

    p = subparsers.add_parser(
        "validate",
        help="recompute random stored conformers with PySCF and report the errors",
        description="Recompute --sample random converged conformers of DIR with PySCF at "
        "the stored level of theory; print a table, write a parity plot; exit 1 if any "
        "label is out of tolerance.",
    )
    p.add_argument("dir", help="dataset directory")
    p.add_argument("--sample", "-n", type=int, default=8, help="conformers to check (8)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--plot", default=None, help="PNG path (default DIR/validation-parity.png)")
    p.add_argument("--quiet", "-q", action="store_true", help="warnings only")
    p.set_defaults(func=run_validate)


def _logging(quiet: bool) -> None:
    """qmgen's INFO logs on stderr; Dask's own logs (driver and workers) at WARNING."""
    import dask
    import distributed  # noqa: F401  (configures its loggers on import: override after)

    dask.config.set({"logging": {"distributed": "warning", "bokeh": "error", "tornado": "error"}})
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for name in list(logging.root.manager.loggerDict) + ["jax", "absl"]:
        if name.startswith(("distributed", "jax", "absl", "tornado")):
            logging.getLogger(name).setLevel(logging.WARNING)


def run_generate(args: argparse.Namespace) -> int:
    """Run ``qmgen generate``; exit code 0 done, 1 some shards failed (raised as
    :class:`~qmgen.pipeline.run.PipelineError`); errors as in :mod:`qmgen.errors`."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from qmgen.pipeline.run import generate

    _logging(args.quiet)
    options = dict(
        xc=args.xc,
        basis=args.basis,
        grid_level=args.grid_level,
        precision=args.precision,
        forces=args.forces,
        conv_tol=args.conv_tol,
        max_cycle=args.max_cycle,
        density_fit=args.density_fit,
        open_shell=args.open_shell,
        unrestricted=args.unrestricted,
        conformers=args.conformers,
        optimize=args.optimize,
        prune_rms=args.prune_rms,
        sample=args.sample,
        sample_amplitude=args.sample_amplitude,
        sample_temperature=args.sample_temperature,
        sample_steps=args.sample_steps,
        min_distance=args.min_distance,
        seed=args.seed,
        elements=args.elements,
        max_atoms=args.max_atoms,
        format=args.format,
        limit=args.limit,
        split=args.split,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
    )
    with logging_redirect_tqdm():
        summary = generate(
            args.input,
            args.out,
            workers=args.workers,
            scheduler=args.scheduler,
            new=args.new,
            progress=not args.no_progress,
            conformer_processes=args.conformer_processes,
            wait=args.wait,
            **options,
        )
    out = summary["out_dir"]
    python, qmgen = _commands()
    failed = summary["n_failures"]
    first = ", ds[0]['energy']" if summary["n_rows"] else ""
    if not summary.get("n_input_records", 1):
        print(f"qmgen generate: warning: no molecules in {args.input}", file=sys.stderr)
    print(
        f"\nDataset ready: {out}\n"
        f"  {summary['n_rows']} conformers, {failed} failure records, "
        f"{summary['n_shards']} shards ({summary['n_shards_skipped']} reused from an earlier "
        f"run), {summary['wall_s']:.1f} s\n"
        f"  Load it:  {python} -c \"import qmgen; ds = qmgen.open_dataset('{out}'); "
        f'print(len(ds){first})"\n'
        f"  Inspect:  {qmgen} info {out}   Check:  {qmgen} verify {out}   "
        f"Validate:  {qmgen} validate {out} --sample 8"
    )
    return 0


def _commands() -> tuple[str, str]:
    """How to call this Python and this qmgen from the user's shell as it is: the
    quick start never activates the virtual environment, so plain ``python``/``qmgen``
    would not find qmgen."""
    import os
    import shlex
    import shutil

    python = os.path.abspath(sys.executable)
    script = os.path.join(os.path.dirname(python), "qmgen")
    on_path = shutil.which("qmgen")
    if on_path and os.path.abspath(on_path) == script:
        return ("python" if shutil.which("python") == python else python), "qmgen"

    def short(path: str) -> str:
        rel = os.path.relpath(path)
        return shlex.quote(rel if not rel.startswith("..") else path)

    qmgen = short(script) if os.path.exists(script) else f"{short(python)} -m qmgen.cli"
    return short(python), qmgen


def run_validate(args: argparse.Namespace) -> int:
    """Run ``qmgen validate``; exit code 0 within tolerance, 1 not, 2 unusable input."""
    from qmgen.pipeline.validate import format_report, validate_dataset

    _logging(args.quiet)
    report = validate_dataset(args.dir, sample=args.sample, seed=args.seed, plot=args.plot)
    print(format_report(report))
    return 0 if report["ok"] else 1
