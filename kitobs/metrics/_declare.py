"""Declaration, label binding and the cardinality guard, shared by every metrics backend.

A backend supplies *children* (one object per label-value tuple, holding or sending the values)
and builds its metrics with `Core.declare`, which validates the declaration, enforces one shape
per name and returns a `CounterFamily`, `GaugeFamily` or `HistogramFamily`. The family does the
binding (`Family.labels`, `Family.with_labels`, generated per tuple of label names for speed),
caches children per tuple of string values, folds label sets past the cap into the overflow
series and counts the folds.

A backend's child classes mix in `Bound` so a fully bound child answers ``with_labels()`` and
``labels()`` like the Protocols require.

Example::

    >>> core = Core(common_labels={}, max_label_sets=10)
    >>> decl = declaration("jobs", "counter", help="Jobs.", labels=("queue",))
    >>> decl.prometheus_name
    'jobs_total'
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import keyword
import math
import sys
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar, cast

from kitobs.config import DURATION_BUCKETS, MetricsSettings, ServiceSettings, key_name
from kitobs.contract import otel_name as _otel_name
from kitobs.errors import ConfigError, DuplicateMetricError
from kitobs.metrics.naming import (
    MetricKind,
    check_base_name,
    check_label_name,
    prometheus_name,
    statsd_name,
)
from kitobs.metrics.selfmetrics import (
    LABEL_SETS_FOLDED,
    PROCESS_FAMILIES,
    RECORD_DROP_REASONS,
    TELEMETRY_DROPPED,
)

if TYPE_CHECKING:
    from kitobs.metrics import (
        Counter,
        Gauge,
        GaugeCallback,
        Histogram,
        InstrumentT,
        MetricSpec,
    )

__all__ = [
    "LOCK_FREE",
    "OVERFLOW",
    "Declaration",
    "declaration",
    "from_spec",
    "check_buckets",
    "Logger",
    "NopLogger",
    "Core",
    "Family",
    "CounterFamily",
    "GaugeFamily",
    "HistogramFamily",
    "Partial",
    "Bound",
    "SELF_SIGNALS",
    "Declaring",
]

#: LOCK_FREE is True where bound children may update without a lock: CPython 3.10+ with the GIL.
#: There the eval loop only switches threads at calls and backward jumps, so ``self._v += d`` on
#: floats (LOAD_ATTR, BINARY_OP, STORE_ATTR, all in C, no allocation that can run the GC) cannot
#: interleave with another thread's update. A free-threaded build (``sys._is_gil_enabled()``
#: False) or another implementation gives no such guarantee, so children take a lock there.
LOCK_FREE: bool = (
    sys.implementation.name == "cpython"
    and sys.version_info >= (3, 10)
    and bool(getattr(sys, "_is_gil_enabled", lambda: True)())
)

#: OVERFLOW is the label value of every label of the overflow series of the cardinality guard.
OVERFLOW = "_overflow"

#: SELF_SIGNALS are the ``signal`` values of ``kitobs_telemetry_dropped_total`` pre-created at 0.
SELF_SIGNALS: tuple[str, ...] = ("metrics", "spans", "logs")
_SELF_NAMES = frozenset({TELEMETRY_DROPPED.name, LABEL_SETS_FOLDED.name})


class Logger(Protocol):
    """Logger is what the guard warns through, e.g. a `kitobs.log` logger: ``log("k", "v")``."""

    def log(self, *keyvals: object) -> None:
        """log writes one event of alternating keys and values."""


class NopLogger:
    """NopLogger drops every event, e.g. the default logger of a provider."""

    __slots__ = ()

    def log(self, *keyvals: object) -> None:
        """log does nothing."""


@dataclass(frozen=True, slots=True)
class Declaration:
    """Declaration is one validated metric declaration, e.g. ``declaration("jobs", "counter")``.

    ``shape`` is what must match when a name is declared twice.
    """

    name: str
    kind: MetricKind
    help: str
    unit: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] | None
    otel_name: str

    @property
    def prometheus_name(self) -> str:
        """The Prometheus name, e.g. ``jobs_total``."""
        return prometheus_name(self.name, self.unit, self.kind)

    def statsd_name(self, prefix: str = "") -> str:
        """statsd_name gives the dotted statsd name after *prefix*, e.g. ``shop.jobs``."""
        return statsd_name(self.name, prefix)

    @property
    def shape(self) -> tuple[object, ...]:
        """What must agree between two declarations of one name."""
        return (self.kind, self.unit, self.labels, self.buckets)


def check_buckets(name: str, buckets: Iterable[float]) -> tuple[float, ...]:
    """check_buckets validates histogram bounds, e.g. ``(0.1, 1.0)``; a trailing +Inf is dropped.

    Raises:
        ConfigError: bounds not finite, not strictly increasing, or none.
    """
    bounds = [float(b) for b in buckets]
    if bounds and bounds[-1] == math.inf:
        bounds.pop()
    if not bounds:
        raise ConfigError(f"metric {name!r}: no buckets", allowed="at least one finite bound")
    for a, b in itertools.pairwise(bounds):
        if not a < b:
            raise ConfigError(
                f"metric {name!r}: buckets must increase strictly",
                value=tuple(bounds),
                allowed="finite, strictly increasing bounds",
            )
    if not all(math.isfinite(b) for b in bounds):
        raise ConfigError(
            f"metric {name!r}: buckets must be finite", value=tuple(bounds), allowed="numbers"
        )
    return tuple(bounds)


def declaration(
    name: str,
    kind: MetricKind,
    *,
    help: str,
    unit: str = "",
    labels: Sequence[str] = (),
    buckets: Sequence[float] | None = None,
    otel: str | None = None,
) -> Declaration:
    """declaration validates a metric declaration, e.g. ``declaration("jobs", "counter", ...)``.

    Raises:
        ConfigError: a bad name, unit, label name, duplicate label or bad buckets.
    """
    check_base_name(name, unit, kind)
    if not isinstance(help, str) or not help.strip():
        raise ConfigError(f"metric {name!r}: help text is empty", allowed="a sentence")
    if isinstance(labels, str):
        raise ConfigError(
            f"metric {name!r}: labels must be a sequence of names, not a string",
            value=labels,
            allowed="e.g. labels=('method', 'status')",
        )
    names = tuple(labels)
    for label in names:
        check_label_name(name, label)
    if len(set(names)) != len(names):
        raise ConfigError(f"metric {name!r}: a label name is repeated", value=names)
    bounds: tuple[float, ...] | None = None
    if kind == "histogram":
        bounds = check_buckets(name, DURATION_BUCKETS if buckets is None else buckets)
    elif buckets is not None:
        raise ConfigError(f"metric {name!r}: only histograms have buckets", value=kind)
    return Declaration(
        name=name,
        kind=kind,
        help=" ".join(help.split()),
        unit=unit,
        labels=names,
        buckets=bounds,
        otel_name=otel or _otel_name(name),
    )


def from_spec(spec: MetricSpec[Counter] | MetricSpec[Gauge] | MetricSpec[Histogram]) -> Declaration:
    """from_spec validates a contract entry, e.g. ``from_spec(contract.ENDPOINT_DURATION)``."""
    return declaration(
        spec.name,
        spec.kind,
        help=spec.help,
        unit=spec.unit,
        labels=spec.labels,
        buckets=spec.buckets,
        otel=spec.otel,
    )


_C = TypeVar("_C")
_F = TypeVar("_F")


class Bound:
    """Bound gives a fully bound child the binding methods, e.g. ``child.labels()`` is *child*.

    Binding anything more raises `ConfigError`: every label already has its value. The child
    class must have a ``_family`` slot holding its `Family`.
    """

    __slots__ = ()

    #: The family this child belongs to: a slot of the child class (declared here for types).
    _family: Family[Any]

    def with_labels(self, /, **labels: str) -> Self:
        """with_labels with no labels returns the child; any label raises `ConfigError`."""
        if labels:
            raise self._family.too_many(labels)
        return self

    def labels(self, *values: str) -> Self:
        """labels with no values returns the child; any value raises `ConfigError`."""
        if values:
            raise self._family.too_many(values)
        return self


class _Unset:
    """The type of `_UNSET`, named so a generated binder's signature reads well."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unset>"


