"""SMILES -> validated RDKit molecule -> input record.

Validation runs in this order, and the first problem found decides the status:

1. parse (RDKit syntax)                         -> INVALID_INPUT, RDKit's reason quoted
2. elements outside ``options.elements``        -> UNSUPPORTED_ELEMENT, symbols named
3. sanitisation (valence, kekulisation)         -> INVALID_INPUT, RDKit's reason quoted
4. spin (:func:`molecule_spin`):

   - closed-shell mode (``options.open_shell`` False, the default): an odd electron
     count, or any radical electrons -> ODD_ELECTRONS (a diradical such as ``[CH2]`` is
     refused even with an even count; the message says to pass ``--open-shell``); no
     electrons -> INVALID_INPUT
   - open-shell mode: no electrons -> INVALID_INPUT; else 2S = the sum of RDKit's radical
     electrons over the atoms (high spin: ``[CH3]`` 1, ``[CH2]`` 2, ``[O][O]`` 2,
     ``[CH2]C=C`` 1, ``[NH3+]`` 1); a 2S whose parity differs from the electron count's
     -> INVALID_INPUT naming both. Closed-shell molecules get 2S = 0.

5. more than ``options.max_atoms`` atoms, hydrogens included -> TOO_LARGE
6. conformer embedding (ETKDG)                  -> EMBED_FAILED

The net charge is the sum of the formal charges; charged closed-shell species (``[NH4+]``)
are accepted (neutral ``[NH4]`` fails sanitisation: RDKit allows N a valence of 3).
Several fragments (``CCO.O``) are accepted and computed together. The record's ``spin``
and its conformers' ``Molecule.spin`` are the 2S of step 4.
RDKit is imported inside the functions, so importing this module does not need RDKit.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from qmgen.chem.records import (
    OPEN_SHELL_HINT,
    ChemError,
    ChemOptions,
    InputRecord,
    failure,
    given_spin,
    open_shell_refused,
    rdkit_log_capture,
)
from qmgen.errors import clip, excerpt
from qmgen.status import Status

if TYPE_CHECKING:
    from rdkit import Chem

# one match per atom of a SMILES: bracket atom, two-letter organic, one-letter organic
# (aromatic too), wildcard; exact for valid SMILES (implicit hydrogens not counted)
_SMILES_ATOM = re.compile(r"\[[^\]]*\]|Cl|Br|[BCNOPSFI]|[bcnops]|\*")


def short(text: str, limit: int = 60) -> str:
    """``repr`` of ``text`` shortened to about ``limit`` characters for messages."""
    text = text.strip()
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _parse_reason(lines: list[str]) -> str:
    """The informative part of RDKit's SMILES parse error log."""
    for ln in lines:
        if ln.startswith("SMILES Parse Error:"):
            return clip(ln.removeprefix("SMILES Parse Error:").strip(), 160)
    return "RDKit could not parse it"


def parse_smiles(smiles: str, options: ChemOptions) -> Chem.Mol:
    """A sanitised RDKit molecule (implicit H) from ``smiles``, validated against ``options``.

    Raises :class:`ChemError` with INVALID_INPUT, UNSUPPORTED_ELEMENT or ODD_ELECTRONS.
    The size limit is checked by :func:`check_size`, after the canonical SMILES is known.
    """
    from rdkit import Chem

    text = smiles.strip()
    if not text:
        raise ChemError(Status.INVALID_INPUT, "empty SMILES")
    check_smiles_size(text, options)
    with rdkit_log_capture() as log:
        mol = Chem.MolFromSmiles(text, sanitize=False)
    if mol is None:
        raise ChemError(Status.INVALID_INPUT, f"invalid SMILES {short(text)}: {_parse_reason(log)}")
    if mol.GetNumAtoms() == 0:
        raise ChemError(Status.INVALID_INPUT, f"SMILES {short(text)} has no atoms")
    return validate_mol(mol, options, what=f"SMILES {short(text)}")


def check_smiles_size(text: str, options: ChemOptions) -> None:
    """TOO_LARGE, without RDKit, for a SMILES longer than ``options.max_smiles_chars``
    or spelling out more atoms than ``options.max_smiles_atoms``."""
    limit = options.max_smiles_chars
    if len(text) > limit:
        raise ChemError(
            Status.TOO_LARGE,
            f"SMILES {excerpt(text)} is longer than the {limit} characters allowed for "
            f"molecules of at most {options.max_atoms} atoms (--max-atoms)",
        )
    n = len(_SMILES_ATOM.findall(text))
    if n > options.max_smiles_atoms:
        raise ChemError(
            Status.TOO_LARGE,
            f"SMILES {short(text)} has {n} atoms before hydrogens are added "
            f"(maximum {options.max_atoms} including hydrogens)",
        )


