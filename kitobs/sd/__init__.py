"""Service discovery: instances, instancers and balancers (go-kit's ``sd`` model)."""

from kitobs.sd.core import Instance, RoundRobin, StaticInstancer

__all__ = ["Instance", "RoundRobin", "StaticInstancer"]