#: _UNSET is the default of every parameter of a generated binder: a label the caller did not
#: give. It is never a cache key, so a partial binding misses the cache and takes the slow path.
_UNSET = _Unset()


def _given(values: tuple[object, ...]) -> tuple[object, ...]:
    """The values a generated positional binder was really given, in order."""
    return tuple(v for v in values if v is not _UNSET)


def _given_items(labels: dict[str, object]) -> dict[str, object]:
    """The labels a generated keyword binder was really given."""
    return {k: v for k, v in labels.items() if v is not _UNSET}


def _binder_source(names: tuple[str, ...]) -> str:
    """Source of ``labels`` and ``with_labels`` for *names*, one parameter per label.

    Named parameters skip the ``**labels`` dict and the value picking a generic binder needs
    (and the ``*values`` tuple); the cache is one dict per label, so a hit is n dict lookups on
    strings (hash cached) with no tuple built. ``labels`` takes them positionally only, as
    before. Every internal name starts with ``__``, which no label name may, and no parameter
    is used in a comprehension, which would make it a cell and slow every call.
    """
    params = ", ".join(f"{name}=__UNSET" for name in names)
    path = "".join(f"[{name}]" for name in names)
    return f"""
def labels(__self, {params}, /, *__extra):
    if not __extra:
        try:
            return __self._tree{path}
        except (KeyError, TypeError):
            pass
    return __labels(__self, *__given(({", ".join(names)},) + __extra))


def with_labels(__self, /, *, {params}, **__extra):
    if not __extra:
        try:
            return __self._tree{path}
        except (KeyError, TypeError):
            pass
    __named = {{{", ".join(f"{name!r}: {name}" for name in names)}}}
    return __with_labels(__self, **__given_items(__named), **__extra)
"""


