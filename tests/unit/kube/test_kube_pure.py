"""Pure parts of the Kubernetes runtime (no API server): image expansion, ingress host rules,
state derivation from recorded Pod objects, the removal patch, error translation."""

from __future__ import annotations

import pytest

from berth.errors import InvalidSpec, NotFound, PermanentCommandError, TemporaryCommandError
from berth.imageref import expand, split_name_tag
from berth.model import ContainerState
from berth.runtimes.kubernetes import resources
from berth.runtimes.kubernetes.api_errors import ApiStatus, Gone, Request, translate
from berth.runtimes.kubernetes.manifests import ingress_host, quantity, removal_patch
from berth.runtimes.kubernetes.state import derive, pod_state


@pytest.mark.parametrize(
    ("registry", "image", "tag", "expected"),
    [
        (None, "nginx", "", "docker.io/library/nginx:latest"),
        ("index.docker.io", "nginx", "1.25", "docker.io/library/nginx:1.25"),
        ("127.0.0.1:5000", "berth/busybox", "1", "127.0.0.1:5000/berth/busybox:1"),
        ("https://ghcr.io/", "org/app", "v2", "ghcr.io/org/app:v2"),
        (None, "host:5000/img@sha256:" + "a" * 64, "", "host:5000/img@sha256:" + "a" * 64),
        (None, "host:5000/img:old", "new", "host:5000/img:new"),
    ],
)
def test_image_expansion(registry, image, tag, expected) -> None:
    assert expand(registry, image, tag, default_registry="index.docker.io", default_tag="latest") == expected


def test_split_name_tag_keeps_registry_ports_and_digests() -> None:
    assert split_name_tag("host:5000/img:1") == ("host:5000/img", "1")
    assert split_name_tag("host:5000/img") == ("host:5000/img", "latest")
    assert split_name_tag("img@sha256:abc") == ("img", "sha256:abc")


@pytest.mark.parametrize(
    ("domain", "root", "expected"),
    [
        ("app.example.com", "", "app.example.com"),
        (None, "example.com", "web.prod.example.com"),
        ("d", "", "web.prod.d"),
        (None, "", None),
    ],
)
def test_ingress_host(domain, root, expected) -> None:
    assert ingress_host(domain, "web", "prod", root) == expected


def test_quantities_are_validated() -> None:
    assert quantity("x", "1.5Gi") == "1.5Gi"
    with pytest.raises(InvalidSpec, match="invalid x"):
        quantity("x", "12 apples")


def _pod(name: str, created: str, state: dict | None, **status) -> dict:
    statuses = [{"name": "web", "state": state, "restartCount": 0}] if state is not None else []
    return {
        "metadata": {"name": name, "namespace": "p", "creationTimestamp": created, "labels": {"app": "web"}},
        "status": {"containerStatuses": statuses, **status},
    }


DEPLOYMENT = {
    "metadata": {
        "name": "web",
        "namespace": "p",
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": {"a": "b"},
    },
    "spec": {
        "template": {
            "spec": {"containers": [{"name": "web", "image": "h:5000/i:2", "command": ["sh", "-c"]}]}
        }
    },
}


def test_state_uses_the_newest_pod_and_maps_every_container_state() -> None:
    running = _pod("a", "2026-01-01T00:00:01Z", {"running": {}})
    crashing = _pod("b", "2026-01-01T00:00:02Z", {"waiting": {"reason": "CrashLoopBackOff"}})
    assert pod_state(running, "web") == (ContainerState.RUNNING, "Started")
    assert pod_state(_pod("c", "t", {"terminated": {"reason": "Completed"}}), "web") == (
        ContainerState.EXITED,
        "Completed",
    )
    unscheduled = _pod(
        "d",
        "t",
        None,
        phase="Pending",
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
    )
    assert pod_state(unscheduled, "web") == (ContainerState.WAITING, "Unschedulable")
    assert pod_state(_pod("e", "t", None, phase="Pending"), "web") == (ContainerState.WAITING, "Pending")
    status = derive(DEPLOYMENT, [running, crashing], {"spec": {"ports": [{"port": 8080, "targetPort": 80}]}})
    assert (status.state, status.reason) == (ContainerState.WAITING, "CrashLoopBackOff")
    assert (status.image_name, status.image_tag, status.command) == ("h:5000/i", "2", "sh -c")
    assert status.ports[0].internal == 80 and status.ports[0].external == 8080
    scaled_to_zero = derive(DEPLOYMENT, [], None)
    assert (scaled_to_zero.state, scaled_to_zero.reason, scaled_to_zero.ports) == (
        ContainerState.EXITED,
        "",
        (),
    )


def test_removal_patch_clears_dropped_probes_and_rolling_update() -> None:
    live = {
        "spec": {
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
            "template": {
                "spec": {"containers": [{"name": "web", "livenessProbe": {}, "readinessProbe": {}}]}
            },
        }
    }
    desired = {
        "spec": {
            "strategy": {"type": "Recreate"},
            "template": {"spec": {"containers": [{"name": "web", "readinessProbe": {}}]}},
        }
    }
    assert removal_patch(live, desired) == {
        "spec": {
            "template": {"spec": {"containers": [{"name": "web", "livenessProbe": None}]}},
            "strategy": {"type": "Recreate", "rollingUpdate": None},
        }
    }
    assert removal_patch(desired, desired) is None


def test_api_errors_are_translated_naming_what_failed() -> None:
    request = Request("patch", resources.INGRESS, "prod", "web")
    assert isinstance(translate(ApiStatus.parse(404, b"{}"), request), NotFound)
    conflict = translate(ApiStatus.parse(409, b'{"message": "Apply failed with 1 conflict"}'), request)
    assert isinstance(conflict, PermanentCommandError) and "conflict on Ingress prod/web" in str(conflict)
    body = b'{"code":422,"details":{"causes":[{"field":"spec.rules[0].host","message":"Invalid value"}]}}'
    invalid = translate(ApiStatus.parse(422, body), request)
    assert isinstance(invalid, InvalidSpec) and invalid.field == "Ingress.spec.rules[0].host"
    forbidden = translate(ApiStatus.parse(403, b'{"message": "forbidden"}'), request)
    assert "lacks the permission to patch ingresses (API group networking.k8s.io) in namespace prod" in str(
        forbidden
    )
    assert isinstance(translate(ApiStatus.parse(410, b""), request), Gone)
    assert isinstance(translate(ApiStatus.parse(503, b"not json"), request), TemporaryCommandError)
