"""Every public kitobs module lists its public names in ``__all__``, and only those."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import kitobs


def _public_modules() -> list[str]:
    names = ["kitobs"]
    for info in pkgutil.walk_packages(kitobs.__path__, prefix="kitobs."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts[1:]):
            continue
        names.append(info.name)
    return sorted(names)


MODULES = _public_modules()


def _defined_here(module: ModuleType) -> set[str]:
    """Public functions and classes defined in *module* itself (not imported into it)."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if (inspect.isclass(value) or inspect.isfunction(value)) and (
            value.__module__ == module.__name__
        ):
            names.add(name)
    return names


def test_the_package_has_public_modules() -> None:
    assert "kitobs.config" in MODULES
    assert "kitobs.endpoint" in MODULES
    assert all("._" not in name for name in MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what the module lacks: {missing}"
    unlisted = sorted(_defined_here(module) - set(exported))
    assert not unlisted, f"{name} defines public names not in __all__: {unlisted}"


@pytest.mark.parametrize("name", MODULES)
def test_public_names_have_docstrings(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    for attr in getattr(module, "__all__", ()):
        value = getattr(module, attr)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{attr} has no docstring"


# Public names that moved stay importable from where they were, as the very same objects.
MOVED = [
    ("kitobs.contract", "kitobs.metrics.naming", "MetricKind"),
    ("kitobs.contract", "kitobs.metrics.naming", "UNITS"),
    ("kitobs.contract", "kitobs.metrics.naming", "check_base_name"),
    ("kitobs.contract", "kitobs.metrics.naming", "check_label_name"),
    ("kitobs.contract", "kitobs.metrics.naming", "prometheus_name"),
    ("kitobs.contract", "kitobs.metrics.naming", "statsd_name"),
    ("kitobs.contract", "kitobs.metrics", "MetricSpec"),
    ("kitobs.contract", "kitobs.metrics.selfmetrics", "TELEMETRY_DROPPED"),
    ("kitobs.contract", "kitobs.metrics.selfmetrics", "LABEL_SETS_FOLDED"),
    ("kitobs.contract", "kitobs.metrics.selfmetrics", "RECORD_DROP_REASONS"),
    ("kitobs.contract", "kitobs.metrics.selfmetrics", "PROCESS_FAMILIES"),
    ("kitobs.transport.grpc", "kitobs.contract", "OTHER_METHOD"),
    ("kitobs.transport.http", "kitobs.transport.core", "Tracer"),
    *(
        ("kitobs.transport.grpc", f"kitobs.transport.grpc.{module}", name)
        for module, names in {
            "labels": ("SYSTEM", "OTHER_METHOD", "SERVER_ERROR_CODES", "method_label"),
            "interceptors": (
                "ServerInterceptor",
                "AioServerInterceptor",
                "ClientInterceptor",
                "aio_client_interceptors",
            ),
            "codec": ("Codec", "JSONCodec", "DEFAULT_SERVICE"),
            "server": ("StatusError", "Server", "serve_endpoints"),
            "client": ("Client",),
        }.items()
        for name in names
    ),
]


@pytest.mark.parametrize(("old", "new", "attr"), MOVED)
def test_moved_names_are_reexported_from_their_old_module(old: str, new: str, attr: str) -> None:
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    assert attr in old_module.__all__
    assert attr in new_module.__all__
    assert getattr(old_module, attr) is getattr(new_module, attr)
