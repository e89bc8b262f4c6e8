"""Input records and chemistry options (pure Python; no RDKit import).

Every input line (SMILES), frame (XYZ) or block (SDF) becomes exactly one
:class:`InputRecord`: either a success (``status == Status.OK``) carrying the conformers
to compute, or a failure carrying a :class:`~qmgen.status.Status` code and a message that
names the problem. Readers never raise on bad input; they raise only for usage errors
(a missing file, an unknown format name, invalid options).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

from qmgen.molecule import Molecule, atomic_number
from qmgen.status import Status

InputFormat = Literal["smiles", "xyz", "sdf"]
Optimizer = Literal["none", "mmff", "uff"]

INPUT_FORMATS: tuple[str, ...] = get_args(InputFormat)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)

DEFAULT_ELEMENTS = frozenset({"H", "C", "N", "O", "F"})
DEFAULT_MAX_ATOMS = 64  # including hydrogens; a 9-heavy-atom molecule has at most ~30
SMILES_CHARS_PER_ATOM = 20  # generous: "[13CH2+]", a bond, two ring closures "%12%13"
MESSAGE_CHARS = 500  # failure messages are cut to this (they quote excerpts of the input)
MAX_SPIN = 254  # largest 2S accepted: multiplicity 2S+1 is stored as uint8
OPEN_SHELL_HINT = "pass --open-shell to compute it with UKS"  # ends ODD_ELECTRONS messages

_SYMBOL_RE = re.compile(r"[A-Z][a-z]?")


class ChemError(ValueError):
    """A molecule that cannot be made ready to compute; carries the failure ``status``."""

    def __init__(self, status: Status, message: str):
        super().__init__(message)
        self.status = Status(status)
        self.message = message


def parse_elements(elements: str | Iterable[str]) -> frozenset[str]:
    """Element symbols from ``"HCNOF"``, ``"H,C,N,O,F"`` or an iterable of symbols.

    Symbols are normalised to their usual capitalisation ("cl" -> "Cl"); unknown symbols
    raise ``ValueError``.
    """
    if isinstance(elements, str):
        text = elements.replace(",", " ")
        tokens = text.split() if " " in text.strip() else _SYMBOL_RE.findall(text)
        if "".join(tokens) != "".join(text.split()):
            raise ValueError(
                f"cannot read element list {elements!r}; write symbols like 'HCNOF' or 'H,C,Cl'"
            )
    else:
        tokens = [str(e).strip() for e in elements]
    from qmgen.molecule import SYMBOLS

    out = set()
    for tok in tokens:
        try:
            out.add(SYMBOLS[atomic_number(tok)])
        except ValueError as err:
            raise ValueError(f"unknown element {tok!r} in element list {elements!r}") from err
    if not out:
        raise ValueError("the element list is empty")
    return frozenset(out)


METHODS = ("rattle", "nms", "md")  # conformer sampling, qmgen.chem.sampling


@dataclass(frozen=True)
class SampleOptions:
    """How to move a conformer off its minimum (``qmgen.chem.sampling``).

    method: "rattle", "nms" or "md". amplitude: rattle's standard deviation, Angstrom.
    temperature: K (nms, md). steps: Langevin steps (md). min_distance: Angstrom.
    """

    method: str
    amplitude: float = 0.05
    temperature: float = 300.0
    steps: int = 200
    min_distance: float = 0.5

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown sample={self.method!r}; valid: {', '.join(METHODS)}")
        if not float(self.amplitude) > 0:
            raise ValueError(f"sample amplitude must be > 0 Angstrom, got {self.amplitude}")
        if not float(self.temperature) > 0:
            raise ValueError(f"sample temperature must be > 0 K, got {self.temperature}")
        if int(self.steps) < 1:
            raise ValueError(f"sample steps must be >= 1, got {self.steps}")
        if not float(self.min_distance) >= 0:
            raise ValueError(f"min_distance must be >= 0 Angstrom, got {self.min_distance}")


@dataclass(frozen=True)
class ChemOptions:
    """Validation and conformer options shared by every reader.

    elements: allowed element symbols (hydrogen must be listed to allow H atoms).
    max_atoms: largest molecule accepted, counting hydrogens (TOO_LARGE above it).
    n_conformers: conformers requested per molecule (ETKDG); pruning can return fewer.
        ``0`` validates only: nothing is embedded, so SMILES and 2-D SDF successes carry
        no conformers (XYZ frames and 3-D SDF blocks keep their given geometry).
    seed: base seed; each molecule's RDKit seed is derived from it and its canonical
        SMILES (:func:`qmgen.chem.conformers.conformer_seed`).
    optimize: force-field relaxation after embedding: "none", "mmff" (MMFF94) or "uff".
    max_opt_iters: iteration cap of that relaxation.
    prune_rms: heavy-atom RMSD threshold in Angstrom below which ETKDG drops a conformer
        as a duplicate; ``None`` keeps all.
    xyz_smiles: perceive bonds of XYZ frames (RDKit ``DetermineBonds``) to fill
        ``smiles``; set False to read XYZ without RDKit.
    sample: None, or a :class:`SampleOptions` (rattle, nms, md) that
        moves every embedded conformer off its minimum (given 3-D geometries are kept).
    open_shell: False (default): only closed-shell molecules are accepted; an odd electron
        count, a radical or an explicit spin > 0 is an ODD_ELECTRONS failure record.
        True: those molecules are accepted with their spin 2S (``InputRecord.spin``,
        ``Molecule.spin``), for unrestricted Kohn-Sham; 2S comes from RDKit's radical
        electrons (SMILES, SDF), ``spin=`` / ``multiplicity=`` keys (XYZ comment, SDF
        property), else the parity of the electron count (see ``readers.py``).
    """

    elements: frozenset[str] = DEFAULT_ELEMENTS
    max_atoms: int = DEFAULT_MAX_ATOMS
    n_conformers: int = 1
    seed: int = 0
    optimize: Optimizer = "none"
    max_opt_iters: int = 500
    prune_rms: float | None = None
    xyz_smiles: bool = True
    sample: SampleOptions | None = None
    open_shell: bool = False

    @property
    def max_smiles_chars(self) -> int:
        """Longest SMILES accepted, checked before RDKit parses it (derived from
        ``max_atoms``: RDKit's recursive canonicalisation crashes on chains of 20,000+
        atoms, so size must be known before RDKit sees the text)."""
        return SMILES_CHARS_PER_ATOM * int(self.max_atoms) + 100

    @property
    def max_smiles_atoms(self) -> int:
        """Most atoms a SMILES may spell out before RDKit sees it: 4 x ``max_atoms``, so
        near misses still get RDKit's exact count and a canonical SMILES."""
        return 4 * int(self.max_atoms)

    def __post_init__(self):
        object.__setattr__(self, "elements", parse_elements(self.elements))
        if int(self.max_atoms) < 1:
            raise ValueError(f"max_atoms must be >= 1, got {self.max_atoms}")
        if int(self.n_conformers) < 0:
            raise ValueError(f"n_conformers must be >= 0, got {self.n_conformers}")
        if self.optimize not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimize={self.optimize!r}; valid: {', '.join(map(repr, OPTIMIZERS))}"
            )
        if self.prune_rms is not None and not float(self.prune_rms) > 0:
            raise ValueError(f"prune_rms must be > 0 Angstrom or None, got {self.prune_rms}")
        if int(self.max_opt_iters) < 1:
            raise ValueError(f"max_opt_iters must be >= 1, got {self.max_opt_iters}")
        if self.open_shell not in (True, False):
            raise ValueError(f"open_shell must be True or False, got {self.open_shell!r}")
        object.__setattr__(self, "open_shell", bool(self.open_shell))

    @classmethod
    def make(cls, options: ChemOptions | None = None, **overrides) -> ChemOptions:
        """``options`` with keyword ``overrides`` applied (defaults when ``options`` is None)."""
        if options is None:
            return cls(**overrides)
        if not overrides:
            return options
        from dataclasses import replace

        return replace(options, **overrides)


