"""mypy-only checks that `Kit.logger` is typed (never run by pytest).

The misspelt call must be an error; its ``type: ignore`` is reported as unused if it is not
(``warn_unused_ignores``, part of strict mode), so a logger typed ``Any`` fails mypy here.
"""

from __future__ import annotations

from kitobs import log
from kitobs.kit import Kit


def _levels(kit: Kit) -> None:
    kit.logger.info("msg", "starting")
    kit.logger.with_("svc", "api").warn("msg", "slow")


def _misspelt(kit: Kit) -> None:
    kit.logger.infoo("msg", "starting")  # type: ignore[union-attr]


def _as_protocol(kit: Kit) -> log.Logger:
    return kit.logger
