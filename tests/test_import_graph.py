"""kitobs' modules import each other without cycles, and never another package's private module.

A cycle is counted over module-level imports, those under ``if TYPE_CHECKING:`` included (a
type-level cycle is still two modules that cannot be understood apart); imports inside function
bodies are lazy and do not count. The walker itself is tested on small packages built here.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.support.imports import find_cycle, module_level_graph, private_imports, scan

KITOBS = Path(__file__).resolve().parents[1] / "kitobs"


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "pkg"


def test_kitobs_has_no_import_cycle() -> None:
    graph = module_level_graph(scan(KITOBS))
    # The walk sees kitobs: these edges exist (a walker that finds nothing finds no cycle).
    assert "kitobs.metrics" in graph["kitobs.contract"]
    assert "kitobs.tracing._tracer" in graph["kitobs.tracing"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_no_module_imports_a_private_module_of_another_package() -> None:
    imports = scan(KITOBS)
    # Shared private top-level modules are imported from several packages, which is allowed.
    assert any(
        e.imported == "kitobs._fork" and e.importer.startswith("kitobs.metrics.") for e in imports
    )
    bad = private_imports(imports)
    assert bad == [], "\n".join(f"{e.importer}:{e.line} imports {e.imported}" for e in bad)


def test_the_walker_finds_a_type_only_cycle_and_ignores_lazy_imports(tmp_path: Path) -> None:
    pkg = _package(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.impl import Thing\n",
            "pkg/impl.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from pkg import Protocolish
                class Thing: ...
            """,
            "pkg/lazy.py": "def f():\n    from pkg import other\n",
            "pkg/other.py": "from pkg import lazy\n",
        },
    )
    graph = module_level_graph(scan(pkg))
    assert find_cycle(graph) == ["pkg", "pkg.impl", "pkg"]
    assert "pkg.lazy" not in graph  # its only import is inside a function
    assert graph["pkg.other"] == {"pkg.lazy"}  # `from pkg import lazy` is the submodule


def test_the_walker_resolves_relative_imports(tmp_path: Path) -> None:
    pkg = _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from . import a\n",
            "pkg/sub/a.py": "from .b import name\nfrom .. import top\n",
            "pkg/sub/b.py": "from ..sub import a\n",
            "pkg/top.py": "",
        },
    )
    graph = module_level_graph(scan(pkg))
    assert graph["pkg.sub"] == {"pkg.sub.a"}
    assert graph["pkg.sub.a"] == {"pkg.sub.b", "pkg.top"}
    assert find_cycle(graph) == ["pkg.sub.a", "pkg.sub.b", "pkg.sub.a"]


def test_the_walker_reports_private_imports_across_packages(tmp_path: Path) -> None:
    pkg = _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/_shared.py": "",
            "pkg/one/__init__.py": "from pkg.one import _impl\nfrom pkg import _shared\n",
            "pkg/one/_impl.py": "",
            "pkg/one/inner.py": "from pkg.one._impl import x\n",
            "pkg/two.py": "def f():\n    from pkg.one import _impl\n",
        },
    )
    bad = private_imports(scan(pkg))
    assert [(e.importer, e.imported, e.module_level) for e in bad] == [
        ("pkg.two", "pkg.one._impl", False)
    ]
