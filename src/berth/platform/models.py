"""Typed, bounded shapes of everything that enters the platform (request bodies) and everything
it keeps (stored records). Validation happens here, once: a body that passes is safe to store, to
send to an agent and to paste (escaped) into an install script.

Request fields use the API's camelCase names; stored records use snake_case. Stored records are
read leniently: a string written before validation existed is repaired (``names.repair_text``) so
that the row still lists and can be fixed or deleted.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Final, Literal

from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from berth import imageref, names
from berth.fieldtypes import Label, LongText, Name
from berth.proto import agent_pb2

MAX_INSTANCES_DEFAULT: Final = 500
MAX_SECRETS: Final = 200
MAX_CONFIG_STRINGS: Final = 10_000


def _root_path(value: str) -> str:
    return names.checked(names.safe_root_path_problem(value) if value else None, value)


def _registry_url(value: str) -> str:
    if any(c.isspace() for c in value) or value.startswith("/"):
        raise ValueError("must be a registry address such as 127.0.0.1:5000 or https://host/path")
    return value


def _image(value: str) -> str:
    if any(c.isspace() for c in value) or value.startswith(("-", "/")):
        raise ValueError("must be an image name such as berth/busybox or 127.0.0.1:5000/app")
    return value


def _repaired(value: Any) -> Any:
    return names.repair_text(value) if isinstance(value, str) else value


Text = Annotated[str, StringConstraints(max_length=200), AfterValidator(names.plain_text)]
EntityId = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(names.plain_text)]
RootPath = Annotated[str, StringConstraints(max_length=names.MAX_PATH), AfterValidator(_root_path)]
RegistryUrl = Annotated[
    str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True), AfterValidator(_registry_url)
]
Image = Annotated[
    str,
    StringConstraints(min_length=1, max_length=500),
    AfterValidator(names.plain_text),
    AfterValidator(_image),
]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=rf"^{imageref.TAG.pattern}$")]
SecretKey = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
]
SecretValue = Annotated[str, StringConstraints(max_length=65_536), AfterValidator(names.multiline_text)]
Secrets = Annotated[dict[SecretKey, SecretValue], Field(max_length=MAX_SECRETS)]
StoredText = Annotated[str, BeforeValidator(_repaired)]
NodeType = Literal["docker", "k8s"]
ScriptType = Literal["shell", "powershell", "systemd"]


class Body(BaseModel):
    """A request body: unknown fields are refused, so a typo is a 400 and not a silent no-op."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# -- nodes --------------------------------------------------------------------------------------


class NodeCreate(Body):
    name: Name
    description: LongText = ""
    icon: Text = ""


class NodeUpdate(Body):
    name: Name
    description: LongText | None = None
    icon: Text | None = None


class ScriptRequest(Body):
    type: NodeType = "docker"
    scriptType: ScriptType = "shell"
    rootPath: RootPath = ""


# -- registries ---------------------------------------------------------------------------------


class RegistryBody(Body):
    name: Name
    url: RegistryUrl
    user: Text = ""
    password: Annotated[str, StringConstraints(max_length=1000), AfterValidator(names.plain_text)] | None = (
        None
    )
    description: LongText = ""


# -- deployments --------------------------------------------------------------------------------

CONFIG_PARTS: Final[dict[str, type[Message]]] = {
    "common": agent_pb2.CommonContainerConfig,
    "dagent": agent_pb2.DagentContainerConfig,
    "crane": agent_pb2.CraneContainerConfig,
}


def _strings_in(value: Any, path: str, budget: list[int]) -> None:
    """Every string (keys too) of a config part: bounded in number, storable, no NUL."""
    if isinstance(value, str):
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(f"has more than {MAX_CONFIG_STRINGS} strings")
        problem = names.text_problem(value, multiline=True)
        if problem:
            raise ValueError(f"{path} {problem}")
    elif isinstance(value, dict):
        for key, item in value.items():
            _strings_in(key, path, budget)
            _strings_in(item, f"{path}.{key}", budget)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _strings_in(item, f"{path}[{index}]", budget)


def _check_common(common: agent_pb2.CommonContainerConfig) -> None:
    """The rules the agent would apply later, checked now so that the user hears at once."""
    problem = names.label_problem(common.name) if common.name else None
    if problem:
        raise ValueError(f"name {problem}")
    _check_ports(common)
    _check_volumes(common)


def _check_ports(common: agent_pb2.CommonContainerConfig) -> None:
    for index, port in enumerate(common.ports):
        for what, number, zero in (("internal", port.internal, False), ("external", port.external, True)):
            problem = names.port_problem(number, allow_zero=zero)
            if problem:
                raise ValueError(f"ports[{index}].{what} {problem}")
    for index, binding in enumerate(common.portRanges):
        for what, rng in (("internal", binding.internal), ("external", binding.external)):
            problem = names.port_problem(getattr(rng, "from")) or names.port_problem(rng.to)
            if problem:
                raise ValueError(f"portRanges[{index}].{what} {problem}")


