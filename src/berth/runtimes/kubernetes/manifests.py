"""The objects one workload becomes (§15.2 to §15.6 with the §17 corrections), as plain dicts.

Pure functions: no API calls. Everything here is deterministic for a given request, so that
re-applying the same deployment is a no-op for the API server (no pod restarts); the deployment
id is stamped into the pod template so that a new deployment rolls the pods (a moved tag is
pulled again, ``imagePullPolicy: Always``).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from berth.errors import InvalidSpec
from berth.imageref import expand, is_pinned
from berth.model import (
    MANAGED_LABEL,
    DeploymentStrategy,
    ExposeStrategy,
    VolumeType,
    WorkloadSpec,
)
from berth.names import checked_label
from berth.settings import KubernetesSettings

Obj = dict[str, Any]

MANAGED: Final = {MANAGED_LABEL: "true"}
APP_LABEL: Final = "app"
DEPLOYMENT_ID_ANNOTATION: Final = "io.berth/deployment-id"
RESTARTED_AT_ANNOTATION: Final = "crane.dyrector.io/restartedAt"
PROBE_INITIAL_DELAY_S: Final = 30
CORS_HEADERS: Final = "X-Forwarded-For, X-Forwarded-Host, X-Forwarded-Server, X-Real-IP, X-Requested-With"
NGINX: Final = "nginx.ingress.kubernetes.io"

_QUANTITY = re.compile(
    r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+)?$"
)


def quantity(field_name: str, value: str) -> str:
    text = value.strip()
    if not _QUANTITY.match(text):
        raise InvalidSpec(field_name, f"{value!r} is not a Kubernetes quantity (e.g. 100m, 128Mi, 1G)")
    return text


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _meta(name: str, namespace: str, labels: Mapping[str, str] | None = None, **extra: Any) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "labels": {**MANAGED, **(labels or {})}}
    meta.update({k: v for k, v in extra.items() if v})
    return meta


def namespace(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": checked_label("prefix", name), "labels": dict(MANAGED)},
    }


def opaque_secret(name: str, ns: str, data: Mapping[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(name, ns),
        "data": {k: _b64(v) for k, v in sorted(data.items())},
    }


def shared_secret(prefix: str, secrets: Mapping[str, str]) -> Obj:
    """``<prefix>-shared``: the deployment-level secrets, kept only for listSecrets (§15.2)."""
    return opaque_secret(f"{prefix}-shared", prefix, secrets)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadObjects:
    """What a workload is made of, in apply order (§15.2 pipeline)."""

    config_map: Obj | None = None
    pvcs: tuple[Obj, ...] = ()
    secret: Obj
    service: Obj | None = None
    pull_secret: Obj | None = None
    deployment: Obj
    ingress: Obj | None = None
    service_monitor: Obj | None = None
    notes: tuple[str, ...] = field(default=())


def build(spec: WorkloadSpec, deployment_id: str, settings: KubernetesSettings) -> WorkloadObjects:
    ns = checked_label("prefix", spec.prefix)
    name = checked_label("name", spec.name)
    env = dict(spec.environment)
    config_map = (
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(name, ns),
            "data": dict(sorted(env.items())),
        }
        if env
        else None
    )
    secret = opaque_secret(name, ns, dict(spec.secrets))
    pull_secret = _pull_secret(spec, ns, name)
    ports = _service_ports(spec)
    service = _service(spec, ns, name, ports) if ports else None
    ingress = _ingress(spec, ns, name, ports, settings)
    monitor = _service_monitor(spec, ns, name, ports)
    pvcs = tuple(_pvcs(spec, ns, name, settings))
    deployment = _deployment(
        spec,
        ns,
        name,
        deployment_id=deployment_id,
        settings=settings,
        config_map=config_map,
        secret=secret,
        pull_secret=pull_secret,
    )
    return WorkloadObjects(
        deployment=deployment,
        secret=secret,
        config_map=config_map,
        pull_secret=pull_secret,
        pvcs=pvcs,
        service=service,
        ingress=ingress,
        service_monitor=monitor,
    )


# -- registry, ports, service -------------------------------------------------------------------


def _pull_secret(spec: WorkloadSpec, ns: str, name: str) -> Obj | None:
    auth = spec.registry_auth
    if auth is None:
        return None
    url = auth.url.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    config = {
        "auths": {
            url: {
                "username": auth.user,
                "password": auth.password,
                "auth": _b64(f"{auth.user}:{auth.password}"),
            }
        }
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": _meta(f"{name}-reg", ns),
        "data": {".dockerconfigjson": _b64(json.dumps(config, sort_keys=True))},
    }


def _service_ports(spec: WorkloadSpec) -> list[int]:
    """Internal ports, in request order, port ranges inclusive (§17 #46), without duplicates."""
    seen: dict[int, None] = {}
    for port in spec.ports:
        seen.setdefault(_port("ports.internal", port.internal), None)
    for binding in spec.port_ranges:
        start, end = binding.internal.start, binding.internal.end
        if end < start:
            raise InvalidSpec("portRanges.internal", f"end {end} is before start {start}")
        for value in range(start, end + 1):
            seen.setdefault(_port("portRanges.internal", value), None)
    return list(seen)


def _port(field_name: str, value: int) -> int:
    if not 0 < value < 65536:
        raise InvalidSpec(field_name, f"{value} is not a port number")
    return value


def _service(spec: WorkloadSpec, ns: str, name: str, ports: list[int]) -> Obj:
    opts = spec.kubernetes
    labels = {**_user_labels(opts.labels.service if opts.labels else {}), APP_LABEL: name}
    annotations: dict[str, str] = {}
    if opts.use_load_balancer:
        annotations.update(opts.extra_lb_annotations)
    if opts.annotations:
        annotations.update(opts.annotations.service)
    svc_spec: Obj = {
        "selector": {APP_LABEL: name},
        "ports": [{"name": f"tcp-{p}", "port": p, "targetPort": p, "protocol": "TCP"} for p in ports],
        "type": "LoadBalancer" if opts.use_load_balancer else "ClusterIP",
    }
    if opts.use_load_balancer:
        svc_spec["externalTrafficPolicy"] = "Local"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, ns, labels, annotations=annotations),
        "spec": svc_spec,
    }


