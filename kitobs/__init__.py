"""kitobs: structured logs, metrics and traces for Python services, on go-kit's model.

Build a `Kit` from configuration in ``main()`` and pass it (or its parts) to the code that logs,
counts and traces; see the package README for a tour.
"""

from kitobs.endpoint.instrument import instrument
from kitobs.errors import ConfigError, DuplicateMetricError, KitobsError
from kitobs.kit import Kit

__all__ = ["ConfigError", "DuplicateMetricError", "Kit", "KitobsError", "__version__", "instrument"]

__version__ = "0.1.0.dev0"
