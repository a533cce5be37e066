"""Stack files (``berth ctl deploy -f`` and the console's pasted stacks): YAML that names a node,
a prefix, optional registries and the instances, each with the protocol's instance config
(``common`` / ``dagent`` / ``crane``).

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

from pathlib import Path
from typing import Annotated, Any, Final

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from berth.errors import BerthError
from berth.fieldtypes import Label, LongText, Name

MAX_STACK_BYTES: Final = 1024 * 1024


class StackError(BerthError):
    pass


def _scalar_to_text(value: Any) -> Any:
    """YAML reads ``tag: 1`` as a number; a tag is text."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


Tag = Annotated[str, BeforeValidator(_scalar_to_text), StringConstraints(min_length=1, max_length=128)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StackRegistry(_Part):
    name: Name
    url: Name
    user: LongText = ""
    password: LongText | None = None
    description: LongText = ""


class StackInstance(_Part):
    image: Name
    tag: Tag | None = None
    registry: Name | None = None
    config: dict[str, Any] = Field(default_factory=dict)  # checked by the platform, field by field


class Stack(_Part):
    node: Annotated[str, BeforeValidator(_scalar_to_text), StringConstraints(min_length=1, max_length=100)]
    prefix: Label
    registries: list[StackRegistry] = Field(default_factory=list, max_length=100)
    secrets: dict[Name, Annotated[str, BeforeValidator(_scalar_to_text)]] = Field(default_factory=dict)
    instances: list[StackInstance] = Field(min_length=1)
    note: LongText = ""

    def payload(self, node_id: str, registry_ids: dict[str, str]) -> dict[str, Any]:
        instances = []
        for index, instance in enumerate(self.instances):
            item: dict[str, Any] = {"image": instance.image, "config": instance.config}
            if instance.tag is not None:
                item["tag"] = instance.tag
            if instance.registry is not None:
                if instance.registry not in registry_ids:
                    raise StackError(f"instances[{index}].registry: unknown registry {instance.registry!r}")
                item["registryId"] = registry_ids[instance.registry]
            instances.append(item)
        return {
            "nodeId": node_id,
            "prefix": self.prefix,
            "note": self.note,
            "secrets": self.secrets,
            "instances": instances,
        }

    def registry_specs(self) -> list[dict[str, Any]]:
        return [r.model_dump(exclude_none=True) for r in self.registries]


def _where(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "stack"


def parse_stack(text: str) -> Stack:
    if len(text.encode()) > MAX_STACK_BYTES:
        raise StackError(f"the stack file is larger than {MAX_STACK_BYTES} bytes")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise StackError(f"not valid YAML: {err}") from None
    if not isinstance(doc, dict):
        raise StackError("the stack file must be a mapping")
    try:
        return Stack.model_validate(doc)
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        raise StackError(f"{_where(tuple(first['loc']))}: {first['msg']}") from None


def load_stack(path: Path) -> Stack:
    return parse_stack(path.read_text())
