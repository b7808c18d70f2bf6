"""The metrics kitobs reports about itself, and the family names its process collector takes.

Every metrics backend declares these through `kitobs.metrics` (``Core.declare_self_metrics``), so
they live here, in the metrics package, rather than in the catalogue the dashboards are generated
from; `kitobs.contract` lists them in its catalogue and re-exports them from there, as the same
objects. Example::

    >>> TELEMETRY_DROPPED.prometheus_name
    'kitobs_telemetry_dropped_total'
    >>> sorted(RECORD_DROP_REASONS)
    ['invalid_value', 'unbound_labels']
    >>> "process_open_fds" in PROCESS_FAMILIES
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kitobs.metrics import MetricSpec

if TYPE_CHECKING:
    from kitobs.metrics import Counter

__all__ = ["LABEL_SETS_FOLDED", "PROCESS_FAMILIES", "RECORD_DROP_REASONS", "TELEMETRY_DROPPED"]

#: ``kitobs_telemetry_dropped_total{signal,reason}``: what kitobs dropped rather than block.
TELEMETRY_DROPPED: MetricSpec[Counter] = MetricSpec(
    name="kitobs_telemetry_dropped",
    kind="counter",
    unit="",
    help="Telemetry kitobs dropped instead of blocking or failing, by signal and reason.",
    labels=("signal", "reason"),
    otel="kitobs.telemetry.dropped",
)
#: ``kitobs_label_sets_folded_total{metric}``: label sets the cardinality guard folded.
LABEL_SETS_FOLDED: MetricSpec[Counter] = MetricSpec(
    name="kitobs_label_sets_folded",
    kind="counter",
    unit="",
    help="Label sets folded into the overflow series by the cardinality guard.",
    labels=("metric",),
    otel="kitobs.label_sets.folded",
)

#: RECORD_DROP_REASONS are the ``reason`` values of ``kitobs_telemetry_dropped_total{signal=
#: "metrics"}`` that every metrics backend counts when a recording is dropped, with their meaning.
#: Every provider has both series from the start (at zero).
RECORD_DROP_REASONS: dict[str, str] = {
    "invalid_value": "a value that is not a finite number, or a negative counter delta",
    "unbound_labels": "add, set or observe on a labelled metric without binding its labels",
}

#: PROCESS_FAMILIES are the metric families of the process collector (`kitobs.metrics.process`,
#: prometheus_client's names, counters without ``_total``); a declared metric may not take one.
PROCESS_FAMILIES: frozenset[str] = frozenset(
    {
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
        "python_gc_objects_collected",
        "python_gc_objects_uncollectable",
        "python_gc_collections",
        "python_info",
    }
)