@dataclass(frozen=True)
class InputRecord:
    """One input molecule: ready-to-compute conformers, or a failure with a reason.

    molecule_index: 0-based position in the input, stable across runs: the line number
        for SMILES files (blank and comment lines count), the frame number for XYZ, the
        block number for SDF.
    status: ``Status.OK`` or a failure code (INVALID_INPUT, UNSUPPORTED_ELEMENT,
        ODD_ELECTRONS, TOO_LARGE, EMBED_FAILED).
    message: why it failed ("" on success, or a note such as "2 of 5 conformers kept
        after RMSD pruning").
    smiles: canonical SMILES (RDKit, isomeric); "" where unavailable.
    name: the name column / XYZ comment / SDF title, else "".
    charge: net charge (formal charges of the SMILES/SDF, ``charge=N`` of an XYZ comment).
    raw: the input text of this line/frame/block (undecodable bytes backslash-escaped).
    conformers: on success, :class:`qmgen.Molecule` objects (positions (n_atoms, 3) in
        Bohr; atom order of the input / RDKit: heavy atoms in input order, then added
        hydrogens; ``name`` = the record's name, or its SMILES when it has none); empty on
        failure.
    format: "smiles", "xyz" or "sdf".
    spin: 2S, the number of unpaired electrons (PySCF's ``mol.spin``: 0 singlet, 1 doublet,
        2 triplet), the same as every conformer's ``Molecule.spin``. Always 0 unless
        ``ChemOptions.open_shell``; on a failure record it is the spin determined before
        the failure (0 when it failed earlier).
    """

    molecule_index: int
    status: Status
    message: str = ""
    smiles: str = ""
    name: str = ""
    charge: int = 0
    raw: str = ""
    conformers: tuple[Molecule, ...] = field(default=(), repr=False)
    format: InputFormat = "smiles"
    spin: int = 0

    @property
    def ok(self) -> bool:
        """True for a success record."""
        return self.status == Status.OK

    @property
    def n_conformers(self) -> int:
        return len(self.conformers)

    def __repr__(self) -> str:
        what = f"{len(self.conformers)} conformers" if self.ok else repr(self.message)
        spin = f", spin={self.spin}" if self.spin else ""
        return (
            f"InputRecord({self.molecule_index}, {self.status.name}, {self.smiles!r}, "
            f"name={self.name!r}, charge={self.charge}{spin}, {what})"
        )


