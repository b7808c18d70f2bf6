"""kitobs spans under a third-party OpenTelemetry runtime context (``OTEL_PYTHON_CONTEXT``).

kitobs reads and sets OpenTelemetry's context variable directly only when the runtime context is
the stock one; with any other it goes through OpenTelemetry's API. That path is run here in a
subprocess, with a runtime context of its own registered through a real entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

_RUNTIME = textwrap.dedent(
    """
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    class CountingRuntimeContext(ContextVarsRuntimeContext):
        '''The stock runtime context under another name, counting attaches and detaches.'''

        attached = 0
        detached = 0

        def attach(self, context):
            CountingRuntimeContext.attached += 1
            return super().attach(context)

        def detach(self, token):
            CountingRuntimeContext.detached += 1
            super().detach(token)
    """
)

_CHECK = textwrap.dedent(
    """
    import logging

    errors = []

    class Collect(logging.Handler):
        def emit(self, record):
            errors.append(record.getMessage())

    logging.getLogger("opentelemetry").addHandler(Collect())

    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.trace import TracerProvider

    from kitobs import _otel_context
    from kitobs.tracing import Tracer, current_ids, sampler
    from countingctx import CountingRuntimeContext

    assert _otel_context.context_var() is None, "the stock fast path must be off"
    sdk = TracerProvider().get_tracer("sdk")
    for tracer in (Tracer(), Tracer(sampler=sampler.AlwaysOff())):
        with tracer.span("outer") as outer:
            assert otel_trace.get_current_span() is outer
            assert current_ids() == outer.hex_ids()
            with sdk.start_as_current_span("theirs") as theirs:
                assert theirs.get_span_context().trace_id == outer.trace_id
                with tracer.span("inner") as inner:
                    assert inner.parent_id == theirs.get_span_context().span_id
            inner = tracer.span("again")
            with inner:
                assert otel_trace.get_current_span() is inner
            with inner:  # used once: not current again, and its exit restores nothing
                assert otel_trace.get_current_span() is outer
            with tracer.start_span("background"):  # never current
                assert otel_trace.get_current_span() is outer
            assert otel_trace.get_current_span() is outer
        assert otel_trace.get_current_span() is otel_trace.INVALID_SPAN
    assert CountingRuntimeContext.attached >= 8, CountingRuntimeContext.attached
    assert errors == [], errors
    print("ok", CountingRuntimeContext.attached, CountingRuntimeContext.detached)
    """
)


def test_spans_nest_and_restore_under_a_third_party_runtime_context(tmp_path: Path) -> None:
    (tmp_path / "countingctx.py").write_text(_RUNTIME)
    dist = tmp_path / "countingctx-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: countingctx\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[opentelemetry_context]\ncounting = countingctx:CountingRuntimeContext\n"
    )
    env = os.environ | {
        "OTEL_PYTHON_CONTEXT": "counting",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
    }
    result = subprocess.run(
        [sys.executable, "-c", _CHECK],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok "), result.stdout
    attached, detached = map(int, result.stdout.split()[1:])
    # Every span made current was detached once more than it was attached: the second exit of
    # "again" and the exit of "background" try, fail quietly, and log nothing.
    assert detached >= attached
