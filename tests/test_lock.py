"""requirements.lock agrees with pyproject.toml: a dependency added to one is in the other.

scripts/test installs the lock, not pyproject.toml's ranges, so a dependency added without
`scripts/lock` would be missing from every test run; this test says so first.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
#: The extras scripts/lock resolves.
LOCKED_EXTRAS = ("all", "otlp", "test")


def locked_pins(text: str) -> dict[str, list[Version]]:
    pins: dict[str, list[Version]] = {}
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            pins.setdefault(canonicalize_name(match[1]), []).append(Version(match[2]))
    return pins


def declared(project: dict[str, object]) -> list[Requirement]:
    """declared lists the project's dependencies and its locked extras', extras expanded."""
    extras = project["optional-dependencies"]
    assert isinstance(extras, dict)
    found: list[Requirement] = []
    todo = [*project["dependencies"]]  # type: ignore[misc]
    for extra in LOCKED_EXTRAS:
        todo += extras[extra]
    while todo:
        requirement = Requirement(todo.pop())
        if canonicalize_name(requirement.name) == "kitobs":
            todo += [line for extra in requirement.extras for line in extras[extra]]
        else:
            found.append(requirement)
    return found


def unlocked(pyproject: str, lock: str) -> list[str]:
    """unlocked names each requirement no pin in *lock* satisfies, e.g. ``["pytest>=99"]``."""
    pins = locked_pins(lock)
    project = tomllib.loads(pyproject)["project"]
    return sorted(
        str(req)
        for req in declared(project)
        if not any(
            req.specifier.contains(v, prereleases=True)
            for v in pins.get(canonicalize_name(req.name), [])
        )
    )


def test_every_declared_dependency_is_locked() -> None:
    missing = unlocked(
        (ROOT / "pyproject.toml").read_text(), (ROOT / "requirements.lock").read_text()
    )
    assert missing == [], f"run scripts/lock and commit requirements.lock: {missing} not locked"


def test_a_dependency_added_without_relocking_is_caught() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    lock = (ROOT / "requirements.lock").read_text()
    added = pyproject.replace("test = [\n", 'test = [\n    "no-such-dependency>=1",\n', 1)
    raised = pyproject.replace('"pytest>=8"', '"pytest>=999"', 1)
    assert added != pyproject
    assert raised != pyproject
    assert unlocked(added, lock) == ["no-such-dependency>=1"]
    assert unlocked(raised, lock) == ["pytest>=999"]
