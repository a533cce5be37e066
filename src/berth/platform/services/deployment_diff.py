"""What changed between two deployments of a prefix: instances added and removed (by name), and
for each instance in both, its image, tag, registry and every configuration value that differs.
Secret values are compared but never shown: a changed secret is reported by its key alone."""

from __future__ import annotations

from typing import Any, Final

from berth.platform.models import DeploymentRecord, InstanceRecord

HIDDEN: Final = "(hidden)"


def _name(instance: InstanceRecord) -> str:
    return str(instance.config.get("common", {}).get("name", instance.image))


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key in sorted(value):
            _flatten(value[key], f"{path}.{key}" if path else str(key), out)
    else:
        out[path] = value


def _is_secret(path: str) -> bool:
    return path.startswith("common.secrets.")


def _config_changes(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    _flatten(before, "", old)
    _flatten(after, "", new)
    changes = []
    for path in sorted(old.keys() | new.keys()):
        if old.get(path) == new.get(path):
            continue
        change: dict[str, Any] = {"path": path, "before": old.get(path), "after": new.get(path)}
        if _is_secret(path):
            change["before"] = HIDDEN if path in old else None
            change["after"] = HIDDEN if path in new else None
        changes.append(change)
    return changes


def _secret_keys(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    return {
        "added": sorted(after.keys() - before.keys()),
        "removed": sorted(before.keys() - after.keys()),
        "changed": sorted(k for k in before.keys() & after.keys() if before[k] != after[k]),
    }


def compare(
    base: DeploymentRecord,
    base_instances: list[InstanceRecord],
    other: DeploymentRecord,
    other_instances: list[InstanceRecord],
) -> dict[str, Any]:
    """``base`` is the earlier deployment; the result reads as "from base to other"."""
    old = {_name(i): i for i in base_instances}
    new = {_name(i): i for i in other_instances}
    changed = []
    for name in sorted(old.keys() & new.keys()):
        a, b = old[name], new[name]
        fields = [
            {"path": field, "before": getattr(a, attr), "after": getattr(b, attr)}
            for field, attr in (("image", "image"), ("tag", "tag"), ("registryId", "registry_id"))
            if getattr(a, attr) != getattr(b, attr)
        ]
        fields += _config_changes(a.config, b.config)
        if fields:
            changed.append({"name": name, "changes": fields})
    return {
        "base": {"id": base.id, "createdAt": base.created_at, "status": base.status},
        "other": {"id": other.id, "createdAt": other.created_at, "status": other.status},
        "prefix": other.prefix,
        "samePrefix": base.prefix == other.prefix and base.node_id == other.node_id,
        "added": [
            {"name": n, "image": new[n].image, "tag": new[n].tag} for n in sorted(new.keys() - old.keys())
        ],
        "removed": [
            {"name": n, "image": old[n].image, "tag": old[n].tag} for n in sorted(old.keys() - new.keys())
        ],
        "changed": changed,
        "unchanged": sorted(n for n in old.keys() & new.keys() if n not in {c["name"] for c in changed}),
        "secrets": _secret_keys(base.secrets, other.secrets),
    }
