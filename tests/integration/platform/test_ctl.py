"""``berth ctl`` against a real platform (the CLI runs its own loop in a worker thread)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from platform_harness import Harness

from berth.ctl.cli import main as ctl_main
from berth.ctl.stack import StackError, parse_stack


async def test_nodes_add_and_list(platform: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--url", platform.started.http_url, "--data-dir", str(platform.data_dir)]
    assert await asyncio.to_thread(ctl_main, [*base, "nodes", "add", "edge-1"]) == 0
    added = capsys.readouterr().out
    assert "install command" in added and "/script' | sh -" in added
    assert await asyncio.to_thread(ctl_main, [*base, "nodes", "list"]) == 0
    listed = capsys.readouterr().out
    assert "edge-1" in listed and "unreachable" in listed
    assert await asyncio.to_thread(ctl_main, [*base, "containers", "list", "edge-1"]) == 1
    assert "HTTP 409" in capsys.readouterr().err
    wrong = ["--url", platform.started.http_url, "--token", "wrong"]
    assert await asyncio.to_thread(ctl_main, [*wrong, "nodes", "list"]) == 1
    assert "HTTP 401" in capsys.readouterr().err


def test_stack_files(tmp_path: Path) -> None:
    stack = parse_stack(
        "node: n\nprefix: p\nregistries: [{name: r, url: 'h:5000'}]\n"
        "instances:\n  - {image: busybox, tag: 1, registry: r, config: {common: {name: web}}}\n"
    )
    payload = stack.payload("node-id", {"r": "reg-id"})
    assert payload["instances"][0] == {
        "image": "busybox",
        "tag": "1",
        "registryId": "reg-id",
        "config": {"common": {"name": "web"}},
    }
    with pytest.raises(StackError, match="instances"):
        parse_stack("node: n\nprefix: p\n")
    with pytest.raises(StackError, match="unknown registry"):
        parse_stack("node: n\nprefix: p\ninstances: [{image: x, registry: nope}]\n").payload("n", {})
