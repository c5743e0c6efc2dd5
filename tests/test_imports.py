"""Import direction (style guide §3.2 rule 1): generator, operators, priors and solvers (every submodule) never
import sgilo.cli, sgilo.bench or sgilo.training."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

CORE = ["sgilo.generator", "sgilo.operators", "sgilo.priors", "sgilo.solvers"]
FORBIDDEN = ["sgilo.cli", "sgilo.bench", "sgilo.training"]

SCRIPT = """
import importlib, json, pkgutil, sys
for name in {core}:
    pkg = importlib.import_module(name)
    for info in pkgutil.walk_packages(pkg.__path__, name + "."):
        importlib.import_module(info.name)
loaded = sorted(m for m in sys.modules if m.startswith("sgilo."))
print(json.dumps(loaded))
"""


def test_core_modules_do_not_import_cli_bench_training():
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(core=CORE)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "sgilo.generator.convert" in loaded and "sgilo.generator.safe_pickle" in loaded
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
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


def test_package_imports_without_test_extras():
    out = subprocess.run([sys.executable, "-c", NO_TEST_DEPS], capture_output=True, text=True, timeout=180,
                         cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    # t_3(0.975) * s / sqrt(4) with s = sqrt(5/3): 3.18245 * 1.29099 / 2
    assert abs(float(out.stdout.strip().splitlines()[-1]) - 3.182446 * math.sqrt(5 / 3) / 2) < 1e-4
