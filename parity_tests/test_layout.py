"""The three floors and their arrows (DESIGN.md, "Layout"), read from the source by AST.

- ``scratch`` imports neither ``autoencoders`` nor ``torch_impl``, and torch only inside functions;
- ``torch_impl`` never imports ``scratch`` or ``autoencoders`` (it stays an independent oracle);
- nothing but ``autoencoders.cli`` (and the benchmarks themselves) imports ``autoencoders.bench``;
- the distribution installs the three packages and nothing else at the top level.

ruff's bans (scratch/ruff.toml, torch_impl/ruff.toml, pyproject.toml) say the same in the editor;
this test also sees the imports inside functions, where torch is allowed and the others are not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("autoencoders", "scratch", "torch_impl")


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, at module level) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = top_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, top_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module, child.lineno, top_level))
                # ``from autoencoders import bench`` imports autoencoders.bench too
                found.extend((f"{child.module}.{alias.name}", child.lineno, top_level) for alias in child.names)
            visit(child, nested)

    visit(tree, True)
    return found


def violations(package: str, rule) -> list[str]:
    """'file:line imports X' for each import in ``package`` that ``rule(module, top_level, path)`` refuses."""
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module, line, top_level in imports_of(path):
            if rule(module, top_level, path):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}" + ("" if not top_level else " (module level)"))
    return bad


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_scratch_imports_neither_the_application_nor_the_twins_and_torch_only_lazily():
    def refused(module, top_level, path):
        return under(module, "autoencoders") or under(module, "torch_impl") or (top_level and under(module, "torch"))

    assert violations("scratch", refused) == []


def test_torch_impl_imports_neither_scratch_nor_the_application():
    assert violations("torch_impl", lambda module, top, path: under(module, "scratch") or under(module, "autoencoders")) == []


def test_only_the_cli_imports_the_benchmarks():
    bench = ROOT / "autoencoders" / "bench"

    def refused(module, top_level, path):
        allowed = path == ROOT / "autoencoders" / "cli.py" or bench in path.parents
        return under(module, "autoencoders.bench") and not allowed

    assert violations("autoencoders", refused) == []


@pytest.mark.parametrize("planted, package, expected", [
    ("from autoencoders.data import binarize\n", "scratch", "imports autoencoders.data"),
    ("def f():\n    import torch_impl.models\n", "scratch", "imports torch_impl.models"),
    ("import torch\n", "scratch", "imports torch (module level)"),
    ("from scratch import nn\n", "torch_impl", "imports scratch"),
    ("from autoencoders import bench\n", "autoencoders", "imports autoencoders.bench"),
])
def test_the_rules_see_a_planted_import(tmp_path, monkeypatch, planted, package, expected):
    """Each rule above refuses an import planted in a copy of its package (so none passes vacuously)."""
    import shutil

    shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / package / "planted.py").write_text(planted, encoding="utf-8")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    rules = {
        "scratch": test_scratch_imports_neither_the_application_nor_the_twins_and_torch_only_lazily,
        "torch_impl": test_torch_impl_imports_neither_scratch_nor_the_application,
        "autoencoders": test_only_the_cli_imports_the_benchmarks,
    }
    with pytest.raises(AssertionError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        rules[package]()


def test_the_distribution_installs_three_packages_and_nothing_else():
    """pyproject's package patterns match exactly the three packages among the checkout's top-level
    packages (no ``benchmarks`` or ``parity_tests`` in site-packages), and the console script is ours."""
    from fnmatch import fnmatch

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    top_level = [path.parent.name for path in ROOT.glob("*/__init__.py")]
    installed = sorted(name for name in top_level if any(fnmatch(name, pattern) for pattern in include))
    assert installed == sorted(PACKAGES)
    assert config["project"]["scripts"] == {"autoencoders": "autoencoders.cli:main"}
