"""Seeded sampler of random, valid, closed-shell small molecules (as canonical SMILES).

Construction of one proposal (all random draws from one ``numpy`` PCG64 generator):

1. grow a tree of exactly ``heavy_atoms`` heavy atoms: each new atom is bonded to a
   uniformly chosen atom with free valence; its element is drawn with weights (carbon
   favoured, see ``ELEMENT_WEIGHTS``) among the elements that keep the growth alive;
2. close 0-3 rings with single bonds between non-bonded atoms with free valence, the
   pair drawn with weights by the size of the ring it closes (``RING_SIZE_WEIGHTS``:
   five- and six-membered rings favoured);
3. raise bond orders (single -> double -> triple) at random where both ends have free
   valence;
4. fill the remaining valence with hydrogens (standard valences, no charges, hence
   neutral and closed shell), sanitise with RDKit, write the canonical SMILES, re-parse
   it, and (``check_embed=True``) embed one ETKDGv3 conformer with the seed the readers
   would use (``EMBED_CHECK_ITERATIONS`` attempts: the same seed then succeeds in the
   readers too, which allow more), rejecting anything that fails a step. Triple bonds
   and allenes in rings of fewer than 9 atoms are rejected before that check.

With ``filter_unstable=True`` bonds between two halogens, a halogen and N or O, and
O-O bonds (peroxides) are never made. Every returned molecule has exactly
``heavy_atoms`` heavy atoms (not "up to"). The result is a function of the arguments
only: the same seed gives the same list in any process.
"""

from __future__ import annotations

import numpy as np

from qmgen.chem.records import parse_elements

VALENCES = {
    "B": 3,
    "C": 4,
    "N": 3,
    "O": 2,
    "F": 1,
    "Si": 4,
    "P": 3,
    "S": 2,
    "Cl": 1,
    "Br": 1,
    "I": 1,
}
ELEMENT_WEIGHTS = {"C": 10.0, "N": 3.0, "O": 3.0, "F": 1.0}  # others: 1.0
HALOGENS = frozenset({"F", "Cl", "Br", "I"})
RING_CLOSURE_PROBS = (0.3, 0.4, 0.2, 0.1)  # P(0, 1, 2, 3 ring closures)
RING_SIZE_WEIGHTS = {3: 0.3, 4: 0.2, 5: 1.0, 6: 1.0, 7: 0.3}  # larger rings: 0.1
EMBED_CHECK_ITERATIONS = 3  # ETKDG attempts in the check; more only adds failures' cost
P_RAISE_ORDER = 0.25  # chance per bond (and again per extra order) of a multiple bond


def _unstable(a: str, b: str) -> bool:
    """Bond types never made with ``filter_unstable``: X-X, X-N, X-O (X halogen), O-O."""
    if a in HALOGENS or b in HALOGENS:
        return (a in HALOGENS and b in HALOGENS) or bool({a, b} & {"N", "O"})
    return a == "O" and b == "O"


def _propose(rng: np.random.Generator, n_heavy: int, symbols, weights, filter_unstable: bool):
    """One random Kekule graph: ``(elements, {(i, j): order})``, or None if growth failed."""
    val = [VALENCES[s] for s in symbols]
    w = np.asarray(weights, dtype=np.float64)
    if n_heavy > 1:
        w0 = np.where(np.asarray(val) >= (2 if n_heavy > 2 else 1), w, 0.0)
    else:
        w0 = w
    if w0.sum() == 0:
        return None
    first = int(rng.choice(len(symbols), p=w0 / w0.sum()))
    elems, free = [first], [val[first]]
    bonds: dict[tuple[int, int], int] = {}
    for k in range(1, n_heavy):
        parents = [i for i, f in enumerate(free) if f > 0]
        if not parents:
            return None
        parent = parents[int(rng.integers(len(parents)))]
        last = k == n_heavy - 1
        total_free = sum(free)
        ok = np.array(
            [
                (last or total_free - 2 + val[e] > 0)
                and not (filter_unstable and _unstable(symbols[e], symbols[elems[parent]]))
                for e in range(len(symbols))
            ]
        )
        we = np.where(ok, w, 0.0)
        if we.sum() == 0:
            return None
        e = int(rng.choice(len(symbols), p=we / we.sum()))
        elems.append(e)
        free.append(val[e] - 1)
        free[parent] -= 1
        bonds[(parent, k)] = 1
    # ring closures
    n_rings = int(rng.choice(len(RING_CLOSURE_PROBS), p=RING_CLOSURE_PROBS)) if n_heavy > 2 else 0
    for _ in range(n_rings):
        dist = _distances(n_heavy, bonds)
        pairs = [
            (i, j)
            for i in range(n_heavy)
            for j in range(i + 1, n_heavy)
            if free[i] > 0
            and free[j] > 0
            and dist[i][j] > 1
            and not (filter_unstable and _unstable(symbols[elems[i]], symbols[elems[j]]))
        ]
        if not pairs:
            break
        pw = np.array([RING_SIZE_WEIGHTS.get(dist[i][j] + 1, 0.1) for i, j in pairs])
        i, j = pairs[int(rng.choice(len(pairs), p=pw / pw.sum()))]
        bonds[(i, j)] = 1
        free[i] -= 1
        free[j] -= 1
    # bond orders
    for key in [list(bonds)[int(t)] for t in rng.permutation(len(bonds))]:
        i, j = key
        while bonds[key] < 3 and free[i] > 0 and free[j] > 0 and rng.random() < P_RAISE_ORDER:
            bonds[key] += 1
            free[i] -= 1
            free[j] -= 1
    return [symbols[e] for e in elems], bonds


