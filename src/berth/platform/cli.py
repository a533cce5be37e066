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
    serve = commands.add_parser("serve", help="run the platform (gRPC for agents, HTTP API for users)")
    serve.add_argument("--data-dir", type=Path, required=True, help="SQLite store, CA, API token")
    serve.add_argument("--grpc-listen", type=_address, default="0.0.0.0:5000")
    serve.add_argument("--http-listen", type=_address, default="127.0.0.1:8000")
    serve.add_argument(
        "--advertise", type=_address, required=True, help="host:port agents dial (the JWT iss)"
    )
    serve.add_argument("--insecure", action="store_true", help="plaintext gRPC instead of TLS")
    serve.add_argument("--public-url", default="", help="base URL of the HTTP API in install commands")
    serve.add_argument("--agent-image", default="berth/agent:0.1", help="agent image for install scripts")
    serve.add_argument("--install-window", type=float, default=600.0, help="install token validity, seconds")
    serve.add_argument("--callback-timeout", type=float, default=5.0, help="agent callback timeout, seconds")
    serve.add_argument("--install-scripts-dir", type=Path, default=None)
    serve.add_argument(
        "--max-body-bytes", type=int, default=1024 * 1024, help="larger request bodies get 413 (1 MiB)"
    )
    serve.add_argument("--max-instances", type=int, default=500, help="instances per deployment")
    serve.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="[generic|slack|discord=]URL",
        help="notify this webhook of deployments finished, nodes (dis)connected, agent updates (repeatable)",
    )
    return parser


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
    args = _parser().parse_args(list(argv))
    config = PlatformConfig(
        data_dir=args.data_dir,
        grpc_listen=args.grpc_listen,
        http_listen=args.http_listen,
        advertise=args.advertise,
        insecure=args.insecure,
        public_url=args.public_url,
        agent_image=args.agent_image,
        install_window_s=args.install_window,
        callback_timeout_s=args.callback_timeout,
        install_scripts_dir=args.install_scripts_dir,
        max_body_bytes=args.max_body_bytes,
        max_instances=args.max_instances,
        webhooks=tuple(args.webhook),
    )
    try:
        return asyncio.run(_serve(config))
    except ConfigError as err:
        print(f"berth platform: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"berth platform: {err}", file=sys.stderr)
        return 1
