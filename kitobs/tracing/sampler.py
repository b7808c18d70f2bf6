"""Samplers decide at span start whether a trace is recorded, by OpenTelemetry's names.

Each sampler implements `kitobs.tracing.Sampler`: ``sample(trace_id, parent_sampled)`` returns
whether the new span is sampled; *parent_sampled* is None for a root span. An unsampled span is
still current and still propagates its ids (sampled flag off); it is just not exported.

Names, as ``OTEL_TRACES_SAMPLER`` spells them: ``always_on``, ``always_off``, ``traceidratio``,
``parentbased_always_on``, ``parentbased_always_off``, ``parentbased_traceidratio``. The ratio
samplers keep a trace when the low 64 bits of its id fall below ``ratio * 2**64``, as the
OpenTelemetry SDK does, so both make the same decision for the same trace.

Example::

    >>> sampler = from_name("parentbased_traceidratio", 0.0)
    >>> sampler.sample(0x1234, None), sampler.sample(0x1234, True)
    (False, True)
"""

from __future__ import annotations

from kitobs.config import TracingSettings, key_name
from kitobs.errors import ConfigError
from kitobs.tracing._api import Sampler

__all__ = [
    "AlwaysOn",
    "AlwaysOff",
    "TraceIdRatio",
    "ParentBased",
    "NAMES",
    "from_name",
]

#: Sampler names accepted by `from_name`.
NAMES: tuple[str, ...] = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)

_LOW64 = (1 << 64) - 1


class AlwaysOn:
    """AlwaysOn samples every span, e.g. in development. Implements `kitobs.tracing.Sampler`."""

    __slots__ = ()

    def sample(self, trace_id: int, parent_sampled: bool | None) -> bool:
        """sample returns True."""
        return True


class AlwaysOff:
    """AlwaysOff samples no span, e.g. to keep ids in logs without exporting traces."""

    __slots__ = ()

    def sample(self, trace_id: int, parent_sampled: bool | None) -> bool:
        """sample returns False."""
        return False


class TraceIdRatio:
    """TraceIdRatio samples a fraction of traces by trace id, e.g. ``TraceIdRatio(0.1)``.

    Raises:
        ConfigError: *ratio* is not within 0..1.
    """

    __slots__ = ("_bound", "ratio")

    def __init__(self, ratio: float) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(
                "sampler ratio is out of range",
                key=key_name(TracingSettings, "sampler_arg"),
                value=ratio,
                allowed="a value from 0 to 1",
            )
        self.ratio = ratio
        self._bound = round(ratio * (1 << 64))

    def sample(self, trace_id: int, parent_sampled: bool | None) -> bool:
        """sample keeps the trace when its low 64 bits fall below the ratio's bound."""
        return trace_id & _LOW64 < self._bound


class ParentBased:
    """ParentBased follows the parent's decision and asks *root* for root spans.

    For example ``ParentBased(TraceIdRatio(0.1))`` samples 10% of new traces and every span of a
    trace whose caller sampled it.
    """

    __slots__ = ("root",)

    def __init__(self, root: Sampler) -> None:
        self.root = root

    def sample(self, trace_id: int, parent_sampled: bool | None) -> bool:
        """sample returns the parent's flag, or the root sampler's decision without a parent."""
        if parent_sampled is None:
            return self.root.sample(trace_id, None)
        return parent_sampled


def from_name(name: str, arg: float = 1.0) -> Sampler:
    """from_name builds a sampler from its OpenTelemetry name, e.g. ``from_name("always_on")``.

    *arg* is the ratio of the ``traceidratio`` samplers and ignored by the others.

    Raises:
        ConfigError: an unknown name or a ratio outside 0..1.
    """
    key = name.strip().lower()
    if key == "always_on":
        return AlwaysOn()
    if key == "always_off":
        return AlwaysOff()
    if key == "traceidratio":
        return TraceIdRatio(arg)
    if key == "parentbased_always_on":
        return ParentBased(AlwaysOn())
    if key == "parentbased_always_off":
        return ParentBased(AlwaysOff())
    if key == "parentbased_traceidratio":
        return ParentBased(TraceIdRatio(arg))
    raise ConfigError(
        "unknown sampler", key=key_name(TracingSettings, "sampler"), value=name, allowed=NAMES
    )
