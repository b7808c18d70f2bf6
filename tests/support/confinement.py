"""confinement: fail the test session if it reads files from beside the repository.

A user's clone has nothing beside it, so a test that opens a file in a folder beside the
checkout passes in development and fails for them. `Confinement` is installed as an audit hook
(event ``open``) for the whole session by ``tests/conftest.py``; every path opened under the
repository's parent folder but outside the repository is recorded, and the session fails listing
them. Paths elsewhere (temporary directories, ``/proc``, the interpreter and its site-packages,
caches, and the dot files and folders of the home directory, such as ``~/.pdbrc`` or
``~/.netrc``) are fine, even when they sit under the parent folder (a clone in ``~/kitobs``).
Example::

    confinement = Confinement.for_repository(Path("/src/kitobs"))
    confinement.install()
    ...
    assert confinement.violations == []
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
import tempfile
from pathlib import Path

__all__ = ["Confinement"]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class Confinement:
    """Confinement records files opened under *parent* but outside *repository* and *allowed*."""

    def __init__(
        self, repository: Path, parent: Path, allowed: list[Path], home: Path | None = None
    ) -> None:
        self.repository = os.path.normpath(os.path.abspath(repository))
        self.parent = os.path.normpath(os.path.abspath(parent))
        #: Dot files and folders right under *home* (tools' settings) are allowed.
        self.home = os.path.normpath(os.path.abspath(home)) if home is not None else None
        # A root that holds the parent folder itself (a clone in /tmp) would allow everything.
        self.allowed = sorted(
            root
            for root in {os.path.normpath(os.path.abspath(p)) for p in allowed}
            if not _under(self.parent, root)
        )
        #: Every offending path, in the order first opened.
        self.violations: list[str] = []
        self._seen: set[str] = set()

    @classmethod
    def for_repository(cls, repository: Path) -> Confinement:
        """for_repository watches *repository*'s parent, allowing the usual places outside it."""
        home = Path.home()
        allowed = [
            Path(tempfile.gettempdir()),
            Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache"),
            Path(sys.prefix),
            Path(sys.base_prefix),
            Path(sys.exec_prefix),
            *(Path(p) for p in sysconfig.get_paths().values()),
            *(Path(p) for p in site.getsitepackages()),
        ]
        if site.ENABLE_USER_SITE and site.USER_SITE:
            allowed.append(Path(site.USER_SITE))
        return cls(repository, repository.resolve().parent, allowed, home=home)

    def offends(self, path: str) -> bool:
        """offends tells whether opening absolute, normalised *path* breaks the confinement."""
        if not _under(path, self.parent) or _under(path, self.repository):
            return False
        if self.home is not None and _under(path, self.home) and path != self.home:
            first = path[len(self.home.rstrip(os.sep)) + 1 :].split(os.sep, 1)[0]
            if first.startswith("."):
                return False
        return not any(_under(path, root) for root in self.allowed)

    def _hook(self, event: str, args: tuple[object, ...]) -> None:
        if event != "open":
            return
        target = args[0] if args else None
        if isinstance(target, int) or target is None:
            return  # a descriptor: its path was checked when it was opened
        try:
            path = os.path.normpath(os.path.abspath(os.fsdecode(target)))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        if path not in self._seen and self.offends(path):
            self._seen.add(path)
            self.violations.append(path)

    def install(self) -> None:
        """install adds the audit hook; audit hooks stay for the life of the process."""
        sys.addaudithook(self._hook)