def _user_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """User labels never override the ``app`` selector label (§17 #47)."""
    return {k: v for k, v in labels.items() if k != APP_LABEL}


# -- ingress and service monitor ------------------------------------------------------------------


def ingress_host(domain: str | None, name: str, prefix: str, root_domain: str) -> str | None:
    """§15.4: ``routing.domain`` or ``<name>.<prefix>.<ROOT_DOMAIN>``; no root → no host."""
    domain = (domain or "").strip().strip(".")
    if domain and "." in domain:
        return domain
    root = domain or root_domain.strip().strip(".")
    if not root:
        return None
    return f"{name}.{prefix}.{root}"


def _ingress_path(spec: WorkloadSpec, path: str) -> tuple[str, dict[str, str]]:
    """The ingress path (a regex when the prefix is stripped) and the NGINX annotations for
    stripping, the upload limit and the proxy headers."""
    routing, opts = spec.routing, spec.kubernetes
    annotations: dict[str, str] = {}
    if routing and routing.strip_path and path != "/":
        path = f"{path.rstrip('/')}/?(.*)"
        annotations[f"{NGINX}/rewrite-target"] = "/$1"
        annotations[f"{NGINX}/use-regex"] = "true"
    if routing and routing.upload_limit:
        annotations[f"{NGINX}/proxy-body-size"] = routing.upload_limit
    if opts.proxy_headers:
        headers = ", ".join([*opts.custom_headers, CORS_HEADERS]) if opts.custom_headers else CORS_HEADERS
        annotations.update(
            {
                f"{NGINX}/enable-cors": "true",
                f"{NGINX}/proxy-buffering": "on",
                f"{NGINX}/proxy-buffer-size": "256k",
                f"{NGINX}/cors-allow-headers": headers,
            }
        )
    return path, annotations


