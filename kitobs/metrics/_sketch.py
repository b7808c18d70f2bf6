"""The log-bucket sketch behind expvar's quantiles, shared by its one-process and its
multi-process forms.

A value ``v > 0`` counts in bucket ``ceil(log(v) / log(GAMMA))``, a negative one in the bucket of
``-v`` on the negative side, zero on its own. Bucket counts add, so sketches of several processes
merge exactly: the quantiles of the merged sketch are those of one sketch fed every observation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["ALPHA", "GAMMA", "LOG_GAMMA", "quantile"]

#: Relative accuracy of the sketch: a quantile is within 0.5% of a true sample value.
ALPHA = 0.005  # relative accuracy: quantiles within 0.5% of a true sample value
#: Ratio between the bounds of consecutive buckets, ``(1 + ALPHA) / (1 - ALPHA)``.
GAMMA = (1 + ALPHA) / (1 - ALPHA)
#: ``log(GAMMA)``, kept so a bucket index is one division.
LOG_GAMMA = math.log(GAMMA)


def quantile(
    neg: Mapping[int, float], zero: float, pos: Mapping[int, float], count: float, q: float
) -> float:
    """quantile estimates the *q* quantile (0..1) of a sketch of *count* values; NaN if empty."""
    if count <= 0:
        return math.nan
    rank = q * (count - 1)
    seen = 0.0
    for i in sorted(neg, reverse=True):
        seen += neg[i]
        if seen > rank:
            return -2.0 * GAMMA**i / (GAMMA + 1)
    seen += zero
    if seen > rank:
        return 0.0
    for i in sorted(pos):
        seen += pos[i]
        if seen > rank:
            return 2.0 * GAMMA**i / (GAMMA + 1)
    if not pos:  # pragma: no cover - only counts that do not add up (a file caught mid-write)
        return 0.0
    return 2.0 * GAMMA ** max(pos) / (GAMMA + 1)
