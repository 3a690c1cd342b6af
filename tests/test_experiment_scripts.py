"""Every script under experiments/ runs its `--help` in-process, and every name any script or notebook imports
from `ptq` exists (issue 26: a benchmark imported a constant that had been removed, found only when run)."""
from __future__ import annotations

import ast
import contextlib
import importlib
import io
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "experiments").rglob("*.py"))
NOTEBOOKS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("*.py"))


def test_scripts_found():
    assert "experiments/benchmark_paper_models.py" in SCRIPTS and NOTEBOOKS


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help(script, monkeypatch):
    """`python <script> --help` in-process: the script's top-level imports load and argparse exits 0; the
    `__main__` guard keeps an import from running it."""
    path = ROOT / script
    assert 'if __name__ == "__main__":' in path.read_text(), f"{script} has no __main__ guard"
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    monkeypatch.syspath_prepend(str(path.parent))   # as `python <script>` has it (restored afterwards)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(path), run_name="__main__")
    assert exit_info.value.code in (0, None) and "usage:" in out.getvalue(), script


def ptq_imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module, name or None, line) of every `import ptq...` / `from ptq... import name`, in functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ptq":
            found += [(node.module, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "ptq"]
    return found


@pytest.mark.parametrize("script", SCRIPTS + NOTEBOOKS)
def test_every_imported_ptq_name_exists(script):
    """Also the imports inside functions that `--help` does not reach (the notebooks are only read, not run)."""
    missing = []
    for module, name, line in ptq_imports(ROOT / script):
        mod = importlib.import_module(module)
        if name is not None and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"line {line}: from {module} import {name}")
    assert not missing, f"{script}: {missing}"
