"""Write kitobs' Grafana dashboards, e.g. ``python -m kitobs.dashboards --out dashboards``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kitobs.dashboards import export

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """main writes the dashboards and prints each path, e.g. ``main(["--out", "dashboards"])``."""
    parser = argparse.ArgumentParser(
        prog="python -m kitobs.dashboards",
        description="Write kitobs' Grafana dashboards and provisioning examples.",
    )
    parser.add_argument(
        "--out", default="dashboards", metavar="DIR", help="output directory (./dashboards)"
    )
    args = parser.parse_args(argv)
    for path in export(Path(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
