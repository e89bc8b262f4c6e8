"""Input files -> a stream of :class:`~qmgen.chem.records.InputRecord`, one per molecule.

Formats (detected from the extension, or forced with ``format=``):

``smiles`` (.smi, .smiles, .txt, .csv)
    One SMILES per line, optionally followed by a name: ``SMILES NAME`` (whitespace) or
    ``SMILES,NAME[,...]`` (comma; further columns ignored, surrounding quotes stripped).
    ``molecule_index`` is the 0-based line number, so it is stable under edits that do
    not move lines. Skipped silently, without a record: blank (whitespace-only) lines,
    comment lines starting with ``#``, and a header line on the first non-comment line
    whose first field is ``smiles`` (any case; also ``smi``, ``canonical_smiles``).
    Every other line gives exactly one record; a line of bytes that are not UTF-8 text or
    contain control characters is an INVALID_INPUT record ("binary data"), a line whose
    SMILES field is empty (``,name``) is INVALID_INPUT too.
``xyz`` (.xyz)
    Single or multi-frame XYZ in Angstrom: atom count, comment, ``symbol x y z`` lines.
    The comment may hold ``charge=N`` (net charge, default 0), ``spin=N`` (2S, unpaired
    electrons) and ``multiplicity=N`` (2S+1), anywhere, any case, ``=`` or ``:``; the rest
    of the comment is the name. ``molecule_index`` is the frame number. A frame whose
    count line is not an integer is a failure record spanning up to the next count line.
    The geometry is used as given (one conformer). Spin (bonds are not known, so a
    radical with an even count and no ``spin=`` passes as a singlet):

    - ``spin=`` < 0, ``multiplicity=`` < 1, both given with ``multiplicity != spin + 1``,
      or a 2S whose parity differs from the electron count's (or exceeds it):
      INVALID_INPUT in either mode (the input contradicts itself).
    - closed-shell mode (``options.open_shell`` False, the default): an explicit 2S > 0
      ("spin=1 given: an open-shell molecule ...") or an odd electron count is
      ODD_ELECTRONS, the message saying to pass ``--open-shell``; spin 0 otherwise.
    - open-shell mode: the explicit 2S, else 0 for an even electron count and 1 (doublet)
      for an odd one.

    ``smiles`` comes from RDKit's bond perception (``DetermineBonds``) when
    ``options.xyz_smiles``; "" if that fails.
``sdf`` (.sdf, .sd, .mol)
    Read with RDKit's ``SDMolSupplier`` (hydrogens kept); ``molecule_index`` is the block
    number, a block RDKit cannot read or sanitise is a failure record. A block with 3-D
    coordinates gives that one conformer (missing hydrogens placed by ``AddHs``); a 2-D
    or coordinate-less block is embedded like a SMILES. The net charge is the sum of the
    formal charges (atom block / ``M  CHG``). Spin: ``M  RAD`` lines (and the atom
    block's valence field) become RDKit radical electrons; data fields ``<spin>`` (2S)
    and ``<multiplicity>`` (2S+1) (name in any case) give 2S explicitly and override the
    radicals (a success record's message notes a disagreement). The rules are those of
    SMILES (:func:`qmgen.chem.smiles.molecule_spin`): without a data field, 2S is the
    sum of the radical electrons in open-shell mode, and any radical is ODD_ELECTRONS in
    closed-shell mode; the data fields are checked as the XYZ keys above, and a data
    field that is not an integer is INVALID_INPUT.

Every record carries ``spin`` (2S) and its conformers the same ``Molecule.spin``.

Usage errors raise (missing file: ``OSError``; unknown format or option: ``ValueError``);
bad content never does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import NamedTuple

from qmgen.chem.records import (
    INPUT_FORMATS,
    OPEN_SHELL_HINT,
    ChemError,
    ChemOptions,
    InputFormat,
    InputRecord,
    failure,
    given_spin,
    open_shell_refused,
)
from qmgen.status import Status

EXTENSIONS: dict[str, InputFormat] = {
    ".smi": "smiles",
    ".smiles": "smiles",
    ".txt": "smiles",
    ".csv": "smiles",
    ".xyz": "xyz",
    ".sdf": "sdf",
    ".sd": "sdf",
    ".mol": "sdf",
}
HEADER_FIELDS = frozenset({"smiles", "smi", "canonical_smiles"})

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CHARGE = re.compile(r"(?<![\w.])charge\s*[=:]\s*([+-]?\d+)\b[\s,;]*", re.IGNORECASE)
_SPIN = re.compile(r"(?<![\w.])spin\s*[=:]\s*([+-]?\d+)\b[\s,;]*", re.IGNORECASE)
_MULTIPLICITY = re.compile(r"(?<![\w.])multiplicity\s*[=:]\s*([+-]?\d+)\b[\s,;]*", re.IGNORECASE)
SDF_SPIN_FIELDS = ("spin", "multiplicity")  # SD data fields read for 2S / 2S+1 (any case)
_SMILES_LINE = re.compile(r"\s*([^\s,]*)\s*(,?)(.*)$", re.DOTALL)


def detect_format(path: str | Path, format: str | None = None) -> InputFormat:
    """``format`` if given (validated), else the format implied by the file extension."""
    if format is not None:
        fmt = format.lower()
        if fmt == "smi":
            fmt = "smiles"
        if fmt not in INPUT_FORMATS:
            raise ValueError(f"unknown input format {format!r}; valid: {', '.join(INPUT_FORMATS)}")
        return fmt  # type: ignore[return-value]
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise ValueError(
            f"cannot tell the format of {str(path)!r} from its extension {suffix!r}; "
            f"known: {', '.join(EXTENSIONS)}; pass format= one of {', '.join(INPUT_FORMATS)}"
        )
    return EXTENSIONS[suffix]


def read_molecules(
    path: str | Path,
    format: str | None = None,
    options: ChemOptions | None = None,
    **overrides,
) -> Iterator[InputRecord]:
    """Stream the records of an input file, in input order (see the module docstring).

    ``options`` / keyword ``overrides``: :class:`ChemOptions` fields (``elements``,
    ``max_atoms``, ``n_conformers``, ``seed``, ``optimize``, ``prune_rms``, ...).
    """
    options = ChemOptions.make(options, **overrides)
    fmt = detect_format(path, format)
    path = Path(path)
    if fmt == "smiles":
        with open(path, "rb") as fh:
            yield from iter_smiles(fh, options)
    elif fmt == "xyz":
        yield from iter_xyz(path.read_bytes(), options)
    else:
        yield from iter_sdf(path, options)


# ----------------------------------------------------------------------------- SMILES
def split_smiles_line(line: str) -> tuple[str, str]:
    """``(smiles, name)`` from ``"SMILES NAME"`` or ``"SMILES,NAME,..."`` (name may be "")."""
    m = _SMILES_LINE.match(line.strip())
    assert m is not None  # the pattern matches any string
    smiles, comma, rest = m.group(1), m.group(2), m.group(3)
    if comma:
        name = rest.split(",", 1)[0]
    else:
        name = rest
    return smiles.strip().strip('"'), name.strip().strip('"').strip()


def _decode_line(data: bytes | str) -> tuple[str, str | None]:
    """``(text, problem)``: the line as text (bytes escaped if undecodable) and why it is
    binary junk, or None."""
    if isinstance(data, str):
        text = data
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("utf-8", "backslashreplace"), "is not UTF-8 text (binary data?)"
    text = text.rstrip("\r\n")
    control = _CONTROL.search(text)
    if control:
        return text, f"contains control character {control.group()!r} (binary data?)"
    return text, None


def iter_smiles(lines: Iterable[bytes | str], options: ChemOptions | None = None, **overrides):
    """Records for SMILES lines (bytes or str, e.g. an open file); index = line number.

    Blank lines, ``#`` comments and a leading header line are skipped (no record).
    """
    options = ChemOptions.make(options, **overrides)
    for index, _, line in record_lines(lines):
        yield smiles_line_record(index, line, options)


def record_lines(lines: Iterable[bytes | str]) -> Iterator[tuple[int, bytes | str, SmilesLine]]:
    """``(index, data, line)`` of the lines that give records: :func:`smiles_line` of each
    raw line ``data``, without blanks, comments and a leading header line."""
    seen_content = False
    for index, data in enumerate(lines):
        line = smiles_line(index, data)
        if line is None:
            continue
        if not seen_content:
            seen_content = True
            if is_header(line):
                continue
        yield index, data, line


SmilesLine = tuple[str, "str | None", str, str]  # (text, problem, smiles, name)


def smiles_line(index: int, data: bytes | str) -> SmilesLine | None:
    """Line ``index`` (0-based) of a SMILES file as ``(text, problem, smiles, name)``, or
    None for a line that gives no record (blank, ``#`` comment). ``problem`` says why the
    line is binary junk (then smiles and name are ""), else None. No RDKit: cheap."""
    if isinstance(data, bytes):
        data = data.rstrip(b"\r\n")
    text, problem = _decode_line(data)
    if index == 0:
        text = text.removeprefix("\ufeff")  # UTF-8 byte-order mark
    if not text.strip():
        return None
    if text.lstrip().startswith("#"):
        return None
    if problem:
        return text, problem, "", ""
    smiles, name = split_smiles_line(text)
    return text, None, smiles, name


def is_header(line: SmilesLine) -> bool:
    """True for a header line (first field ``smiles``, ``smi``...): skipped when it is the
    first line with content."""
    return line[1] is None and line[2].lower() in HEADER_FIELDS


def smiles_line_record(index: int, line: SmilesLine, options: ChemOptions) -> InputRecord:
    """The record of line ``index`` (a :func:`smiles_line` result that is not a skipped
    header), exactly as :func:`iter_smiles` makes it."""
    from qmgen.chem.smiles import smiles_record

    text, problem, smiles, name = line
    if problem:
        return failure(index, Status.INVALID_INPUT, f"line {index + 1} {problem}", text)
    if not smiles:
        message = f"line {index + 1} has an empty SMILES field"
        return failure(index, Status.INVALID_INPUT, message, text, name=name)
    make = partial(smiles_record, smiles, name, index, text, options)
    return _guard(make, index, text, "smiles")


def _guard(make, index: int, raw: str, fmt: InputFormat) -> InputRecord:
    """``make()``, or an INVALID_INPUT record naming the unexpected exception it raised.

    Keeps one pathological input (an RDKit corner case) from sinking the whole stream.
    """
    try:
        return make()
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - becomes this line's failure record, not swallowed
        return failure(
            index,
            Status.INVALID_INPUT,
            f"unexpected error while reading this input: {type(err).__name__}: {err}",
            raw,
            format=fmt,
        )


# ----------------------------------------------------------------------------- XYZ
def _is_count(line: str) -> bool:
    s = line.strip()
    return s.isascii() and s.isdigit()


def split_xyz_frames(text: str) -> Iterator[tuple[list[str], str | None]]:
    """Frames of multi-frame XYZ text: ``(lines, problem)``; ``problem`` is None for a
    well-formed frame (count line, comment, ``count`` atom lines) or says what is wrong.
    Blank lines between frames are skipped."""
    lines = text.splitlines()
    i, n_lines = 0, len(lines)
    while i < n_lines:
        if not lines[i].strip():
            i += 1
            continue
        head = lines[i].strip()
        if not _is_count(head):
            j = i + 1
            while j < n_lines and not _is_count(lines[j]):
                j += 1
            yield (
                lines[i:j],
                f"the first line must be the atom count, got {head[:40]!r}",
            )
            i = j
            continue
        n = int(head)
        frame = lines[i : i + 2 + n]
        i += 2 + n
        if len(frame) < 2 + n:
            got = max(len(frame) - 2, 0)
            yield frame, f"the count line says {n} atoms but the file ends after {got} atom lines"
        elif n == 0:
            yield frame, "no atoms (count 0)"
        else:
            yield frame, None


class XyzComment(NamedTuple):
    """The keys of an XYZ comment line: ``charge`` (default 0), ``spin`` (2S) and
    ``multiplicity`` (2S+1) (None where absent), and the rest of the line as ``name``."""

    charge: int
    spin: int | None
    multiplicity: int | None
    name: str


def parse_xyz_keys(comment: str) -> XyzComment:
    """:class:`XyzComment` of an XYZ comment line: ``charge=N``, ``spin=N``,
    ``multiplicity=N`` anywhere (first of each; any case; ``=`` or ``:``), with their
    separators removed from the name. Values are not checked here (a negative spin too is
    returned)."""
    values: dict[str, int | None] = {}
    spans = []
    for key, pattern in (("charge", _CHARGE), ("spin", _SPIN), ("multiplicity", _MULTIPLICITY)):
        m = pattern.search(comment)
        values[key] = None if m is None else int(m.group(1))
        if m is not None:
            spans.append(m.span())
    if not spans:
        return XyzComment(0, None, None, comment.strip())
    name, end = "", 0
    for start, stop in sorted(spans):
        name += comment[end:start] + " "
        end = max(end, stop)
    name = (name + comment[end:]).strip(" ,;\t")
    charge = values["charge"] or 0
    return XyzComment(charge, values["spin"], values["multiplicity"], " ".join(name.split()))


def parse_xyz_comment(comment: str) -> tuple[int, str]:
    """``(charge, name)`` from an XYZ comment line (:func:`parse_xyz_keys`; ``spin=`` and
    ``multiplicity=`` are removed from the name too)."""
    keys = parse_xyz_keys(comment)
    return keys.charge, keys.name


def iter_xyz(data: bytes | str, options: ChemOptions | None = None, **overrides):
    """Records for (multi-frame) XYZ text or bytes; index = frame number."""
    options = ChemOptions.make(options, **overrides)
    text = data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data
    for index, (lines, problem) in enumerate(split_xyz_frames(text)):
        raw = "\n".join(lines) + "\n"
        if problem is None and any(_CONTROL.search(ln) or "\\x" in ln for ln in lines[2:]):
            problem = "binary data in the atom lines"
        if problem is not None:
            yield failure(
                index, Status.INVALID_INPUT, f"XYZ frame {index}: {problem}", raw, format="xyz"
            )
            continue
        yield _guard(partial(_xyz_record, lines, index, raw, options), index, raw, "xyz")


def _xyz_record(lines: list[str], index: int, raw: str, options: ChemOptions) -> InputRecord:
    from qmgen.molecule import Molecule, MoleculeError

    keys = parse_xyz_keys(lines[1])
    charge, name = keys.charge, keys.name
    fail = partial(failure, index, raw=raw, name=name, charge=charge, format="xyz")
    try:
        mol = Molecule.from_xyz("\n".join(lines), charge=charge)
    except MoleculeError as err:
        return fail(Status.INVALID_INPUT, f"XYZ frame {index}: {err}")
    problem = _check_geometry(mol, options)
    if problem is not None:
        status, message = problem
        return fail(status, f"XYZ frame {index}: {message}")
    try:
        spin = xyz_spin(mol.n_electrons, charge, keys, options, f"XYZ frame {index}")
    except ChemError as err:
        return fail(err.status, err.message)
    smiles = _xyz_smiles(mol) if options.xyz_smiles else ""
    mol = Molecule(mol.z, mol.positions, charge=charge, name=name or smiles, spin=spin)
    return InputRecord(
        molecule_index=index,
        status=Status.OK,
        smiles=smiles,
        name=name,
        charge=charge,
        raw=raw,
        conformers=(mol,),
        format="xyz",
        spin=spin,
    )


def _check_geometry(mol, options: ChemOptions) -> tuple[Status, str] | None:
    """Element and size checks of a :class:`qmgen.Molecule` (spin: :func:`xyz_spin`)."""
    bad = sorted({s for s in mol.symbols if s not in options.elements})
    if bad:
        allowed = ", ".join(sorted(options.elements))
        return (
            Status.UNSUPPORTED_ELEMENT,
            f"unsupported element {', '.join(bad)}; allowed: {allowed}",
        )
    if mol.n_atoms > options.max_atoms:
        return Status.TOO_LARGE, f"{mol.n_atoms} atoms (maximum {options.max_atoms})"
    return None


def xyz_spin(
    n_electrons: int, charge: int, keys: XyzComment, options: ChemOptions, what: str
) -> int:
    """2S of an XYZ frame with ``n_electrons`` electrons, net ``charge`` and comment
    ``keys`` (:func:`parse_xyz_keys`), by the rules of the module docstring; raises
    :class:`ChemError` (messages start with ``what``)."""
    if options.open_shell and n_electrons <= 0:
        raise ChemError(Status.INVALID_INPUT, f"{what}: no electrons (charge {charge})")
    value, key = given_spin(keys.spin, keys.multiplicity, n_electrons, charge, what)
    if not options.open_shell:
        if value:
            raise open_shell_refused(key, value, n_electrons, charge, what)
        if n_electrons % 2:
            raise ChemError(
                Status.ODD_ELECTRONS,
                f"{what}: odd electron count ({n_electrons} electrons, charge {charge}); "
                f"only closed-shell molecules are computed; {OPEN_SHELL_HINT}",
            )
        if n_electrons <= 0:
            raise ChemError(Status.INVALID_INPUT, f"{what}: no electrons (charge {charge})")
        return 0
    return n_electrons % 2 if value is None else value


def _xyz_smiles(mol) -> str:
    """Canonical SMILES from 3-D coordinates by RDKit bond perception; "" on failure."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    from qmgen.chem.records import rdkit_log_capture

    with rdkit_log_capture():
        try:
            rd = Chem.MolFromXYZBlock(mol.to_xyz())
            if rd is None:
                return ""
            rdDetermineBonds.DetermineBonds(rd, charge=int(mol.charge))
            Chem.AssignStereochemistryFrom3D(rd)
            return Chem.MolToSmiles(Chem.RemoveHs(rd))
        except (ValueError, RuntimeError):
            return ""


# ----------------------------------------------------------------------------- SDF
def iter_sdf(path: str | Path, options: ChemOptions | None = None, **overrides):
    """Records for the blocks of an SD file; index = block number."""
    from rdkit import Chem

    from qmgen.chem.records import rdkit_log_capture

    options = ChemOptions.make(options, **overrides)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such SD file: {str(path)!r}")
    with rdkit_log_capture():
        supplier = Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False)
        n_blocks = len(supplier)
    if n_blocks == 0:
        head = path.read_bytes()[:4096]
        if head.strip():
            raw = head.decode("utf-8", "backslashreplace")
            message = "no SD block found in a non-empty file (binary data or not an SD file?)"
            yield failure(0, Status.INVALID_INPUT, message, raw, format="sdf")
        return
    for index in range(n_blocks):
        with rdkit_log_capture() as log:
            try:
                raw = supplier.GetItemText(index)
            except (UnicodeDecodeError, RuntimeError, ValueError):
                raw = ""
            try:
                mol = supplier[index]
            except (RuntimeError, ValueError, UnicodeDecodeError):
                mol = None
        if mol is None:
            reason = next((ln for ln in log if ln), "RDKit could not read the block")
            message = f"SDF block {index}: {reason}"
            if not raw or _CONTROL.search(raw) or "\ufffd" in raw:
                message += " (binary data?)"
            yield failure(index, Status.INVALID_INPUT, message, raw, format="sdf")
            continue
        yield _guard(partial(_sdf_record, mol, index, raw, options), index, raw, "sdf")


