"""Dependencies point one way: discover -> read -> map -> expose | send.

Parsed from the source, not imported, so a violation shows even where an import is lazy
(inside a function) and no test happens to run it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"
# read/ may use `exporter.map.base`: the engine's reader drives a table's `Mapping` through
# that interface (what to select, where to hand a page); it never imports a table's mapping.
FORBIDDEN = {
    "read": ("exporter.send", "exporter.expose"),
    "map": ("exporter.send", "exporter.expose"),
    "otlp": ("exporter.read", "exporter.map", "exporter.send", "exporter.expose"),
}


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the syntax tree."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the layout test reads absolute ones")
    return names


def violations(stage: str) -> list[str]:
    out = []
    for path in sorted((PACKAGE / stage).glob("*.py")):
        for name in sorted(imported(path)):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[stage]):
                out.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return out


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_stage_imports_nothing_downstream(stage: str) -> None:
    assert (PACKAGE / stage).is_dir()
    assert violations(stage) == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """A file importing downstream, even inside a function, is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from exporter.send import otlp\n")
    assert "exporter.send" in imported(bad)
    assert "exporter.send.otlp" in imported(bad)
