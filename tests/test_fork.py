"""kitobs._fork: parts registered for fork hooks run them, weakly held, one failure not stopping
the others. Checked with real forks."""

from __future__ import annotations

import gc
import os
import weakref

import pytest

from kitobs import _fork


class Part:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.before = 0
        self.child = 0

    def _before_fork(self) -> None:
        self.before += 1
        if self.fail:
            raise RuntimeError("hook failed")

    def _after_fork_in_child(self) -> None:
        self.child += 1
        if self.fail:
            raise RuntimeError("hook failed")


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*:DeprecationWarning")  # 3.12+: we mean it
def test_hooks_run_in_parent_and_child_and_a_failing_one_stops_none(
    capfd: pytest.CaptureFixture[str],
) -> None:
    failing, first, second = Part(fail=True), Part(), Part()
    for part in (first, failing, second):
        _fork.before_fork(part)
        _fork.in_child(part)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code, leave without pytest's teardown
        ok = (first.child, second.child, failing.child) == (1, 1, 1)
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (first.before, second.before, failing.before) == (1, 1, 1)
    assert (first.child, second.child) == (0, 0)  # the child hooks ran in the child only
    assert "hook failed" in capfd.readouterr().err  # reported, as Python reports fork hooks


def test_a_registered_part_is_not_kept_alive() -> None:
    part = Part()
    _fork.in_child(part)
    _fork.before_fork(part)
    ref = weakref.ref(part)
    del part
    gc.collect()
    assert ref() is None
