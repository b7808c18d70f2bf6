"""Service discovery and client-side balancing (go-kit's ``sd`` and ``sd/lb`` model).

An `Instancer` publishes the complete set of a service's `Instance`s, or an error; one Instancer
may feed many `Endpointer`s, each turning every set into endpoints through a factory (endpoints
of surviving instances are kept, vanished ones closed, the last good set kept on errors). A
`Balancer` (`RoundRobin`, `WeightedRandom`, `LeastOutstanding`) picks one endpoint per call, and
`retry` / `retry_async` try several within one deadline (`retry_from_config` takes the
attempts and the timeout from the ``[sd]`` settings). A `Registrar` announces this process.

Backends, each in its own module with its client library as an extra: `kitobs.sd.dnssrv`
(``kitobs[dnssrv]``), `kitobs.sd.etcd` (``kitobs[http]``: etcd's v3 JSON gateway over httpx) and
`kitobs.sd.zk` (``kitobs[zookeeper]``). Any other registry plugs in as an `Instancer`; build it
on `InstanceCache`.

What is recorded, on ``kit=`` or the default Kit (resolved at first use):

- ``kitobs_sd_instances{service}``, ``kitobs_sd_events_total{service,outcome}`` (update, error),
  ``kitobs_sd_last_update_timestamp_seconds{service}`` and a warn log line when a service drops
  to zero instances or an Instancer loses its server (`InstanceCache`);
- ``kitobs_sd_factory_errors_total{service}`` (`Endpointer`);
- ``kitobs_lb_attempts_total{service,outcome}`` (success, error, timeout, no_endpoints),
  ``kitobs_lb_attempts_per_call{service}``, ``kitobs_lb_no_endpoints_total{service}`` and one
  span per attempt, ``kitobs.sd.attempt``, with the attempt number and the instance (`retry`).

Example::

    >>> from kitobs.sd import Endpointer, Instance, RoundRobin, StaticInstancer, retry
    >>> from kitobs.kit import Kit
    >>> from kitobs.config import load
    >>> from kitobs.log import nop
    >>> from kitobs.metrics import memory
    >>> from kitobs.tracing import Tracer
    >>> kit = Kit(load(path=None, env={}, search=False), logger=nop(), metrics=memory.Provider(),
    ...           tracer=Tracer())
    >>> instancer = StaticInstancer([Instance("10.0.0.5", 80), Instance("10.0.0.6", 80)],
    ...                             service="users", kit=kit)
    >>> endpointer = Endpointer(instancer, lambda i: ((lambda req: f"{i.address} {req}"), None),
    ...                         kit=kit)
    >>> call = retry(RoundRobin(endpointer.endpoints), 3, 1.0, service="users", kit=kit)
    >>> call("hi"), call("hi")
    ('10.0.0.5 hi', '10.0.0.6 hi')
"""

from kitobs.sd.core import (
    Balancer,
    Endpointer,
    Event,
    Instance,
    InstanceCache,
    Instancer,
    LeastOutstanding,
    Listener,
    NoEndpointsError,
    Registrar,
    RetryError,
    RoundRobin,
    StaticInstancer,
    WeightedRandom,
    parse_instance,
    retry,
    retry_async,
    retry_async_from_config,
    retry_from_config,
)

__all__ = [
    "Balancer",
    "Endpointer",
    "Event",
    "Instance",
    "InstanceCache",
    "Instancer",
    "LeastOutstanding",
    "Listener",
    "NoEndpointsError",
    "Registrar",
    "RetryError",
    "RoundRobin",
    "StaticInstancer",
    "WeightedRandom",
    "parse_instance",
    "retry",
    "retry_async",
    "retry_async_from_config",
    "retry_from_config",
]
