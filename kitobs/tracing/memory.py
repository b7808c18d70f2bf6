"""memory records ended spans in a list, for tests: ``Tracer(processor=memory.Recorder())``.

`Recorder` is both a `kitobs.tracing.Processor` (spans arrive synchronously at ``on_end``) and a
`kitobs.tracing.Exporter` (behind the batching processor), so a test can check either path.

Example::

    >>> from kitobs.tracing import Tracer
    >>> recorder = Recorder()
    >>> with Tracer(processor=recorder).span("job"):
    ...     pass
    >>> [span.name for span in recorder.spans]
    ['job']
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kitobs.tracing import Span

__all__ = ["Recorder"]


class Recorder:
    """Recorder keeps every span it is given in ``spans``, e.g. to assert on names and ids."""

    __slots__ = ("_lock", "spans")

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._lock = threading.Lock()

    def on_end(self, span: Span) -> None:
        """on_end records one ended span."""
        with self._lock:
            self.spans.append(span)

    def export(self, spans: Sequence[Span], timeout: float) -> None:
        """export records a batch."""
        with self._lock:
            self.spans.extend(spans)

    def flush(self, timeout: float | None = None) -> bool:
        """flush returns True: nothing is ever pending."""
        return True

    def shutdown(self) -> None:
        """shutdown does nothing."""

    def clear(self) -> None:
        """clear forgets the recorded spans."""
        with self._lock:
            self.spans.clear()
