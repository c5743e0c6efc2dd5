"""Import direction (style guide §3.2 rule 1): generator, operators, priors and solvers (every submodule) never
import sgilo.cli, sgilo.bench or sgilo.training."""

from __future__ import annotations

import json
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
