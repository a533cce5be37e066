"""What the node should run: the last successful deployment of each prefix, kept in the data
folder so that the agent can reconcile and report drift while the platform is away.

One file per prefix, ``<data>/desired/<prefix>.json`` (0600, written atomically). Secrets stay
as the platform sent them (OpenPGP messages to the agent's key), the registry password is
encrypted to the agent's own key: nothing secret is stored in clear. Blocking file I/O: call
from a thread.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import time
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from berth import files, model
from berth.errors import PersistenceError
from berth.model import ContainerRef, DeploymentSpec, RegistryAuth, WorkloadSpec, frozen_map
from berth.names import label_problem

FOLDER: Final = "desired"
SPEC_HASH_LABEL: Final = "io.berth.spec-hash"


@dataclass(frozen=True, slots=True)
class DesiredDeployment:
    """A prefix's desired state. ``deployment``'s workloads carry no secret values; their
    encrypted secrets are in ``encrypted_secrets`` (by workload name), the registry passwords
    (encrypted to the agent's key) in ``encrypted_registry_passwords``."""

    deployment: DeploymentSpec
    encrypted_secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    encrypted_registry_passwords: Mapping[str, str] = field(default_factory=dict)
    stopped: frozenset[str] = frozenset()  # workloads the platform stopped: not started again
    saved_at: float = 0.0

    @property
    def prefix(self) -> str:
        return self.deployment.prefix

    def workload(self, name: str) -> WorkloadSpec | None:
        return next((w for w in self.deployment.workloads if w.name == name), None)

    def merged(self, newer: DesiredDeployment) -> DesiredDeployment:
        """``newer``'s workloads replace same-named ones; the others stay desired."""
        names = {w.name for w in newer.deployment.workloads}
        kept = tuple(w for w in self.deployment.workloads if w.name not in names)
        secrets = {k: v for k, v in self.encrypted_secrets.items() if k not in names}
        passwords = {k: v for k, v in self.encrypted_registry_passwords.items() if k not in names}
        return DesiredDeployment(
            deployment=dataclasses.replace(newer.deployment, workloads=kept + newer.deployment.workloads),
            encrypted_secrets={**secrets, **newer.encrypted_secrets},
            encrypted_registry_passwords={**passwords, **newer.encrypted_registry_passwords},
            stopped=self.stopped - names,
            saved_at=newer.saved_at,
        )

    def without(self, name: str | None) -> DesiredDeployment | None:
        """Forget one workload (``None``: the whole prefix); ``None`` when nothing is left."""
        if name is None:
            return None
        workloads = tuple(w for w in self.deployment.workloads if w.name != name)
        if not workloads:
            return None
        return dataclasses.replace(
            self,
            deployment=dataclasses.replace(self.deployment, workloads=workloads),
            encrypted_secrets={k: v for k, v in self.encrypted_secrets.items() if k != name},
            encrypted_registry_passwords={
                k: v for k, v in self.encrypted_registry_passwords.items() if k != name
            },
            stopped=self.stopped - {name},
        )


def spec_hash(workload: WorkloadSpec) -> str:
    """A stable fingerprint of what a workload is configured to be (secret names, never values;
    no credentials; not the per-deployment instance id)."""
    document = _encode(
        dataclasses.replace(
            workload,
            id="",
            registry_auth=None,
            secrets=frozen_map(dict.fromkeys(sorted(workload.secrets), "")),  # type: ignore[arg-type]
        )
    )
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


# -- the store ------------------------------------------------------------------------------------


class DesiredStateStore:
    def __init__(self, data_dir: Path) -> None:
        self._folder = data_dir / FOLDER

    def path(self, prefix: str) -> Path:
        if label_problem(prefix):
            raise PersistenceError(f"prefix {prefix!r} cannot name a desired-state file")
        return self._folder / f"{prefix}.json"

    def load(self, prefix: str) -> DesiredDeployment | None:
        path = self.path(prefix)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            raise PersistenceError(f"cannot read {path}: {err.strerror}") from err
        try:
            desired: DesiredDeployment = _decode(DesiredDeployment, json.loads(text))
        except (ValueError, TypeError, KeyError) as err:
            raise PersistenceError(f"{path} is not a desired-state file: {err}") from err
        return desired

    def load_all(self) -> list[DesiredDeployment]:
        try:
            names = sorted(p.stem for p in self._folder.glob("*.json"))
        except OSError as err:
            raise PersistenceError(f"cannot list {self._folder}: {err.strerror}") from err
        found = [self.load(name) for name in names if label_problem(name) is None]
        return [desired for desired in found if desired is not None]

    def save(self, desired: DesiredDeployment) -> None:
        path = self.path(desired.prefix)
        text = json.dumps(_encode(desired), indent=1, sort_keys=True)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            files.write_atomic(path, text)
        except OSError as err:
            raise PersistenceError(f"cannot write {path}: {err.strerror}") from err

    def delete(self, prefix: str) -> None:
        try:
            self.path(prefix).unlink(missing_ok=True)
        except OSError as err:
            raise PersistenceError(f"cannot remove the desired state of {prefix}: {err.strerror}") from err

    def remember(self, desired: DesiredDeployment) -> None:
        current = self.load(desired.prefix)
        self.save(current.merged(desired) if current is not None else desired)

    def forget(self, prefix: str, name: str | None) -> None:
        current = self.load(prefix)
        if current is None:
            return
        remaining = current.without(name)
        if remaining is None:
            self.delete(prefix)
        else:
            self.save(remaining)

    def mark(self, ref: ContainerRef, *, stopped: bool) -> None:
        current = self.load(ref.prefix) if label_problem(ref.prefix) is None else None
        if current is None or current.workload(ref.name) is None:
            return
        names = current.stopped | {ref.name} if stopped else current.stopped - {ref.name}
        if names != current.stopped:
            self.save(dataclasses.replace(current, stopped=names, saved_at=time.time()))


def strip_secrets(deployment: DeploymentSpec) -> DeploymentSpec:
    """The deployment without secret values and registry passwords (what the file keeps)."""
    workloads = []
    for workload in deployment.workloads:
        auth = workload.registry_auth
        workloads.append(
            dataclasses.replace(
                workload,
                secrets=types.MappingProxyType({}),
                registry_auth=dataclasses.replace(auth, password="") if auth is not None else None,
            )
        )
    return dataclasses.replace(deployment, workloads=tuple(workloads))


def with_password(auth: RegistryAuth | None, password: str) -> RegistryAuth | None:
    return dataclasses.replace(auth, password=password) if auth is not None else None


# -- JSON encoding of the model's frozen dataclasses ------------------------------------------------


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, tuple | list | frozenset | set):
        items = [_encode(v) for v in value]
        return sorted(items) if isinstance(value, frozenset | set) else items
    return value


_NAMESPACE: Final = {**vars(model), "DesiredDeployment": DesiredDeployment}


def _decode(cls: Any, raw: Any) -> Any:
    hints = typing.get_type_hints(cls, globalns=_NAMESPACE)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            values[f.name] = _decode_value(hints[f.name], raw[f.name])
    return cls(**values)


def _decode_value(hint: Any, raw: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if raw is None:
        return None
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        return _decode_value(inner[0], raw)
    if dataclasses.is_dataclass(hint):
        return _decode(hint, raw)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint[raw]
    if origin is tuple:
        return tuple(_decode_value(args[0], item) for item in raw)
    if origin is frozenset:
        return frozenset(raw)
    if origin in (Mapping, dict) or hint is Mapping:
        value_hint = args[1] if len(args) == 2 else Any
        return frozen_map({k: _decode_value(value_hint, v) for k, v in raw.items()})
    return raw