def _ingress(
    spec: WorkloadSpec, ns: str, name: str, ports: list[int], settings: KubernetesSettings
) -> Obj | None:
    if spec.expose not in (ExposeStrategy.EXPOSE, ExposeStrategy.EXPOSE_WITH_TLS):
        return None
    if not ports:
        raise InvalidSpec("expose", "exposing a workload needs at least one port")
    opts = spec.kubernetes
    routing = spec.routing
    port = routing.port if routing and routing.port else ports[0]
    if port not in ports:
        raise InvalidSpec("routing.port", f"{port} is not one of the workload's ports")
    host = ingress_host(routing.domain if routing else None, name, ns, settings.root_domain)
    path = (routing.path if routing and routing.path else "/").strip() or "/"
    if not path.startswith("/"):
        path = f"/{path}"
    path, annotations = _ingress_path(spec, path)
    rule: Obj = {
        "http": {
            "paths": [
                {
                    "path": path,
                    "pathType": "ImplementationSpecific",
                    "backend": {"service": {"name": name, "port": {"number": port}}},
                }
            ]
        }
    }
    if host:
        rule["host"] = host
    ing_spec: Obj = {"rules": [rule]}
    if settings.ingress_class:
        ing_spec["ingressClassName"] = settings.ingress_class
    if spec.expose == ExposeStrategy.EXPOSE_WITH_TLS:
        if not host:
            raise InvalidSpec("routing.domain", "TLS needs a host (a domain or ROOT_DOMAIN)")
        ing_spec["tls"] = [{"hosts": [host], "secretName": f"{name}-tls"}]
        annotations["kubernetes.io/tls-acme"] = "true"
        annotations["cert-manager.io/cluster-issuer"] = "letsencrypt-prod"
    if opts.annotations:
        annotations.update(opts.annotations.ingress)
    labels = _user_labels(opts.labels.ingress) if opts.labels else {}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _meta(name, ns, labels, annotations=annotations),
        "spec": ing_spec,
    }


def _service_monitor(spec: WorkloadSpec, ns: str, name: str, ports: list[int]) -> Obj | None:
    metrics = spec.kubernetes.metrics
    if metrics is None:
        return None
    if not ports:
        raise InvalidSpec("metrics", "metrics need at least one port for the Service")
    endpoint: Obj = {"path": metrics.path or "/metrics"}
    if metrics.port:
        endpoint["targetPort"] = metrics.port
    else:
        endpoint["port"] = f"tcp-{ports[0]}"
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(name, ns),
        "spec": {"selector": {"matchLabels": {APP_LABEL: name}}, "endpoints": [endpoint]},
    }


# -- volumes ---------------------------------------------------------------------------------------

_PVC_TYPES: Final = {VolumeType.RO, VolumeType.RWO, VolumeType.RWX, VolumeType.UNSPECIFIED, None}


def _pvc_name(workload: str, volume: str) -> str:
    return checked_label("volumes.name", f"{workload}-{volume}")


def _access_mode(vtype: VolumeType | None, settings: KubernetesSettings) -> tuple[str, bool]:
    """(access mode, mount read-only). RO is read-write RWO unless the operator opts in (§15.5)."""
    if vtype == VolumeType.RWX:
        return "ReadWriteMany", False
    if vtype == VolumeType.RO and settings.strict_read_only_volumes:
        return "ReadOnlyMany", True
    return "ReadWriteOnce", False


def _pvcs(spec: WorkloadSpec, ns: str, name: str, settings: KubernetesSettings) -> list[Obj]:
    claims = []
    for volume in spec.volumes:
        if volume.type not in _PVC_TYPES:
            continue
        mode, _ = _access_mode(volume.type, settings)
        size = quantity(f"volumes[{volume.name}].size", volume.size or settings.default_volume_size)
        pvc_spec: Obj = {"accessModes": [mode], "resources": {"requests": {"storage": size}}}
        if volume.storage_class:
            pvc_spec["storageClassName"] = volume.storage_class
        claims.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": _meta(_pvc_name(name, volume.name), ns),
                "spec": pvc_spec,
            }
        )
    return claims


def _pod_volumes(spec: WorkloadSpec, name: str, settings: KubernetesSettings) -> tuple[list[Obj], list[Obj]]:
    """(pod volumes, main container mounts); every MEM/TMP/SECRET volume survives (§17 #35)."""
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    for volume in spec.volumes:
        vol_name = checked_label("volumes.name", volume.name)
        read_only = False
        if volume.type in (VolumeType.MEM, VolumeType.TMP):
            size = quantity(f"volumes[{volume.name}].size", volume.size or settings.default_volume_size)
            empty_dir: Obj = {"sizeLimit": size}
            if volume.type == VolumeType.MEM:
                empty_dir["medium"] = "Memory"
            volumes.append({"name": vol_name, "emptyDir": empty_dir})
        elif volume.type == VolumeType.SECRET:
            volumes.append({"name": vol_name, "secret": {"secretName": vol_name}})
            read_only = True
        else:
            _, read_only = _access_mode(volume.type, settings)
            claim: Obj = {"claimName": _pvc_name(name, volume.name)}
            if read_only:
                claim["readOnly"] = True
            volumes.append({"name": vol_name, "persistentVolumeClaim": claim})
        if not volume.path.startswith("/"):
            raise InvalidSpec(f"volumes[{volume.name}].path", "must be an absolute path")
        mount: Obj = {"name": vol_name, "mountPath": volume.path}
        if read_only:
            mount["readOnly"] = True
        mounts.append(mount)
    return volumes, mounts


