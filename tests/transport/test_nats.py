"""The NATS transport against a real nats-server (scripts/services starts one).

Every test uses subjects of its own on the shared server; the restart test starts and stops a
server of its own.
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from nats.aio.msg import Msg

from kitobs import config, log
from kitobs.endpoint import RequestError
from kitobs.endpoint.context import DeadlineExceeded, current, scoped
from kitobs.kit import Kit
from kitobs.metrics import memory
from kitobs.tracing import Tracer, current_ids
from kitobs.tracing.memory import Recorder
from kitobs.transport import nats as kn
from tests.support.servers import require_env

OP = "messaging_client_operation_duration_seconds"
PROCESS = "messaging_process_duration_seconds"
SENT = "messaging_client_sent_messages_total"
CONSUMED = "messaging_client_consumed_messages_total"


@dataclass
class Rig:
    kit: Kit
    metrics: memory.Provider
    spans: Recorder
    out: io.StringIO
    url: str


def _rig(url: str, *, public_edge: bool = False, **overrides: Any) -> Rig:
    metrics, spans, out = memory.Provider(), Recorder(), io.StringIO()
    kit = Kit(
        config.load(env={}, overrides=overrides),
        logger=log.new(out, trace_context=current_ids),
        metrics=metrics,
        tracer=Tracer(processor=spans, public_edge=public_edge),
    )
    return Rig(kit, metrics, spans, out, url)


@pytest.fixture
def rig() -> Rig:
    return _rig(require_env("KITOBSTEST_NATS_URL"))


def _subject(what: str) -> str:
    return f"kitobstest.{what}.{uuid.uuid4().hex[:8]}"


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def add(request: dict[str, int]) -> dict[str, int]:
    return {"v": request["a"] + request["b"]}


class Refused(RequestError):
    status_code = 429
    outcome = "limited"


def test_request_reply_is_one_trace_with_both_sides_recorded(rig: Rig) -> None:
    subject = _subject("add")
    seen: dict[str, Any] = {}

    async def traced_add(request: dict[str, int]) -> dict[str, int]:
        seen["ids"] = current_ids()
        seen["metadata"] = dict(current().metadata)
        rig.kit.logger.info("msg", "adding")
        return add(request)

    async def main() -> Any:
        server_nc = await kn.connect(rig.kit, rig.url)
        client_nc = await kn.connect(rig.kit, rig.url)
        try:
            await kn.Subscriber(traced_add, kit=rig.kit).serve(server_nc, subject, queue="calc")
            client = kn.Publisher(client_nc, subject, kit=rig.kit, timeout=5.0)
            return await client({"a": 1, "b": 2})
        finally:
            await client_nc.close()
            await server_nc.close()

    assert _run(main()) == {"v": 3}
    by_kind = {span.kind.name: span for span in rig.spans.spans}
    assert set(by_kind) == {"CLIENT", "SERVER"}
    client, server = by_kind["CLIENT"], by_kind["SERVER"]
    assert server.trace_id == client.trace_id
    assert server.parent_id == client.span_id
    assert client.name == f"request {subject}"
    assert server.name == f"process {subject}"
    assert server.attributes["messaging.system"] == "nats"
    assert server.attributes["messaging.destination.name"] == subject
    assert server.attributes["messaging.consumer.group.name"] == "calc"
    assert client.attributes["messaging.operation.name"] == "request"
    # The span is current while the endpoint runs; the headers are its request metadata.
    assert seen["ids"] == server.hex_ids()
    assert "traceparent" in seen["metadata"]
    lines = rig.out.getvalue().splitlines()
    endpoint_line = next(line for line in lines if "msg=adding" in line)
    access = next(line for line in lines if "transport=nats" in line and "status=ok" in line)
    trace = re.search(r"trace_id=(\w+)", endpoint_line)
    assert trace is not None
    assert trace[0] in access
    assert f"subject={subject}" in access
    labels = {"messaging_system": "nats", "messaging_destination_name": subject}
    assert len(rig.metrics.observations(OP, messaging_operation_name="request", **labels)) == 1
    assert len(rig.metrics.observations(PROCESS, messaging_operation_name="process", **labels)) == 1
    rig.metrics.assert_counter(SENT, 1, messaging_operation_name="request", **labels)
    rig.metrics.assert_counter(SENT, 1, messaging_operation_name="reply", **labels)
    rig.metrics.assert_counter(CONSUMED, 1, messaging_operation_name="process", **labels)


def test_publish_reaches_a_pattern_subscriber_as_a_consumer_span(rig: Rig) -> None:
    base = _subject("events")
    pattern = f"{base}.*"
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def main() -> None:
        server_nc = await kn.connect(rig.kit, rig.url)
        client_nc = await kn.connect(rig.kit, rig.url)
        try:

            async def record(event: Any) -> None:
                await got.put(event)

            await kn.Subscriber(record, kit=rig.kit).serve(server_nc, pattern)
            await server_nc.flush()
            for name in ("a", "b"):
                await kn.Publisher(client_nc, f"{base}.{name}", kit=rig.kit).publish({"n": name})
            await client_nc.flush()
            assert [await got.get(), await got.get()] == [{"n": "a"}, {"n": "b"}]
            await asyncio.sleep(0.05)  # the handler records after the endpoint returns
        finally:
            await client_nc.close()
            await server_nc.close()

    _run(main())
    consumers = [s for s in rig.spans.spans if s.kind.name == "CONSUMER"]
    producers = {s.span_id: s for s in rig.spans.spans if s.kind.name == "PRODUCER"}
    assert len(consumers) == 2
    assert len(producers) == 2
    for span in consumers:
        assert span.parent_id in producers
        assert span.name == f"process {pattern}"
    # Bounded: the pattern labels the process side, never the concrete subjects.
    assert {s["messaging_destination_name"] for s in rig.metrics.series(PROCESS)} == {pattern}
    rig.metrics.assert_counter(
        CONSUMED,
        2,
        messaging_system="nats",
        messaging_operation_name="process",
        messaging_destination_name=pattern,
    )
    rig.metrics.assert_counter(
        SENT,
        1,
        messaging_system="nats",
        messaging_operation_name="publish",
        messaging_destination_name=f"{base}.a",
    )


def test_errors_are_replied_with_an_error_body_and_recorded(rig: Rig) -> None:
    subject = _subject("errors")
    finals: list[Any] = []

    async def endpoint(request: dict[str, str]) -> Any:
        if request["do"] == "crash":
            raise KeyError("db password=hunter2")
        if request["do"] == "refuse":
            raise Refused("slow down")
        return {"ok": True}

    async def main() -> list[Any]:
        # One connection for both sides: its subscription is known to the server before any
        # request it sends, whatever the load (two connections raced: no responders, once).
        server_nc = client_nc = await kn.connect(rig.kit, rig.url)
        results: list[Any] = []
        try:
            server = kn.Subscriber(
                endpoint, kit=rig.kit, finalizers=[lambda msg, err: finals.append(err)]
            )
            await server.serve(server_nc, subject)
            client = kn.Publisher(client_nc, subject, kit=rig.kit, timeout=5.0)
            for do in ("crash", "refuse"):
                with pytest.raises(kn.ReplyError) as info:
                    await client({"do": do})
                results.append((info.value.message, info.value.code))
            raw = await client_nc.request(subject, b"not json", timeout=5.0)
            results.append((raw.data, raw.headers))
        finally:
            await server_nc.close()
        return results

    crash, refuse, bad = _run(main())
    assert crash == ("internal server error", "500")  # the exception's text is not sent
    assert refuse == ("slow down", "429")
    assert json.loads(bad[0]) == {"error": bad[1][kn.ERROR_HEADER]}
    assert bad[1][kn.ERROR_CODE_HEADER] == "400"
    assert [type(err).__name__ for err in finals] == ["KeyError", "Refused", "BadRequest"]
    labels = {"messaging_system": "nats", "messaging_destination_name": subject}
    for error_type in ("KeyError", "test_nats.Refused", "kitobs.transport.http.BadRequest"):
        matching = [
            s
            for s in rig.metrics.series(PROCESS)
            if s["error_type"].endswith(error_type.rsplit(".", 1)[-1])
        ]
        assert len(matching) == 1, (error_type, rig.metrics.series(PROCESS))
    client_errors = {s["error_type"] for s in rig.metrics.series(OP)}
    assert client_errors == {"kitobs.transport.nats.ReplyError"}
    rig.metrics.assert_counter(
        SENT,
        2,
        messaging_operation_name="request",
        error_type="kitobs.transport.nats.ReplyError",
        **labels,
    )
    failed = [s for s in rig.spans.spans if s.kind.name == "SERVER"]
    assert len(failed) == 3
    assert all(s.status_code.name == "ERROR" for s in failed)
    assert "error=KeyError" in rig.out.getvalue()


def test_no_responders_timeouts_and_deadlines(rig: Rig) -> None:
    nobody, slow = _subject("nobody"), _subject("slow")
    release = asyncio.Event()

    async def stalled(request: Any) -> Any:
        await release.wait()
        return {}

    async def main() -> None:
        server_nc = await kn.connect(rig.kit, rig.url)
        client_nc = await kn.connect(rig.kit, rig.url)
        try:
            await kn.Subscriber(stalled, kit=rig.kit).serve(server_nc, slow)
            with pytest.raises(nats.errors.NoRespondersError):
                await kn.Publisher(client_nc, nobody, kit=rig.kit)({})
            slow_client = kn.Publisher(client_nc, slow, kit=rig.kit, timeout=30.0)
            # The request context's deadline shortens the 30 s timeout.
            with scoped(timeout=0.2), pytest.raises(nats.errors.TimeoutError):
                await slow_client({})
            with scoped(timeout=0.0), pytest.raises(DeadlineExceeded):
                await slow_client({})
            release.set()
        finally:
            await client_nc.close()
            await server_nc.close()

    _run(main())
    errors = {(s["messaging_destination_name"], s["error_type"]) for s in rig.metrics.series(OP)}
    assert errors == {
        (nobody, "nats.errors.NoRespondersError"),
        (slow, "nats.errors.TimeoutError"),
    }  # the refused call sent nothing and recorded nothing
    rig.metrics.assert_counter(
        SENT,
        1,
        messaging_system="nats",
        messaging_operation_name="request",
        messaging_destination_name=slow,
        error_type="nats.errors.TimeoutError",
    )


def test_hooks_run_in_order_and_set_headers(rig: Rig) -> None:
    subject = _subject("hooks")
    calls: list[str] = []

    def before(msg: Msg) -> None:
        calls.append(f"before {msg.headers and msg.headers.get('x-tenant')}")

    def after(msg: Msg, headers: dict[str, str]) -> None:
        calls.append("after")
        headers["x-served-by"] = "calc"

    def client_before(ctx: Any, headers: dict[str, str]) -> None:
        headers["x-tenant"] = "acme"

    replies: list[Msg] = []

    async def main() -> Any:
        server_nc = await kn.connect(rig.kit, rig.url)
        client_nc = await kn.connect(rig.kit, rig.url)
        try:
            server = kn.Subscriber(
                add,
                kit=rig.kit,
                before=[before],
                after=[after],
                finalizers=[lambda msg, err: calls.append(f"final {err}")],
            )
            await server.serve(server_nc, subject)
            client = kn.Publisher(
                client_nc, subject, kit=rig.kit, before=[client_before], after=[replies.append]
            )
            return await client({"a": 2, "b": 3})
        finally:
            await client_nc.close()
            await server_nc.close()

    assert _run(main()) == {"v": 5}
    assert calls == ["before acme", "after", "final None"]
    assert replies[0].headers is not None
    assert replies[0].headers["x-served-by"] == "calc"


def test_public_edge_starts_a_new_trace_linking_the_caller() -> None:
    url = require_env("KITOBSTEST_NATS_URL")
    client_rig, server_rig = _rig(url), _rig(url, public_edge=True)
    subject = _subject("edge")

    async def main() -> None:
        server_nc = await kn.connect(server_rig.kit, url)
        client_nc = await kn.connect(client_rig.kit, url)
        try:
            await kn.Subscriber(add, kit=server_rig.kit).serve(server_nc, subject)
            await kn.Publisher(client_nc, subject, kit=client_rig.kit)({"a": 1, "b": 1})
        finally:
            await client_nc.close()
            await server_nc.close()

    _run(main())
    [client] = client_rig.spans.spans
    [server] = server_rig.spans.spans
    assert server.trace_id != client.trace_id
    assert server.parent_id == 0
    assert server.links is not None
    assert [link.context.span_id for link in server.links] == [client.span_id]


# --------------------------------------------------------------------------------------------
# A server restarted under load: a nats-server of the test's own.


class OwnServer:
    def __init__(self, binary: str, work: Path) -> None:
        self.binary, self.work = binary, work
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # Port -1: the server picks a free one and writes it to the ports file.
        port = str(self.port) if self.port else "-1"
        for old in self.work.glob("*.ports"):
            old.unlink()
        self.proc = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", port, "--ports_file_dir", str(self.work)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            files = list(self.work.glob("*.ports"))
            if files and files[0].stat().st_size:
                ports = json.loads(files[0].read_text())
                self.port = int(ports["nats"][0].rsplit(":", 1)[1])
                return
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("the test's nats-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    binary = require_env("KITOBSTEST_NATS_SERVER")
    with tempfile.TemporaryDirectory() as work:
        server = OwnServer(binary, Path(work))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@asynccontextmanager
async def _connected(rig: Rig, url: str, **options: Any) -> AsyncIterator[Any]:
    nc = await kn.connect(rig.kit, url, **options)
    try:
        yield nc
    finally:
        await nc.close()


def _task_kinds() -> collections.Counter[str]:
    return collections.Counter(t.get_coro().__qualname__ for t in asyncio.all_tasks())  # type: ignore[union-attr]


def test_server_restart_under_load(own_server: OwnServer) -> None:
    rig = _rig(own_server.url)
    subject = _subject("restart")
    outcomes: dict[str, int] = {"ok": 0, "publish_error": 0, "timeout": 0, "no_responders": 0}
    down = asyncio.Event()  # set: the load stops
    errors: list[kn.PublishError] = []

    async def main() -> None:
        options = {"reconnect_time_wait": 0.1, "max_reconnect_attempts": -1}
        # No reconnect buffer on the client: a publish while down fails at once, clearly.
        async with (
            _connected(rig, own_server.url, **options) as server_nc,
            _connected(rig, own_server.url, pending_size=0, **options) as client_nc,
        ):
            await kn.Subscriber(add, kit=rig.kit).serve(server_nc, subject)
            client = kn.Publisher(client_nc, subject, kit=rig.kit, timeout=1.0)

            async def load() -> None:
                while not down.is_set():
                    try:
                        assert await client({"a": 1, "b": 1}) == {"v": 2}
                        outcomes["ok"] += 1
                    except kn.PublishError as exc:
                        errors.append(exc)
                        outcomes["publish_error"] += 1
                        await asyncio.sleep(0.01)
                    except nats.errors.TimeoutError:  # sent just before the server went away
                        outcomes["timeout"] += 1
                    except nats.errors.NoRespondersError:  # back before the subscriber is
                        outcomes["no_responders"] += 1
                        await asyncio.sleep(0.01)

            async def until(what: str, count: int) -> None:
                while outcomes[what] < count:
                    assert not runner.done(), runner
                    await asyncio.sleep(0.01)

            runner = asyncio.create_task(load())
            await until("ok", 20)
            tasks_before = _task_kinds()  # the load's and both connections' (reply inbox too)
            await asyncio.to_thread(own_server.stop)
            await until("publish_error", 5)
            ok_while_down = outcomes["ok"]
            await asyncio.to_thread(own_server.start)  # same port
            await until("ok", ok_while_down + 20)
            # nats-py makes its connection's tasks anew on reconnecting: the same kinds, no more.
            assert _task_kinds() == tasks_before
            down.set()  # stops the load
            await asyncio.wait_for(runner, 30)
            assert outcomes["ok"] > ok_while_down  # traffic resumed, the subscription too
        # Closed: no task of the connections or the subscriber is left.
        left = [
            t
            for t in asyncio.all_tasks()
            if t is not asyncio.current_task() and t.get_coro().__qualname__ != "wait_for"  # type: ignore[union-attr]
        ]
        assert not left

    _run(main())
    labels = {
        "messaging_system": "nats",
        "messaging_operation_name": "request",
        "messaging_destination_name": subject,
    }
    rig.metrics.assert_counter(
        SENT,
        outcomes["publish_error"],
        error_type="nats.errors.OutboundBufferLimitError",
        **labels,
    )
    rig.metrics.assert_counter(SENT, outcomes["ok"], **labels)
    assert len(errors) == outcomes["publish_error"]
    for exc in errors:  # the caller is told what happened
        assert "the connection is down (reconnecting)" in str(exc)
        assert isinstance(exc.__cause__, nats.errors.OutboundBufferLimitError)
    assert rig.metrics.value("kitobs_messaging_reconnects_total", messaging_system="nats") == 2
    assert rig.out.getvalue().count("event=reconnected") == 2
    assert "level=warn" in rig.out.getvalue()


def test_slow_consumer_drops_are_counted(rig: Rig) -> None:
    subject = _subject("slow")
    release = asyncio.Event()

    async def stalled(request: Any) -> None:
        await release.wait()

    async def main() -> None:
        async with _connected(rig, rig.url) as server_nc, _connected(rig, rig.url) as client_nc:
            await kn.Subscriber(stalled, kit=rig.kit).serve(
                server_nc, subject, pending_msgs_limit=2
            )
            await server_nc.flush()
            producer = kn.Publisher(client_nc, subject, kit=rig.kit)
            for i in range(10):
                await producer.publish(i)
            await client_nc.flush()
            await server_nc.flush()  # every message has reached the subscriber's side
            release.set()
            await asyncio.sleep(0.05)

    _run(main())
    dropped = rig.metrics.value(
        CONSUMED,
        messaging_system="nats",
        messaging_operation_name="process",
        messaging_destination_name=subject,
        error_type="nats.errors.SlowConsumerError",
    )
    delivered = rig.metrics.value(
        CONSUMED,
        messaging_system="nats",
        messaging_operation_name="process",
        messaging_destination_name=subject,
    )
    assert dropped > 0
    assert dropped + delivered == 10  # nothing lost without a count
    assert rig.out.getvalue().count("event=slow_consumer") == 1


def test_config_from_the_environment() -> None:
    settings = config.load(
        env={
            "KITOBS_TRANSPORT_NATS_URL": "nats://10.0.0.5:4222",
            "KITOBS_TRANSPORT_NATS_RECONNECT_BUFFER_SIZE": "0",
            "KITOBS_TRANSPORT_NATS_REQUEST_TIMEOUT": "2.5",
        }
    )
    assert settings.transport.nats.url == "nats://10.0.0.5:4222"
    assert settings.transport.nats.reconnect_buffer_size == 0
    assert settings.transport.nats.request_timeout == 2.5


def test_connect_runs_the_given_callbacks_and_a_close_is_not_a_lost_connection(rig: Rig) -> None:
    seen: list[str] = []

    async def disconnected() -> None:
        seen.append("disconnected")
        raise RuntimeError("a raising callback must not reach nats-py")

    async def main() -> None:
        nc = await kn.connect(rig.kit, rig.url, disconnected_cb=disconnected)
        assert nc.is_connected
        await nc.close()

    _run(main())
    assert seen == ["disconnected"]
    assert "event=disconnected" not in rig.out.getvalue()  # closed on purpose: no warning


def test_the_messaging_docs_example_runs() -> None:
    url = require_env("KITOBSTEST_NATS_URL")
    text = (Path(__file__).parents[2] / "docs" / "messaging.md").read_text()
    [example] = re.findall(r"```python\n(.*?)```", text, re.S)
    assert "nats://127.0.0.1:4222" in example
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", example.replace("nats://127.0.0.1:4222", url)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("KITOBS_")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("{'v': 3}\n"), result.stdout
    assert "transport=nats subject=calc.add status=ok" in result.stdout + result.stderr
