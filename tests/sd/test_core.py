import pytest

from kitobs.sd import (
    Endpointer,
    Instance,
    RetryError,
    RoundRobin,
    StaticInstancer,
    WeightedRandom,
    retry,
)


def test_instance_rejects_bad_port() -> None:
    with pytest.raises(ValueError, match="out of range"):
        Instance("127.0.0.1", 0)


def test_static_instancer_hands_the_set_to_a_new_listener() -> None:
    seen: list[object] = []
    instancer = StaticInstancer([Instance("127.0.0.1", 1), Instance("127.0.0.1", 2)])
    instancer.register(seen.append)
    assert seen == [frozenset({Instance("127.0.0.1", 1), Instance("127.0.0.1", 2)})]


def test_round_robin_cycles_and_fails_when_empty() -> None:
    items = ["a", "b", "c"]
    balancer = RoundRobin(lambda: items)
    assert [balancer.choose() for _ in range(4)] == ["a", "b", "c", "a"]
    items.clear()
    with pytest.raises(LookupError):
        balancer.choose()


def test_endpointer_keeps_survivors_and_closes_vanished() -> None:
    closed: list[int] = []
    built: list[int] = []

    def factory(instance: Instance) -> tuple[int, object]:
        built.append(instance.port)
        return instance.port, lambda: closed.append(instance.port)

    instancer = StaticInstancer([Instance("127.0.0.1", 1), Instance("127.0.0.1", 2)])
    endpointer = Endpointer(instancer, factory)  # type: ignore[arg-type]
    assert endpointer.endpoints() == [1, 2]
    endpointer._update(frozenset({Instance("127.0.0.1", 2), Instance("127.0.0.1", 3)}))
    assert endpointer.endpoints() == [2, 3]
    assert built == [1, 2, 3]
    assert closed == [1]
    endpointer._update(RuntimeError("lost"))
    assert endpointer.endpoints() == [2, 3]
    endpointer.close()
    assert sorted(closed) == [1, 2, 3]


def test_retry_carries_every_attempt_error_and_succeeds_on_a_later_one() -> None:
    def failing(request: object) -> object:
        raise ConnectionError(f"refused {request}")

    endpoints = [failing, failing, lambda request: f"ok {request}"]
    call = retry(RoundRobin(lambda: endpoints), max_attempts=3, timeout=5.0)
    assert call("x") == "ok x"
    endpoints.pop()
    with pytest.raises(RetryError) as raised:
        call("y")
    assert [type(e) for e in raised.value.errors] == [ConnectionError] * 3


def test_weighted_random_follows_weights() -> None:
    balancer = WeightedRandom(lambda: [("heavy", 9), ("light", 1)], seed=7)
    picks = [balancer.choose() for _ in range(2000)]
    assert 0.8 < picks.count("heavy") / len(picks) < 0.97


# --------------------------------------------------------------------------------------------
# The Instancer protocol, the Endpointer's error handling, load-aware balancing and retry.

import asyncio  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from kitobs.endpoint import context  # noqa: E402
from kitobs.errors import ConfigError  # noqa: E402
from kitobs.sd import (  # noqa: E402
    InstanceCache,
    Instancer,
    LeastOutstanding,
    NoEndpointsError,
    parse_instance,
    retry_async,
)
from tests.support.resilience import recording  # noqa: E402

A, B, C = Instance("10.0.0.1", 80), Instance("10.0.0.2", 80), Instance("10.0.0.3", 80)


class _Pushed:
    """An Instancer the test drives by hand, on InstanceCache."""

    def __init__(self, kit: Any) -> None:
        self.service = "users"
        self.cache = InstanceCache("users", kit=kit)
        self.subscribe = self.cache.subscribe
        self.unsubscribe = self.cache.unsubscribe
        self.stop = self.cache.stop


def _as_instancer(i: _Pushed) -> Instancer:
    return i  # mypy: _Pushed matches the Protocol


