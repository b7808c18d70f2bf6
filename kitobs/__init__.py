"""kitobs: structured logs, metrics and traces for Python services, on go-kit's model."""

from kitobs.errors import ConfigError, DuplicateMetricError, KitobsError

__all__ = ["ConfigError", "DuplicateMetricError", "KitobsError", "__version__"]

__version__ = "0.1.0.dev0"
