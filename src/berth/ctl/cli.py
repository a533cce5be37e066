"""``berth ctl``: nodes, deployments, containers and logs over the platform's HTTP/WebSocket API.

Connection: ``--url`` (``BERTH_PLATFORM_URL``, default http://127.0.0.1:8000) and ``--token``
(``BERTH_API_TOKEN``), or ``--data-dir`` of a local platform to read its stored API token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from berth.ctl import tables
from berth.ctl.client import ApiError, PlatformClient, read_token_file
from berth.ctl.deploy import deploy_stack, follow_deployment
from berth.ctl.stack import StackError, load_stack
from berth.errors import BerthError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="berth ctl", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("BERTH_PLATFORM_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("BERTH_API_TOKEN", ""))
    parser.add_argument("--data-dir", type=Path, default=None, help="read the API token of a local platform")
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of tables")
    commands = parser.add_subparsers(dest="command", required=True)

    nodes = commands.add_parser(
        "nodes", help="nodes: list, add, install, show, deployments, revoke, update, kick, delete"
    ).add_subparsers(dest="action", required=True)
    nodes.add_parser("list", help="list nodes")
    for action, text in (
        ("show", "a node's details"),
        ("deployments", "a node's deployments"),
        ("revoke", "revoke the node's token (its agent is disconnected)"),
        ("update", "update the node's agent to the platform's image"),
        ("kick", "disconnect the node's agent (it reconnects)"),
        ("delete", "delete the node"),
    ):
        nodes.add_parser(action, help=text).add_argument("node", help="name or id")
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

    registries = commands.add_parser("registries", help="registries: list, add, delete").add_subparsers(
        dest="action", required=True
    )
    registries.add_parser("list", help="list registries (passwords are never shown)")
    reg_add = registries.add_parser("add", help="add or update a registry by name")
    reg_add.add_argument("name")
    reg_add.add_argument("registry_url", metavar="URL")
    reg_add.add_argument("--user", default="")
    reg_add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    reg_add.add_argument("--description", default="")
    registries.add_parser("delete", help="delete a registry").add_argument("name", help="name or id")

    deployments = commands.add_parser(
        "deployments", help="deployments: list, show, redeploy, diff, start, delete"
    ).add_subparsers(dest="action", required=True)
    dep_list = deployments.add_parser("list", help="list deployments")
    dep_list.add_argument("--node", default="", help="only this node's (name or id)")
    deployments.add_parser("show", help="a deployment, its instances and its event log").add_argument("id")
    redeploy = deployments.add_parser("redeploy", help="deploy an earlier deployment again (rollback)")
    redeploy.add_argument("id")
    redeploy.add_argument("--no-follow", action="store_true", help="do not wait for the outcome")
    dep_diff = deployments.add_parser("diff", help="what changed from one deployment to another")
    dep_diff.add_argument("base")
    dep_diff.add_argument("other")
    deployments.add_parser("start", help="start a prepared deployment").add_argument("id")
    deployments.add_parser("delete", help="delete a deployment record").add_argument("id")

    inspect = commands.add_parser("inspect", help="a container as the engine sees it (JSON)")
    inspect.add_argument("node")
    inspect.add_argument("prefix")
    inspect.add_argument("name")

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


def _json(value: Any) -> None:
    _out(json.dumps(value, indent=2, sort_keys=True))


def _done(args: argparse.Namespace, value: Any, text: str) -> None:
    if args.json:
        _json(value)
    else:
        _out(text)


def _show(args: argparse.Namespace, value: Any, render: Callable[[Callable[[str], None], Any], None]) -> None:
    if args.json:
        _json(value)
    else:
        render(_out, value)


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


NODE_ACTIONS: Final = {
    "revoke": ("DELETE", "/token", "token revoked; the agent was disconnected"),
    "update": ("POST", "/update", "agent update requested"),
    "kick": ("POST", "/kick", "agent disconnected"),
    "delete": ("DELETE", "", "node deleted"),
}


async def _nodes(args: argparse.Namespace, client: PlatformClient) -> int:
    if args.action == "list":
        items = await client.nodes()
        _show(args, items, tables.nodes)
        return 0
    if args.action in ("show", "deployments") or args.action in NODE_ACTIONS:
        node = await client.resolve_node(args.node)
        if args.action == "show":
            detail = await client.node(node["id"])
            if args.json:
                _json(detail)
            else:
                tables.nodes(_out, [detail])
                if detail.get("install"):
                    _out(f"install command (valid until {tables.when(detail['install']['expireAt'])} UTC):")
                    _out(f"  {detail['install']['command']}")
            return 0
        if args.action == "deployments":
            items = await client.deployments(node["id"])
            _show(args, items, tables.deployments)
            return 0
        method, suffix, done = NODE_ACTIONS[args.action]
        await client.request(method, f"/nodes/{node['id']}{suffix}")
        _done(args, {"node": node["id"], "action": args.action}, f"{node['name']}: {done}")
        return 0
    if args.action == "add":
        node = await client.create_node(args.name)
    else:
        node = await client.resolve_node(args.node)
    install = await client.generate_script(node["id"], args.type, args.script, getattr(args, "root_path", ""))
    if args.json:
        _json({"node": node, "install": install})
        return 0
    _out(f"node {node['name']} ({node['id']})")
    _out(f"install command (valid until {tables.when(install['expireAt'])} UTC):")
    _out(f"  {install['command']}")
    return 0


async def _registries(args: argparse.Namespace, client: PlatformClient) -> int:
    if args.action == "list":
        items = await client.registries()
        _show(args, items, tables.registries)
        return 0
    if args.action == "add":
        spec: dict[str, Any] = {"name": args.name, "url": args.registry_url, "user": args.user}
        spec["description"] = args.description
        if args.password_stdin:
            spec["password"] = (await asyncio.to_thread(sys.stdin.readline)).rstrip("\n")
        registry_id = await client.ensure_registry(spec)
        _done(args, {"id": registry_id}, f"registry {args.name} ({registry_id})")
        return 0
    registry = next((r for r in await client.registries() if args.name in (r["id"], r["name"])), None)
    if registry is None:
        raise ApiError(404, f"no registry named or with id {args.name!r}")
    await client.request("DELETE", f"/registries/{registry['id']}")
    _done(args, {"deleted": registry["id"]}, f"registry {registry['name']} deleted")
    return 0


async def _deployments(args: argparse.Namespace, client: PlatformClient) -> int:
    if args.action == "list":
        node_id = (await client.resolve_node(args.node))["id"] if args.node else None
        items = await client.deployments(node_id)
        _show(args, items, tables.deployments)
        return 0
    if args.action == "diff":
        base, other = await client.resolve_deployment(args.base), await client.resolve_deployment(args.other)
        result = await client.diff(base["id"], other["id"])
        _show(args, result, tables.diff)
        return 0
    deployment = await client.resolve_deployment(args.id)
    if args.action == "show":
        events = await client.deployment_log(deployment["id"])
        if args.json:
            _json({**deployment, "events": events})
        else:
            tables.deployment(_out, deployment, events)
        return 0
    if args.action == "start":
        await client.start_deployment(deployment["id"])
        _done(args, {"started": deployment["id"]}, f"deployment {deployment['id']} started")
        return 0
    if args.action == "delete":
        await client.request("DELETE", f"/deployments/{deployment['id']}")
        _done(args, {"deleted": deployment["id"]}, f"deployment {deployment['id']} deleted")
        return 0
    copy = await client.redeploy(deployment["id"])
    if args.no_follow:
        _done(args, copy, f"deployment {copy['id']} started (a copy of {deployment['id']})")
        return 0
    emit = (lambda _line: None) if args.json else _out
    emit(f"deployment {copy['id']} started (a copy of {deployment['id']})")
    status = await follow_deployment(client, copy, emit)
    _done(args, await client.deployment(copy["id"]), f"deployment {status}")
    return 0 if status == "successful" else 1


async def _run(args: argparse.Namespace, client: PlatformClient) -> int:
    if args.command == "nodes":
        return await _nodes(args, client)
    if args.command == "registries":
        return await _registries(args, client)
    if args.command == "deployments":
        return await _deployments(args, client)
    if args.command == "deploy":
        status, _ = await deploy_stack(client, load_stack(args.file), _out)
        return 0 if status == "successful" else 1
    return await _containers(args, client)


async def _containers(args: argparse.Namespace, client: PlatformClient) -> int:
    """The commands on one node's containers of a prefix (or on one of them)."""
    node = await client.resolve_node(args.node)
    if args.command == "containers":
        items = await client.containers(node["id"], args.prefix)
        _show(args, items, lambda _emit, found: print_containers(found))
    elif args.command == "inspect":
        _json(await client.inspect(node["id"], args.prefix, args.name))
    elif args.command == "logs":
        await _logs(args, client, node["id"])
    elif args.command == "delete" and not args.name:
        await client.delete_prefix(node["id"], args.prefix)
        _out(f"deleted every container of prefix {args.prefix}")
    else:
        await client.container_action(node["id"], args.prefix, args.name, args.command)
        _out(f"{args.command}: {args.prefix}-{args.name}")
    return 0


async def _logs(args: argparse.Namespace, client: PlatformClient, node_id: str) -> None:
    if not args.follow:
        for line in await client.logs(node_id, args.prefix, args.name, args.tail):
            sys.stdout.write(line if line.endswith("\n") else line + "\n")
        return
    async for message in client.follow_logs(node_id, args.prefix, args.name, args.tail):
        if message.get("type") == "log":
            line = str(message["line"])
            sys.stdout.write(line if line.endswith("\n") else line + "\n")
            sys.stdout.flush()


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