def test_cache_drops_an_event_equal_to_the_last_and_records() -> None:
    rec = recording()
    pushed = _Pushed(rec.kit)
    seen: list[object] = []
    pushed.subscribe(seen.append)
    assert rec.metrics.value("kitobs_sd_instances", service="users") == 0.0
    assert rec.metrics.value("kitobs_sd_events_total", service="users", outcome="error") == 0.0
    assert pushed.cache.publish(frozenset({A, B}))
    assert not pushed.cache.publish(frozenset({B, A}))
    assert pushed.cache.publish(ConnectionError("down"))
    assert not pushed.cache.publish(ConnectionError("down"))
    assert pushed.cache.publish(frozenset({A, B}))  # the fresh full set after recovery
    assert pushed.cache.publish(frozenset())
    assert len(seen) == 4
    assert rec.metrics.value("kitobs_sd_events_total", service="users", outcome="update") == 3.0
    assert rec.metrics.value("kitobs_sd_events_total", service="users", outcome="error") == 1.0
    assert rec.metrics.value("kitobs_sd_instances", service="users") == 0.0
    assert rec.metrics.value("kitobs_sd_last_update_timestamp_seconds", service="users") > 1e9
    warned = [r["msg"] for r in rec.logs if r.get("level") == "warn"]
    assert warned == [
        "service discovery lost its server, keeping the last instances",
        "service has no instances",
    ]


def test_endpointer_takes_any_instancer_and_invalidates_after_a_timeout() -> None:
    rec = recording()
    pushed = _Pushed(rec.kit)
    closed: list[Instance] = []
    endpointer: Endpointer[Instance] = Endpointer(
        _as_instancer(pushed), lambda i: (i, lambda: closed.append(i)), invalidate_after=0.05
    )
    pushed.cache.publish(frozenset({A, B}))
    pushed.cache.publish(RuntimeError("lost"))
    assert endpointer.endpoints() == [A, B]  # still within invalidate_after
    time.sleep(0.06)
    assert endpointer.endpoints() == []
    assert sorted(closed, key=str) == [A, B]
    pushed.cache.publish(frozenset({C}))
    assert endpointer.endpoints() == [C]
    assert endpointer.instance_of(C) == C


def test_endpointer_serves_the_lowest_priority_group_and_counts_factory_errors() -> None:
    rec = recording()
    low, high = Instance("10.0.0.1", 80, priority=10), Instance("10.0.0.2", 80, priority=20)

    def factory(i: Instance) -> tuple[str, None]:
        if i.address == "10.0.0.3":
            raise ValueError("bad instance")
        return i.address, None

    instancer = StaticInstancer([low, high, Instance("10.0.0.3", 80, priority=10)], kit=rec.kit)
    endpointer = Endpointer(instancer, factory, kit=rec.kit)
    assert endpointer.endpoints() == ["10.0.0.1"]
    assert rec.metrics.value("kitobs_sd_factory_errors_total", service="static") == 1.0


def test_endpointer_rejects_a_negative_invalidate_after() -> None:
    with pytest.raises(ConfigError, match="invalidate_after"):
        Endpointer(StaticInstancer([]), lambda i: (i, None), invalidate_after=-1)


def test_parse_instance() -> None:
    assert parse_instance("10.0.0.1:8080") == Instance("10.0.0.1", 8080)
    assert parse_instance("[::1]:99") == Instance("::1", 99)
    with pytest.raises(ValueError, match="host:port"):
        parse_instance("nohost")


def test_least_outstanding_avoids_the_busy_endpoint() -> None:
    calls: list[str] = []

    def make(name: str) -> Any:
        def endpoint(request: Any) -> Any:
            calls.append(name)
            if request == "hold":  # a call in flight while the balancer chooses again
                return [balancer.choose()("x") for _ in range(20)]
            return name

        return endpoint

    endpoints = [make("a"), make("b")]
    balancer = LeastOutstanding(lambda: endpoints, seed=1)
    first = balancer.choose()
    first("hold")
    # While the first endpoint had one call in flight, every nested call went to the other one.
    assert len(set(calls[1:])) == 1
    assert calls[1] != calls[0]
    endpoints.clear()
    with pytest.raises(NoEndpointsError):
        balancer.choose()


def test_retry_gives_each_attempt_the_deadline_and_records_spans() -> None:
    rec = recording()
    seen: list[float | None] = []
    instances = {}

    def make(port: int, fail: bool) -> Any:
        def endpoint(request: Any) -> Any:
            seen.append(context.current().deadline)
            if fail:
                raise ConnectionError(f"refused {port}")
            return port

        instances[id(endpoint)] = Instance("127.0.0.1", port)
        return endpoint

    endpoints = [make(1, True), make(2, False)]
    call = retry(
        RoundRobin(lambda: endpoints), 3, 5.0, service="users", kit=rec.kit,
        instance_of=lambda e: instances.get(id(e)),
    )  # fmt: skip
    with context.scoped(timeout=2.0) as outer:
        assert call("x") == 2
    assert seen == [outer.deadline, outer.deadline]  # the context's deadline is the earlier
    spans = [s for s in rec.spans.spans if s.name == "kitobs.sd.attempt"]
    assert [s.attributes["kitobs.sd.attempt"] for s in spans] == [1, 2]
    assert [s.attributes["kitobs.sd.instance"] for s in spans] == ["127.0.0.1:1", "127.0.0.1:2"]
    m = rec.metrics
    assert m.value("kitobs_lb_attempts_total", service="users", outcome="error") == 1.0
    assert m.value("kitobs_lb_attempts_total", service="users", outcome="success") == 1.0
    assert m.value("kitobs_lb_attempts_total", service="users", outcome="timeout") == 0.0


