"""Kit: the configured parts of kitobs in one object, passed explicitly.

A program builds one `Kit` in ``main()`` from configuration and hands it (or its parts) to the code
that logs, counts and traces::

    kit = Kit.from_config()            # defaults < file < KITOBS_* variables
    kit.logger.info("msg", "starting")
    requests = kit.metrics.counter("jobs", help="Jobs run.", labels=("queue",))
    with kit.tracer.span("run"):
        ...
    kit.close()                        # flushes metrics and spans, closes the log writer

For the zero-argument conveniences (a decorator used without arguments) there is one documented
process-wide default, built lazily from configuration the first time `default` is called;
`set_default` replaces it and `reset_default` forgets it, e.g. in tests. Nothing else in kitobs
reaches for it behind the user's back.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Mapping
from os import PathLike
from types import TracebackType
from typing import TYPE_CHECKING, Any

from kitobs import _exit
from kitobs import config as _config

if TYPE_CHECKING:
    from kitobs.log import ContextLogger, NopLogger
    from kitobs.metrics import Provider
    from kitobs.tracing import Tracer

__all__ = ["Kit", "default", "set_default", "reset_default"]


class Kit:
    """Kit carries the settings, logger, metrics provider and tracer, e.g. ``kit.logger``.

    Build it with `Kit.from_config` (or `Kit.from_settings`), pass it explicitly, and `close` it
    on shutdown (it is also a context manager). What is not closed is flushed at interpreter exit
    and on SIGTERM, within ``[kit] exit_timeout`` seconds in all (see docs/shutdown.md): building
    a Kit sets that budget and, in the main thread of a process where SIGTERM has its default
    disposition, installs a handler that flushes, then lets SIGTERM end the process as before.
    """

    __slots__ = ("_closed", "logger", "metrics", "settings", "tracer")

    def __init__(
        self,
        settings: _config.Settings,
        *,
        logger: ContextLogger | NopLogger,
        metrics: Provider,
        tracer: Tracer,
    ) -> None:
        self.settings = settings
        self.logger = logger
        self.metrics = metrics
        self.tracer = tracer
        self._closed = False
        _exit.set_budget(settings.kit.exit_timeout)
        _exit.handle_sigterm()

    @classmethod
    def from_settings(cls, settings: _config.Settings) -> Kit:
        """from_settings builds every part from *settings*, e.g. ``Kit.from_settings(load())``.

        Raises:
            ConfigError: a setting that only building the part can check (an address, say).
        """
        # Imported here so that `import kitobs` stays light and a part's optional dependency is
        # only needed when that part is configured.
        from kitobs.log import from_settings as log_from_settings
        from kitobs.metrics.config import provider_from_settings
        from kitobs.tracing import current_ids, current_sampled_ids
        from kitobs.tracing.config import tracer_from_settings

        # The logger is built first (the other parts log through it), so its drop counter is
        # connected once the metrics provider exists.
        log_dropped = _LateCounter()
        logger = log_from_settings(settings.log, trace_context=current_ids, dropped=log_dropped)
        try:
            metrics = provider_from_settings(
                settings, logger=logger, exemplar_context=current_sampled_ids
            )
            log_dropped.target = metrics.dropped("logs", "queue_full")
            tracer = tracer_from_settings(
                settings, logger=logger, dropped=functools.partial(metrics.dropped, "spans")
            )
        except BaseException:
            _close_quietly(logger)
            raise
        return cls(settings, logger=logger, metrics=metrics, tracer=tracer)

    @classmethod
    def from_config(
        cls,
        path: str | PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> Kit:
        """from_config loads configuration (see `kitobs.config.load`) and builds the parts.

        Example: ``Kit.from_config(overrides={"metrics.backend": ["statsd"]})``.
        """
        return cls.from_settings(
            _config.load(path, env=env, overrides=overrides, defaults=defaults)
        )

    def close(self) -> None:
        """close flushes spans and metrics, then the log writer; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        _close_quietly(self.tracer)
        _close_quietly(self.metrics)
        _close_quietly(self.logger)

    def __enter__(self) -> Kit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _LateCounter:
    """A counter whose destination is connected after construction; adds before that are lost."""

    __slots__ = ("target",)

    def __init__(self) -> None:
        self.target: Any = None

    def add(self, delta: float = 1.0) -> None:
        target = self.target
        if target is not None:
            target.add(delta)


def _close_quietly(part: object) -> None:
    close = getattr(part, "close", None) or getattr(part, "shutdown", None)
    if close is None:
        return
    # Shutdown is best effort: one part failing must not stop the others.
    with contextlib.suppress(Exception):
        close()


_default: Kit | None = None
_default_lock = threading.Lock()


def default() -> Kit:
    """default returns the process-wide Kit, building it from configuration on first use.

    Used only by zero-argument conveniences such as ``@kitobs.instrument``; code that can pass a
    `Kit` explicitly should. The configuration is read from the usual sources (file, ``KITOBS_*``).
    """
    global _default
    kit = _default
    if kit is not None:
        return kit
    with _default_lock:
        if _default is None:
            _default = Kit.from_config()
        return _default


def set_default(kit: Kit) -> None:
    """set_default makes *kit* the process-wide default, e.g. in ``main()`` or a test fixture."""
    global _default
    with _default_lock:
        _default = kit


def reset_default() -> None:
    """reset_default forgets the process-wide default (without closing it); the next `default`
    builds a fresh one."""
    global _default
    with _default_lock:
        _default = None