# -- deployment ------------------------------------------------------------------------------------


def _resources(spec: WorkloadSpec, settings: KubernetesSettings) -> Obj:
    config = spec.kubernetes.resources
    limits = config.limits if config else None
    requests = config.requests if config else None
    cpu_limit = quantity(
        "resourceConfig.limits.cpu", (limits.cpu if limits else None) or settings.default_limits_cpu
    )
    result: Obj = {
        "limits": {
            "memory": quantity(
                "resourceConfig.limits.memory",
                (limits.memory if limits else None) or settings.default_limits_memory,
            )
        },
        "requests": {
            "cpu": quantity(
                "resourceConfig.requests.cpu",
                (requests.cpu if requests else None) or settings.default_requests_cpu,
            ),
            "memory": quantity(
                "resourceConfig.requests.memory",
                (requests.memory if requests else None) or settings.default_requests_memory,
            ),
        },
    }
    if cpu_limit != "0":  # "0" means: no CPU limit
        result["limits"]["cpu"] = cpu_limit
    return result


def _probes(spec: WorkloadSpec, ports: list[int]) -> Obj:
    check = spec.kubernetes.health_check
    if check is None:
        return {}
    paths = {
        "livenessProbe": check.liveness_path,
        "readinessProbe": check.readiness_path,
        "startupProbe": check.startup_path,  # its own path (§17 #34)
    }
    wanted = {k: v for k, v in paths.items() if v}
    if not wanted:
        return {}
    port = check.port or (ports[0] if ports else None)
    if port is None:
        raise InvalidSpec("healthCheckConfig.port", "a probe path needs a port")
    return {
        key: {
            "httpGet": {"path": path, "port": _port("healthCheckConfig.port", port)},
            "initialDelaySeconds": PROBE_INITIAL_DELAY_S,
            "failureThreshold": 1,
        }
        for key, path in wanted.items()
    }


def _env_from(config_map: Obj | None, secret: Obj) -> list[Obj]:
    sources: list[Obj] = []
    if config_map is not None:
        sources.append({"configMapRef": {"name": config_map["metadata"]["name"]}})
    if secret["data"]:
        sources.append({"secretRef": {"name": secret["metadata"]["name"]}})
    return sources


def _env_list(env: Mapping[str, str]) -> list[Obj]:
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def _volume_mount(spec: WorkloadSpec, field_name: str, volume: str, path: str) -> Obj:
    if volume not in {v.name for v in spec.volumes}:
        raise InvalidSpec(field_name, f"volume {volume!r} is not one of the workload's volumes")
    return {"name": volume, "mountPath": path}


def _init_containers(spec: WorkloadSpec, settings: KubernetesSettings, env_from: list[Obj]) -> list[Obj]:
    containers: list[Obj] = []
    if spec.config_container is not None:
        cc = spec.config_container
        command = ["rsync", "-a", cc.path, "/targetconfig"]
        if not cc.keep_files:
            command.insert(1, "--delete")
        containers.append(
            {
                "name": "config-loader",
                "image": _image(cc.image, "", settings),
                "imagePullPolicy": "Always",
                "command": command,
                "volumeMounts": [_volume_mount(spec, "configContainer.volume", cc.volume, "/targetconfig")],
            }
        )
    if spec.import_container is not None:
        ic = spec.import_container
        container: Obj = {
            "name": "import",
            "image": settings.import_container_image,
            "imagePullPolicy": "Always",
            "args": ic.command.split(),
            "volumeMounts": [_volume_mount(spec, "importContainer.volume", ic.volume, "/data/output")],
        }
        if ic.environment:
            container["env"] = _env_list(ic.environment)
        containers.append(container)
    for init in spec.init_containers:
        container = {
            "name": checked_label("initContainers.name", init.name),
            "image": _image(init.image, "", settings),
            "imagePullPolicy": "Always",
        }
        if init.command:
            container["command"] = list(init.command)
        if init.args:
            container["args"] = list(init.args)
        if init.environment:
            container["env"] = _env_list(init.environment)
        if init.use_parent_config and env_from:
            container["envFrom"] = env_from
        if init.volumes:
            container["volumeMounts"] = [
                _volume_mount(spec, f"initContainers[{init.name}].volumes", link.name, link.path)
                for link in init.volumes
            ]
        containers.append(container)
    return containers


