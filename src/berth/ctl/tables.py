"""Plain-text tables for people (``--json`` prints the API's own JSON instead)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import Any

Printer = Callable[[str], None]


def when(epoch: Any) -> str:
    if not isinstance(epoch, int | float):
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(emit: Printer, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) if c not in (None, "") else "-" for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        emit("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def nodes(emit: Printer, items: list[dict[str, Any]]) -> None:
    table(
        emit,
        ["ID", "NAME", "TYPE", "STATUS", "VERSION", "CONNECTED"],
        [[n["id"], n["name"], n["type"], n["status"], n["version"], when(n["connectedAt"])] for n in items],
    )


def registries(emit: Printer, items: list[dict[str, Any]]) -> None:
    table(
        emit,
        ["ID", "NAME", "URL", "USER", "PASSWORD"],
        [[r["id"], r["name"], r["url"], r["user"], "set" if r["hasPassword"] else "-"] for r in items],
    )


def deployments(emit: Printer, items: list[dict[str, Any]]) -> None:
    table(
        emit,
        ["ID", "CREATED", "NODE", "PREFIX", "STATUS", "INSTANCES"],
        [
            [
                d["id"][:8],
                when(d["createdAt"]),
                d["node"]["name"],
                d["prefix"],
                d["status"],
                ", ".join(f"{i['config']['common']['name']}:{i['image']['tag']}" for i in d["instances"]),
            ]
            for d in items
        ],
    )


def deployment(emit: Printer, item: dict[str, Any], events: list[dict[str, Any]]) -> None:
    emit(f"deployment {item['id']}")
    emit(f"  node     {item['node']['name']} ({item['node']['id']})")
    emit(f"  prefix   {item['prefix']}")
    emit(f"  status   {item['status']}")
    emit(f"  created  {when(item['createdAt'])} UTC")
    if item["note"]:
        emit(f"  note     {item['note']}")
    if item["secretKeys"]:
        emit(f"  secrets  {', '.join(item['secretKeys'])} (values are write-only)")
    emit("")
    table(
        emit,
        ["INSTANCE", "IMAGE", "STATE", "REASON"],
        [
            [
                i["config"]["common"]["name"],
                f"{i['image']['name']}:{i['image']['tag']}",
                i["state"],
                i["reason"],
            ]
            for i in item["instances"]
        ],
    )
    if events:
        emit("")
        emit("events:")
    for event in events:
        kind = event.get("type")
        head = (
            f"deployment {event['deploymentStatus']}"
            if kind == "deploymentStatus"
            else f"state {event['containerState']['state']}"
            if kind == "containerState"
            else ""
        )
        lines = " | ".join(event.get("log", []))
        emit(f"  {when(event.get('createdAt'))}  {' - '.join(x for x in (head, lines) if x)}")


def diff(emit: Printer, result: dict[str, Any]) -> None:
    base, other = result["base"], result["other"]
    emit(f"from {base['id']} ({base['status']}, {when(base['createdAt'])})")
    emit(f"to   {other['id']} ({other['status']}, {when(other['createdAt'])})")
    if not result["samePrefix"]:
        emit("note: the two deployments are not of the same node and prefix")
    changed = False
    for item in result["added"]:
        changed = True
        emit(f"+ instance {item['name']} ({item['image']}:{item['tag']})")
    for item in result["removed"]:
        changed = True
        emit(f"- instance {item['name']} ({item['image']}:{item['tag']})")
    for item in result["changed"]:
        changed = True
        emit(f"~ instance {item['name']}")
        for change in item["changes"]:
            emit(f"    {change['path']}: {_shown(change['before'])} -> {_shown(change['after'])}")
    for what, sign in (("added", "+"), ("removed", "-"), ("changed", "~")):
        for key in result["secrets"][what]:
            changed = True
            emit(f"{sign} secret {key}" + (" (value changed; values are not shown)" if sign == "~" else ""))
    if not changed:
        emit("no difference")


def _shown(value: Any) -> str:
    return "(none)" if value is None else repr(value) if isinstance(value, str) else str(value)
