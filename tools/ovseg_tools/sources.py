"""The source files a module runs: its own and those of every ovseg_tools module it imports,
transitively (read from its import statements, including those inside functions; nothing is
imported). scripts/make-fixtures.sh keys each fixture set to these files.

  ../.venv/bin/python -m ovseg_tools.sources ovseg_tools.reference.mask_crop   (from tools/)
"""
from __future__ import annotations

import argparse
import ast
import os
from pathlib import Path

from .cli import run

ROOT = Path(__file__).resolve().parent.parent  # the folder that holds ovseg_tools


def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported(name: str, file: Path) -> set[str]:
    """The ovseg_tools modules the file's import statements name."""
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import world` names a module
    return {n for n in names if n.split(".")[0] == __package__ and module_file(n)}


def sources(name: str) -> list[Path]:
    found: dict[str, Path] = {}
    todo = [name]
    while todo:
        module = todo.pop()
        if module in found:
            continue
        file = module_file(module)
        if file is None:
            raise ValueError(f"no module {module} under {ROOT}")
        found[module] = file
        parent = module.rpartition(".")[0]
        todo += ([parent] if parent else []) + sorted(imported(module, file))  # a package runs its __init__.py
    return sorted(set(found.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("module", help="a module name, e.g. ovseg_tools.reference.parity_fixtures")
    for path in sources(ap.parse_args().module):
        print(os.path.relpath(path))


if __name__ == "__main__":
    run(main)
