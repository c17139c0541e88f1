"""Per-job fixed cost: importing torch takes ~2 s of CPU, paid by every job whose imports reach it.

The Snakefile is parsed again by every SLURM job (and by every `snakemake` call), so the modules the rule
files import must not reach torch; nor must the jobs that never touch a tensor (inventory, calibrate,
build_index, the demo generator). The modules are found by reading the files, so a new import is checked
without editing this test.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import REPO

TORCH_FREE_SCRIPTS = ("inventory.py", "calibrate.py", "label_parts.py", "build_index.py", "demo.py")


def ta2d_imports(source: str) -> set[str]:
    """Every ta2d module a Python source (or the Python lines of a rule file) imports, at any depth."""
    found = set()
    for line in source.splitlines():
        text = line.strip()
        if not text.startswith(("from ta2d", "import ta2d")):
            continue
        node = ast.parse(text).body[0]
        if isinstance(node, ast.ImportFrom):
            found.add(node.module)
        else:
            found.update(a.name for a in node.names)
    return found


def rule_file_imports() -> set[str]:
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    return set().union(*(ta2d_imports(f.read_text()) for f in files))


@pytest.mark.parametrize("what", ["rule files", *TORCH_FREE_SCRIPTS])
def test_parsing_the_workflow_and_tensor_free_jobs_do_not_import_torch(what):
    modules = rule_file_imports() if what == "rule files" else ta2d_imports((REPO / "scripts" / what).read_text())
    assert modules, f"no ta2d imports found in {what}"
    code = "import sys\n" + "".join(f"import {m}\n" for m in sorted(modules)) + (
        "heavy = sorted(m for m in ('torch', 'lightgbm', 'matplotlib') if m in sys.modules)\nprint(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{what} imports {out.stdout.strip()} through {sorted(modules)}"
