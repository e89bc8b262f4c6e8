"""The package's shape: layers, import cycles, and what importing qmgen costs a user.

The import graph is read from the source (module-level and function-level imports alike),
so a lazy import inside a function counts as an edge too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qmgen"
# layer -> layers it must never import (directly or through function-level imports)
FORBIDDEN = {
    "qmgen.storage": ("qmgen.pipeline", "qmgen.dataset", "qmgen.dft", "qmgen.chem"),
    "qmgen.dataset": ("qmgen.pipeline", "qmgen.dft", "qmgen.chem"),
    "qmgen.dft": ("qmgen.pipeline", "qmgen.dataset", "qmgen.storage", "qmgen.chem"),
    "qmgen.chem": ("qmgen.pipeline", "qmgen.dataset", "qmgen.storage", "qmgen.dft"),
}
# third-party modules a layer must never import
FORBIDDEN_EXTERNAL = {
    "qmgen.storage": ("jax", "pyscf", "fcntl", "rdkit", "dask", "distributed"),
    "qmgen.dataset": ("jax", "pyscf", "fcntl", "rdkit", "dask", "distributed"),
    "qmgen.dft": ("rdkit", "h5py", "dask", "distributed"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module name ``name`` imports anywhere in its source (absolute form).

    ``from pkg import sub`` of a submodule counts as importing ``pkg.sub`` (not ``pkg``:
    Python initialises a package before any of its submodules anyway)."""
    modules = _modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                found.add(full if full in modules else base)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(name, path):
            while imported and imported not in modules and imported.startswith("qmgen"):
                imported = imported.rpartition(".")[0]
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _in(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def test_graph_reader_sees_function_level_imports():
    graph = _graph()
    # qmgen.__init__ imports everything lazily, inside __getattr__
    assert {"qmgen.dft.engine", "qmgen.dataset", "qmgen.pipeline.run"} <= graph["qmgen"]
    assert "qmgen.storage.writer" in graph["qmgen.pipeline.task"]  # a function-level import


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_layers_import_only_lower_layers():
    bad = []
    for module, targets in _graph().items():
        for layer, forbidden in FORBIDDEN.items():
            if _in(module, layer):
                bad += [(module, t) for t in targets for f in forbidden if _in(t, f)]
    assert bad == []


def test_readers_and_core_avoid_forbidden_modules():
    bad = []
    for name, path in _modules().items():
        for layer, forbidden in FORBIDDEN_EXTERNAL.items():
            if _in(name, layer):
                imported = _imports(name, path)
                bad += [(name, f) for f in forbidden if any(_in(i, f) for i in imported)]
    assert bad == []


def _fresh(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_qmgen_changes_no_jax_setting_and_loads_no_jax():
    got = _fresh(
        "import json, sys, qmgen\n"
        "loaded = [m for m in ('jax', 'pyscf', 'h5py', 'rdkit') if m in sys.modules]\n"
        "import jax\n"
        "print(json.dumps(dict(loaded=loaded, x64=bool(jax.config.jax_enable_x64))))\n"
    )
    assert got == dict(loaded=[], x64=False)


@pytest.mark.parametrize("user_x64", [False, True])
def test_public_api_is_float64_and_leaves_user_jax_as_it_was(user_x64):
    """In a fresh process without the test session's x64 context: compute, integrals and
    nr_rks give float64 results equal to PySCF's, and afterwards the user's own JAX code
    still runs in the precision the user chose."""
    got = _fresh(
        "import json, jax, numpy as np\n"
        f"jax.config.update('jax_enable_x64', {user_x64})\n"
        "import jax.numpy as jnp, qmgen\n"
        "from pyscf import dft, gto\n"
        "from qmgen.dft.reference import pyscf_mol\n"
        "mol = qmgen.Molecule.from_xyz('3\\n\\nO 0 0 0.1173\\nH 0 0.7572 -0.4692\\n"
        "H 0 -0.7572 -0.4692')\n"
        "res = qmgen.compute([mol], xc='b3lyp', conv_tol=1e-10)[0]\n"
        "ints = qmgen.integrals(mol)\n"
        "pm = pyscf_mol(mol, 'sto-3g')\n"
        "mf = dft.RKS(pm, xc='b3lyp'); mf.grids.level = 0; mf.conv_tol = 1e-10\n"
        "e_ref = mf.kernel()\n"
        "dm = mf.make_rdm1()\n"
        "nelec, exc, vxc = qmgen.dft.nr_rks(mol, dm, xc='b3lyp')\n"
        "n_ref, exc_ref, _ = mf._numint.nr_rks(pm, mf.grids, 'b3lyp', dm)\n"
        "print(json.dumps(dict(\n"
        "  de=abs(res['energy'] - e_ref),\n"
        "  ds=float(np.abs(ints['overlap'] - pm.intor('int1e_ovlp')).max()),\n"
        "  dn=abs(nelec - n_ref), dexc=abs(exc - exc_ref),\n"
        "  x64=bool(jax.config.jax_enable_x64),\n"
        "  user=str(jnp.ones(2).dtype),\n"
        "  types=[str(ints['overlap'].dtype), str(vxc.dtype)])))\n"
    )
    assert got["de"] < 1e-8 and got["ds"] < 1e-12 and got["dn"] < 1e-10 and got["dexc"] < 1e-10
    assert got["types"] == ["float64", "float64"]
    assert got["x64"] is user_x64
    assert got["user"] == ("float64" if user_x64 else "float32")


def test_every_python_block_in_readme_is_run_by_a_test():
    """README's Python blocks each follow a marker that a test extracts and runs
    (api-example, train-example in test_generated_dataset.py; ase-example,
    calculator-example in test_ase.py); an unmarked block would go stale."""
    import re

    text = (PACKAGE.parent / "README.md").read_text()
    blocks = re.findall(r"(<!-- [\w-]+ -->\s*)?```python\n", text)
    assert blocks and all(marker.strip() for marker in blocks)
    runners = (PACKAGE.parent / "tests").glob("test_*.py")
    tests = "".join(p.read_text() for p in runners if p.name != "test_layout.py")
    for marker in blocks:
        assert marker.strip() in tests, f"no test runs the README block after {marker.strip()}"
