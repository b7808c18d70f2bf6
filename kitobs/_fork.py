"""Fork hooks for parts that hold threads, queues, locks or files a forked child must not share.

A gunicorn worker forked from a master that already built a Kit inherits its objects but not their
threads, and may inherit a lock another thread held. A part registers itself once with
`in_child` (its ``_after_fork_in_child()`` then runs in every forked child) or `before_fork` (its
``_before_fork()`` runs in the parent just before). ``os.register_at_fork`` hooks cannot be
removed, so the hooks are installed once and reach live parts through weak references: nothing
here keeps a part alive. A part whose hook raises is reported on stderr, as Python reports a
failing fork hook, and the others still run.
"""

from __future__ import annotations

import os
import traceback
import weakref
from typing import Protocol

__all__ = ["before_fork", "in_child"]


class _Child(Protocol):
    def _after_fork_in_child(self) -> None: ...


class _Parent(Protocol):
    def _before_fork(self) -> None: ...


_children: weakref.WeakSet[_Child] = weakref.WeakSet()
_parents: weakref.WeakSet[_Parent] = weakref.WeakSet()
_installed: list[bool] = []


def in_child(part: _Child) -> None:
    """in_child runs ``part._after_fork_in_child()`` in each forked child, e.g. to restart it."""
    _install()
    _children.add(part)


def before_fork(part: _Parent) -> None:
    """before_fork runs ``part._before_fork()`` just before each fork, e.g. to write a buffer."""
    _install()
    _parents.add(part)


def _install() -> None:
    if not _installed and hasattr(os, "register_at_fork"):
        _installed.append(True)
        os.register_at_fork(before=_run_before, after_in_child=_run_in_child)


def _run_before() -> None:
    for part in list(_parents):
        try:
            part._before_fork()
        except Exception:  # a hook must not keep the others from running
            traceback.print_exc()


def _run_in_child() -> None:
    for part in list(_children):
        try:
            part._after_fork_in_child()
        except Exception:
            traceback.print_exc()