def sdf_spin_fields(mol, what: str) -> tuple[int | None, int | None]:
    """``(spin, multiplicity)`` from the SD data fields ``<spin>`` (2S) and
    ``<multiplicity>`` (2S+1) of an RDKit molecule (field names in any case); None where
    absent. Raises :class:`ChemError` (INVALID_INPUT) for a value that is not an integer."""
    found: dict[str, int | None] = dict.fromkeys(SDF_SPIN_FIELDS)
    for prop in mol.GetPropNames():
        key = prop.strip().lower()
        if key not in found or found[key] is not None:
            continue
        text = mol.GetProp(prop).strip()
        try:
            found[key] = int(text)
        except ValueError:
            raise ChemError(
                Status.INVALID_INPUT,
                f"{what}: SD property <{prop}> must be an integer, got {text[:40]!r}",
            ) from None
    return found["spin"], found["multiplicity"]


def _sdf_record(mol, index: int, raw: str, options: ChemOptions) -> InputRecord:
    from rdkit import Chem

    from qmgen.chem.conformers import embed_molecules, to_molecules
    from qmgen.chem.smiles import (
        canonical_smiles,
        check_size,
        molecule_spin,
        radical_electrons,
        validate_mol,
    )

    name = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
    what = f"SDF block {index}" + (f" ({name})" if name else "")
    charge = Chem.GetFormalCharge(mol)
    canonical, spin = "", 0
    try:
        if mol.GetNumAtoms() > options.max_atoms:  # before RDKit's recursive algorithms
            raise ChemError(
                Status.TOO_LARGE,
                f"{what} has {mol.GetNumAtoms()} atoms (maximum {options.max_atoms})",
            )
        given, multiplicity = sdf_spin_fields(mol, what)
        source = "SD property "
        validate_mol(mol, options, what, spin=given, multiplicity=multiplicity, source=source)
        spin = molecule_spin(
            mol, options, what, spin=given, multiplicity=multiplicity, source=source
        )
        notes = []
        n_rad = radical_electrons(mol)
        if options.open_shell and n_rad != spin:
            notes.append(
                f"2S = {spin} from the SD properties; RDKit found {n_rad} radical electrons"
            )
        has_3d = mol.GetNumConformers() > 0 and mol.GetConformer().Is3D()
        if has_3d:
            Chem.AssignStereochemistryFrom3D(mol)
        check_size(mol, options, what)
        canonical = canonical_smiles(mol)
        if has_3d:
            mh = Chem.AddHs(mol, addCoords=True)
            ids = [mol.GetConformer().GetId()]
            conformers = to_molecules(mh, ids, charge, name or canonical, spin=spin)
        elif options.n_conformers == 0:
            conformers = []
        else:
            conformers, note = embed_molecules(mol, canonical, options, name or canonical, spin)
            notes.append(note)
    except ChemError as err:
        return failure(
            index,
            err.status,
            err.message,
            raw,
            smiles=canonical,
            name=name,
            charge=charge,
            format="sdf",
            spin=spin,
        )
    return InputRecord(
        molecule_index=index,
        status=Status.OK,
        message="; ".join(n for n in notes if n),
        smiles=canonical,
        name=name,
        charge=charge,
        raw=raw,
        conformers=tuple(conformers),
        format="sdf",
        spin=spin,
    )
