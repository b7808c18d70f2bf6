"""zipkin: a capture receiver that answers like a Zipkin collector, and a schema validator.

No Zipkin server can run here, so tests POST to `Receiver`: a stdlib ``ThreadingHTTPServer`` on
127.0.0.1, port 0, that records every ``POST /api/v2/spans`` and answers 202 (400 for a body that
is not a JSON array, 404 for other paths). With ``hang=True`` it accepts requests and never
answers, like a stuck collector. `validate` checks a body against ``ListOfSpans`` of the Zipkin v2
API spec (``tests/specs/zipkin/zipkin2-api.yaml``, Swagger 2.0, so JSON Schema Draft 4) and adds the
anchored hex checks the spec's unanchored patterns miss.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

__all__ = ["SPEC", "Receiver", "receiver", "validate", "validator"]

#: The Zipkin v2 API spec, vendored with its licence (``tests/specs/zipkin``).
SPEC = Path(__file__).resolve().parents[1] / "specs" / "zipkin" / "zipkin2-api.yaml"

_TRACE_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{16}")
_ID = re.compile(r"[0-9a-f]{16}")


@functools.cache
def validator() -> jsonschema.Draft4Validator:
    """validator builds the ListOfSpans validator from the spec, once."""
    spec = yaml.safe_load(SPEC.read_text())
    schema = dict(spec["definitions"]["ListOfSpans"])
    schema["definitions"] = spec["definitions"]
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())


def validate(body: bytes | str) -> list[dict[str, Any]]:
    """validate parses *body*, raises AssertionError listing every problem, returns the spans."""
    spans = json.loads(body)
    problems = [
        f"{'/'.join(str(p) for p in err.absolute_path)}: {err.message}"
        for err in validator().iter_errors(spans)
    ]
    for i, span in enumerate(spans if isinstance(spans, list) else []):
        if not _TRACE_ID.fullmatch(str(span.get("traceId", ""))):
            problems.append(f"{i}/traceId: not 16 or 32 lowercase hex: {span.get('traceId')!r}")
        for key in ("id", "parentId"):
            if key in span and not _ID.fullmatch(str(span[key])):
                problems.append(f"{i}/{key}: not 16 lowercase hex: {span[key]!r}")
        problems.extend(f"{i}/{key}: null" for key, value in span.items() if value is None)
    if problems:
        raise AssertionError("body does not validate as ListOfSpans:\n" + "\n".join(problems))
    return spans  # type: ignore[no-any-return]


class Receiver:
    """Receiver records Zipkin POSTs on 127.0.0.1, e.g. ``Receiver().url`` for an exporter."""

    def __init__(self, *, hang: bool = False) -> None:
        self.bodies: list[bytes] = []
        self.content_types: list[str] = []
        self.hang = hang
        self._released = threading.Event()
        self._got = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if outer.hang:
                    outer._released.wait(30)
                    return
                if self.path != "/api/v2/spans":
                    self._answer(404)
                    return
                try:
                    ok = isinstance(json.loads(body), list)
                except ValueError:
                    ok = False
                if not ok:
                    self._answer(400)
                    return
                with outer._got:
                    outer.bodies.append(body)
                    outer.content_types.append(self.headers.get("Content-Type", ""))
                    outer._got.notify_all()
                self._answer(202)

            def _answer(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/api/v2/spans"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def spans(self) -> list[dict[str, Any]]:
        """spans validates every captured body and returns all their spans."""
        with self._got:
            bodies = list(self.bodies)
        return [span for body in bodies for span in validate(body)]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """wait_for waits until *count* spans arrived (or gives up) and returns them, validated."""
        with self._got:
            self._got.wait_for(
                lambda: sum(len(json.loads(b)) for b in self.bodies) >= count, timeout
            )
        return self.spans()

    def close(self) -> None:
        """close stops the server and frees its port."""
        self._released.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """receiver is a capture receiver answering 202, closed after the test."""
    rec = Receiver()
    try:
        yield rec
    finally:
        rec.close()