def _check_volumes(common: agent_pb2.CommonContainerConfig) -> None:
    seen: set[str] = set()
    for index, volume in enumerate(common.volumes):
        problem = names.volume_name_problem(volume.name) or (
            None if volume.name not in seen else "appears twice"
        )
        seen.add(volume.name)
        if problem:
            raise ValueError(f"volumes[{index}].name {volume.name!r} {problem}")
        problem = names.absolute_path_problem(volume.path)
        if problem:
            raise ValueError(f"volumes[{index}].path {problem}")


def check_config_part(part: str, value: Any) -> dict[str, Any]:
    message_type = CONFIG_PARTS[part]
    if not isinstance(value, dict):
        raise ValueError("must be an object")
    _strings_in(value, part, [MAX_CONFIG_STRINGS])
    message = message_type()
    try:
        json_format.ParseDict(value, message)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as err:
        raise ValueError(str(err).replace("\n", " ")[:300]) from None
    if isinstance(message, agent_pb2.CommonContainerConfig):
        _check_common(message)
    return copy.deepcopy(value)


class InstanceConfig(BaseModel):
    """The protocol's instance config in proto3 JSON form (§2.4), checked against its messages."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    common: dict[str, Any] | None = None
    dagent: dict[str, Any] | None = None
    crane: dict[str, Any] | None = None

    @field_validator("common", "dagent", "crane", mode="before")
    @classmethod
    def _part(cls, value: Any, info: Any) -> Any:
        if value is None:
            return None
        return check_config_part(info.field_name, value)

    def as_dict(self) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in self.model_dump().items() if v is not None}


class InstanceBody(Body):
    image: Image
    tag: Tag = "latest"
    registryId: EntityId | None = None
    config: InstanceConfig = InstanceConfig()


class DeploymentCreate(Body):
    nodeId: EntityId
    prefix: Label
    note: LongText = ""
    versionName: Text = ""
    releaseNotes: LongText = ""
    secrets: Secrets = {}
    instances: Annotated[list[InstanceBody], Field(min_length=1)]


class InstancePatch(Body):
    config: InstanceConfig = InstanceConfig()
    tag: Tag | None = None


def default_instance_name(image: str) -> str:
    last = image.rsplit("/", 1)[-1].split(":", 1)[0].lower()
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in last).strip("-")
    return cleaned[: names.MAX_LABEL].strip("-") or "app"


def merge_config(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Patches replace fields inside each part; ``null`` removes a field."""
    merged = copy.deepcopy(base)
    for part, fields in patch.items():
        target = merged.setdefault(part, {})
        for key, value in fields.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = copy.deepcopy(value)
    return merged


# -- stored records -----------------------------------------------------------------------------


class Record(BaseModel):
    """A stored row's document. Unknown keys from older versions are ignored, bad text repaired."""

    model_config = ConfigDict(extra="ignore")


class Entity(Record):
    """A stored row with its own id; lists of them are in the order they were created."""

    id: str
    created_at: float


class Installer(Record):
    """A generated install script: the single-use install token (sealed at rest) and its window."""

    token: str
    nonce: str
    expires_at: float
    node_type: NodeType = "docker"
    script_type: ScriptType = "shell"
    root_path: StoredText = ""


class NodeRecord(Entity):
    name: StoredText
    description: StoredText = ""
    icon: StoredText = ""
    type: NodeType = "docker"
    nonce: str | None = None  # nonce of the current connection token; None = no token
    public_key: StoredText = ""
    address: StoredText = ""
    version: StoredText = ""
    container_name: StoredText = ""
    connected_at: float | None = None
    installer: Installer | None = None


class RegistryRecord(Entity):
    name: StoredText
    url: StoredText
    user: StoredText = ""
    password: str = ""  # sealed
    description: StoredText = ""


class InstanceRecord(Record):
    id: str
    image: StoredText
    tag: StoredText
    registry_id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)  # own secret values sealed
    position: int = 0


class InstanceState(Record):
    instance_id: str
    state: str | None = None
    reason: StoredText = ""
    updated_at: float | None = None


DeploymentStatus = Literal["preparing", "in_progress", "successful", "failed", "obsolete", "downgraded"]


class DeploymentRecord(Entity):
    node_id: str  # this and the next two are columns of their own (``store.deployments``)
    status: str = "preparing"
    updated_at: float | None = None
    prefix: StoredText
    note: StoredText = ""
    version_name: StoredText = ""
    release_notes: StoredText = ""
    secrets: dict[str, str] = Field(default_factory=dict)  # values sealed