def failure(
    index: int,
    status: Status,
    message: str,
    raw: str = "",
    *,
    smiles: str = "",
    name: str = "",
    charge: int = 0,
    format: InputFormat = "smiles",
    spin: int = 0,
) -> InputRecord:
    """A failure record (no conformers); ``message`` is cut to MESSAGE_CHARS; ``spin`` is
    2S where it was determined before the failure."""
    from qmgen.errors import clip

    return InputRecord(
        molecule_index=index,
        status=Status(status),
        message=clip(message, MESSAGE_CHARS),
        smiles=smiles,
        name=name,
        charge=charge,
        raw=raw,
        format=format,
        spin=int(spin),
    )


def given_spin(
    spin: int | None,
    multiplicity: int | None,
    n_electrons: int,
    charge: int,
    what: str,
    source: str = "",
) -> tuple[int | None, str]:
    """``(2S, key)`` from explicitly given ``spin`` (2S) and/or ``multiplicity`` (2S+1).

    ``key`` spells how it was given (``"spin=2"``, ``"multiplicity=3"``, prefixed by
    ``source``, e.g. ``"SD property "``) for messages; ``(None, "")`` when neither is
    given. ``n_electrons`` and ``charge`` are the molecule's. Raises :class:`ChemError`
    INVALID_INPUT, message starting with ``what``, for spin < 0, multiplicity < 1, both
    given but ``multiplicity != spin + 1``, or a 2S whose parity differs from the electron
    count's or that exceeds it: input that contradicts itself, in either shell mode.
    """
    if spin is None and multiplicity is None:
        return None, ""
    if spin is not None and spin < 0:
        raise ChemError(
            Status.INVALID_INPUT,
            f"{what}: {source}spin={spin} is negative; spin is 2S, the number of unpaired "
            "electrons (0 singlet, 1 doublet, 2 triplet)",
        )
    if multiplicity is not None and multiplicity < 1:
        raise ChemError(
            Status.INVALID_INPUT,
            f"{what}: {source}multiplicity={multiplicity} is below 1; multiplicity is 2S+1 "
            "(1 singlet, 2 doublet, 3 triplet)",
        )
    if spin is not None and multiplicity is not None and multiplicity != spin + 1:
        raise ChemError(
            Status.INVALID_INPUT,
            f"{what}: {source}spin={spin} and multiplicity={multiplicity} disagree; "
            f"multiplicity must be spin + 1 = {spin + 1} (spin is 2S, multiplicity 2S+1)",
        )
    if spin is not None:
        value, key = int(spin), f"{source}spin={spin}"
    else:
        assert multiplicity is not None
        value, key = int(multiplicity) - 1, f"{source}multiplicity={multiplicity}"
    if value > n_electrons or (n_electrons - value) % 2:
        raise ChemError(
            Status.INVALID_INPUT,
            f"{what}: {key} (2S = {value}) is impossible with {n_electrons} electrons "
            f"(charge {charge}): 2S must have the parity of the electron count and not "
            "exceed it",
        )
    if value > MAX_SPIN:
        raise ChemError(
            Status.INVALID_INPUT,
            f"{what}: {key} (2S = {value}) is above the {MAX_SPIN} unpaired electrons a "
            "dataset stores (multiplicity is stored as one byte)",
        )
    return value, key


def open_shell_refused(key: str, spin: int, n_electrons: int, charge: int, what: str):
    """The ODD_ELECTRONS :class:`ChemError` of closed-shell mode for a molecule whose
    input gave 2S = ``spin`` > 0 explicitly (``key``, as :func:`given_spin` spells it)."""
    return ChemError(
        Status.ODD_ELECTRONS,
        f"{what}: {key} given: an open-shell molecule (2S = {spin}, {n_electrons} electrons, "
        f"charge {charge}); only closed-shell molecules are computed; {OPEN_SHELL_HINT}",
    )


_LOG_PREFIX = re.compile(r"^\[\d\d:\d\d:\d\d\]\s*")


@contextlib.contextmanager
def rdkit_log_capture():
    """Silence RDKit's error log inside the block; yields a list that receives its lines.

    Uses ``rdBase.CaptureErrorLog`` where this RDKit has it, else ``BlockLogs`` (then the
    list stays empty and callers fall back to generic messages).
    """
    from rdkit import rdBase

    lines: list[str] = []
    if hasattr(rdBase, "CaptureErrorLog"):
        with rdBase.BlockLogs(), rdBase.CaptureErrorLog() as cap:
            try:
                yield lines
            finally:
                text = cap.messages or ""
                lines.extend(_LOG_PREFIX.sub("", ln).strip() for ln in text.splitlines())
    else:  # pragma: no cover - older RDKit
        with rdBase.BlockLogs():
            yield lines
