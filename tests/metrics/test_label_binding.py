"""Label binding: generated binders, their cache, their errors and their thread safety.

Every family binds through ``labels``/``with_labels`` generated for its label names
(`kitobs.metrics._declare`); these tests hold them to what the generic binders promise, on
every backend, read back through each backend's own output.
"""

from __future__ import annotations

import threading

import pytest

from kitobs.errors import ConfigError
from kitobs.metrics import memory, prometheus
from kitobs.metrics._declare import OVERFLOW, CounterFamily, Partial
from kitobs.metrics._store import CounterValue, LockedCounterValue, children
from tests.metrics.harnesses import Harness


def test_every_binding_form_reaches_one_series_on_every_backend(harness: Harness) -> None:
    c = harness.provider.counter("jobs", help="Jobs.", labels=("method", "code"))
    c.labels("GET", "200").add(1)
    c.with_labels(method="GET", code="200").add(2)
    c.with_labels(code="200", method="GET").add(4)
    c.with_labels(method="GET").labels("200").add(8)
    c.with_labels(code="200").with_labels(method="GET").add(16)
    c.labels("PUT", "500").add(32)
    assert harness.counter("jobs", method="GET", code="200") == 31.0
    assert harness.counter("jobs", method="PUT", code="500") == 32.0


@pytest.mark.parametrize("names", [("a",), ("a", "b"), ("a", "b", "c"), ("a", "b", "c", "d")])
def test_positional_and_keyword_give_the_cached_child(names: tuple[str, ...]) -> None:
    c = prometheus.Provider().counter("jobs", help="Jobs.", labels=names)
    values = tuple(f"v{i}" for i in range(len(names)))
    child = c.labels(*values)
    assert isinstance(child, CounterValue)
    assert child.values == values
    assert c.labels(*values) is child
    assert c.with_labels(**dict(zip(names, values, strict=True))) is child
    assert c.with_labels(**dict(reversed(list(zip(names, values, strict=True))))) is child
    other = c.labels(*reversed(values)) if len(names) > 1 else c.labels("w")
    assert other is not child
    assert len(c.series) == 2


def test_families_are_generated_per_label_names_and_shared() -> None:
    a = prometheus.Provider().counter("jobs", help="Jobs.", labels=("method", "code"))
    b = memory.Provider().counter("other", help="Other.", labels=("method", "code"))
    c = prometheus.Provider().counter("jobs", help="Jobs.", labels=("code", "method"))
    assert isinstance(a, CounterFamily)
    assert type(a) is not CounterFamily  # the generated subclass
    assert type(a) is type(b)  # built once per class and label names
    assert type(c) is not type(a)


@pytest.mark.parametrize(
    ("bind", "needle"),
    [
        (lambda c: c.labels("GET"), "1 label value(s) given for 2 label(s)"),
        (lambda c: c.labels(), "0 label value(s) given for 2 label(s)"),
        (lambda c: c.labels("GET", "200", "x"), "3 label value(s) given for 2 label(s)"),
        # As many names as labels, one of them wrong: the cache lookup fails, the check names it.
        (lambda c: c.with_labels(method="GET", cod="200"), "unknown label(s) cod"),
        # Every right name plus one more.
        (lambda c: c.with_labels(method="GET", code="200", path="/"), "unknown label(s) path"),
        (lambda c: c.with_labels(path="/"), "unknown label(s) path"),
        (lambda c: c.with_labels(method="GET").labels("1", "2"), "2 label value(s) given"),
        (lambda c: c.with_labels(method="GET").with_labels(method="x"), "already bound"),
        (lambda c: c.labels("GET", "200").labels("x"), "already bound"),
    ],
)
def test_bad_bindings_raise_config_error_even_when_cached(bind: object, needle: str) -> None:
    c = prometheus.Provider().counter("jobs", help="Jobs.", labels=("method", "code"))
    c.labels("GET", "200").add()  # cached: the fast path is warm for these values
    with pytest.raises(ConfigError) as err:
        bind(c)  # type: ignore[operator]
    text = str(err.value)
    assert needle in text
    assert "'jobs'" in text
    assert "(method, code)" in text
    assert list(c.series) == [("GET", "200")]


def test_partial_binding_records_unbound_labels_empty() -> None:
    p = memory.Provider()
    c = p.counter("jobs", help="Jobs.", labels=("method", "code"))
    part = c.with_labels(method="GET")
    assert isinstance(part, Partial)
    everything_unbound = c.with_labels()
    assert isinstance(everything_unbound, Partial)
    part.add(2)
    everything_unbound.add(3)
    p.assert_counter("jobs", 2.0, method="GET", code="")
    p.assert_counter("jobs", 3.0, method="", code="")