@functools.lru_cache(maxsize=512)
def _specialized(cls: type[object], names: tuple[str, ...]) -> type[object]:
    """A subclass of *cls* whose binders take *names* as parameters; *cls* if that cannot be.

    Built once per class and tuple of label names (the cache is bounded), like the shapes of
    `kitobs.log`; only validated snake_case names reach the generated source.
    """
    if not names or any(keyword.iskeyword(name) for name in names):
        return cls  # a keyword cannot be a parameter; the generic binders serve those
    ns: dict[str, object] = {
        "__UNSET": _UNSET,
        "__given": _given,
        "__given_items": _given_items,
        "__labels": Family.labels,
        "__with_labels": Family.with_labels,
    }
    exec(compile(_binder_source(names), f"<kitobs.metrics binders {names}>", "exec"), ns)
    body: dict[str, object] = {"__slots__": (), "__module__": cls.__module__}
    for attr in ("labels", "with_labels"):
        function = ns[attr]
        setattr(function, "__doc__", getattr(Family, attr).__doc__)  # noqa: B010
        setattr(function, "__qualname__", f"{cls.__qualname__}.{attr}")  # noqa: B010
        body[attr] = function
    return type(cls.__name__, (cls,), body)


class Family(Generic[_C]):
    """Family holds the children of one metric, one per label-value tuple, e.g. ``GET, 200``.

    ``new_child(values)`` builds a backend child; ``series`` maps each value tuple to its child
    (the overflow child included, once created) for collection.

    Binding is the hot path (``family.labels("GET", "200").add()``), so a family is an instance
    of a subclass generated for its label names, whose binders take one parameter per label
    and look the child up in one dict per label (see `_binder_source`). The methods below are
    the generic binders it falls back to on a cache miss.
    """

    __slots__ = (
        "_cap",
        "_core",
        "_default",
        "_lock",
        "_new",
        "_overflow",
        "_tree",
        "callback",
        "decl",
        "n",
        "series",
    )

    def __new__(
        cls,
        decl: Declaration,
        core: Core,
        new_child: Callable[[Family[_C], tuple[str, ...]], _C],
    ) -> Self:
        # typeshed's type[...] is not Hashable for mypy; a class is.
        return super().__new__(cast("type[Self]", _specialized(cast("Hashable", cls), decl.labels)))

    def __init__(
        self,
        decl: Declaration,
        core: Core,
        new_child: Callable[[Family[_C], tuple[str, ...]], _C],
    ) -> None:
        self.decl = decl
        self.n = len(decl.labels)
        self.series: dict[tuple[str, ...], _C] = {}
        self.callback: GaugeCallback | None = None
        self._core = core
        self._new = new_child
        # The binding cache: one nested dict level per label, the child at the leaf. Only label
        # sets of strings that got their own child are cached, so folded sets cannot grow it.
        self._tree: dict[object, object] = {}
        self._default: _C | None = None
        self._overflow: _C | None = None
        # kitobs' own metrics have a handful of series by construction; they are never folded.
        self._cap = 1_000_000 if decl.name in _SELF_NAMES else core.max_label_sets
        self._lock = threading.Lock()

    # --- binding ------------------------------------------------------------------------

    def labels(self, *values: str) -> _C:
        """labels gives the child of *values* in declared label order, e.g. ``("GET", "200")``."""
        if len(values) == self.n:
            if not values:
                return self.default()
            node: object = self._tree
            try:
                for value in values:
                    node = cast("dict[object, object]", node)[value]
                return cast("_C", node)
            except (KeyError, TypeError):  # not cached yet, or unhashable: _bind stringifies
                pass
        return self._bind(values)

    def with_labels(self, /, **labels: str) -> _C | Partial[_C]:
        """with_labels binds by name; binding every label gives the child, a subset a `Partial`."""
        self.check_names(labels)
        if len(labels) < self.n:
            return Partial(self, labels)
        return self.labels(*[labels[name] for name in self.decl.labels])

    def default(self) -> _C:
        """default gives what a family-level add, set or observe records on.

        That is the one series of a label-less metric. A labelled metric records nothing
        without its labels: there it is a sink that counts each call as dropped
        (``reason="unbound_labels"``) and warns once.
        """
        child = self._default
        if child is None:
            if self.n:
                child = self._default = cast("_C", _Unbound(self))
            else:
                child = self._default = self._bind(())
        return child

    def reject(self, value: object) -> None:
        """reject counts one recording of *value* dropped as ``invalid_value``; never raises."""
        self._core.rejected(self.decl, "invalid_value", value)

    def check_names(self, labels: Mapping[str, object]) -> None:
        """check_names raises `ConfigError` unless every name in *labels* is a declared label."""
        unknown = [name for name in labels if name not in self.decl.labels]
        if unknown:
            raise ConfigError(
                f"metric {self.decl.name!r}: unknown label(s) {', '.join(unknown)}; "
                f"expected labels {self._expected()}, given {dict(labels)!r}",
                allowed=self.decl.labels,
            )

    def too_many(self, given: object) -> ConfigError:
        """too_many builds the error for binding more labels than remain unbound."""
        return ConfigError(
            f"metric {self.decl.name!r}: every label is already bound; "
            f"expected labels {self._expected()}, given {given!r}",
            allowed=self.decl.labels,
        )

    def _expected(self) -> str:
        return "(" + ", ".join(self.decl.labels) + ")" if self.decl.labels else "(none)"

    def _bind(self, raw: tuple[object, ...]) -> _C:
        if len(raw) != self.n:
            raise ConfigError(
                f"metric {self.decl.name!r}: {len(raw)} label value(s) given for "
                f"{self.n} label(s); expected labels {self._expected()}, given {raw!r}",
                allowed=self.decl.labels,
            )
        # Only tuples of strings are cached: 1, 1.0 and True are one dict key but three label
        # values, so caching a non-string would hand one of them another's child.
        cacheable = all(isinstance(v, str) for v in raw)
        if cacheable:
            values = cast("tuple[str, ...]", raw)
        else:
            # None is no value: the label is absent, as if never bound.
            values = tuple("" if v is None else str(v) for v in raw)
            child = self.series.get(values)  # one dict read: safe without the lock
            if child is not None:
                return child
        with self._lock:  # the slow path: one child per tuple even when threads race here
            child = self.series.get(values)
            if child is None:
                if len(self.series) - (self._overflow is not None) >= self._cap:
                    return self._fold(values)
                child = self._new(self, values)
                self.series[values] = child
            if cacheable and values:
                # Readers may see an inner dict before its leaf: they miss and come here.
                node = self._tree
                for value in values[:-1]:
                    node = cast("dict[object, object]", node.setdefault(value, {}))
                node[values[-1]] = child
        return child

    def _fold(self, values: tuple[str, ...]) -> _C:
        overflow = self._overflow
        if overflow is None:
            overflow = self._overflow = self._new(self, (OVERFLOW,) * self.n)
            self.series[(OVERFLOW,) * self.n] = overflow
        self._core.folded(self.decl, values)
        return overflow


