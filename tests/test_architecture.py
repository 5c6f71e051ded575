"""The layout rules of DESIGN.md that import-linter cannot hold, checked on the source text (no project import).

- no file over 400 lines: a file that grows past it holds two things, and is split along its seam;
- no private name (leading underscore) imported across modules: what another module needs is public API;
- suites never import other suites: a suite is a runnable module or a package under `benchmarks/suites/`,
  and a package's modules import only each other; what two suites share belongs to the harness.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edgevit", "converters", "quant", "benchmarks")
SUITES = "benchmarks.suites"
MAX_LINES = 400


def source_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def project_modules() -> frozenset[str]:
    return frozenset(module_name(p) for p in source_files())


@cache
def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def imported_from(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module a `from ... import` reads from (relative imports resolved against `path`)."""
    if not node.level:
        return node.module or ""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name) for every import in the file, at any depth; `name` None for `import module`.

    `from package import module` yields the submodule itself as the module.
    """
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = imported_from(node, path)
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                if submodule in project_modules():
                    found.append((node.lineno, submodule, None))
                else:
                    found.append((node.lineno, module, alias.name))
    return found


def suite_of(module: str) -> str | None:
    """The suite a module belongs to: a package under `benchmarks/suites/`, or a runnable module there."""
    if not module.startswith(SUITES + "."):
        return None
    top = ".".join(module.split(".")[:3])
    where = ROOT / Path(*top.split("."))
    if where.is_dir():
        return top
    source = where.with_suffix(".py")
    runnable = source.is_file() and 'if __name__ == "__main__"' in source.read_text()
    return top if runnable else None


def private_imports(path: Path) -> list[str]:
    """`from <project module> import _name` lines of the file (dunders such as `__version__` allowed)."""
    return [
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}: from {module} import {name}"
        for line, module, name in imports(path)
        if name
        and module.split(".")[0] in PACKAGES
        and name.startswith("_")
        and not (name.startswith("__") and name.endswith("__"))
    ]


def foreign_suite_imports(path: Path, module: str) -> list[str]:
    """Imports, in `module`'s source at `path`, of a suite other than the one `module` belongs to."""
    own = suite_of(module)
    return [
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}: imports {target}"
        for line, target, _ in imports(path)
        if (theirs := suite_of(target)) is not None and theirs != own
    ]


def test_no_file_is_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in source_files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these along their seams (≤ {MAX_LINES} lines): {long}"


def test_no_private_name_is_imported_across_modules() -> None:
    found = [hit for path in source_files() for hit in private_imports(path)]
    assert not found, "make these public where they are defined, or keep their users there:\n" + "\n".join(found)


def test_suites_import_no_other_suite() -> None:
    found = [hit for path in source_files() for hit in foreign_suite_imports(path, module_name(path))]
    assert not found, "suites share code through the harness (benchmarks/*.py), never each other:\n" + "\n".join(found)


def test_the_checks_catch_what_they_forbid(tmp_path: Path) -> None:
    """Each rule flags a file that breaks it, so a passing run is not a walk that saw nothing."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from quant.observers import _MIN_SCALE, quant_range\n"
        "from converters import __version__\n"
        "def f():\n"
        "    from benchmarks.suites.lowering.report import goals\n"
        "    from benchmarks.suites.quant import peers\n"
    )
    assert private_imports(bad) == [f"{bad}:1: from quant.observers import _MIN_SCALE"]
    assert foreign_suite_imports(bad, "benchmarks.suites.quant.run") == [
        f"{bad}:4: imports benchmarks.suites.lowering.report"
    ]
    assert foreign_suite_imports(bad, "benchmarks.timing") == [
        f"{bad}:4: imports benchmarks.suites.lowering.report",
        f"{bad}:5: imports benchmarks.suites.quant.peers",
    ]
    assert suite_of("benchmarks.suites.quant_tracker") == "benchmarks.suites.quant_tracker"  # a runnable module
    assert suite_of("benchmarks.timing") is None
    assert len(source_files()) > 100


def test_commands_never_import_each_other() -> None:
    commands = sorted((ROOT / "edgevit" / "commands").glob("*.py"))
    found = [
        f"{path.relative_to(ROOT)}:{line}: imports {target}"
        for path in commands
        if path.name != "__init__.py"
        for line, target, _ in imports(path)
        if target.startswith("edgevit.commands.") and target != module_name(path)
    ]
    assert not found, "commands are flags → Recipe → pipeline.run → print; shared code lives below them:\n" + "\n".join(
        found
    )


def test_every_suite_module_belongs_to_a_suite() -> None:
    loose = [
        p.name
        for p in sorted((ROOT / "benchmarks" / "suites").glob("*.py"))
        if p.name != "__init__.py" and suite_of(module_name(p)) is None
    ]
    assert not loose, f"a suite's helpers go inside its package (benchmarks/suites/<suite>/): {loose}"
