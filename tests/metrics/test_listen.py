"""The standalone servers' listen address: every spelling of "all interfaces" is refused unless
``metrics.allow_public_listen`` is set, and IPv6 loopback works.

Each server is bound for real and scraped with a real HTTP client (httpx).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import pytest

from kitobs.config import load
from kitobs.errors import ConfigError
from kitobs.metrics import Provider, expvar, prometheus
from kitobs.metrics.config import provider_from_settings

# Every way to write "all interfaces" that the socket layer accepts: glibc's inet_aton reads
# 0, 0x0, 0.0 and 000.0.0.0 as 0.0.0.0; ::ffff:0.0.0.0 is 0.0.0.0 through an IPv6 socket.
EVERY_INTERFACE = [
    "0.0.0.0",
    "0",
    "0x0",
    "0.0",
    "0.0.0",
    "000.0.0.0",
    "[::]",
    "[::0]",
    "[0:0::0]",
    "[::ffff:0.0.0.0]",
    "[::ffff:0:0]",
]

Make = Callable[..., Provider]
BACKENDS: dict[str, tuple[Make, str]] = {
    "prometheus": (prometheus.Provider, "/metrics"),
    "expvar": (expvar.Provider, "/debug/vars"),
}


def public_port() -> int:
    """A port of this test run's own range (``KITOBSTEST_PORT_OFFSET``) for binding every
    interface, where port 0 would do as well but should not be left to chance on a shared host."""
    return 18050 + int(os.environ.get("KITOBSTEST_PORT_OFFSET", "0") or 0)


def scrape(host: str, port: int, path: str) -> str:
    response = httpx.get(f"http://{host}:{port}{path}", timeout=5.0)
    assert response.status_code == 200
    return response.text


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("host", EVERY_INTERFACE)
def test_every_interface_is_refused(host: str, backend: str) -> None:
    make, _ = BACKENDS[backend]
    with pytest.raises(ConfigError, match="every interface") as err:
        make(listen=f"{host}:{public_port()}")
    assert f"metrics.{backend}.listen" in str(err.value)
    assert "metrics.allow_public_listen" in str(err.value)


@pytest.mark.parametrize("host", EVERY_INTERFACE)
def test_every_interface_is_refused_from_configuration(host: str) -> None:
    env = {"KITOBS_METRICS_PROMETHEUS_LISTEN": f"{host}:{public_port()}"}
    settings = load(env=env, path=None, search=False)
    with pytest.raises(ConfigError, match=r"metrics\.prometheus\.listen.*every interface"):
        provider_from_settings(settings)


@pytest.mark.parametrize("host", EVERY_INTERFACE)
def test_allow_public_listen_binds_every_interface(host: str) -> None:
    env = {
        "KITOBS_METRICS_BACKEND": "prometheus",
        "KITOBS_METRICS_PROMETHEUS_LISTEN": f"{host}:{public_port()}",
        "KITOBS_METRICS_ALLOW_PUBLIC_LISTEN": "true",
    }
    provider = provider_from_settings(load(env=env, path=None, search=False))
    try:
        provider.counter("jobs", help="Jobs.").add(3)
        assert isinstance(provider, prometheus.Provider)
        assert provider.address is not None
        assert provider.address[1] == public_port()
        # Every spelling here includes IPv4's every-interface address, so loopback reaches it.
        assert "jobs_total 3.0" in scrape("127.0.0.1", public_port(), "/metrics")
    finally:
        provider.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_ipv6_loopback_serves(backend: str) -> None:
    make, path = BACKENDS[backend]
    provider = make(listen="[::1]:0")
    try:
        provider.counter("jobs", help="Jobs.").add(2)
        address = provider.address  # type: ignore[attr-defined]
        assert address[0] == "::1"
        assert "jobs" in scrape("[::1]", address[1], path)
    finally:
        provider.close()


def test_ipv6_loopback_from_configuration() -> None:
    env = {"KITOBS_METRICS_BACKEND": "prometheus", "KITOBS_METRICS_PROMETHEUS_LISTEN": "[::1]:0"}
    provider = provider_from_settings(load(env=env, path=None, search=False))
    try:
        assert isinstance(provider, prometheus.Provider)
        assert provider.address is not None
        provider.counter("jobs", help="Jobs.").add(1)
        assert "jobs_total 1.0" in scrape("[::1]", provider.address[1], "/metrics")
    finally:
        provider.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", ""])
def test_ipv4_loopback_spellings_still_bind_ipv4(host: str) -> None:
    provider = prometheus.Provider(listen=f"{host}:0")
    try:
        assert provider.address is not None
        assert provider.address[0] == "127.0.0.1"
        assert scrape("127.0.0.1", provider.address[1], "/metrics").endswith("\n")
    finally:
        provider.close()


def test_a_host_that_does_not_resolve_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"metrics\.expvar\.listen.*cannot resolve"):
        expvar.Provider(listen="no-such-host.invalid:0")
