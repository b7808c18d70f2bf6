"""The otel metrics backend built from configuration exports over OTLP/HTTP, or fails at build.

The receiver is a real HTTP server on loopback that decodes each body as OTLP's protobuf
``ExportMetricsServiceRequest`` (opentelemetry-proto, installed with the OTLP exporter), so a
test passes only when the metric reached the wire with the configured headers. A missing extra
is simulated in a subprocess whose imports of that package fail, as they do when it is absent.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
import threading
import tomllib
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from kitobs.config import load
from kitobs.errors import ConfigError
from kitobs.log import capture
from kitobs.metrics.config import provider_from_settings

ROOT = Path(__file__).parents[2]


class Receiver:
    """An OTLP/HTTP metrics receiver: keeps each request's path, headers and decoded body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], ExportMetricsServiceRequest]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append(
                    (self.path, headers, ExportMetricsServiceRequest.FromString(body))
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def sums(self) -> dict[str, float]:
        """The last value of each sum metric received, by name."""
        out: dict[str, float] = {}
        for _, _, request in self.requests:
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        if metric.HasField("sum"):
                            for point in metric.sum.data_points:
                                value = point.as_double if point.HasField("as_double") else None
                                out[metric.name] = (
                                    value if value is not None else float(point.as_int)
                                )
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def export_through(env: Mapping[str, str]) -> None:
    """Build the otel backend from *env*, record, and close (which exports once more)."""
    settings = load(env={"KITOBS_METRICS_BACKEND": "otel", **env}, path=None, search=False)
    provider = provider_from_settings(settings)
    try:
        provider.counter("orders", help="Orders placed.", labels=("shop",)).labels("east").add(3)
    finally:
        provider.close()


def test_metrics_arrive_with_the_configured_endpoint_and_headers(receiver: Receiver) -> None:
    export_through(
        {
            "KITOBS_METRICS_OTEL_ENDPOINT": f"{receiver.url}/custom/metrics",
            "KITOBS_METRICS_OTEL_HEADERS": "x-api-key=s3cret,authorization=Bearer%20tok",
        }
    )
    assert receiver.requests, "nothing was exported"
    path, headers, _ = receiver.requests[-1]
    assert path == "/custom/metrics"
    assert headers["x-api-key"] == "s3cret"
    assert headers["authorization"] == "Bearer tok"
    assert headers["content-type"] == "application/x-protobuf"
    assert receiver.sums()["orders"] == 3.0


def test_the_standard_otlp_variables_are_honoured(receiver: Receiver) -> None:
    # The base endpoint gets the signal's path; the generic headers apply.
    export_through(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme",
        }
    )
    assert receiver.requests, "nothing was exported"
    path, headers, _ = receiver.requests[-1]
    assert path == "/v1/metrics"
    assert headers["x-tenant"] == "acme"
    assert receiver.sums()["orders"] == 3.0


def test_signal_specific_variables_win_and_kitobs_keys_win_over_both() -> None:
    base = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "a=1",
    }
    o = load(env=base, path=None, search=False).metrics.otel
    assert o.endpoint == "http://base:4318/v1/metrics"
    assert o.headers == {"a": "1"}
    specific = {
        **base,
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:4318/x",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "b=2",
    }
    o = load(env=specific, path=None, search=False).metrics.otel
    assert (o.endpoint, o.headers) == ("http://m:4318/x", {"b": "2"})
    own = {
        **specific,
        "KITOBS_METRICS_OTEL_ENDPOINT": "http://k/y",
        "KITOBS_METRICS_OTEL_HEADERS": "",
    }
    o = load(env=own, path=None, search=False).metrics.otel
    assert (o.endpoint, o.headers) == ("http://k/y", {})


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"]
)
def test_an_unsupported_protocol_is_a_config_error(variable: str) -> None:
    with pytest.raises(ConfigError, match=rf"metrics\.otel\.protocol.*{variable}"):
        load(env={variable: "grpc"}, path=None, search=False)


def test_header_values_are_not_shown_in_errors() -> None:
    with pytest.raises(ConfigError) as err:
        load(env={"KITOBS_METRICS_OTEL_HEADERS": "bad name=s3cret"}, path=None, search=False)
    assert "metrics.otel.headers" in str(err.value)
    assert "s3cret" not in str(err.value)


def test_an_endpoint_that_is_not_a_url_is_a_config_error() -> None:
    settings = load(
        env={"KITOBS_METRICS_BACKEND": "otel", "KITOBS_METRICS_OTEL_ENDPOINT": "127.0.0.1:4318"},
        path=None,
        search=False,
    )
    with pytest.raises(ConfigError, match=r"metrics\.otel\.endpoint"):
        provider_from_settings(settings)


# --- configurations whose metrics would go nowhere -------------------------------------------

BLOCKED_BUILD = """
import sys

class Missing:
    # An import of a blocked package fails as it does when the package is not installed.
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

BLOCKED = sys.argv[1].split(",")
sys.meta_path.insert(0, Missing())
from kitobs.config import load
from kitobs.errors import ConfigError
from kitobs.metrics.config import provider_from_settings

settings = load(env={"KITOBS_METRICS_BACKEND": "otel"}, path=None, search=False)
try:
    provider_from_settings(settings).close()
except ConfigError as err:
    print("ConfigError:", err)
else:
    print("built")
"""


def build_without(*packages: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(BLOCKED_BUILD), ",".join(packages)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_without_the_otlp_exporter_the_build_fails_naming_the_extra() -> None:
    out = build_without("opentelemetry.exporter.otlp.proto.http")
    assert out.startswith("ConfigError: metrics.backend:")
    assert "kitobs[otlp]" in out


def test_without_the_sdk_the_build_fails_naming_the_extra() -> None:
    out = build_without("opentelemetry.sdk")
    assert out.startswith("ConfigError: metrics.backend:")
    assert "kitobs[otel]" in out


def test_the_simulation_blocks_only_what_it_names() -> None:
    assert build_without("no_such_package_here") == "built\n"


USE_GLOBAL = """
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from kitobs.config import load
from kitobs.log import capture
from kitobs.metrics.config import provider_from_settings

env = {"KITOBS_METRICS_BACKEND": "otel", "KITOBS_METRICS_OTEL_USE_GLOBAL": "true"}
logger, records = capture.new(level="warn")
provider_from_settings(load(env=env, path=None, search=False), logger=logger)
metrics.set_meter_provider(MeterProvider())
provider_from_settings(load(env=env, path=None, search=False), logger=logger)
print(json.dumps(records))
"""


def test_use_global_without_a_global_provider_warns_once() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + USE_GLOBAL],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert len(records) == 1, records
    assert records[0]["level"] == "warn"
    assert "global MeterProvider" in records[0]["msg"]


def test_a_provider_built_without_readers_warns() -> None:
    from kitobs.metrics import otel

    logger, records = capture.new(level="warn")
    otel.Provider(logger=logger).close()
    assert [r["level"] for r in records] == ["warn"]
    assert "without a metric reader" in str(records[0]["msg"])


def test_the_all_extra_includes_otlp() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    (everything,) = extras["all"]
    assert "otlp" in everything.partition("[")[2].rstrip("]").split(",")


def test_config_show_hides_header_values(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kitobs.cli import main

    monkeypatch.setenv("KITOBS_METRICS_OTEL_HEADERS", "authorization=Bearer%20s3cret")
    monkeypatch.chdir(ROOT / "tests")  # no kitobs.toml or pyproject.toml here to pick up
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "metrics.otel.headers = {'authorization': '[REDACTED]'}" in out
    assert "s3cret" not in out
