"""Stack files of ``berth ctl``: parsed and turned into a deployment payload, or refused naming the
problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from berth.ctl.stack import StackError, parse_stack


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
