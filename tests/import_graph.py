"""The import graph of the repository's own code, read from the source (``ast``), never by importing it.

``module_closure`` answers "which files of the repository does this script execute?" (its own file plus
every ``speech_calibration`` module it imports, directly or through other modules, at module level or
inside a function). Package ``__init__.py`` files are left out: ``tests/test_layering.py`` checks that
each holds only a docstring, so no stage can depend on what one does.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = "speech_calibration"


def module_file(module: str) -> Path | None:
    """The file of a dotted module name inside the repository, or None (third-party, standard library)."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Dotted names of every module ``path`` imports (``from a.b import c`` counts ``a.b.c`` when that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for alias in node.names:
                if module_file(f"{node.module}.{alias.name}") is not None:
                    found.add(f"{node.module}.{alias.name}")
    return found


def module_closure(path: Path, top: str = LIBRARY) -> set[Path]:
    """``path`` and every module file under package ``top`` it reaches through imports (no ``__init__.py``)."""
    seen: set[Path] = set()
    todo = [path.resolve()]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for module in imported_modules(current):
            if module.split(".")[0] != top:
                continue
            file = module_file(module)
            if file is not None and file.name != "__init__.py":
                todo.append(file.resolve())
    return seen


def relative(paths: set[Path]) -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in paths)