class _Unbound:
    """_Unbound is the `Family.default` of a labelled family: it drops and counts every call."""

    __slots__ = ("_family",)

    def __init__(self, family: Family[Any]) -> None:
        self._family = family

    def _drop(self) -> None:
        family = self._family
        family._core.rejected(family.decl, "unbound_labels", None)

    def add(self, delta: float = 1.0) -> None:
        self._drop()

    def set(self, value: float) -> None:
        self._drop()

    def observe(self, value: float) -> None:
        self._drop()


class Partial(Generic[_C]):
    """Partial is a metric with some labels bound, e.g. ``with_labels(method="GET")``.

    Recording on it records with the unbound labels empty (absent in Prometheus).
    """

    __slots__ = ("_bound", "_family")

    def __init__(self, family: Family[_C], bound: Mapping[str, str]) -> None:
        self._family = family
        self._bound = dict(bound)

    def with_labels(self, /, **labels: str) -> _C | Partial[_C]:
        """with_labels binds more labels by name; rebinding one raises `ConfigError`."""
        again = [name for name in labels if name in self._bound]
        if again:
            raise ConfigError(
                f"metric {self._family.decl.name!r}: label(s) {', '.join(again)} already bound; "
                f"expected labels {self._family._expected()}, given {labels!r}",
                allowed=self._family.decl.labels,
            )
        return self._family.with_labels(**self._bound, **labels)

    def labels(self, *values: str) -> _C:
        """labels binds the unbound labels by position, in declared order."""
        rest = [name for name in self._family.decl.labels if name not in self._bound]
        if len(values) != len(rest):
            raise ConfigError(
                f"metric {self._family.decl.name!r}: {len(values)} label value(s) given for "
                f"the {len(rest)} unbound label(s) ({', '.join(rest)}); expected labels "
                f"{self._family._expected()}, bound {self._bound!r}, given {values!r}",
                allowed=tuple(rest),
            )
        merged = dict(self._bound)
        merged.update(zip(rest, values, strict=True))
        return self._family.labels(*(merged[name] for name in self._family.decl.labels))

    def _full(self) -> _C:
        merged = self._bound
        return self._family.labels(*(merged.get(name, "") for name in self._family.decl.labels))

    def add(self, delta: float = 1.0) -> None:
        """add records on the series whose unbound labels are empty."""
        cast("Counter", self._full()).add(delta)

    def set(self, value: float) -> None:
        """set records on the series whose unbound labels are empty."""
        cast("Gauge", self._full()).set(value)

    def observe(self, value: float) -> None:
        """observe records on the series whose unbound labels are empty."""
        cast("Histogram", self._full()).observe(value)


