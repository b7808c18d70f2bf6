import pytest

from kitobs.sd import Instance, RoundRobin, StaticInstancer


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
