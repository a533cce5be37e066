"""The pure mappings of the Docker runtime (no engine needed): image references (§17 #11),
names, sizes, Traefik labels (§14.4, §17 #19), label order, state mapping (§7)."""

from __future__ import annotations

from pathlib import Path

import pytest

from berth.errors import InvalidSpec
from berth.imageref import ImageReference, split_name_tag
from berth.model import (
    PREFIX_LABEL,
    ContainerRef,
    ContainerState,
    DockerOptions,
    ExposeStrategy,
    Port,
    PortRange,
    PortRangeBinding,
    Routing,
    SecretValue,
    WorkloadSpec,
    frozen_map,
)
from berth.runtimes.docker.container_spec import plan_container
from berth.runtimes.docker.logstream import since_after, split_lines
from berth.runtimes.docker.logwire import dechunk, demultiplex
from berth.runtimes.docker.mounts import MountPlan, size_in_bytes
from berth.runtimes.docker.status import ref_for, state_of
from berth.runtimes.docker.traefik import routing_labels
from berth.settings import DockerSettings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("library/nginx:1", "docker.io/library/nginx:1"),
        ("index.docker.io/nginx:1", "docker.io/library/nginx:1"),
        ("host:5000/team/app:2", "host:5000/team/app:2"),
        ("host:5000/app", "host:5000/app:latest"),
        ("localhost/app:1", "localhost/app:1"),
        ("ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io/o/r@sha256:" + "a" * 64),
        ("ghcr.io/o/r:1@sha256:" + "b" * 64, "ghcr.io/o/r:1@sha256:" + "b" * 64),
    ],
)
def test_image_references_follow_docker_rules(text: str, expected: str) -> None:
    assert str(ImageReference.parse(text)) == expected


def test_request_parts_are_joined_with_defaults() -> None:
    ref = ImageReference.from_request(
        "library", "nginx", "", default_registry="index.docker.io", default_tag="latest"
    )
    assert str(ref) == "docker.io/library/nginx:latest"
    ref = ImageReference.from_request(
        None, "berth/busybox", "1", default_registry="127.0.0.1:5000", default_tag="latest"
    )
    assert str(ref) == "127.0.0.1:5000/berth/busybox:1"
    with pytest.raises(InvalidSpec):
        ImageReference.parse("UPPER/case")


@pytest.mark.parametrize(
    ("reference", "name", "tag"),
    [
        ("host:5000/img:tag", "host:5000/img", "tag"),
        ("host:5000/img", "host:5000/img", "latest"),
        ("img@sha256:abc", "img", "sha256:abc"),
        ("nginx", "nginx", "latest"),
    ],
)
def test_state_items_split_name_and_tag_correctly(reference: str, name: str, tag: str) -> None:
    assert split_name_tag(reference) == (name, tag)


def test_sizes() -> None:
    assert size_in_bytes("x", "16k") == 16384
    assert size_in_bytes("x", "8Mi") == 8 * 1024 * 1024
    assert size_in_bytes("x", "100") == 100
    with pytest.raises(InvalidSpec):
        size_in_bytes("x", "lots")


def exposed(**routing: object) -> WorkloadSpec:
    return WorkloadSpec(
        id="1",
        prefix="p",
        name="web",
        image_name="nginx",
        expose=ExposeStrategy.EXPOSE_WITH_TLS,
        routing=Routing(**routing),  # type: ignore[arg-type]
        ports=(Port(80),),
    )


def test_traefik_labels_attach_the_limit_to_the_routers() -> None:
    labels = routing_labels(
        exposed(domain="a.example", path="/api", strip_path=True, upload_limit="16k", port=80),
        DockerSettings(),
    )
    assert labels["traefik.http.routers.p-web.rule"] == "Host(`a.example`) && PathPrefix(`/api`)"
    assert labels["traefik.http.middlewares.p-web-limit.buffering.maxRequestBodyBytes"] == "16384"
    assert labels["traefik.http.routers.p-web.middlewares"] == "p-web-stripper,p-web-limit"
    assert labels["traefik.http.routers.p-web-secure.middlewares"] == "p-web-stripper,p-web-limit"
    assert labels["traefik.http.routers.p-web-secure.tls.certresolver"] == "le"
    assert labels["traefik.http.services.p-web.loadbalancer.server.port"] == "80"


def test_traefik_needs_a_host_or_path_and_a_known_port() -> None:
    with pytest.raises(InvalidSpec, match="routable"):
        routing_labels(exposed(), DockerSettings())
    assert (
        "Host(`web.p.example.org`)"
        in routing_labels(exposed(), DockerSettings(root_domain="example.org"))[
            "traefik.http.routers.p-web.rule"
        ]
    )
    with pytest.raises(InvalidSpec, match="port"):
        routing_labels(exposed(domain="a", port=81), DockerSettings())


def test_labels_in_the_sheet_order_and_port_ranges() -> None:
    spec = WorkloadSpec(
        id="1",
        prefix="p",
        name="web",
        image_name="x",
        secrets={"K": SecretValue("v")},
        port_ranges=(PortRangeBinding(PortRange(8000, 8001), PortRange(9000, 9001)),),
        docker=DockerOptions(labels=frozen_map({PREFIX_LABEL: "user-wins", "a": "b"})),
    )
    plan = plan_container(
        spec,
        DockerSettings(data_mount_path=Path("/d")),
        ImageReference.parse("x"),
        {"img": "1", "io.dyrector.cap.network.v1": '{"ports":[{"listening":7000}]}'},
        MountPlan(),
    )
    assert list(plan.labels)[:4] == ["img", "io.dyrector.cap.network.v1", PREFIX_LABEL, "io.berth.managed"]
    assert plan.labels[PREFIX_LABEL] == "user-wins"  # user labels come last, as in dagent
    assert plan.host["port_bindings"] == {
        "7000/tcp": None,
        "8000/tcp": 9000,  # a bare port: every address family, as docker run -p
        "8001/tcp": 9001,
    }
    assert repr(SecretValue("v")) == "SecretValue(***)"


def test_state_mapping_and_id_rule() -> None:
    assert state_of("running") is ContainerState.RUNNING
    assert state_of("paused") is ContainerState.WAITING
    assert state_of("dead") is ContainerState.EXITED
    assert state_of("weird") is ContainerState.UNSPECIFIED
    assert ref_for("/p-web", "p") == ContainerRef("p", "web")
    assert ref_for("/p-web", None) == ContainerRef("", "p-web")
    assert ref_for("/other", "p") == ContainerRef("", "other")


def test_wire_decoding() -> None:
    frames = (
        b"\x01\x00\x00\x00\x00\x00\x00\x03ab\n" + b"\x02\x00\x00\x00\x00\x00\x00\x02c\n" + b"\x01\x00\x00"
    )
    assert demultiplex(frames) == (b"ab\nc\n", b"\x01\x00\x00")
    assert dechunk(b"3\r\nabc\r\n2\r\nde\r\n1\r") == (b"abcde", b"1\r", False)
    assert dechunk(b"1\r\nx\r\n0\r\n\r\n") == (b"x", b"", True)
    assert split_lines(b"a\r\nb\nc") == (["a\r\n", "b\n"], b"c")
    assert since_after("2026-01-01T00:00:00.999999999Z x\n") == "1767225601.000000000"
