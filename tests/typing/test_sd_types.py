"""Type checks only (mypy): every Instancer, Registrar and Balancer matches its Protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kitobs.sd import (
    Balancer,
    Instancer,
    LeastOutstanding,
    Registrar,
    RoundRobin,
    StaticInstancer,
    WeightedRandom,
    dnssrv,
    etcd,
    zk,
)

Endpoint = Callable[[Any], Any]


def _static(i: StaticInstancer) -> Instancer:
    return i


def _dns(i: dnssrv.Instancer) -> Instancer:
    return i


def _dns_async(i: dnssrv.AsyncInstancer) -> Instancer:
    return i


def _etcd(i: etcd.Instancer) -> Instancer:
    return i


def _etcd_async(i: etcd.AsyncInstancer) -> Instancer:
    return i


def _zk(i: zk.Instancer) -> Instancer:
    return i


def _etcd_registrar(r: etcd.Registrar) -> Registrar:
    return r


def _zk_registrar(r: zk.Registrar) -> Registrar:
    return r


def _round_robin(b: RoundRobin[Endpoint]) -> Balancer[Endpoint]:
    return b


def _weighted(b: WeightedRandom[Endpoint]) -> Balancer[Endpoint]:
    return b


def _least(b: LeastOutstanding[Endpoint]) -> Balancer[Endpoint]:
    return b
