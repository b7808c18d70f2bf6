"""Every name in any kitobs ``__all__`` is documented, read statically from the source.

Functions and classes need a docstring, and so do the public methods of a public class;
constants and type aliases need a ``#:`` comment on the line above (or a string right after),
which is where Sphinx's autodoc and ``help()`` readers of the source find them. A name that a
module re-exports is checked where it is defined.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1] / "kitobs"


def _exported(tree: ast.Module) -> list[str]:
    for node in tree.body:
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [node.target]
            if isinstance(node, ast.AnnAssign)
            else []
        )
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            value = node.value  # type: ignore[union-attr]
            return list(ast.literal_eval(value)) if value is not None else []
    return []


def _commented(lines: list[str], node: ast.stmt, body: list[ast.stmt], index: int) -> bool:
    above = node.lineno - 2
    if above >= 0 and lines[above].strip().startswith("#:"):
        return True
    if "#:" in lines[node.lineno - 1]:
        return True
    after = body[index + 1] if index + 1 < len(body) else None
    return (
        isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
        and isinstance(after.value.value, str)
    )


def undocumented(source: str, module: str) -> list[str]:
    """undocumented lists the names of *source*'s ``__all__`` that have no documentation."""
    tree = ast.parse(source)
    lines = source.splitlines()
    defined: dict[str, tuple[ast.stmt, int]] = {}
    for index, node in enumerate(tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined[node.name] = (node, index)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    defined.setdefault(target.id, (node, index))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                defined.setdefault(alias.asname or alias.name.split(".")[0], (node, index))
    missing = []
    for name in _exported(tree):
        if name not in defined:
            continue  # defined dynamically; tests/test_public_api.py checks it exists
        node, index = defined[name]
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if not ast.get_docstring(node):
                missing.append(f"{module}.{name}")
            if isinstance(node, ast.ClassDef):
                for member in node.body:
                    if (
                        isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef)
                        and not member.name.startswith("_")
                        and not ast.get_docstring(member)
                        and not any("overload" in ast.unparse(d) for d in member.decorator_list)
                    ):
                        missing.append(f"{module}.{name}.{member.name}")
        elif not _commented(lines, node, tree.body, index):
            missing.append(f"{module}.{name}")
    return missing


def _modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_every_exported_name_is_documented(path: Path) -> None:
    module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    missing = undocumented(path.read_text(), module.removesuffix(".__init__"))
    assert not missing, "no docstring (or #: comment for a constant): " + ", ".join(missing)


def test_the_check_sees_each_kind_of_missing_documentation() -> None:
    source = '''
__all__ = ["f", "C", "LIMIT", "Alias", "DOCUMENTED", "g"]

def f(): pass

class C:
    """C is documented; its method is not."""
    def run(self): pass

LIMIT = 3
Alias = int
#: DOCUMENTED is.
DOCUMENTED = 4

def g():
    """g is."""
'''
    assert undocumented(source, "m") == ["m.f", "m.C.run", "m.LIMIT", "m.Alias"]
