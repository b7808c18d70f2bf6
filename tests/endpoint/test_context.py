"""kitobs.endpoint.context on its own: scoping, deadlines, cancellation, metadata, isolation."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from kitobs.endpoint import context


def test_outside_a_request_the_context_is_background() -> None:
    assert context.current() is context.BACKGROUND
    assert context.time_remaining() is None
    assert len(context.current().metadata) == 0
    context.current().cancelled.set()  # ignored: it would cancel every such context
    assert not context.BACKGROUND.cancelled.is_set()


def test_scoped_values_are_seen_inside_and_gone_after() -> None:
    with context.scoped(values={"user": "ada"}) as outer:
        assert context.current() is outer
        with context.scoped(values={"role": "admin"}):
            assert dict(context.current().values) == {"user": "ada", "role": "admin"}
        assert dict(context.current().values) == {"user": "ada"}
    assert context.current().values.get("user") is None


def test_values_are_read_only_and_copied() -> None:
    given = {"user": "ada"}
    with context.scoped(values=given):
        given["user"] = "eve"
        assert context.current().values["user"] == "ada"
        with pytest.raises(TypeError):
            context.current().values["user"] = "eve"  # type: ignore[index]


def test_a_derived_deadline_only_moves_earlier() -> None:
    soon = time.monotonic() + 5
    with context.scoped(deadline=soon):
        with context.scoped(timeout=3600):
            assert context.current().deadline == soon
        with context.scoped(deadline=soon - 4):
            assert context.current().deadline == soon - 4
        remaining = context.time_remaining()
        assert remaining is not None
        assert 0 < remaining <= 5


def test_time_remaining_is_zero_once_passed() -> None:
    with context.scoped(deadline=time.monotonic() - 1):
        assert context.time_remaining() == 0.0


def test_metadata_is_case_insensitive_and_keeps_the_first_value() -> None:
    metadata = context.Metadata([("Authorization", "Bearer a"), ("authorization", "Bearer b")])
    assert metadata["AUTHORIZATION"] == "Bearer a"
    assert metadata.get("authorization") == "Bearer a"
    assert metadata.get("x-missing", "none") == "none"
    assert list(metadata) == ["authorization"]
    with context.scoped(metadata={"X-Who": "bob"}):
        assert context.current().metadata["x-who"] == "bob"


def test_cancellation_wakes_a_waiting_thread() -> None:
    cancelled = context.Cancellation()
    woke = threading.Event()

    def waiter() -> None:
        if cancelled.wait(20):
            woke.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert not cancelled.is_set()
    cancelled.set()
    thread.join(20)
    assert woke.is_set()
    assert cancelled.is_set()
    assert cancelled.wait(0)
    assert not context.Cancellation().wait(0.01)


def test_derived_contexts_share_the_cancellation() -> None:
    ctx = context.RequestContext(cancelled=context.Cancellation())
    derived = ctx.derive(values={"a": 1})
    ctx.cancelled.set()
    assert derived.cancelled.is_set()


def test_other_threads_never_see_a_scope() -> None:
    seen: list[object] = []
    with context.scoped(values={"user": "ada"}):
        thread = threading.Thread(target=lambda: seen.append(context.current().values.get("user")))
        thread.start()
        thread.join()
        copied = contextvars.copy_context().run(lambda: context.current().values.get("user"))
    assert seen == [None]
    assert copied == "ada"  # explicit copies (asyncio.to_thread, thread pools) carry it


def test_concurrent_tasks_keep_their_own_scope() -> None:
    async def one(name: str) -> list[str]:
        with context.scoped(values={"user": name}):
            seen = []
            for _ in range(3):
                await asyncio.sleep(0)
                seen.append(context.current().values["user"])
            return seen

    async def main() -> list[list[str]]:
        return await asyncio.gather(*(one(f"u{i}") for i in range(5)))

    assert asyncio.run(main()) == [[f"u{i}"] * 3 for i in range(5)]


def test_the_docs_example_runs() -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "context.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/context.md", "exec"), {"__name__": "docs"})
