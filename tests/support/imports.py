"""imports: the graph of imports between the modules of a package, read from source with `ast`.

Nothing is imported: every ``*.py`` file under the package is parsed. An import names a module
when it is ``import a.b``, ``from a import b`` where ``a.b`` is a module (else ``a`` itself), or a
relative import resolved against the importing module. Only imports of the package's own modules
are kept. Example::

    found = scan(Path("kitobs"))
    assert find_cycle(module_level_graph(found)) is None
    assert private_imports(found) == []
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Import", "scan", "module_level_graph", "find_cycle", "private_imports"]


@dataclass(frozen=True)
class Import:
    """Import is one import statement's edge, e.g. ``kitobs.contract`` -> ``kitobs.metrics``.

    *module_level* is False for an import inside a function body (run lazily, when called);
    imports under ``if TYPE_CHECKING:``, ``try:`` or in a class body are module-level.
    """

    importer: str
    imported: str
    line: int
    module_level: bool


def _modules(package_dir: Path) -> dict[str, Path]:
    root = package_dir.parent
    found: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _walk(tree: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, in_function
        nested = in_function or isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        yield from _walk(node, nested)


def _owned(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of *name* that is one of *modules* (``a.b.attr`` -> ``a.b``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _targets(
    node: ast.stmt, importer: str, is_package: bool, modules: Mapping[str, Path]
) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            target = _owned(alias.name, modules)
            if target is not None:
                yield target
        return
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base_parts = importer.split(".") if is_package else importer.split(".")[:-1]
        if node.level > 1:
            base_parts = base_parts[: -(node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if submodule in modules:
            yield submodule
        else:
            target = _owned(base, modules)
            if target is not None:
                yield target


def scan(package_dir: Path) -> list[Import]:
    """scan lists every import between modules of the package in *package_dir*, e.g. ``kitobs/``."""
    modules = _modules(package_dir)
    found: list[Import] = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, in_function in _walk(tree):
            for target in dict.fromkeys(_targets(node, name, is_package, modules)):
                if target != name:
                    found.append(Import(name, target, node.lineno, not in_function))
    return found


def module_level_graph(imports: list[Import]) -> dict[str, set[str]]:
    """module_level_graph maps each importer to what it imports at module level."""
    graph: dict[str, set[str]] = {}
    for edge in imports:
        if edge.module_level:
            graph.setdefault(edge.importer, set()).add(edge.imported)
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """find_cycle returns one cycle as a path (``[a, b, a]``), or None when there is none."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(sorted(graph.get(start, ())))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
                continue
            if step in on_path:
                return [*path[path.index(step) :], step]
            if step not in done:
                path.append(step)
                on_path.add(step)
                stack.append(iter(sorted(graph.get(step, ()))))
    return None


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def private_imports(imports: list[Import]) -> list[Import]:
    """private_imports lists imports of a private module from outside the package holding it.

    ``a.b._c`` may be imported from ``a.b`` and below only; a private top-level module such as
    ``a._c`` is held by ``a`` and so may be imported anywhere in it. Lazy imports count too.
    """
    bad = []
    for edge in imports:
        parts = edge.imported.split(".")
        for index, part in enumerate(parts[1:], start=1):
            if _private(part):
                owner = ".".join(parts[:index])
                if edge.importer != owner and not edge.importer.startswith(owner + "."):
                    bad.append(edge)
                break
    return bad
