"""``berth ctl``: nodes, deployments, containers and logs over the platform's HTTP/WebSocket API.

Connection: ``--url`` (``BERTH_PLATFORM_URL``, default http://127.0.0.1:8000) and ``--token``
(``BERTH_API_TOKEN``), or ``--data-dir`` of a local platform to read its stored API token.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from berth.ctl.client import ApiError, PlatformClient, read_token_file
from berth.ctl.deploy import deploy_stack
from berth.ctl.stack import StackError, load_stack
from berth.errors import BerthError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="berth ctl", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("BERTH_PLATFORM_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("BERTH_API_TOKEN", ""))
    parser.add_argument("--data-dir", type=Path, default=None, help="read the API token of a local platform")
    commands = parser.add_subparsers(dest="command", required=True)

    nodes = commands.add_parser("nodes", help="list and add nodes").add_subparsers(
        dest="action", required=True
    )
    nodes.add_parser("list", help="list nodes")
    add = nodes.add_parser("add", help="create a node and print its install command")
    add.add_argument("name")
    add.add_argument("--type", choices=["docker", "k8s"], default="docker")
    add.add_argument("--script", choices=["shell", "powershell", "systemd"], default="shell")
    add.add_argument("--root-path", default="")
    install = nodes.add_parser("install", help="generate a fresh install command for a node")
    install.add_argument("node")
    install.add_argument("--type", choices=["docker", "k8s"], default="docker")
    install.add_argument("--script", choices=["shell", "powershell", "systemd"], default="shell")

    deploy = commands.add_parser("deploy", help="deploy a stack file with live progress")
    deploy.add_argument("-f", "--file", type=Path, required=True)

    containers = commands.add_parser("containers", help="list containers").add_subparsers(
        dest="action", required=True
    )
    listing = containers.add_parser("list")
    listing.add_argument("node")
    listing.add_argument("--prefix", default="")

    logs = commands.add_parser("logs", help="print or follow a container's log")
    logs.add_argument("node")
    logs.add_argument("prefix")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--tail", type=int, default=100)

    for action in ("start", "stop", "restart"):
        command = commands.add_parser(action, help=f"{action} a container")
        command.add_argument("node")
        command.add_argument("prefix")
        command.add_argument("name")
    delete = commands.add_parser("delete", help="delete a container, or every container of a prefix")
    delete.add_argument("node")
    delete.add_argument("prefix")
    delete.add_argument("name", nargs="?")
    return parser


def _out(line: str) -> None:
    print(line, flush=True)


def _when(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_containers(items: list[dict[str, Any]]) -> None:
    _out(f"{'NAME':<32} {'STATE':<10} {'IMAGE':<44} PORTS")
    for item in items:
        key = f"{item['id']['prefix']}-{item['id']['name']}" if item["id"]["prefix"] else item["id"]["name"]
        image = f"{item.get('imageName', '')}:{item.get('imageTag', '')}"
        ports = ", ".join(
            f"{p['external']}->{p['internal']}" if p["external"] else str(p["internal"])
            for p in item["ports"]
        )
        _out(f"{key:<32} {item['state']:<10} {image:<44} {ports}")


async def _run(args: argparse.Namespace, client: PlatformClient) -> int:
    if args.command == "nodes":
        if args.action == "list":
            _out(f"{'ID':<38} {'NAME':<20} {'STATUS':<12} {'VERSION':<28} CONNECTED")
            for node in await client.nodes():
                _out(
                    f"{node['id']:<38} {node['name']:<20} {node['status']:<12} "
                    f"{node['version'] or '-':<28} {_when(node['connectedAt'])}"
                )
            return 0
        if args.action == "add":
            node = await client.create_node(args.name)
        else:
            node = await client.resolve_node(args.node)
        install = await client.generate_script(
            node["id"], args.type, args.script, getattr(args, "root_path", "")
        )
        _out(f"node {node['name']} ({node['id']})")
        _out(f"install command (valid until {_when(install['expireAt'])} UTC):")
        _out(f"  {install['command']}")
        return 0
    if args.command == "deploy":
        status, _ = await deploy_stack(client, load_stack(args.file), _out)
        return 0 if status == "successful" else 1
    node = await client.resolve_node(args.node)
    if args.command == "containers":
        print_containers(await client.containers(node["id"], args.prefix))
        return 0
    if args.command == "logs":
        if not args.follow:
            for line in await client.logs(node["id"], args.prefix, args.name, args.tail):
                sys.stdout.write(line if line.endswith("\n") else line + "\n")
            return 0
        async for message in client.follow_logs(node["id"], args.prefix, args.name, args.tail):
            if message.get("type") == "log":
                line = str(message["line"])
                sys.stdout.write(line if line.endswith("\n") else line + "\n")
                sys.stdout.flush()
        return 0
    if args.command == "delete" and not args.name:
        await client.delete_prefix(node["id"], args.prefix)
        _out(f"deleted every container of prefix {args.prefix}")
        return 0
    await client.container_action(node["id"], args.prefix, args.name, args.command)
    _out(f"{args.command}: {args.prefix}-{args.name}")
    return 0


async def _main(args: argparse.Namespace) -> int:
    token = args.token
    if not token and args.data_dir is not None:
        token = await asyncio.to_thread(read_token_file, args.data_dir)
    if not token:
        print("berth ctl: no API token (use --token, BERTH_API_TOKEN or --data-dir)", file=sys.stderr)
        return 2
    async with PlatformClient(args.url, token) as client:
        return await _run(args, client)


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130
    except (ApiError, StackError, BerthError, OSError) as err:
        print(f"berth ctl: {err}", file=sys.stderr)
        return 1