def _distances(n: int, bonds) -> list[list[int]]:
    """Bond-count distances between all atoms of a connected graph (BFS), (n, n)."""
    nbrs: list[list[int]] = [[] for _ in range(n)]
    for i, j in bonds:
        nbrs[i].append(j)
        nbrs[j].append(i)
    out = []
    for start in range(n):
        d = [-1] * n
        d[start] = 0
        queue = [start]
        for a in queue:
            for b in nbrs[a]:
                if d[b] < 0:
                    d[b] = d[a] + 1
                    queue.append(b)
        out.append(d)
    return out


def _to_smiles(elements, bonds) -> str | None:
    """Canonical SMILES of the graph (implicit H fill valences), or None if RDKit refuses."""
    from rdkit import Chem

    rw = Chem.RWMol()
    for sym in elements:
        rw.AddAtom(Chem.Atom(sym))
    order = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    for (i, j), o in bonds.items():
        rw.AddBond(i, j, order[o])
    mol = rw.GetMol()
    try:
        Chem.SanitizeMol(mol)
    except Exception:  # noqa: BLE001 - RDKit raises several types; any rejects the proposal
        return None
    ring_info = mol.GetRingInfo()
    for atom in mol.GetAtoms():
        if (
            atom.GetHybridization() == Chem.HybridizationType.SP
            and atom.IsInRing()
            and ring_info.MinAtomRingSize(atom.GetIdx()) < 9
        ):
            return None  # triple bond or allene in a small ring: not embeddable
    return Chem.MolToSmiles(mol)


def _accept(smiles: str, n_heavy: int, seed: int, check_embed: bool) -> bool:
    """Re-parse ``smiles`` and check it is neutral, closed shell, ``n_heavy`` heavy atoms,
    and (``check_embed``) embeddable with the seed the readers would use."""
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom

    from qmgen.chem.conformers import conformer_seed, etkdg_params

    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() != n_heavy or Chem.GetFormalCharge(mol) != 0:
        return False
    if any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        return False
    if not check_embed:
        return True
    params = etkdg_params(conformer_seed(Chem.MolToSmiles(mol), seed))
    params.maxIterations = EMBED_CHECK_ITERATIONS
    return rdDistGeom.EmbedMolecule(Chem.AddHs(mol), params) == 0


def sample_molecules(
    n: int,
    heavy_atoms: int = 9,
    elements: str = "CNOF",
    seed: int = 0,
    *,
    check_embed: bool = True,
    filter_unstable: bool = True,
    weights: dict[str, float] | None = None,
    max_attempts: int | None = None,
) -> list[str]:
    """``n`` unique canonical SMILES of random valid molecules with ``heavy_atoms`` heavy atoms.

    elements: heavy elements to draw from ("CNOF", "C,N,O,Cl", ...; each needs a standard
        valence in ``VALENCES``; hydrogen is implicit).
    seed: the result is a pure function of the arguments.
    check_embed: keep only molecules for which one ETKDGv3 conformer embeds with the seed
        :func:`qmgen.chem.conformers.conformer_seed` gives for ``seed``.
    weights: relative element frequencies (default ``ELEMENT_WEIGHTS``, others 1).
    max_attempts: proposals tried before giving up (default ``50 * n + 5000``); raises
        ``ValueError`` if fewer than ``n`` unique molecules were found (for example, there
        are only 4 one-heavy-atom molecules of C, N, O, F).

    Returns a list of ``n`` strings in the order they were found.
    """
    from qmgen.chem.records import rdkit_log_capture

    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if int(heavy_atoms) < 1:
        raise ValueError(f"heavy_atoms must be >= 1, got {heavy_atoms}")
    symbols = sorted(parse_elements(elements) - {"H"})
    unknown = [s for s in symbols if s not in VALENCES]
    if unknown or not symbols:
        raise ValueError(
            f"cannot sample with elements {elements!r}: "
            f"{'no heavy element' if not symbols else 'no valence rule for ' + ', '.join(unknown)}"
            f"; valid: {', '.join(VALENCES)}"
        )
    table = {**ELEMENT_WEIGHTS, **(weights or {})}
    w = [float(table.get(s, 1.0)) for s in symbols]
    if min(w) < 0 or sum(w) <= 0:
        raise ValueError(f"element weights must be >= 0 with a positive sum, got {weights}")
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    limit = 50 * int(n) + 5000 if max_attempts is None else int(max_attempts)
    found: list[str] = []
    seen: set[str] = set()
    attempts = 0
    with rdkit_log_capture():
        while len(found) < n and attempts < limit:
            attempts += 1
            graph = _propose(rng, int(heavy_atoms), symbols, w, filter_unstable)
            if graph is None:
                continue
            smiles = _to_smiles(*graph)
            if smiles is None or smiles in seen:
                continue
            seen.add(smiles)
            if _accept(smiles, int(heavy_atoms), int(seed), check_embed):
                found.append(smiles)
    if len(found) < n:
        raise ValueError(
            f"found only {len(found)} of {n} unique molecules with {heavy_atoms} heavy atoms "
            f"from {''.join(symbols)} after {attempts} attempts; fewer may exist, or raise "
            "max_attempts"
        )
    return found
