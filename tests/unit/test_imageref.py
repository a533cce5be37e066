"""The one reading of image references (both runtimes, the updaters, the platform)."""

from __future__ import annotations

import pytest

from berth.errors import InvalidSpec, UpdateRefused
from berth.imageref import ImageReference, check_update_tag, expand, has_registry, split_name_tag, with_tag


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("host:5000/img", True),
        ("registry.local/a/b", True),
        ("localhost/a", True),
        ("org/app", False),
        ("nginx", False),
    ],
)
def test_a_registry_is_a_first_part_with_a_dot_a_port_or_localhost(name: str, expected: bool) -> None:
    assert has_registry(name) is expected


@pytest.mark.parametrize("alias", ["docker.io", "index.docker.io", "registry-1.docker.io", "Index.Docker.IO"])
def test_every_hub_alias_reads_the_same_in_parse_and_expand(alias: str) -> None:
    assert str(ImageReference.parse(f"{alias}/nginx:1")) == "docker.io/library/nginx:1"
    assert (
        expand(alias, "nginx", "1", default_registry="", default_tag="latest") == "docker.io/library/nginx:1"
    )


def test_the_docker_and_kubernetes_views_of_a_running_image_agree() -> None:
    for reference in (
        "host:5000/img:1",
        "host:5000/img",
        "img@sha256:" + "a" * 64,
        "docker.io/library/nginx:1.25",
    ):
        parsed = ImageReference.parse(reference)
        name, tag = split_name_tag(reference)
        assert tag == (parsed.tag or parsed.digest)
        assert ImageReference.parse(name).name == parsed.name


@pytest.mark.parametrize("bad", ["nginx:", "nginx@", "nginx:t\u00e4g", "UPPER/case", "a b"])
def test_parse_refuses_what_docker_refuses(bad: str) -> None:
    with pytest.raises(InvalidSpec):
        ImageReference.parse(bad)


def test_an_update_keeps_the_repository_and_checks_the_tag() -> None:
    assert with_tag("127.0.0.1:5000/berth/agent:1@sha256:" + "b" * 64, "2") == "127.0.0.1:5000/berth/agent:2"
    assert check_update_tag("1.2.3-rc_1") == "1.2.3-rc_1"
    for bad in ("", "-x", "../x", "t\u00e4g", "a" * 129):
        with pytest.raises(UpdateRefused):
            check_update_tag(bad)
