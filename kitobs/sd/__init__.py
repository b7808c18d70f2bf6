"""Service discovery: instances, instancers and balancers (go-kit's ``sd`` model)."""

from kitobs.sd.core import (
    Endpointer,
    Instance,
    RetryError,
    RoundRobin,
    StaticInstancer,
    WeightedRandom,
    retry,
)

__all__ = [
    "Endpointer",
    "Instance",
    "RetryError",
    "RoundRobin",
    "StaticInstancer",
    "WeightedRandom",
    "retry",
]
