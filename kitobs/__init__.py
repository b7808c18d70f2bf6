"""kitobs: structured logs, metrics and traces for Python services, on go-kit's model.

Build a `Kit` from configuration in ``main()`` and pass it (or its parts) to the code that logs,
counts and traces; see the package README for a tour.
"""

from typing import TYPE_CHECKING, Any

from kitobs.errors import ConfigError, DuplicateMetricError, KitobsError
from kitobs.kit import Kit

if TYPE_CHECKING:
    from kitobs.endpoint.instrument import instrument

__all__ = ["ConfigError", "DuplicateMetricError", "Kit", "KitobsError", "__version__", "instrument"]

#: The installed kitobs version, e.g. ``"0.1.0"``.
__version__ = "0.1.0.dev0"


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `import kitobs.dashboards` (say) needs no dependency.
    if name == "instrument":
        from kitobs.endpoint.instrument import instrument

        return instrument
    raise AttributeError(f"module 'kitobs' has no attribute {name!r}")
