"""Stack files for ``berth ctl deploy -f``: YAML that names a node, a prefix, optional registries
and the instances, each with the protocol's instance config (``common`` / ``dagent`` / ``crane``).

    node: my-node            # name or id
    prefix: demo
    registries:
      - {name: local, url: 127.0.0.1:5000, user: berth, password: secret}
    secrets: {SHARED_KEY: value}
    instances:
      - image: berth/busybox
        tag: "1"
        registry: local
        config:
          common: {name: web, args: [httpd, -f, -p, "8080"], ports: [{internal: 8080, external: 8080}]}
          dagent: {restartPolicy: UNLESS_STOPPED}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from berth.errors import BerthError


class StackError(BerthError):
    pass


@dataclass
class Stack:
    node: str
    prefix: str
    registries: list[dict[str, Any]] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    instances: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    def payload(self, node_id: str, registry_ids: dict[str, str]) -> dict[str, Any]:
        instances = []
        for index, instance in enumerate(self.instances):
            item = {k: v for k, v in instance.items() if k != "registry"}
            registry = instance.get("registry")
            if registry is not None:
                if registry not in registry_ids:
                    raise StackError(f"instances[{index}].registry: unknown registry {registry!r}")
                item["registryId"] = registry_ids[registry]
            if "tag" in item:
                item["tag"] = str(item["tag"])
            instances.append(item)
        return {
            "nodeId": node_id,
            "prefix": self.prefix,
            "note": self.note,
            "secrets": self.secrets,
            "instances": instances,
        }


def parse_stack(text: str) -> Stack:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise StackError(f"not valid YAML: {err}") from None
    if not isinstance(doc, dict):
        raise StackError("the stack file must be a mapping")
    for key in ("node", "prefix", "instances"):
        if key not in doc:
            raise StackError(f"{key}: is required")
    if not isinstance(doc["instances"], list) or not all(isinstance(i, dict) for i in doc["instances"]):
        raise StackError("instances: must be a list of mappings")
    registries = doc.get("registries") or []
    if not isinstance(registries, list) or not all(isinstance(r, dict) and "name" in r for r in registries):
        raise StackError("registries: must be a list of mappings with a name")
    secrets = doc.get("secrets") or {}
    if not isinstance(secrets, dict):
        raise StackError("secrets: must be a mapping")
    return Stack(
        node=str(doc["node"]),
        prefix=str(doc["prefix"]),
        registries=registries,
        secrets={str(k): str(v) for k, v in secrets.items()},
        instances=doc["instances"],
        note=str(doc.get("note", "")),
    )


def load_stack(path: Path) -> Stack:
    return parse_stack(path.read_text())
