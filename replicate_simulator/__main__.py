"""``python -m replicate_simulator``: run the simulator in the foreground."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from .config import ConfigError, SimulatorConfig
from .server import SimulatorServer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m replicate_simulator",
        description="A local stand-in for Replicate's HTTP API (openai/gpt-image-1 family).",
    )
    defaults = SimulatorConfig()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    parser.add_argument(
        "--latency",
        type=float,
        default=defaults.latency,
        metavar="SECONDS",
        help="time from create to completion (default %(default)s)",
    )
    parser.add_argument(
        "--retention",
        type=float,
        default=defaults.retention,
        metavar="SECONDS",
        help="how long outputs stay available (default %(default)s)",
    )
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=defaults.rate_limit,
        metavar="N",
        help="prediction creates allowed per minute (default %(default)s)",
    )
    parser.add_argument(
        "--rate-limit-burst",
        type=int,
        default=defaults.rate_limit_burst,
        metavar="N",
        help="creates allowed at once (token bucket capacity; default: the rate limit)",
    )
    parser.add_argument(
        "--output-delay",
        type=float,
        default=defaults.output_delay,
        metavar="SECONDS",
        help="hold every output-file download this long (default %(default)s)",
    )
    parser.add_argument(
        "--token", default=None, help="accept only this API token (default: any non-empty token)"
    )
    parser.add_argument(
        "--base-url", default=None, help="public URL of the API written into responses"
    )
    parser.add_argument(
        "--delivery-base-url",
        default=None,
        help="base URL of output files (default: the API's base URL)",
    )
    parser.add_argument("--webhook-secret", default=None, help="whsec_... signing secret")
    parser.add_argument(
        "--webhook-retry-schedule",
        default=None,
        metavar="S,S,...",
        help="delays between retries of the final webhook, in seconds",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    changes: dict[str, object] = {
        "latency": args.latency,
        "retention": args.retention,
        "rate_limit": args.rate_limit,
        "rate_limit_burst": args.rate_limit_burst,
        "output_delay": args.output_delay,
        "token": args.token,
        "delivery_base_url": args.delivery_base_url,
    }
    if args.webhook_retry_schedule:
        changes["webhook_retry_schedule"] = tuple(
            float(part) for part in args.webhook_retry_schedule.split(",") if part.strip()
        )
    try:
        config = SimulatorConfig().updated(changes)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = SimulatorServer(
        host=args.host,
        port=args.port,
        config=config,
        webhook_secret=args.webhook_secret,
        base_url=args.base_url,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    print(f"Replicate simulator listening on {server.base_url}", flush=True)
    print(f"REPLICATE_BASE_URL={server.base_url}", flush=True)
    print(f"webhook signing secret: {server.simulator.webhook_secret}", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
