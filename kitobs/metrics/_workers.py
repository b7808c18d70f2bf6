"""Recognising a server with several worker processes, and the directory its workers share.

A pre-forking server (gunicorn, with or without ``--preload``) or a spawning one (``uvicorn
--workers``) runs the application in several processes; a registry in each would show one
worker's numbers. `detect` tells which server this process belongs to and who its master is;
`shared_directory` gives the directory the workers of that one server share.

How a server is recognised (Linux, through ``/proc``):

- gunicorn sets ``SERVER_SOFTWARE=gunicorn/…`` in its arbiter's environment, which every worker
  inherits. A worker is a fork of the arbiter, so its parent has the same command line (or one
  naming gunicorn, where setproctitle renamed it): the master is the parent. Otherwise this
  process is the arbiter itself, loading the application before forking (``--preload``).
- uvicorn spawns its workers through multiprocessing: ``multiprocessing.parent_process()`` is the
  uvicorn supervisor, and uvicorn's ``_subprocess`` module started this one.

The master is named by its pid and its start time (``/proc/<pid>/stat`` field 22), so a pid
reused by a later process never names the same server. The directory is
``$XDG_RUNTIME_DIR/kitobs-metrics-<uid>/<server>-<pid>-<start>`` (the temporary directory where
that variable is unset), both levels mode 0700 and owned by this user; a directory owned by
someone else, a symlink or one with looser permissions is refused. Directories of servers whose
master has exited and that no live process holds a file in are removed when a worker sets up.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kitobs.config import PrometheusSettings, key_name
from kitobs.errors import ConfigError

__all__ = ["Detected", "Unsure", "detect", "shared_directory", "start_time"]

_KEY = key_name(PrometheusSettings, "multiprocess_dir")


@dataclass(frozen=True, slots=True)
class Detected:
    """Detected names the server this process works for, e.g. gunicorn with master 1234."""

    server: str
    master_pid: int
    master_start: int


@dataclass(frozen=True, slots=True)
class Unsure:
    """Unsure says this may be one of several workers, which kitobs cannot confirm, and why."""

    reason: str


def _proc(pid: int | str, name: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """start_time is *pid*'s start time in clock ticks since boot, or None if it is gone."""
    data = _proc(pid, "stat")
    if data is None:
        return None
    # Field 2 (the command) is in parentheses and may hold spaces: count from the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22; fields[0] is field 3
    except (IndexError, ValueError):
        return None


def _runs_gunicorn(cmdline: bytes) -> bool:
    """Whether a command line runs gunicorn (``gunicorn …``, ``python -m gunicorn …``), or was
    renamed by setproctitle (``gunicorn: master [app]``)."""
    args = cmdline.split(b"\0")
    if args and args[0].startswith(b"gunicorn: "):
        return True
    return any(os.path.basename(a) == b"gunicorn" for a in args[:3])


def _named(pid: int, server: str) -> Detected | None:
    start = start_time(pid)
    return Detected(server, pid, start) if start is not None else None


def detect(environ: dict[str, str] | None = None) -> Detected | Unsure | None:
    """detect recognises gunicorn and uvicorn workers; None for a process on its own.

    Args:
        environ: the environment to read, ``os.environ`` by default.
    """
    env = os.environ if environ is None else environ
    have_proc = os.path.isdir("/proc/self")
    if env.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
        if not have_proc:
            return Unsure("gunicorn, but without /proc its master cannot be told")
        ppid = os.getppid()
        parent = _proc(ppid, "cmdline") or b""
        if parent == _proc("self", "cmdline") or _runs_gunicorn(parent):
            found = _named(ppid, "gunicorn")  # a worker: the arbiter forked it
        else:
            found = _named(os.getpid(), "gunicorn")  # the arbiter itself (--preload)
        return found or Unsure("gunicorn, but its master's start time cannot be read")
    parent_process = multiprocessing.parent_process()
    if parent_process is not None and parent_process.pid is not None:
        if "uvicorn._subprocess" in sys.modules:
            if not have_proc:
                return Unsure("a uvicorn worker, but without /proc its supervisor cannot be told")
            found = _named(parent_process.pid, "uvicorn")
            return found or Unsure("a uvicorn worker whose supervisor has already exited")
        for name in ("hypercorn", "granian"):
            if name in sys.modules:
                return Unsure(f"a {name} worker process, which kitobs does not recognise")
    if "uwsgi" in sys.modules:  # uWSGI embeds this module; its workers are not told apart here
        return Unsure("uWSGI, whose workers kitobs does not recognise")
    return None


def _private(path: Path) -> None:
    """Refuse *path* unless it is a real directory of this user's that no one else may open."""
    st = os.lstat(path)
    problem = ""
    if not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory (a symlink or a file)"
    elif st.st_uid != os.getuid():
        problem = f"is owned by uid {st.st_uid}, not this user (uid {os.getuid()})"
    elif st.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(st.st_mode):o}; it must be 700"
    if problem:
        raise ConfigError(
            f"the shared metrics directory {path} {problem}; remove it, or name a directory"
            " of your own here",
            key=_KEY,
        )


def _mkdir_private(path: Path) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise ConfigError(f"cannot create {path}: {err}", key=_KEY) from None
    _private(path)


def _base(environ: dict[str, str] | os._Environ[str]) -> Path:
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return Path(runtime)
    return Path(tempfile.gettempdir())


def shared_directory(found: Detected, environ: dict[str, str] | None = None) -> Path:
    """shared_directory creates (or joins) the directory of *found*'s workers, and removes
    those of servers gone.

    Raises:
        ConfigError: the directory, or its parent, is not private to this user.
    """
    env = os.environ if environ is None else environ
    root = _base(env) / f"kitobs-metrics-{os.getuid()}"
    _mkdir_private(root)
    mine = f"{found.server}-{found.master_pid}-{found.master_start}"
    remove_stale(root, keep=mine)
    directory = root / mine
    _mkdir_private(directory)
    return directory


def remove_stale(root: Path, *, keep: str = "") -> list[Path]:
    """remove_stale deletes directories under *root* of masters that have exited.

    A directory is kept while any file in it is locked: a live process still writes there.
    """
    removed: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            name = entry.name
            parts = name.rsplit("-", 2)
            if name == keep or len(parts) != 3 or not parts[1].isdigit():
                continue
            if str(start_time(int(parts[1]))) == parts[2] or _in_use(entry):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _in_use(directory: Path) -> bool:
    for path in directory.glob("**/*.kitobs"):  # the expvar page's files are one level down
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
    return False