_CC = TypeVar("_CC", bound="Counter")
_GC = TypeVar("_GC", bound="Gauge")
_HC = TypeVar("_HC", bound="Histogram")


class CounterFamily(Family[_CC]):
    """CounterFamily is a counter with its children, e.g. a backend's ``Provider.counter``."""

    __slots__ = ()

    def add(self, delta: float = 1.0) -> None:
        """add records on a label-less counter; with labels it is dropped (bind them first)."""
        self.default().add(delta)


class GaugeFamily(Family[_GC]):
    """GaugeFamily is a gauge with its children; ``callback`` is read at collection time."""

    __slots__ = ()

    def set(self, value: float) -> None:
        """set records on a label-less gauge; with labels it is dropped (bind them first)."""
        self.default().set(value)

    def add(self, delta: float = 1.0) -> None:
        """add records on a label-less gauge; with labels it is dropped (bind them first)."""
        self.default().add(delta)


class HistogramFamily(Family[_HC]):
    """HistogramFamily is a histogram with its children, e.g. ``Provider.histogram``."""

    __slots__ = ()

    def observe(self, value: float) -> None:
        """observe records on a label-less histogram; with labels it is dropped (bind them)."""
        self.default().observe(value)


class Core:
    """Core is the backend-independent state of one provider, e.g. its declared metrics.

    Args:
        common_labels: labels added to every series (``[service] labels``).
        max_label_sets: distinct label sets per metric before folding into the overflow series.
        logger: where the guard's one warning per metric goes.
    """

    __slots__ = (
        "_folded",
        "_lock",
        "_metrics",
        "_rejects",
        "_warned",
        "common",
        "common_names",
        "common_values",
        "logger",
        "max_label_sets",
    )

    def __init__(
        self,
        *,
        common_labels: Mapping[str, str] | None = None,
        max_label_sets: int = 2000,
        logger: Logger | None = None,
    ) -> None:
        if max_label_sets < 1:
            raise ConfigError(
                "max_label_sets must be at least 1",
                key=key_name(MetricsSettings, "max_label_sets"),
                value=max_label_sets,
            )
        common = dict(common_labels or {})
        for name, value in common.items():
            check_label_name("[service] labels", name)
            if not isinstance(value, str):
                raise ConfigError(
                    f"common label {name!r} must be a string",
                    key=key_name(ServiceSettings, "labels"),
                    value=value,
                )
        self.common: tuple[tuple[str, str], ...] = tuple(sorted(common.items()))
        self.common_names: tuple[str, ...] = tuple(n for n, _ in self.common)
        self.common_values: tuple[str, ...] = tuple(v for _, v in self.common)
        self.max_label_sets = max_label_sets
        self.logger: Logger = logger if logger is not None else NopLogger()
        self._metrics: dict[str, tuple[Declaration, object]] = {}
        self._warned: set[str] = set()
        self._folded: Counter | None = None
        self._rejects: dict[str, Counter] = {}
        self._lock = threading.Lock()

    def declare(self, decl: Declaration, make: Callable[[Declaration], _F]) -> _F:
        """declare returns the metric of *decl*, made by *make* the first time.

        Raises:
            DuplicateMetricError: the name was declared before with another shape.
            ConfigError: a declared label is also a common label, or the name is one of the
                process collector's (`kitobs.contract.PROCESS_FAMILIES`).
        """
        family = decl.prometheus_name
        if decl.kind == "counter":
            family = family.removesuffix("_total")
        if family in PROCESS_FAMILIES and not _builtin(decl):
            raise ConfigError(
                f"metric {decl.name!r}: {family!r} is a process metric kitobs exports "
                f"itself (process_metrics); two families of one name break the scrape",
                allowed=f"another name, e.g. with your service's prefix: {'myapp_' + decl.name!r}",
            )
        with self._lock:
            known = self._metrics.get(decl.name)
            if known is not None:
                old, metric = known
                if old.shape != decl.shape:
                    raise DuplicateMetricError(
                        f"metric {decl.name!r} is already declared as {old.kind} "
                        f"unit={old.unit!r} labels={old.labels} buckets={old.buckets}; "
                        f"now as {decl.kind} unit={decl.unit!r} labels={decl.labels} "
                        f"buckets={decl.buckets}"
                    )
                return cast("_F", metric)
            clash = set(decl.labels) & set(self.common_names)
            if clash:
                raise ConfigError(
                    f"metric {decl.name!r}: label(s) {sorted(clash)} are also common labels "
                    f"from [service] labels",
                    key=key_name(ServiceSettings, "labels"),
                )
            metric = make(decl)
            self._metrics[decl.name] = (decl, metric)
            folded = self._folded
            if folded is not None and decl.labels and decl.name not in _SELF_NAMES:
                # The metric's folded-label-sets series exists at zero from declaration, so a
                # dashboard shows 0 rather than "no data".
                folded.labels(decl.prometheus_name)
            return metric

    def metrics(self) -> list[tuple[Declaration, object]]:
        """metrics lists the declared metrics in declaration order, for collection."""
        return list(self._metrics.values())

    def lookup(self, name: str) -> tuple[Declaration, object] | None:
        """lookup finds a declared metric by base or Prometheus name."""
        found = self._metrics.get(name)
        if found is not None:
            return found
        for decl, metric in self._metrics.values():
            if decl.prometheus_name == name:
                return decl, metric
        return None

    def set_dropped(self, dropped: Callable[[str, str], Counter]) -> None:
        """set_dropped wires the backend's ``dropped`` for the recording drops, present at 0.

        Each of `kitobs.contract.RECORD_DROP_REASONS` gets its ``signal="metrics"`` child now.
        """
        self._rejects = {reason: dropped("metrics", reason) for reason in RECORD_DROP_REASONS}

    def rejected(self, decl: Declaration, reason: str, value: object) -> None:
        """rejected counts one recording dropped for *reason*; warns once per metric and reason.

        It is called from the recording path, so it never raises.
        """
        with contextlib.suppress(Exception):
            counter = self._rejects.get(reason)
            if counter is not None:
                counter.add(1.0)
            key = f"{reason}:{decl.name}"
            if key in self._warned:
                return
            self._warned.add(key)
            if reason == "unbound_labels":
                msg = (
                    "metric has labels but was recorded without them; nothing is recorded: "
                    "bind them with labels(...) or with_labels(...)"
                )
                detail: object = decl.labels
            else:
                msg = "metric value dropped: not a finite number (or a negative counter delta)"
                detail = repr(value)[:100]
            self.logger.log(
                "level",
                "warn",
                "msg",
                msg,
                "metric",
                decl.prometheus_name,
                "reason",
                reason,
                "labels" if reason == "unbound_labels" else "value",
                detail,
            )

    def declare_self_metrics(self, declare: Callable[[MetricSpec[Counter]], Counter]) -> Counter:
        """declare_self_metrics declares and wires a provider's self-metrics; returns the first.

        *declare* is the provider's own ``declare``. It declares
        ``kitobs_telemetry_dropped_total`` with the ``queue_full`` series of each of
        `SELF_SIGNALS` and the recording-drop series at zero, and
        ``kitobs_label_sets_folded_total``; the folds and recording drops are then counted there.
        Every backend calls it once at the end of building its core, e.g.
        ``self._dropped_family = self._core.declare_self_metrics(self.declare)``.
        """
        dropped = declare(TELEMETRY_DROPPED)
        for signal in SELF_SIGNALS:
            dropped.labels(signal, "queue_full")
        self.set_dropped(lambda signal, reason: dropped.labels(signal, reason))
        self.set_folded(declare(LABEL_SETS_FOLDED))
        return dropped

    def set_folded(self, counter: Counter) -> None:
        """set_folded wires ``kitobs_label_sets_folded_total`` once the backend declared it."""
        self._folded = counter

    def folded(self, decl: Declaration, values: tuple[str, ...]) -> None:
        """folded counts one label set folded into the overflow series; warns once per metric."""
        folded = self._folded
        if folded is not None and decl.name != LABEL_SETS_FOLDED.name:
            folded.labels(decl.prometheus_name).add(1.0)
        if decl.name not in self._warned:
            self._warned.add(decl.name)
            # Recording never raises into user code, not even through a broken logger.
            with contextlib.suppress(Exception):
                self.logger.log(
                    "level",
                    "warn",
                    "msg",
                    "metric has too many label sets; new ones fold into the overflow series",
                    "metric",
                    decl.prometheus_name,
                    "max_label_sets",
                    self.max_label_sets,
                    "labels",
                    dict(zip(decl.labels, values, strict=True)),
                )


