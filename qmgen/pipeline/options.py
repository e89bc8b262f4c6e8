"""The options of ``qmgen generate`` that decide a dataset's content (hashed into
``options_hash``; a resume must match them), their checks, and the job's ``--split``."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from qmgen.storage.runfiles import json_digest

SAMPLE_KEYS = ("sample", "sample_amplitude", "sample_temperature", "sample_steps", "min_distance")
_SPLIT = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class GenerateOptions:
    """Options that decide the content of a dataset (hashed; a resume must match them).

    Level of theory: ``xc``, ``basis``, ``grid_level``, ``precision``, ``forces``,
    ``conv_tol``, ``max_cycle``, ``density_fit`` (None: exact ERIs; "default": PySCF's
    auxiliary basis for ``basis``; or an auxiliary basis name). Chemistry: ``conformers``
    per molecule, ``optimize``
    ("none"/"mmff"/"uff"), ``prune_rms`` (Angstrom), ``seed``, ``elements``, ``max_atoms``,
    ``format`` (None: from the extension), ``limit`` (use only the first N input records;
    None = all). Work layout: ``shard_size`` conformers per
    shard (0 = automatic, from the input size), ``min_bucket_size`` (shape buckets with
    fewer conformers are merged within a compute call), ``chunk_size`` (conformers per
    compute call inside a shard, 0 = the whole shard in one call; with chunks, the next
    chunk's conformers are made while one computes),
    ``batch_size`` (molecules per compiled call; None = the engine's default).

    ``split`` ("K/N", 1 <= K <= N; None = the whole input): this job's part of an input
    shared by N jobs (a job array): the records whose ``molecule_index % N == K - 1``,
    valid and invalid alike, so every record ends in exactly one job's dataset.
    ``molecule_index`` stays the index in the whole input, and conformers do not depend
    on the split (their seeds come from the canonical SMILES). ``limit`` applies first,
    to the whole input: ``--limit L --split K/N`` is job K's part of the first L records,
    so the N jobs together hold the records of one run with ``--limit L``. The shards
    differ from that run's (each job plans its own part; pass ``shard_size`` to fix
    their size). ``split`` is an option like the others (in ``options_hash`` and
    config.json), so each job's directory is a dataset of its own; :meth:`to_dict` leaves
    it out when None, so the options hash of an unsplit run is what it was before
    ``split`` existed.

    Off-equilibrium sampling (:mod:`qmgen.chem.sampling`): ``sample`` None (the embedded
    conformers as they are), "rattle", "nms" or "md"; ``sample_amplitude`` (rattle's
    standard deviation, Angstrom), ``sample_temperature`` (K, nms and md), ``sample_steps``
    (md), ``min_distance`` (Angstrom). Left out of :meth:`to_dict` when ``sample`` is None.

    Open shell (:mod:`qmgen.dft.uscf`): ``open_shell`` computes radicals and odd electron
    counts with UKS/UHF (spin from the input: RDKit radical electrons, ``spin=`` or
    ``multiplicity=`` of XYZ comments and SDF properties) instead of storing them as
    ODD_ELECTRONS failures; ``unrestricted`` runs every molecule, closed-shell ones too,
    unrestricted (for checks). Either adds the open-shell labels to the dataset
    (:attr:`spin_labels`). Left out of :meth:`to_dict` when False.

    Execution settings that do not change results (workers, scheduler) are not here.
    """

    xc: str = "b3lyp5"
    basis: str = "sto-3g"
    grid_level: int = 0
    precision: str = "float64"
    forces: bool = False
    conv_tol: float = 1e-9
    max_cycle: int = 50
    conformers: int = 1
    optimize: str = "none"
    prune_rms: float | None = None
    seed: int = 0
    elements: str = "H,C,N,O,F"
    max_atoms: int = 64
    format: str | None = None
    limit: int | None = None
    shard_size: int = 0
    min_bucket_size: int = 32
    chunk_size: int = 0
    batch_size: int | None = None
    split: str | None = None
    density_fit: str | None = None
    sample: str | None = None
    sample_amplitude: float = 0.05
    sample_temperature: float = 300.0
    sample_steps: int = 200
    min_distance: float = 0.5
    open_shell: bool = False
    unrestricted: bool = False

    def __post_init__(self):
        from qmgen.dft.dispersion import check_available
        from qmgen.dft.grid import check_level
        from qmgen.dft.precision import PRECISIONS
        from qmgen.dft.xc import get_functional

        # a d3bj functional without the dftd3 library is refused before any work
        check_available(get_functional(self.xc))
        check_level(self.grid_level)
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}"
            )
        if not (isinstance(self.conv_tol, (int, float)) and 0 < self.conv_tol < 1):
            raise ValueError(f"conv_tol must be a number in (0, 1), got {self.conv_tol!r}")
        if self.max_cycle < 1:
            raise ValueError(f"max_cycle must be >= 1, got {self.max_cycle}")
        if self.conformers < 1:
            raise ValueError(f"conformers must be >= 1, got {self.conformers}")
        for name in ("shard_size", "min_bucket_size", "chunk_size"):
            if getattr(self, name) < (1 if name == "min_bucket_size" else 0):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        if self.split is not None:
            k, n = parse_split(self.split)
            object.__setattr__(self, "split", f"{k}/{n}")
        chem = self.chem_options(0)  # validates elements, optimize, prune_rms, max_atoms
        object.__setattr__(self, "elements", ",".join(sorted(chem.elements)))
        _check_basis(self.basis)
        if self.density_fit is not None:
            object.__setattr__(self, "density_fit", _check_auxbasis(self.density_fit, self))

    def auxbasis_labels(self) -> dict | None:
        """{element: auxiliary basis} of the allowed elements (None for exact ERIs): the
        resolved names of PySCF's default ("etb:<basis>" for even-tempered functions)."""
        if self.density_fit is None:
            return None
        from qmgen.dft.basis import aux_basis_spec
        from qmgen.molecule import SYMBOLS

        out = {}
        for sym in self.elements.split(","):
            out[sym] = aux_basis_spec(SYMBOLS.index(sym), self.basis, self.density_fit)[0]
        return out

    def chem_options(self, n_conformers: int | None = None):
        """The :class:`qmgen.chem.ChemOptions` of these options."""
        from qmgen.chem import ChemOptions
        from qmgen.chem.sampling import SampleOptions

        sample = None
        if self.sample is not None:
            sample = SampleOptions(
                self.sample,
                amplitude=self.sample_amplitude,
                temperature=self.sample_temperature,
                steps=self.sample_steps,
                min_distance=self.min_distance,
            )
        return ChemOptions(
            elements=self.elements,
            max_atoms=self.max_atoms,
            n_conformers=self.conformers if n_conformers is None else n_conformers,
            seed=self.seed,
            optimize=self.optimize,
            prune_rms=self.prune_rms,
            sample=sample,
            open_shell=self.open_shell,
        )

    def compute_kwargs(self) -> dict:
        """Keyword arguments of :func:`qmgen.compute` for these options."""
        return dict(
            basis=self.basis,
            xc=self.xc,
            grid_level=self.grid_level,
            precision=self.precision,
            forces=self.forces,
            conv_tol=self.conv_tol,
            max_cycle=self.max_cycle,
            batch_size=self.batch_size,
            min_bucket_size=self.min_bucket_size,
            density_fit=self.density_fit or False,
            unrestricted=self.unrestricted,
        )

    @property
    def spin_labels(self) -> bool:
        """Whether rows carry the open-shell labels (``storage.schema`` has_spin)."""
        return bool(self.open_shell or self.unrestricted)

    def to_dict(self) -> dict:
        """The options as stored in config.json (``split``, ``density_fit``,
        ``open_shell``, ``unrestricted`` and the sampling options only when set, so the
        options hash of a run without them is what it was before they existed)."""
        out = dataclasses.asdict(self)
        for key in ("split", "density_fit"):
            if out[key] is None:
                del out[key]
        for key in ("open_shell", "unrestricted"):
            if not out[key]:
                del out[key]
        if out["sample"] is None:
            for key in SAMPLE_KEYS:
                del out[key]
        return out

    def digest(self, input_sha256: str) -> str:
        """SHA-256 of these options and the input content (the dataset's identity)."""
        doc = dict(options=self.to_dict(), input_sha256=input_sha256)
        return json_digest(doc)


def parse_split(split) -> tuple[int, int]:
    """``(K, N)`` of a split ``"K/N"`` (integers, 1 <= K <= N); ``ValueError`` naming
    the problem otherwise."""
    m = _SPLIT.fullmatch(split) if isinstance(split, str) else None
    if m is None:
        raise ValueError(
            f"split must be 'K/N' with integers 1 <= K <= N (job K of N, e.g. '1/4'), got {split!r}"
        )
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise ValueError(f"split {split!r}: the number of jobs N must be >= 1")
    if not 1 <= k <= n:
        raise ValueError(f"split {split!r}: the job number K must be in 1..{n} (1-based)")
    return k, n


def _check_basis(name: str) -> None:
    from qmgen.dft.basis import BasisError, structure_of

    try:
        structure_of(np.array([1]), name)
    except BasisError as err:
        raise ValueError(f"unknown basis {name!r}: {err}") from None


def _check_auxbasis(name, opts: GenerateOptions) -> str:
    """The auxiliary basis option, checked on hydrogen and every allowed element."""
    from qmgen.dft.basis import DEFAULT_AUX, BasisError, structure_of
    from qmgen.molecule import SYMBOLS

    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"density_fit must be an auxiliary basis name or 'default', got {name!r}")
    name = name.strip()
    name = DEFAULT_AUX if name.lower() == DEFAULT_AUX else name
    z = np.array([SYMBOLS.index(s) for s in opts.elements.split(",")])
    try:
        structure_of(z, opts.basis, name)
    except BasisError as err:
        raise ValueError(f"unusable auxiliary basis {name!r}: {err}") from None
    return name


def option_changes(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two option dicts ("basis: 'sto-3g' -> '6-31g')."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
