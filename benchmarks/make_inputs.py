"""Write the bundled GPU benchmark input: RDKit conformers of 9-11 heavy-atom molecules.

``benchmarks/data/qm1b_like.xyz`` holds ``--per-size`` random molecules (``qmgen sample``:
unique, valid, neutral, closed shell, elements C, N, O, F, seeded) for each of 9, 10 and
11 heavy atoms, one seeded ETKDGv3 conformer each, as multi-frame XYZ in Angstrom with the
SMILES in the comment line. The GPU machine has no RDKit, so the file is made here and
committed; rerunning this script reproduces it.

Usage: python benchmarks/make_inputs.py [--per-size 96] [--out benchmarks/data/qm1b_like.xyz]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qmgen.chem import smiles_to_molecules
from qmgen.chem.sampler import sample_molecules

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-size", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "data" / "qm1b_like.xyz"))
    args = ap.parse_args()
    frames = []
    for heavy in (9, 10, 11):
        smiles = sample_molecules(args.per_size, heavy_atoms=heavy, elements="CNOF", seed=args.seed)
        for smi in smiles:
            mols = smiles_to_molecules(smi, seed=args.seed)
            if mols:
                frames.append(mols[0].to_xyz(smi))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(frames))
    print(f"wrote {len(frames)} conformers to {out}")


if __name__ == "__main__":
    main()