def _image(image_name: str, tag: str, settings: KubernetesSettings, registry: str | None = None) -> str:
    return expand(
        registry,
        image_name,
        tag,
        default_registry=settings.default_registry,
        default_tag=settings.default_tag,
    )


def _main_container(
    spec: WorkloadSpec,
    name: str,
    *,
    image: str,
    settings: KubernetesSettings,
    ports: list[int],
    env_from: list[Obj],
    mounts: list[Obj],
) -> Obj:
    container: Obj = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent" if is_pinned(image) else "Always",
        "resources": _resources(spec, settings),
        **_probes(spec, ports),
    }
    optional: Obj = {
        "command": list(spec.commands),
        "args": list(spec.args),
        "envFrom": env_from,
        "ports": [{"name": f"port-{p}", "containerPort": p, "protocol": "TCP"} for p in ports],
        "tty": spec.tty or None,
        "workingDir": spec.working_directory,
        "securityContext": {"runAsUser": spec.user} if spec.user is not None else None,
        "volumeMounts": mounts,
    }
    container.update({key: value for key, value in optional.items() if value})
    return container


def _deployment(
    spec: WorkloadSpec,
    ns: str,
    name: str,
    *,
    deployment_id: str,
    settings: KubernetesSettings,
    config_map: Obj | None,
    secret: Obj,
    pull_secret: Obj | None,
) -> Obj:
    opts = spec.kubernetes
    image = _image(spec.image_name, spec.tag, settings, spec.registry)
    ports = _service_ports(spec)
    env_from = _env_from(config_map, secret)
    volumes, mounts = _pod_volumes(spec, name, settings)
    container = _main_container(
        spec, name, image=image, settings=settings, ports=ports, env_from=env_from, mounts=mounts
    )
    pod_labels = {**(_user_labels(opts.labels.deployment) if opts.labels else {}), APP_LABEL: name}
    pod_annotations = {**(dict(opts.annotations.deployment) if opts.annotations else {})}
    pod_annotations[DEPLOYMENT_ID_ANNOTATION] = deployment_id
    pod_spec: Obj = {"containers": [container]}
    init_containers = _init_containers(spec, settings, env_from)
    if init_containers:
        pod_spec["initContainers"] = init_containers
    if volumes:
        pod_spec["volumes"] = volumes
    if pull_secret is not None:
        pod_spec["imagePullSecrets"] = [{"name": pull_secret["metadata"]["name"]}]
    dep_spec: Obj = {
        "replicas": 1,
        "selector": {"matchLabels": {APP_LABEL: name}},
        "template": {"metadata": {"labels": pod_labels, "annotations": pod_annotations}, "spec": pod_spec},
    }
    strategy = opts.deployment_strategy
    if strategy == DeploymentStrategy.RECREATE:
        dep_spec["strategy"] = {"type": "Recreate"}
    elif strategy == DeploymentStrategy.ROLLING_UPDATE:
        dep_spec["strategy"] = {"type": "RollingUpdate"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, ns), "spec": dep_spec}


PROBES: Final = ("livenessProbe", "readinessProbe", "startupProbe")


def removal_patch(live: Obj, desired: Obj) -> Obj | None:
    """A strategic merge patch that clears structs the new Deployment no longer sets.

    Server-side apply removes a dropped field, but the API server's defaulted sub-fields (a probe's
    ``timeoutSeconds``, ``httpGet.scheme``; a strategy's ``rollingUpdate``) belong to no manager and
    stay behind, leaving an invalid half-struct (seen on 1.20: "httpGet.port: Invalid value: 0").
    """
    live_spec = live.get("spec") or {}
    spec_patch: Obj = {}
    live_containers = {
        c["name"]: c for c in live_spec.get("template", {}).get("spec", {}).get("containers", [])
    }
    container_patches = []
    for container in desired["spec"]["template"]["spec"]["containers"]:
        current = live_containers.get(container["name"])
        if current is None:
            continue
        dropped = {probe: None for probe in PROBES if probe in current and probe not in container}
        if dropped:
            container_patches.append({"name": container["name"], **dropped})
    if container_patches:
        spec_patch["template"] = {"spec": {"containers": container_patches}}
    desired_strategy = desired["spec"].get("strategy", {}).get("type")
    if desired_strategy == "Recreate" and "rollingUpdate" in live_spec.get("strategy", {}):
        spec_patch["strategy"] = {"type": "Recreate", "rollingUpdate": None}
    return {"spec": spec_patch} if spec_patch else None
