"""Deploys a stack and shows live progress per instance until the deployment ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from berth.ctl.client import PlatformClient
from berth.ctl.stack import Stack

Printer = Callable[[str], None]
FEED_READY_TIMEOUT_S = 10.0


class ProgressView:
    """Turns deployment events into one readable line each, tagged with the instance name."""

    def __init__(self, names: dict[str, str], emit: Printer) -> None:
        self._names = names
        self._emit = emit
        self._last_percent: dict[str, int] = {}

    def _name(self, instance_id: str) -> str:
        return self._names.get(instance_id, instance_id[:8])

    def show(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "progress":
            percent = int(float(event.get("progress", 0)) * 100)
            name = self._name(str(event.get("instanceId", "")))
            if self._last_percent.get(name) != percent:
                self._last_percent[name] = percent
                self._emit(f"  [{name}] {event.get('status', '')} {percent}%")
            return
        if kind == "containerState":
            state = event["containerState"]
            name = self._name(str(state.get("instanceId", "")))
            self._emit(f"  [{name}] state: {state.get('state') or 'unknown'} ({state.get('reason', '')})")
        elif kind == "deploymentStatus":
            self._emit(f"  deployment: {event['deploymentStatus']}")
        for line in event.get("log", []) if kind in ("log", "containerState", "deploymentStatus") else []:
            level = event.get("level", "info")
            self._emit(f"    {'!' if level == 'error' else '-'} {line}")


async def deploy_stack(client: PlatformClient, stack: Stack, emit: Printer) -> tuple[str, dict[str, Any]]:
    """Returns the final status (``successful`` or ``failed``) and the deployment."""
    node = await client.resolve_node(stack.node)
    registry_ids = {spec["name"]: await client.ensure_registry(spec) for spec in stack.registry_specs()}
    deployment = await client.create_deployment(stack.payload(node["id"], registry_ids))
    names = {i["id"]: i["config"]["common"]["name"] for i in deployment["instances"]}
    listed = ", ".join(names.values())
    emit(f"deployment {deployment['id']} on {node['name']} (prefix {stack.prefix}): {listed}")
    view = ProgressView(names, emit)
    ready = asyncio.Event()
    outcome: dict[str, str] = {}

    async def _follow() -> None:
        async for event in client.deployment_events(deployment["id"]):
            if event.get("type") == "snapshot":
                ready.set()
                continue
            if event.get("type") == "end":
                outcome["status"] = str(event.get("status", "failed"))
                return
            view.show(event)

    follower = asyncio.create_task(_follow(), name="ctl-deploy-follow")
    try:
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait(
            [waiter, follower], timeout=FEED_READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        if follower.done():
            follower.result()
        await client.start_deployment(deployment["id"])
        await follower
    finally:
        if not follower.done():
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
    status = outcome.get("status") or (await client.deployment(deployment["id"]))["status"]
    emit(f"deployment {status}")
    return status, deployment


async def follow_deployment(client: PlatformClient, deployment: dict[str, Any], emit: Printer) -> str:
    """Shows the events of a deployment that is already started (history first, then live) until
    it ends; returns its final status."""
    names = {i["id"]: i["config"]["common"]["name"] for i in deployment["instances"]}
    view = ProgressView(names, emit)
    async for event in client.deployment_events(deployment["id"]):
        kind = event.get("type")
        if kind == "end":
            return str(event.get("status") or (await client.deployment(deployment["id"]))["status"])
        if kind == "snapshot":
            if event.get("status") in ("successful", "failed"):
                return str(event["status"])
            continue
        view.show(event)
    return str((await client.deployment(deployment["id"]))["status"])
