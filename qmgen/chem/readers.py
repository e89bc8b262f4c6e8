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
    Net charge 0 unless the comment holds ``charge=N``; the rest of the comment is the
    name. ``molecule_index`` is the frame number. A frame whose count line is not an
    integer is a failure record spanning up to the next count line. The geometry is used
    as given (one conformer); the electron count must be even (bonds are not known, so
    radicals with an even count pass). ``smiles`` comes from RDKit's bond perception
    (``DetermineBonds``) when ``options.xyz_smiles``; "" if that fails.
``sdf`` (.sdf, .sd, .mol)
    Read with RDKit's ``SDMolSupplier`` (hydrogens kept); ``molecule_index`` is the block
    number, a block RDKit cannot read or sanitise is a failure record. A block with 3-D
    coordinates gives that one conformer (missing hydrogens placed by ``AddHs``); a 2-D
    or coordinate-less block is embedded like a SMILES.

Usage errors raise (missing file: ``OSError``; unknown format or option: ``ValueError``);
bad content never does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path

from qmgen.chem.records import (
    INPUT_FORMATS,
    ChemError,
    ChemOptions,
    InputFormat,
    InputRecord,
    failure,
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
_CHARGE = re.compile(r"(?<![\w.])charge\s*[=:]\s*([+-]?\d+)\b", re.IGNORECASE)
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


def parse_xyz_comment(comment: str) -> tuple[int, str]:
    """``(charge, name)`` from an XYZ comment line: ``charge=N`` anywhere, the rest is the name."""
    m = _CHARGE.search(comment)
    if not m:
        return 0, comment.strip()
    name = (comment[: m.start()] + comment[m.end() :]).strip(" ,;\t")
    return int(m.group(1)), " ".join(name.split())


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

    charge, name = parse_xyz_comment(lines[1])
    try:
        mol = Molecule.from_xyz("\n".join(lines), charge=charge)
    except MoleculeError as err:
        message = f"XYZ frame {index}: {err}"
        return failure(
            index, Status.INVALID_INPUT, message, raw, name=name, charge=charge, format="xyz"
        )
    problem = _check_geometry(mol, options)
    if problem is not None:
        status, message = problem
        message = f"XYZ frame {index}: {message}"
        return failure(index, status, message, raw, name=name, charge=charge, format="xyz")
    smiles = _xyz_smiles(mol) if options.xyz_smiles else ""
    mol = Molecule(mol.z, mol.positions, charge=charge, name=name or smiles)
    return InputRecord(
        molecule_index=index,
        status=Status.OK,
        smiles=smiles,
        name=name,
        charge=charge,
        raw=raw,
        conformers=(mol,),
        format="xyz",
    )


def _check_geometry(mol, options: ChemOptions) -> tuple[Status, str] | None:
    """Element, size and electron-parity checks of a :class:`qmgen.Molecule`."""
    bad = sorted({s for s in mol.symbols if s not in options.elements})
    if bad:
        allowed = ", ".join(sorted(options.elements))
        return (
            Status.UNSUPPORTED_ELEMENT,
            f"unsupported element {', '.join(bad)}; allowed: {allowed}",
        )
    if mol.n_atoms > options.max_atoms:
        return Status.TOO_LARGE, f"{mol.n_atoms} atoms (maximum {options.max_atoms})"
    if mol.n_electrons % 2:
        return (
            Status.ODD_ELECTRONS,
            f"odd electron count ({mol.n_electrons} electrons, charge {mol.charge}); "
            "only closed-shell molecules are computed",
        )
    if mol.n_electrons <= 0:
        return Status.INVALID_INPUT, f"no electrons (charge {mol.charge})"
    return None


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


def _sdf_record(mol, index: int, raw: str, options: ChemOptions) -> InputRecord:
    from rdkit import Chem

    from qmgen.chem.conformers import embed_molecules, to_molecules
    from qmgen.chem.smiles import canonical_smiles, check_size, validate_mol

    name = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
    what = f"SDF block {index}" + (f" ({name})" if name else "")
    charge = Chem.GetFormalCharge(mol)
    canonical = ""
    try:
        if mol.GetNumAtoms() > options.max_atoms:  # before RDKit's recursive algorithms
            raise ChemError(
                Status.TOO_LARGE,
                f"{what} has {mol.GetNumAtoms()} atoms (maximum {options.max_atoms})",
            )
        validate_mol(mol, options, what)
        has_3d = mol.GetNumConformers() > 0 and mol.GetConformer().Is3D()
        if has_3d:
            Chem.AssignStereochemistryFrom3D(mol)
        check_size(mol, options, what)
        canonical = canonical_smiles(mol)
        note = ""
        if has_3d:
            mh = Chem.AddHs(mol, addCoords=True)
            conformers = to_molecules(mh, [mol.GetConformer().GetId()], charge, name or canonical)
        elif options.n_conformers == 0:
            conformers = []
        else:
            conformers, note = embed_molecules(mol, canonical, options, name or canonical)
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
        )
    return InputRecord(
        molecule_index=index,
        status=Status.OK,
        message=note,
        smiles=canonical,
        name=name,
        charge=charge,
        raw=raw,
        conformers=tuple(conformers),
        format="sdf",
    )
