"""Service discovery: instances, instancers and balancers (go-kit's ``sd`` model)."""

from kitobs.sd.core import Endpointer, Instance, RoundRobin, StaticInstancer

__all__ = ["Endpointer", "Instance", "RoundRobin", "StaticInstancer"]
