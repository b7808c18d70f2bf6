"""check_lock: exit 0 only if this interpreter has exactly what requirements.lock pins, and kitobs.

scripts/test runs it before installing, to skip an install that would change nothing (a full
install takes ~40 s even then), and after, to prove the install worked. Usage::

    python scripts/check_lock.py requirements.lock /path/to/checkout

It checks every pinned distribution whose environment marker applies (name and version), that
``kitobs`` imports from the checkout (an editable install of it, not a copy), and that the
commands the test steps run (ruff, mypy, pytest) are beside the interpreter. The first thing
missing is printed, so the log says why an install ran.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
_TOOLS = ("ruff", "mypy", "pytest")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def problem(lock: Path, checkout: Path) -> str | None:
    """problem names the first thing this interpreter lacks, or None when all is there."""
    try:
        from packaging.markers import Marker
        from packaging.version import Version
    except ImportError:
        return "packaging is not installed"
    installed: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            installed.setdefault(_canonical(name), dist.version)
    for line in lock.read_text().splitlines():
        match = _PIN.match(line.strip())
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker and not Marker(marker).evaluate():
            continue
        have = installed.get(_canonical(name))
        if have is None:
            return f"{name} is not installed (the lock pins {version})"
        if Version(have) != Version(version):
            return f"{name} {have} is installed, the lock pins {version}"
    spec = importlib.util.find_spec("kitobs")
    origin = Path(spec.origin).resolve() if spec and spec.origin else None
    if origin is None or not origin.is_relative_to(checkout.resolve() / "kitobs"):
        return f"kitobs is not installed from {checkout} (found {origin})"
    bindir = Path(sys.executable).parent
    for tool in _TOOLS:
        if not (bindir / tool).exists():
            return f"{tool} is not in {bindir}"
    return None


def main() -> int:
    lock, checkout = Path(sys.argv[1]), Path(sys.argv[2])
    found = problem(lock, checkout)
    if found is None:
        return 0
    print(f"    {found}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
