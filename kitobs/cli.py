"""The ``kitobs`` command: the demo service, dashboard export and configuration help.

``kitobs demo [--host H] [--port P] [--config FILE] [--load RATE] [--nats URL]`` runs the example
service;
``kitobs dashboards export [--out DIR]`` writes the Grafana dashboards;
``kitobs config show`` prints the effective configuration, ``kitobs config reference`` the
reference of every key, and ``kitobs contract reference`` the metric names kitobs emits. A
configuration error prints its message and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kitobs import config
from kitobs.errors import ConfigError

__all__ = ["main"]


def _port(text: str) -> int:
    """A TCP port, 0..65535 (0: any free port), for argparse."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a whole number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {port}")
    return port


def _grpc_port(text: str) -> int:
    """A TCP port, or -1 for no gRPC server, for argparse."""
    if text.strip() == "-1":
        return -1
    try:
        return _port(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{err} (or -1 for no gRPC server)") from None


def _at_least_zero(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"{what} must be a finite number >= 0, got {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kitobs", description="kitobs: logs, metrics and traces for Python services."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the example service")
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    demo.add_argument("--port", type=_port, default=8080, help="port to listen on (8080)")
    demo.add_argument(
        "--grpc-port",
        type=_grpc_port,
        default=None,
        metavar="PORT",
        help="port of the gRPC server (default: the HTTP port + 1, any free port when that is "
        "0 or 65535; -1 turns gRPC off)",
    )
    demo.add_argument("--config", metavar="FILE", help="TOML configuration file")
    demo.add_argument(
        "--load",
        type=_at_least_zero("load"),
        default=0.0,
        metavar="RATE",
        help="requests per second the demo sends itself (0, the default, is off)",
    )
    demo.add_argument(
        "--duration",
        type=_at_least_zero("duration"),
        default=0.0,
        metavar="SECONDS",
        help="stop after this many seconds (0, the default, runs until SIGINT or SIGTERM)",
    )
    demo.add_argument(
        "--nats",
        metavar="URL",
        help="NATS server for the /relay worker, e.g. nats://127.0.0.1:4222 (none by default)",
    )
    demo.add_argument(
        "--amqp",
        metavar="URL",
        help="AMQP broker the /relay worker passes requests on to (with --nats; none by default)",
    )

    dash = sub.add_parser("dashboards", help="Grafana dashboards")
    dash_sub = dash.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = dash_sub.add_parser("export", help="write the dashboards as JSON files")
    export.add_argument("--out", default="dashboards", metavar="DIR", help="(./dashboards)")

    cfg = sub.add_parser("config", help="configuration")
    cfg_sub = cfg.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = cfg_sub.add_parser("show", help="print the effective configuration")
    show.add_argument("--config", metavar="FILE", help="TOML configuration file")
    cfg_sub.add_parser("reference", help="print the reference of every key (Markdown)")

    con = sub.add_parser("contract", help="the metric names kitobs emits")
    con_sub = con.add_subparsers(dest="action", required=True, metavar="ACTION")
    con_sub.add_parser("reference", help="print every contract metric (Markdown)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """main runs the ``kitobs`` command with *argv* and returns the exit status, e.g. 0."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from kitobs.demo import run

            return run(
                host=args.host,
                port=args.port,
                grpc_port=args.grpc_port,
                config_path=args.config,
                load=args.load,
                duration=args.duration,
                nats_url=args.nats,
                amqp_url=args.amqp,
            )
        if args.command == "dashboards":
            from kitobs.dashboards import export

            for path in export(Path(args.out)):
                print(path)
            return 0
        if args.command == "contract":
            from kitobs.contract import reference

            sys.stdout.write(reference())
            return 0
        if args.action == "show":
            settings = config.load(args.config)
            for info in config.all_keys():
                value: object = settings
                for part in info.path:
                    value = getattr(value, part)
                if info.kind == "headers" and isinstance(value, dict):
                    value = dict.fromkeys(value, "[REDACTED]")  # often credentials
                print(f"{info.dotted} = {value!r}")
            return 0
        sys.stdout.write(config.reference())
        return 0
    except ConfigError as err:
        print(f"kitobs: configuration error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
