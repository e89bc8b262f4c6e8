"""Test molecules shared by the test modules (XYZ in Angstrom, SMILES)."""

# Small molecules with experimental-like geometries (Angstrom)
WATER = """3
water
O   0.0000   0.0000   0.1173
H   0.0000   0.7572  -0.4692
H   0.0000  -0.7572  -0.4692
"""
AMMONIA = """4
ammonia
N   0.0000   0.0000   0.1162
H   0.0000   0.9397  -0.2711
H   0.8138  -0.4699  -0.2711
H  -0.8138  -0.4699  -0.2711
"""
FORMALDEHYDE = """4
formaldehyde
C   0.0000   0.0000  -0.5296
O   0.0000   0.0000   0.6790
H   0.0000   0.9353  -1.1123
H   0.0000  -0.9353  -1.1123
"""
AMMONIUM = """5
ammonium
N   0.0000   0.0000   0.0000
H   0.5900   0.5900   0.5900
H  -0.5900  -0.5900   0.5900
H  -0.5900   0.5900  -0.5900
H   0.5900  -0.5900  -0.5900
"""
METHANE = """5
methane
C   0.0000   0.0000   0.0000
H   0.6291   0.6291   0.6291
H  -0.6291  -0.6291   0.6291
H  -0.6291   0.6291  -0.6291
H   0.6291  -0.6291  -0.6291
"""

# 9-11 heavy atoms, embedded with RDKit (seeded ETKDG)
NINE_HEAVY = "O=Cc1ccncc1F"  # 3-fluoro-4-pyridinecarboxaldehyde, 9 heavy atoms, 4 H
SCF_LARGE = ("OCC1OC(O)C(O)C1", "CC(=O)Oc1ccccc1")  # 9 and 10 heavy atoms
# a doublet radical (Angstrom, near its minimum; spin=1)
METHYL = """4
methyl radical
C   0.0000  0.0000  0.0000
H   1.0790  0.0000  0.0000
H  -0.5395  0.9344  0.0000
H  -0.5395 -0.9344  0.0500
"""
