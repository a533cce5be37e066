"""``berth platform serve``: the embedded control plane's command line."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from berth.errors import ConfigError
from berth.platform.app import PlatformServer, split_address
from berth.platform.config import PlatformConfig, reachability_warnings


def _address(raw: str) -> str:
    try:
        split_address(raw)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return raw


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="berth platform", description="Berth's embedded control plane")
    commands = parser.add_subparsers(dest="command", required=True)
    # Each option's dest is a PlatformConfig field; an option not given takes the field's default.
    serve = commands.add_parser(
        "serve",
        help="run the platform (gRPC for agents, HTTP API for users)",
        argument_default=argparse.SUPPRESS,
    )
    serve.add_argument("--data-dir", type=Path, required=True, help="SQLite store, CA, API token")
    serve.add_argument("--grpc-listen", type=_address, help="host:port (0.0.0.0:5000)")
    serve.add_argument("--http-listen", type=_address, help="host:port (127.0.0.1:8000)")
    serve.add_argument(
        "--advertise", type=_address, required=True, help="host:port agents dial (the JWT iss)"
    )
    serve.add_argument("--insecure", action="store_true", help="plaintext gRPC instead of TLS")
    serve.add_argument("--public-url", help="base URL of the HTTP API in install commands")
    serve.add_argument("--agent-image", help="agent image for install scripts (berth/agent:0.1)")
    serve.add_argument(
        "--install-window", dest="install_window_s", type=float, help="install token validity (600 s)"
    )
    serve.add_argument(
        "--callback-timeout", dest="callback_timeout_s", type=float, help="agent callback timeout (5 s)"
    )
    serve.add_argument("--install-scripts-dir", type=Path)
    serve.add_argument("--max-body-bytes", type=int, help="larger request bodies get 413 (1 MiB)")
    serve.add_argument("--max-instances", type=int, help="instances per deployment (500)")
    serve.add_argument(
        "--webhook",
        dest="webhooks",
        action="append",
        metavar="[generic|slack|discord=]URL",
        help="notify this webhook of deployments finished, nodes (dis)connected, agent updates (repeatable)",
    )
    return parser


def _config(args: argparse.Namespace) -> PlatformConfig:
    options = {name: value for name, value in vars(args).items() if name != "command"}
    options["webhooks"] = tuple(options.get("webhooks", ()))
    return PlatformConfig(**options)


async def _serve(config: PlatformConfig) -> int:
    server = PlatformServer(config)
    started = await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if started.first_start:
        print(
            f"API token (shown once, stored in {config.data_dir}/api-token): {started.api_token}", flush=True
        )
    print(
        f"berth platform: agents -> {started.config.advertise} "
        f"({'plaintext' if config.insecure else 'TLS'}), API -> {started.http_url}, "
        f"console -> {started.http_url}/",
        flush=True,
    )
    for warning in reachability_warnings(started.config):
        print(f"berth platform: warning: {warning}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()
    return 0


def main(argv: Sequence[str]) -> int:
    config = _config(_parser().parse_args(list(argv)))
    try:
        return asyncio.run(_serve(config))
    except ConfigError as err:
        print(f"berth platform: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"berth platform: {err}", file=sys.stderr)
        return 1
