"""One table chooses the backend: the schema's names, and a choice imports only its module."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kitobs import config
from kitobs.config import ExpvarSettings, StatsdSettings, key_name, load
from kitobs.errors import ConfigError
from kitobs.metrics import memory
from kitobs.metrics.config import BACKENDS, BuildContext, provider_from_settings
from kitobs.tracing.config import EXPORTERS

ROOT = Path(__file__).resolve().parents[2]


def _choices(dotted: str) -> tuple[str, ...]:
    (info,) = [k for k in config.all_keys() if k.dotted == dotted]
    assert info.choices is not None
    return info.choices


def test_the_metrics_table_names_the_schema_choices() -> None:
    assert tuple(BACKENDS) == _choices("metrics.backend")


def test_the_exporter_table_names_the_schema_choices() -> None:
    assert tuple(EXPORTERS) == _choices("tracing.exporter")


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_module_builds_its_backend_from_settings(name: str) -> None:
    module = importlib.import_module(BACKENDS[name])
    settings = load(
        env={"KITOBS_METRICS_BACKEND": name, "KITOBS_METRICS_PROCESS_METRICS": "false"},
        path=None,
        search=False,
    )
    context = BuildContext(meter_provider=None)
    if name == "otel":
        from opentelemetry.sdk.metrics import MeterProvider

        context = BuildContext(meter_provider=MeterProvider())
    if name == "statsd":
        settings = load(
            env={"KITOBS_METRICS_BACKEND": name, "KITOBS_METRICS_STATSD_ADDRESS": "127.0.0.1:9"},
            path=None,
            search=False,
        )
    provider = module.from_settings(settings, context)
    try:
        assert type(provider).__module__ == BACKENDS[name]
    finally:
        provider.close()


def test_a_hand_built_settings_with_an_unknown_backend_names_the_table() -> None:
    settings = load(path=None, search=False)
    metrics = type(settings.metrics)(backend=("graphite",))
    with pytest.raises(ConfigError) as err:
        provider_from_settings(type(settings)(metrics=metrics))
    assert "metrics.backend" in str(err.value)
    assert "graphite" in str(err.value)
    for name in BACKENDS:
        assert name in str(err.value)


ONLY_ITS_OWN = """
import json, sys
from kitobs.config import load
from kitobs.metrics.config import provider_from_settings

name = sys.argv[1]
env = {"KITOBS_METRICS_BACKEND": name, "KITOBS_METRICS_MULTIPROCESS": "off"}
provider_from_settings(load(env=env, path=None, search=False)).close()
watched = ("kitobs.metrics.", "prometheus_client", "opentelemetry")
print(json.dumps(sorted(m for m in sys.modules if m.startswith(watched))))
"""


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("expvar", {"kitobs.metrics.expvar", "kitobs.metrics.multiprocess"}),
        ("memory", {"kitobs.metrics.memory"}),
        ("discard", {"kitobs.metrics.discard"}),
        ("prometheus", {"kitobs.metrics.prometheus"}),
    ],
)
def test_building_a_backend_imports_only_its_own_module(name: str, allowed: set[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(ONLY_ITS_OWN), name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert BACKENDS[name] in loaded
    other_backends = (set(BACKENDS.values()) - allowed) & loaded
    assert other_backends == set()
    assert not any(m.startswith(("prometheus_client", "opentelemetry.sdk")) for m in loaded)


def test_key_name_comes_from_the_schema() -> None:
    assert key_name(StatsdSettings, "address") == "metrics.statsd.address"
    assert key_name(ExpvarSettings, "listen") == "metrics.expvar.listen"
    with pytest.raises(KeyError, match="no configuration key 'adress'"):
        key_name(StatsdSettings, "adress")
    with pytest.raises(KeyError):
        key_name(memory.Provider, "address")
