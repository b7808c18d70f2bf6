"""The Kit of the recipe servers: exemplars on, a JSON logger on stdout, Zipkin spans.

The recipe servers mount the exposition pages INSIDE the instrumented app, as README and
docs/transports.md show, so ``transport.http.exclude_paths`` is what keeps scrapes unrecorded.
``KITOBS_TRANSPORT_*`` variables in the environment configure ``[transport.http]``.
"""

from __future__ import annotations

import os
import sys

from kitobs import log
from kitobs.config import load
from kitobs.kit import Kit
from kitobs.metrics import prometheus
from kitobs.tracing import current_ids, current_sampled_ids
from kitobs.tracing._batch import BatchProcessor
from kitobs.tracing._tracer import Tracer
from kitobs.tracing.zipkin import Exporter


def make_kit() -> Kit:
    """make_kit builds the recipe servers' Kit from the environment the test set."""
    service = os.environ.get("KITOBS_TESTAPP_SERVICE", "app")
    processor = BatchProcessor(
        Exporter(os.environ["KITOBS_TESTAPP_ZIPKIN"], service_name=service), flush_interval=0.05
    )
    env = {k: v for k, v in os.environ.items() if k.startswith("KITOBS_TRANSPORT_")}
    return Kit(
        load(path=None, env=env, search=False),
        logger=log.new(sys.stdout, format="json", trace_context=current_ids),
        metrics=prometheus.Provider(exemplar_context=current_sampled_ids),
        tracer=Tracer(processor=processor),
    )


KIT = make_kit()
