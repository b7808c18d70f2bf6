"""harness_statsd: read `kitobs.metrics.statsd` output back offline, for the conformance suite.

`Reader` parses the lines `Provider.write_to` writes (any flavour) the way a statsd server would:
counters summed and scaled back by their sample rate, gauges set (or moved, for a signed value),
timers and histograms kept as observations (timers converted back from milliseconds to
seconds). `CONFORMANCE` maps backend names to harness factories for
``tests/metrics/test_conformance.py`` (merged into ``tests.metrics.harnesses.HARNESSES``).
"""

from __future__ import annotations

import functools
import io
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from kitobs import contract
from kitobs.metrics import statsd, teststat

__all__ = ["CONFORMANCE", "Line", "Reader", "StatsdHarness", "parse_lines", "statsd_provider"]

# name[,k=v...]:value|type[|@rate][|#k:v,...]
_LINE = re.compile(
    r"^(?P<name>[^:,|#@\s]+)(?P<itags>(,[^,=:|\s]+=[^,=:|\s]*)*):(?P<value>[^|]+)"
    r"\|(?P<type>c|g|ms|h|d|s)(\|@(?P<rate>[0-9.eE-]+))?(\|#(?P<tags>[^|\s]*))?$"
)


@dataclass(frozen=True)
class Line:
    """Line is one parsed statsd line, e.g. ``jobs:3|c|@0.5|#queue:fast``."""

    name: str
    value: str
    type: str
    rate: float
    tags: tuple[tuple[str, str], ...]


def parse_lines(data: bytes) -> list[Line]:
    """parse_lines parses newline-separated statsd lines; a line that does not parse fails."""
    lines = []
    for raw in data.decode().split("\n"):
        if not raw:
            continue
        m = _LINE.match(raw)
        if m is None:
            raise AssertionError(f"not a statsd line: {raw!r}")
        tags: list[tuple[str, str]] = []
        for itag in (m["itags"] or "").split(",")[1:]:
            k, _, v = itag.partition("=")
            tags.append((k, v))
        for tag in (m["tags"] or "").split(",") if m["tags"] else []:
            k, _, v = tag.partition(":")
            tags.append((k, v))
        rate = float(m["rate"]) if m["rate"] else 1.0
        lines.append(Line(m["name"], m["value"], m["type"], rate, tuple(tags)))
    return lines


@dataclass
class Reader:
    """Reader accumulates a provider's output like a statsd server, e.g. ``Reader(p).counter()``.

    Keys are ``name`` plus sorted tags (``name;k=v``), as the statsd daemon names them.
    """

    provider: statsd.Provider
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    timers: dict[str, list[float]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    def read(self) -> Reader:
        """read takes everything pending from the provider (`Provider.write_to`) and applies it."""
        out = io.BytesIO()
        self.provider.write_to(out)
        self.apply(out.getvalue())
        return self

    def apply(self, data: bytes) -> None:
        """apply parses *data* and updates the aggregates."""
        for line in parse_lines(data):
            key = line.name + "".join(f";{k}={v}" for k, v in sorted(line.tags))
            self.types[key] = line.type
            value = float(line.value)
            if line.type == "c":
                self.counters[key] = self.counters.get(key, 0.0) + value / line.rate
            elif line.type == "g":
                if line.value[0] in "+-":
                    self.gauges[key] = self.gauges.get(key, 0.0) + value
                else:
                    self.gauges[key] = value
            else:
                self.timers.setdefault(key, []).append(value)

    def counter(self, key: str) -> float:
        """counter reads the counter *key* after taking pending output, e.g. ``"jobs"``."""
        return self.read().counters.get(key, 0.0)

    def gauge(self, key: str) -> float:
        """gauge reads the gauge *key* after taking pending output."""
        return self.read().gauges.get(key, math.nan)

    def observations(self, key: str) -> list[float]:
        """observations reads the observations of *key* (timers in seconds)."""
        self.read()
        scale = 1000.0 if self.types.get(key) == "ms" else 1.0
        return [v / scale for v in self.timers.get(key, [])]


def statsd_provider(**kwargs: object) -> statsd.Provider:
    """statsd_provider builds an offline provider (no socket), e.g. for `Reader`."""
    return statsd.Provider(None, **kwargs)  # type: ignore[arg-type]


class StatsdHarness:
    """StatsdHarness is an offline provider of one flavour read back through `Reader`.

    It matches ``tests.metrics.harnesses.Harness``: names are base names, labels by name.
    """

    def __init__(self, flavor: str) -> None:
        # queue_size: the conformance histogram takes 12,345 observations between two reads.
        self.provider = statsd_provider(flavor=flavor, queue_size=1_000_000)
        self._flavor = flavor
        self._reader = Reader(self.provider)

    def _key(self, name: str, labels: dict[str, str]) -> str:
        dotted = contract.statsd_name(name)
        if self._flavor == "etsy":
            found = self.provider._core.lookup(name)
            order = found[0].labels if found else tuple(labels)
            # etsy name segments carry only [A-Za-z0-9_-]; the rest became "_" when sent.
            values = (re.sub(r"[^\w\-]", "_", labels.get(k, ""), flags=re.ASCII) for k in order)
            return ".".join([dotted, *(v for v in values if v)])
        return dotted + "".join(f";{k}={v}" for k, v in sorted(labels.items()) if v)

    def counter(self, name: str, **labels: str) -> float:
        """counter reads a counter series: the sum of every line sent, scaled by its rate."""
        return self._reader.counter(self._key(name, labels))

    def gauge(self, name: str, **labels: str) -> float:
        """gauge reads a gauge series: the last absolute value sent."""
        return self._reader.gauge(self._key(name, labels))

    def histogram(self, name: str, **labels: str) -> teststat.HistogramReading:
        """histogram reads a histogram series: count, sum and exact quantiles of the values."""
        seen = self._reader.observations(self._key(name, labels))
        quantiles: dict[float, float] = {}
        if len(seen) > 1:
            cuts = statistics.quantiles(seen, n=1000, method="inclusive")
            quantiles = {q: cuts[round(q * 1000) - 1] for q in teststat.QUANTILES}
        return teststat.HistogramReading(count=len(seen), sum=math.fsum(seen), quantiles=quantiles)

    def close(self) -> None:
        """close releases the provider."""
        self.provider.close()


#: CONFORMANCE: backend name → harness factory, merged into ``tests.metrics.harnesses``.
CONFORMANCE: dict[str, Callable[[], StatsdHarness]] = {
    f"statsd-{flavor}": functools.partial(StatsdHarness, flavor) for flavor in statsd.FLAVORS
}