def _builtin(decl: Declaration) -> bool:
    """Whether *decl* is one of the process collector's own declarations (not a user's)."""
    from kitobs.metrics.process import DECLARATIONS  # here: process imports this module

    return any(decl is known for known in DECLARATIONS)


class Declaring:
    """Declaring is the part of a `kitobs.metrics.Provider` that family-based backends share.

    A backend mixes it in, defines ``_make(decl)`` (the family of one `Declaration`, made or
    found through its `Core`) and sets ``_dropped_family`` to its declared
    ``kitobs_telemetry_dropped_total``; it then answers ``counter``, ``gauge``, ``histogram``,
    ``declare`` and ``dropped`` the same way as every other backend. A gauge's *callback* is
    stored on its family and read by the backend at collection time.
    """

    __slots__ = ()

    _dropped_family: Counter

    def _make(self, decl: Declaration) -> Counter | Gauge | Histogram:
        raise NotImplementedError

    def counter(
        self, name: str, *, help: str, unit: str = "", labels: Sequence[str] = ()
    ) -> Counter:
        """counter declares a counter, e.g. ``counter("jobs", help="Jobs run.")``."""
        made = self._make(declaration(name, "counter", help=help, unit=unit, labels=labels))
        return cast("Counter", made)

    def gauge(
        self,
        name: str,
        *,
        help: str,
        unit: str = "",
        labels: Sequence[str] = (),
        callback: GaugeCallback | None = None,
    ) -> Gauge:
        """gauge declares a gauge, e.g. ``gauge("queue_depth", help="…", callback=q.qsize)``."""
        made = self._make(declaration(name, "gauge", help=help, unit=unit, labels=labels))
        if callback is not None:
            cast("Family[Bound]", made).callback = callback
        return cast("Gauge", made)

    def histogram(
        self,
        name: str,
        *,
        help: str,
        unit: str = "",
        labels: Sequence[str] = (),
        buckets: Sequence[float] | None = None,
    ) -> Histogram:
        """histogram declares a histogram, e.g. ``histogram("job_duration", unit="seconds")``."""
        decl = declaration(name, "histogram", help=help, unit=unit, labels=labels, buckets=buckets)
        return cast("Histogram", self._make(decl))

    def declare(self, spec: MetricSpec[InstrumentT]) -> InstrumentT:
        """declare declares a contract metric, e.g. ``declare(contract.ENDPOINT_DURATION)``."""
        return cast("InstrumentT", self._make(from_spec(spec)))

    def dropped(self, signal: str, reason: str) -> Counter:
        """dropped gives ``kitobs_telemetry_dropped_total{signal,reason}``'s bound child."""
        return self._dropped_family.labels(signal, reason)
