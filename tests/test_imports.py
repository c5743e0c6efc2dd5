"""Import direction: generator / operators / priors → solvers → sgilo.app → sgilo.cli, with sgilo.utils below all of
them. Checked statically on every ``import`` statement of the package (function-local imports included, so a lazy
import cannot hide a wrong-way dependency), plus one slow run-time check of the modules actually loaded."""

from __future__ import annotations

import ast
import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sgilo"

CORE = ["sgilo.generator", "sgilo.operators", "sgilo.priors", "sgilo.solvers"]
ABOVE_CORE = ["sgilo.app", "sgilo.cli", "sgilo.bench", "sgilo.training"]
# (importer prefix, forbidden prefixes), checked on the transitive closure of the static import graph.
RULES = [(core, ABOVE_CORE) for core in CORE] + [
    ("sgilo.utils", ["sgilo.operators", "sgilo.generator", "sgilo.priors", "sgilo.solvers", *ABOVE_CORE]),
    ("sgilo.app", ["sgilo.cli"]),
]


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    mods = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """sgilo modules named by the import statements of one file (``from pkg import sub`` counts as pkg.sub)."""
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {_resolve(a.name, mods) for a in node.names if a.name.split(".")[0] == "sgilo"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.split(".")[0] == "sgilo":
                out |= {_resolve(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base, mods) for a in node.names}
    return out - {None, name}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    mods = _modules(package)
    return {name: _imports(name, path, mods) for name, path in mods.items()}


@functools.cache
def package_graph() -> dict[str, set[str]]:
    """The graph of the sgilo package, parsed once per test session."""
    return import_graph()


def _closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _inside(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for importer, forbidden in RULES:
        for mod in (m for m in graph if _inside(m, importer)):
            bad += [f"{mod} -> {t}" for t in sorted(_closure(graph, mod)) if any(_inside(t, f) for f in forbidden)]
    return bad


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Modules that reach themselves (a package's __init__ importing its own submodules is not a circle)."""
    g = {m: {t for t in out if not _inside(t, m)} for m, out in graph.items()}
    return sorted({tuple(sorted(m for m in _closure(g, start) if start in _closure(g, m)))
                   for start in g if start in _closure(g, start)})


def test_layers_import_one_way():
    graph = package_graph()
    assert "sgilo.generator.safe_pickle" in graph["sgilo.generator.convert"]          # the parser sees imports
    assert not layer_violations(graph)


def test_no_import_circles():
    assert not import_cycles(package_graph())


def test_checks_catch_wrong_way_and_circular_imports(tmp_path):
    # A miniature package with a lazy utils → operators import and a two-module circle: both must be reported.
    pkg = tmp_path / "sgilo"
    for sub in ("utils", "operators", "app"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("")
    (pkg / "utils" / "images.py").write_text("def f():\n    from sgilo.operators.mask import M\n")
    (pkg / "operators" / "mask.py").write_text("from ..utils import images\nM = 1\n")
    (pkg / "app" / "run.py").write_text("import sgilo.cli\n")
    graph = import_graph(pkg)
    assert set(layer_violations(graph)) >= {"sgilo.utils.images -> sgilo.operators.mask", "sgilo.app.run -> sgilo.cli"}
    assert import_cycles(graph) == [("sgilo.operators.mask", "sgilo.utils.images")]


SCRIPT = """
import importlib, json, pkgutil, sys
for name in {core}:
    pkg = importlib.import_module(name)
    for info in pkgutil.walk_packages(pkg.__path__, name + "."):
        importlib.import_module(info.name)
loaded = sorted(m for m in sys.modules if m.startswith("sgilo."))
print(json.dumps(loaded))
"""


@pytest.mark.slow  # a fresh interpreter importing torch and every core module
def test_core_modules_do_not_import_cli_bench_training():
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(core=CORE)], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "sgilo.generator.convert" in loaded and "sgilo.generator.safe_pickle" in loaded
    bad = [m for m in loaded if any(_inside(m, f) for f in ABOVE_CORE)]
    assert not bad, f"core modules imported {bad}"


# Every module of the package (bench and cli included) must import with only the runtime dependencies of
# pyproject.toml: the test extras (scipy, scikit-image) are blocked in the subprocess.
NO_TEST_DEPS = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("scipy", "skimage"):
            raise ImportError("blocked test-only dependency " + name)
sys.meta_path.insert(0, Block())
import sgilo
for info in pkgutil.walk_packages(sgilo.__path__, "sgilo."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
from sgilo.bench.summary import t_interval
print(t_interval([0.0, 1.0, 2.0, 3.0])["ci95"])
"""


@pytest.mark.slow  # a fresh interpreter importing every module of the package
def test_package_imports_without_test_extras():
    out = subprocess.run([sys.executable, "-c", NO_TEST_DEPS], capture_output=True, text=True, timeout=180,
                         cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    # t_3(0.975) * s / sqrt(4) with s = sqrt(5/3): 3.18245 * 1.29099 / 2
    assert abs(float(out.stdout.strip().splitlines()[-1]) - 3.182446 * math.sqrt(5 / 3) / 2) < 1e-4