def validate_mol(
    mol: Chem.Mol,
    options: ChemOptions,
    what: str = "molecule",
    *,
    spin: int | None = None,
    multiplicity: int | None = None,
    source: str = "",
) -> Chem.Mol:
    """Check elements, sanitise, check the spin (:func:`molecule_spin`); returns ``mol``
    sanitised.

    ``mol`` may be unsanitised (it is sanitised in place). ``what`` names the input in
    messages; ``spin`` / ``multiplicity`` / ``source``: explicitly given 2S / 2S+1, as in
    :func:`molecule_spin`. Raises :class:`ChemError`.
    """
    from rdkit import Chem

    check_elements(mol, options, what)
    with rdkit_log_capture():
        try:
            Chem.SanitizeMol(mol)
        except Exception as err:  # RDKit's MolSanitizeException family (ValueError)
            raise ChemError(Status.INVALID_INPUT, f"invalid {what}: {err}") from err
    molecule_spin(mol, options, what, spin=spin, multiplicity=multiplicity, source=source)
    return mol


def check_elements(mol: Chem.Mol, options: ChemOptions, what: str = "molecule") -> None:
    """UNSUPPORTED_ELEMENT if an atom's element is not in ``options.elements``."""
    bad: dict[str, int] = {}
    for atom in mol.GetAtoms():
        sym = atom.GetSymbol() if atom.GetAtomicNum() > 0 else "*"
        if sym not in options.elements:
            bad.setdefault(sym, atom.GetIdx())
    if bad:
        names = ", ".join(f"{s} (atom {i})" for s, i in bad.items())
        raise ChemError(
            Status.UNSUPPORTED_ELEMENT,
            f"{what} contains unsupported element {names}; "
            f"allowed: {', '.join(sorted(options.elements))}",
        )


def count_atoms(mol: Chem.Mol) -> int:
    """Number of atoms including implicit and explicit-count hydrogens (sanitised ``mol``)."""
    return mol.GetNumAtoms() + sum(a.GetTotalNumHs() for a in mol.GetAtoms())


def electron_count(mol: Chem.Mol) -> int:
    """Total electrons: nuclear charges (hydrogens included) minus the net formal charge."""
    from rdkit import Chem

    nuclear = sum(a.GetAtomicNum() + a.GetTotalNumHs() for a in mol.GetAtoms())
    return nuclear - Chem.GetFormalCharge(mol)


def radical_electrons(mol: Chem.Mol) -> int:
    """Unpaired electrons RDKit assigns to ``mol`` (sanitised): the sum over atoms of
    ``GetNumRadicalElectrons()``, 2S of the high-spin state."""
    return sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())


def molecule_spin(
    mol: Chem.Mol,
    options: ChemOptions,
    what: str = "molecule",
    *,
    spin: int | None = None,
    multiplicity: int | None = None,
    source: str = "",
) -> int:
    """2S of a sanitised ``mol`` (0 in closed-shell mode), or :class:`ChemError`.

    ``spin`` (2S) / ``multiplicity`` (2S+1): values given explicitly by the input (SDF
    properties), checked by :func:`qmgen.chem.records.given_spin` (INVALID_INPUT when they
    contradict each other or the electron count, in either mode); ``source`` prefixes
    them in messages. Closed-shell mode (``options.open_shell`` False): ODD_ELECTRONS for
    an explicit 2S > 0, then as :func:`check_closed_shell`; returns 0. Open-shell mode:
    INVALID_INPUT without electrons; else the explicit 2S, or the radical electrons
    (:func:`radical_electrons`), INVALID_INPUT if their parity differs from the electron
    count's.
    """
    from rdkit import Chem

    n_el = electron_count(mol)
    charge = Chem.GetFormalCharge(mol)
    if options.open_shell and n_el <= 0:
        raise ChemError(Status.INVALID_INPUT, f"{what} has no electrons (charge {charge})")
    value, key = given_spin(spin, multiplicity, n_el, charge, what, source)
    if not options.open_shell:
        if value:
            raise open_shell_refused(key, value, n_el, charge, what)
        check_closed_shell(mol, what)
        return 0
    if value is not None:
        return value
    n_rad = radical_electrons(mol)
    if (n_el - n_rad) % 2:
        raise ChemError(
            Status.INVALID_INPUT,
            f"{what} has {n_rad} radical electrons but {n_el} electrons (charge {charge}): "
            "their parities differ, so the radical electrons cannot be 2S",
        )
    return n_rad


