"""exit_app: the program the exit tests run, as a script and as gunicorn and uvicorn apps.

Every part of kitobs is configured from ``KITOBS_*`` variables the test sets (the process-wide
default Kit, as ``#: Seconds ``linger`` waits between ``ready`` and its return.
LINGER = 0.5


@kitobs.instrument`` uses it). ``python -m tests.support.exit_app MODE``:

- ``exit``: calls the instrumented ``work`` five times, logs a line, returns (a normal exit);
- ``wait``: the same, then prints ``ready`` and sleeps until a signal ends it;
- ``linger``: the same, then prints ``ready`` and returns `LINGER` seconds later, so the exporters
  have begun sending.

``wsgi`` (for gunicorn) and ``asgi`` (Starlette, instrumented, for uvicorn) call ``work`` once per
request to ``/work``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import kitobs
from kitobs.kit import default
from kitobs.transport import starlette as kitobs_starlette

#: Seconds ``linger`` waits between ``ready`` and its return.
LINGER = 0.5


@kitobs.instrument
def work(n: int) -> int:
    return n * 2


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = str(work(1)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def _work(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(work(1)))


asgi = kitobs_starlette.instrument(Starlette(routes=[Route("/work", _work)]), default())


def main(mode: str) -> None:
    for n in range(5):
        work(n)
    default().logger.info("msg", "five calls done")
    if mode in ("wait", "linger"):
        print("ready", flush=True)
        time.sleep(120 if mode == "wait" else LINGER)


if __name__ == "__main__":
    main(sys.argv[1])
