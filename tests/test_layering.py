"""The layering of the repository, read from the source: stages sit on top, the library knows no stage.

- a stage script, a study wrapper script or a benchmark imports the library, never a stage;
- library code never imports a stage (nor a script or benchmark);
- every package ``__init__.py`` holds only a docstring, so importing a module runs that module alone
  (which is what lets ``tests/test_dvc_deps.py`` leave them out of the stages' code deps).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.import_graph import ROOT, imported_modules

LIBRARY = ROOT / "speech_calibration"
TOP_LEVEL = ("stages", "scripts", "benchmarks")


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def forbidden_imports(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported_modules(path) if m.split(".")[0] in forbidden)


def layering_violations(root: Path = ROOT) -> list[str]:
    """Every import that breaks the layering, as ``file: module`` lines (empty when the layering holds)."""
    problems = []
    for folder in TOP_LEVEL:
        # a benchmark may share helpers with another benchmark; nothing imports a stage or a study script
        forbidden = ("stages", "scripts") if folder == "benchmarks" else TOP_LEVEL
        for path in python_files(root / folder):
            problems += [f"{path.relative_to(root)}: imports {m}" for m in forbidden_imports(path, forbidden)]
    for path in python_files(root / "speech_calibration"):
        problems += [f"{path.relative_to(root)}: imports {m}" for m in forbidden_imports(path, TOP_LEVEL)]
    return problems


def test_no_stage_script_or_library_module_imports_a_stage():
    assert layering_violations() == []


def test_a_stage_importing_another_stage_is_caught(tmp_path):
    """The check itself fails on a deliberate break: a copy of the repo where one stage imports another."""
    for folder in ("stages", "speech_calibration"):
        for path in python_files(ROOT / folder):
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
    (tmp_path / "stages" / "evaluate.py").write_text(
        (ROOT / "stages" / "evaluate.py").read_text() + "\nfrom stages.calibrate import main as _calibrate\n")
    (tmp_path / "speech_calibration" / "layout.py").write_text(
        (ROOT / "speech_calibration" / "layout.py").read_text() + "\n\ndef _f():\n    import stages.train\n")
    problems = layering_violations(tmp_path)
    assert "stages/evaluate.py: imports stages.calibrate" in problems
    assert "speech_calibration/layout.py: imports stages.train" in problems


@pytest.mark.parametrize("init", [p for p in python_files(LIBRARY) + [ROOT / "stages" / "__init__.py"]
                                  if p.name == "__init__.py"], ids=lambda p: str(p.relative_to(ROOT)))
def test_package_init_holds_only_a_docstring(init):
    body = ast.parse(init.read_text()).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), (
        f"{init.relative_to(ROOT)}: a package __init__ must hold only its docstring (put code in a module)")


def test_every_stage_script_is_a_thin_command_line():
    """Each stage script defines ``main`` and nothing heavier than a few helpers: the work is in the library."""
    for path in python_files(ROOT / "stages"):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
        assert "main" in functions, f"{path.name}: no main()"
        assert not classes, f"{path.name}: defines classes {classes}; they belong in speech_calibration/"
        assert len(path.read_text().splitlines()) <= 150, f"{path.name}: longer than 150 lines"


@pytest.mark.parametrize("script", [p.stem for p in python_files(ROOT / "stages") if p.name != "__init__.py"])
def test_every_stage_answers_help(script, capsys):
    import importlib

    with pytest.raises(SystemExit) as done:
        importlib.import_module(f"stages.{script}").main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and "--params" in out and f"python -m stages.{script}" in out