def test_non_string_values_are_stringified_and_never_confused() -> None:
    # 1, 1.0 and True are one dict key; a cache keyed by them would mix up their series.
    p = prometheus.Provider()
    c = p.counter("jobs", help="Jobs.", labels=("code",))
    for value, delta in [(1, 1.0), (True, 2.0), (1.0, 4.0), (1, 8.0), ("1", 16.0)]:
        c.labels(value).add(delta)  # type: ignore[arg-type]
    c.with_labels(code=True).add(32)  # type: ignore[arg-type]
    text = p.exposition().decode()
    assert 'jobs_total{code="1"} 25.0' in text
    assert 'jobs_total{code="True"} 34.0' in text
    assert 'jobs_total{code="1.0"} 4.0' in text


def test_unhashable_value_is_stringified_not_raised() -> None:
    p = prometheus.Provider()
    c = p.counter("jobs", help="Jobs.", labels=("method", "code"))
    c.labels("GET", ["2", "00"]).add()  # type: ignore[arg-type]
    c.with_labels(method="GET", code=["2", "00"]).add()  # type: ignore[arg-type]
    assert "jobs_total{method=\"GET\",code=\"['2', '00']\"} 2.0" in p.exposition().decode()


@pytest.mark.parametrize(
    "names",
    [
        ("class", "in"),  # Python keywords: no parameter can have these names
        ("self", "extra"),  # names a hand-written binder would use itself
        ("self", "class"),  # both: the generic binders serve it
        ("_", "_0"),
    ],
)
def test_any_valid_label_names_bind_by_position_and_by_name(names: tuple[str, str]) -> None:
    p = prometheus.Provider()
    c = p.counter("jobs", help="Jobs.", labels=names)
    child = c.labels("x", "y")
    assert c.with_labels(**{names[0]: "x", names[1]: "y"}) is child
    part = c.with_labels(**{names[1]: "y"})
    assert isinstance(part, Partial)
    assert part.labels("x") is child
    child.add(3)
    assert f'jobs_total{{{names[0]}="x",{names[1]}="y"}} 3.0' in p.exposition().decode()
    with pytest.raises(ConfigError, match="unknown label"):
        c.with_labels(**{names[0]: "x", "other": "y"})
    with pytest.raises(ConfigError, match="already bound"):
        child.with_labels(**{names[0]: "x"})
    with pytest.raises(ConfigError, match="already bound"):
        part.with_labels(**{names[1]: "z"})


def test_label_less_family_binds_to_its_one_series() -> None:
    p = memory.Provider()
    c = p.counter("jobs", help="Jobs.")
    assert c.labels() is c.default()
    assert c.with_labels() is c.default()
    c.labels().add(2)
    c.add(1)
    p.assert_counter("jobs", 3.0)
    with pytest.raises(ConfigError, match="1 label value"):
        c.labels("x")
    with pytest.raises(ConfigError, match="unknown label"):
        c.with_labels(x="y")


def test_each_folded_binding_counts_and_is_not_cached() -> None:
    p = prometheus.Provider(max_label_sets=2)
    c = p.counter("jobs", help="Jobs.", labels=("user",))
    c.labels("a").add()
    c.with_labels(user="b").add()
    for _ in range(3):  # a cached fold would count only once
        c.labels("c").add()
        c.with_labels(user="d").add()
    assert c.labels("c") is c.labels("d") is c.labels(OVERFLOW)
    assert len(c.series) == 3
    text = p.exposition().decode()
    assert 'jobs_total{user="_overflow"} 6.0' in text
    # 6 folded bindings while recording, then 2 more by the identity check above.
    assert 'kitobs_label_sets_folded_total{metric="jobs_total"} 8.0' in text


@pytest.mark.parametrize("lock_free", [True, False], ids=["lock-free", "locked"])
def test_racing_binds_give_one_child_and_lose_no_add(lock_free: bool) -> None:
    p = prometheus.Provider()
    p._kinds = children(lock_free=lock_free)  # False is what a free-threaded build gets
    c = p.counter("jobs", help="Jobs.", labels=("method", "code"))
    threads, rounds, adds = 8, 50, 200
    barrier = threading.Barrier(threads)
    got: list[list[object]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for r in range(rounds):
                barrier.wait()  # every thread binds each new label set at once
                code = str(r)
                bound = c.labels("GET", code) if i % 2 else c.with_labels(code=code, method="GET")
                got[i].append(bound)
                for _ in range(adds):
                    c.with_labels(method="GET", code=code).add()
                    c.labels("PUT", code).add(0.5)
        except BaseException as exc:  # surfaced below: a thread's error must fail the test
            errors.append(exc)
            barrier.abort()

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    for r in range(rounds):
        assert len({id(got[i][r]) for i in range(threads)}) == 1
    want_class = CounterValue if lock_free else LockedCounterValue
    assert all(type(child) is want_class for child in c.series.values())
    assert len(c.series) == 2 * rounds
    text = p.exposition().decode()
    for r in range(rounds):
        assert f'jobs_total{{method="GET",code="{r}"}} {float(threads * adds)}' in text
        assert f'jobs_total{{method="PUT",code="{r}"}} {float(threads * adds / 2)}' in text