def test_retry_keeps_every_error_when_the_deadline_ends_it() -> None:
    rec = recording()

    def slow(request: Any) -> Any:
        remaining = context.time_remaining()
        assert remaining is not None
        time.sleep(remaining + 0.01)  # a client transport times out at the deadline
        raise TimeoutError("read timed out")

    call = retry(RoundRobin(lambda: [slow]), 5, 0.05, service="users", kit=rec.kit)
    with pytest.raises(RetryError) as raised:
        call("x")
    errors = raised.value.errors
    assert [type(e).__name__ for e in errors] == ["TimeoutError", "DeadlineExceeded"]
    assert rec.metrics.value("kitobs_lb_no_endpoints_total", service="users") == 0.0


def test_retry_counts_no_endpoints_as_attempts() -> None:
    rec = recording()
    call = retry(RoundRobin(list), 2, 1.0, service="users", kit=rec.kit)
    with pytest.raises(RetryError) as raised:
        call("x")
    assert [type(e) for e in raised.value.errors] == [NoEndpointsError] * 2
    assert rec.metrics.value("kitobs_lb_no_endpoints_total", service="users") == 2.0


def test_retry_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        retry(RoundRobin(list), 0, 1.0)
    with pytest.raises(ConfigError, match="positive"):
        retry(RoundRobin(list), 1, 0)


def test_retry_async_cancels_the_abandoned_attempt() -> None:
    rec = recording()
    cancelled: list[bool] = []

    async def hangs(request: Any) -> Any:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def ok(request: Any) -> Any:
        return "ok"

    async def main() -> None:
        call = retry_async(RoundRobin(lambda: [hangs]), 3, 0.05, service="users", kit=rec.kit)
        with pytest.raises(RetryError) as raised:
            await call("x")
        assert [type(e) for e in raised.value.errors] == [TimeoutError]
        endpoints = [ok]
        call = retry_async(RoundRobin(lambda: endpoints), 3, 1.0, service="users", kit=rec.kit)
        assert await call("y") == "ok"

    asyncio.run(main())
    assert cancelled == [True]
    assert rec.metrics.value("kitobs_lb_attempts_total", service="users", outcome="timeout") == 1.0


def test_retry_from_config_takes_the_sd_settings() -> None:
    from kitobs.sd import retry_from_config

    rec = recording(**{"sd.retry_max_attempts": 2})
    calls: list[object] = []

    def failing(request: Any) -> Any:
        calls.append(request)
        raise ConnectionError("refused")

    call = retry_from_config(RoundRobin(lambda: [failing]), service="users", kit=rec.kit)
    with pytest.raises(RetryError):
        call("x")
    assert len(calls) == 2
    call = retry_from_config(RoundRobin(lambda: [failing]), kit=rec.kit, max_attempts=4)
    with pytest.raises(RetryError):
        call("y")
    assert len(calls) == 6


def test_backend_settings_come_from_the_environment() -> None:
    from kitobs.config import load

    settings = load(
        path=None,
        env={
            "KITOBS_SD_ETCD_URLS": "http://10.0.0.1:2379,http://10.0.0.2:2379",
            "KITOBS_SD_ZOOKEEPER_HOSTS": "10.0.0.1:2181",
            "KITOBS_SD_RETRY_TIMEOUT": "0.25",
        },
        search=False,
    )
    assert settings.sd.etcd_urls == ("http://10.0.0.1:2379", "http://10.0.0.2:2379")
    assert settings.sd.zookeeper_hosts == ("10.0.0.1:2181",)
    assert settings.sd.retry_timeout == 0.25


def test_retry_prefers_an_endpoint_the_call_has_not_tried() -> None:
    def bad(request: Any) -> Any:
        raise ConnectionError("refused")

    def good(request: Any) -> Any:
        return "ok"

    class Sticky:
        """Gives the failing endpoint twice in a row, as a balancer shared by callers can."""

        def __init__(self) -> None:
            self.picks = iter([bad, bad, good])

        def choose(self) -> Any:
            return next(self.picks)

    call = retry(Sticky(), 2, 1.0, kit=recording().kit)
    assert call("x") == "ok"
