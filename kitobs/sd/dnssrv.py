"""DNS SRV discovery: an Instancer that looks a SRV name up every *refresh* seconds (dnspython).

Each record becomes an `Instance` with its priority and weight (RFC 2782): the `Endpointer`
serves only the lowest priority group, and `kitobs.sd.WeightedRandom` over
`Endpointer.weighted` spreads load by weight. The address is the target's A/AAAA record from
the answer's additional section when the server sent one, otherwise the target name. A failed
lookup publishes the error and keeps the last set (go-kit: "don't replace potentially-good with
bad"); a record with port 0 fails the whole lookup. Needs ``kitobs[dnssrv]``.

Example::

    instancer = dnssrv.Instancer("_users._tcp.example.internal", refresh=10.0)
    endpointer = Endpointer(instancer, factory)

`AsyncInstancer` does the same on asyncio (``dns.asyncresolver``): ``await instancer.start()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import dns.asyncresolver
import dns.rdatatype
import dns.resolver

from kitobs.errors import ConfigError
from kitobs.sd.core import Event, Instance, InstanceCache, Listener, _resolve

if TYPE_CHECKING:
    from kitobs.kit import Kit

__all__ = ["AsyncInstancer", "Instancer", "from_config", "resolver"]


def resolver(
    nameservers: Iterable[str] | None = None, *, port: int = 53, timeout: float = 2.0
) -> dns.resolver.Resolver:
    """resolver builds a dnspython resolver, e.g. ``resolver(["127.0.0.1"], port=5353)``.

    With *nameservers* None it reads the system's configuration (``/etc/resolv.conf``).
    *timeout* bounds one lookup, retries included.
    """
    if nameservers is None:
        r = dns.resolver.Resolver()
    else:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = list(nameservers)
    r.port = port
    r.lifetime = timeout
    return r


def _instances(answer: Any) -> frozenset[Instance]:
    addresses: dict[str, str] = {}
    response = answer.response
    for rrset in response.additional:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            for rdata in rrset:
                addresses.setdefault(rrset.name.to_text(), rdata.address)
    found = set()
    for record in answer:
        target = record.target.to_text()
        if record.port == 0:
            raise ValueError(f"SRV record {target} has port 0: the lookup is refused")
        found.add(
            Instance(
                addresses.get(target, target.rstrip(".")),
                int(record.port),
                priority=int(record.priority),
                weight=int(record.weight),
                raw=f"{target}:{record.port}",
            )
        )
    return frozenset(found)


def _check(name: str, refresh: float) -> None:
    if not name:
        raise ConfigError("the SRV name is empty: pass e.g. '_users._tcp.example.internal'")
    if refresh <= 0:
        raise ConfigError(f"refresh is {refresh}: give a positive number of seconds")


class Instancer:
    """Instancer polls SRV *name* every *refresh* seconds in a daemon thread.

    The first lookup runs in the constructor, so subscribers get a set (or the error) at once.
    *service* (default: *name*) labels the metrics. Implements `kitobs.sd.Instancer`.
    """

    def __init__(
        self,
        name: str,
        *,
        refresh: float = 30.0,
        resolver: dns.resolver.Resolver | None = None,
        service: str | None = None,
        kit: Kit | None = None,
    ) -> None:
        _check(name, refresh)
        self.name = name
        self.service = service if service is not None else name
        self._resolver = resolver if resolver is not None else dns.resolver.Resolver()
        self._refresh = refresh
        self._cache = InstanceCache(self.service, kit=kit)
        self._stopped = threading.Event()
        self.lookup()
        self._thread = threading.Thread(target=self._run, name=f"kitobs-dnssrv-{name}", daemon=True)
        self._thread.start()

    def lookup(self) -> Event:
        """lookup resolves the name now and publishes the result; returns it."""
        event: Event
        try:
            event = _instances(self._resolver.resolve(self.name, "SRV"))
        except Exception as error:  # dns.exception.DNSException, a port-0 record...
            event = error
        self._cache.publish(event)
        return event

    def _run(self) -> None:
        while not self._stopped.wait(self._refresh):
            self.lookup()

    def subscribe(self, listener: Listener) -> None:
        """subscribe adds *listener* and hands it the current state."""
        self._cache.subscribe(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """unsubscribe removes *listener*."""
        self._cache.unsubscribe(listener)

    def stop(self) -> None:
        """stop ends the polling thread and drops every listener."""
        self._stopped.set()
        self._cache.stop()


class AsyncInstancer:
    """AsyncInstancer is `Instancer` on asyncio: ``await AsyncInstancer(name).start()``.

    `start` runs the first lookup and starts the polling task; `stop` cancels it.
    """

    def __init__(
        self,
        name: str,
        *,
        refresh: float = 30.0,
        resolver: dns.asyncresolver.Resolver | None = None,
        service: str | None = None,
        kit: Kit | None = None,
    ) -> None:
        _check(name, refresh)
        self.name = name
        self.service = service if service is not None else name
        self._resolver = resolver if resolver is not None else dns.asyncresolver.Resolver()
        self._refresh = refresh
        self._cache = InstanceCache(self.service, kit=kit)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> AsyncInstancer:
        """start runs the first lookup and starts polling; returns the instancer."""
        await self.lookup()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def lookup(self) -> Event:
        """lookup resolves the name now and publishes the result; returns it."""
        event: Event
        try:
            event = _instances(await self._resolver.resolve(self.name, "SRV"))
        except Exception as error:  # dns.exception.DNSException, a port-0 record...
            event = error
        self._cache.publish(event)
        return event

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            await self.lookup()

    def subscribe(self, listener: Listener) -> None:
        """subscribe adds *listener* and hands it the current state."""
        self._cache.subscribe(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """unsubscribe removes *listener*."""
        self._cache.unsubscribe(listener)

    def stop(self) -> None:
        """stop cancels the polling task and drops every listener."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                task.cancel()
        self._cache.stop()


def from_config(name: str, kit: Kit | None = None, **overrides: Any) -> Instancer:
    """from_config builds an `Instancer` for SRV *name* from the ``[sd]`` settings.

    ``dns_nameservers`` (empty: the system's), ``dns_port`` and ``dns_refresh`` are used;
    keyword arguments of `Instancer` win. *kit* None uses the default Kit.
    """
    chosen = _resolve(kit)
    s = chosen.settings.sd
    params: dict[str, Any] = {
        "refresh": s.dns_refresh,
        "resolver": resolver(s.dns_nameservers or None, port=s.dns_port),
        "kit": chosen,
    }
    params.update(overrides)
    return Instancer(name, **params)
