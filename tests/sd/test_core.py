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