def check_closed_shell(mol: Chem.Mol, what: str = "molecule") -> None:
    """ODD_ELECTRONS for an odd electron count or any radical centre (sanitised ``mol``);
    the message ends with :data:`~qmgen.chem.records.OPEN_SHELL_HINT`."""
    from rdkit import Chem

    n_el = electron_count(mol)
    radicals = [
        (a.GetIdx(), a.GetSymbol(), a.GetNumRadicalElectrons())
        for a in mol.GetAtoms()
        if a.GetNumRadicalElectrons()
    ]
    where = ""
    if radicals:
        where = "; unpaired electrons on " + ", ".join(
            f"atom {i} ({s}): {k}" for i, s, k in radicals[:4]
        )
    if n_el % 2:
        raise ChemError(
            Status.ODD_ELECTRONS,
            f"{what} has an odd electron count ({n_el} electrons, charge "
            f"{Chem.GetFormalCharge(mol)}){where}; only closed-shell molecules are computed; "
            f"{OPEN_SHELL_HINT}",
        )
    if radicals:
        raise ChemError(
            Status.ODD_ELECTRONS,
            f"{what} is a radical{where}; only closed-shell molecules are computed; "
            f"{OPEN_SHELL_HINT}",
        )
    if n_el == 0:
        raise ChemError(Status.INVALID_INPUT, f"{what} has no electrons")


def check_size(mol: Chem.Mol, options: ChemOptions, what: str = "molecule") -> None:
    """TOO_LARGE if ``mol`` (sanitised) has more than ``options.max_atoms`` atoms with H."""
    n = count_atoms(mol)
    if n > options.max_atoms:
        raise ChemError(
            Status.TOO_LARGE,
            f"{what} has {n} atoms including hydrogens (maximum {options.max_atoms})",
        )


def canonical_smiles(mol: Chem.Mol) -> str:
    """RDKit canonical isomeric SMILES of a sanitised molecule (hydrogens implicit)."""
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False))


def smiles_record(
    smiles: str,
    name: str = "",
    molecule_index: int = 0,
    raw: str | None = None,
    options: ChemOptions | None = None,
    **overrides,
) -> InputRecord:
    """One SMILES -> an :class:`InputRecord` (validated; conformers embedded). Never raises
    on bad input.

    ``raw`` is the input text kept on the record (default: ``smiles``); ``options`` and
    keyword ``overrides`` as in :class:`ChemOptions`.
    """
    from qmgen.chem.conformers import embed_molecules

    options = ChemOptions.make(options, **overrides)
    raw = smiles if raw is None else raw
    canonical, charge, spin = "", 0, 0
    what = f"SMILES {short(smiles)}"
    try:
        mol = parse_smiles(smiles, options)
        canonical = canonical_smiles(mol)
        from rdkit import Chem

        charge = Chem.GetFormalCharge(mol)
        spin = molecule_spin(mol, options, what)
        check_size(mol, options, what=what)
        conformers: list = []
        note = ""
        if options.n_conformers > 0:
            conformers, note = embed_molecules(
                mol, canonical, options, name=name or canonical, spin=spin
            )
    except ChemError as err:
        return failure(
            molecule_index,
            err.status,
            err.message,
            raw,
            smiles=canonical,
            name=name,
            charge=charge,
            spin=spin,
        )
    return InputRecord(
        molecule_index=molecule_index,
        status=Status.OK,
        message=note,
        smiles=canonical,
        name=name,
        charge=charge,
        raw=raw,
        conformers=tuple(conformers),
        format="smiles",
        spin=spin,
    )


def smiles_to_molecules(smiles: str, options: ChemOptions | None = None, **overrides):
    """Conformers of one SMILES as a list of :class:`qmgen.Molecule` (positions in Bohr).

    Convenience for interactive use; raises :class:`ChemError` (with ``.status``) where
    the readers would return a failure record.
    """
    options = ChemOptions.make(options, **overrides)
    if options.n_conformers < 1:
        raise ValueError("smiles_to_molecules needs n_conformers >= 1")
    rec = smiles_record(smiles, options=options)
    if not rec.ok:
        raise ChemError(rec.status, rec.message)
    return list(rec.conformers)
