"""The session's confinement to the repository (tests/support/confinement.py) catches what it must.

Each check runs a fresh interpreter with the real audit hook installed for a repository laid out in
a temporary folder, opens files, and reads back what was recorded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.confinement import Confinement

REPO_ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.support.confinement import Confinement
repo, outside = Path(sys.argv[2]), sys.argv[3:]
confinement = Confinement.for_repository(repo)
confinement.install()
os.chdir(repo)
for path in outside:
    try:
        open(path, "rb").close()
    except OSError:
        pass
print(json.dumps(confinement.violations))
"""


def _probe(tmp_path: Path, *paths: str) -> list[str]:
    repo = tmp_path / "parent" / "kitobs"
    (repo / "tests").mkdir(parents=True)
    (repo / "tests" / "inside.txt").write_text("ok")
    (tmp_path / "parent" / "neighbour").mkdir()
    (tmp_path / "parent" / "neighbour" / "spec.yaml").write_text("beside")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(REPO_ROOT), str(repo), *paths],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return list(json.loads(done.stdout))


def test_a_file_beside_the_repository_is_recorded(tmp_path: Path) -> None:
    beside = tmp_path / "parent" / "neighbour" / "spec.yaml"
    assert _probe(tmp_path, str(beside)) == [str(beside)]


def test_a_relative_path_that_climbs_out_is_recorded(tmp_path: Path) -> None:
    assert _probe(tmp_path, "../neighbour/spec.yaml") == [
        str(tmp_path / "parent/neighbour/spec.yaml")
    ]


def test_a_missing_file_beside_the_repository_is_recorded_too(tmp_path: Path) -> None:
    # The old tests failed with FileNotFoundError on a clone: the attempt is what counts.
    missing = tmp_path / "parent" / "neighbour" / "specs" / "zipkin2-api.yaml"
    assert _probe(tmp_path, str(missing)) == [str(missing)]


def test_files_in_the_repository_and_elsewhere_are_fine(tmp_path: Path) -> None:
    assert _probe(tmp_path, "tests/inside.txt", "/proc/self/status", sys.executable) == []


def test_a_root_holding_the_parent_folder_allows_nothing(tmp_path: Path) -> None:
    # A clone in /tmp: the temporary directory must not excuse the files beside it.
    parent = tmp_path / "parent"
    confinement = Confinement(parent / "kitobs", parent, allowed=[tmp_path, Path("/")])
    assert confinement.allowed == []
    assert confinement.offends(str(parent / "neighbour" / "spec.yaml"))
    assert not confinement.offends(str(tmp_path / "other"))


def test_dot_files_of_a_home_beside_the_clone_are_allowed(tmp_path: Path) -> None:
    # A clone in ~/kitobs: tools read ~/.pdbrc, ~/.netrc, ~/.config/...; ~/neighbour is not.
    home = tmp_path / "home"
    confinement = Confinement(home / "kitobs", home, allowed=[], home=home)
    assert not confinement.offends(str(home / ".pdbrc"))
    assert not confinement.offends(str(home / ".config" / "tool" / "settings.toml"))
    assert confinement.offends(str(home / "neighbour" / "specs" / "zipkin2-api.yaml"))
    assert confinement.offends(str(home / "notes.txt"))


def test_the_interpreter_and_caches_beside_the_clone_are_allowed(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    confinement = Confinement(
        parent / "kitobs", parent, allowed=[parent / ".venv", parent / ".cache"]
    )
    assert not confinement.offends(str(parent / ".venv" / "lib" / "site.py"))
    assert not confinement.offends(str(parent / ".cache" / "pip" / "x"))
    assert not confinement.offends(str(parent / "kitobs" / "README.md"))
    assert not confinement.offends(str(tmp_path / "elsewhere"))
    assert confinement.offends(str(parent / "kitobs-other" / "README.md"))
    assert confinement.offends(str(parent / "neighbour" / "specs" / "x.json"))
