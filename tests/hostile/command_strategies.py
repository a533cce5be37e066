"""Hypothesis strategies for platform commands across and beyond the valid range: names and
prefixes of every shape, 32-bit ports, path traversal in volume names and links, unicode, huge
maps, empty fields, undecryptable secrets, garbage tokens."""

from __future__ import annotations

import uuid

from hypothesis import strategies as st

from berth.proto import agent_pb2, common_pb2

INT32 = st.integers(-(2**31), 2**31 - 1)
UINT32 = st.integers(0, 2**32 - 1)
SHORT = st.text(max_size=24)

NAMES = st.one_of(
    st.sampled_from(["web", "a", "x" * 63, "x" * 64, "", "-", "A", "a_b", "w/../x", "a b", "ünï", "a-", "0"]),
    st.text(max_size=70),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True),
)
VOLUME_NAMES = st.one_of(
    st.sampled_from(["data", "../../etc", "/", "a/../../b", "~root", "a\x00b", "", "..", "./x", "//x"]),
    SHORT,
)
PATHS = st.one_of(st.sampled_from(["/data", "relative", "", "/", "/../x", "/a\x00"]), SHORT)
SECRETS = st.sampled_from(
    ["", "not pgp", "-----BEGIN PGP MESSAGE-----\n\nhF4DAAAA\n=AAAA\n-----END PGP MESSAGE-----\n", "\x00" * 8]
)
HUGE_MAP = st.integers(0, 3000).map(lambda n: {f"K{i}": "v" * 16 for i in range(n)})
ENV = st.one_of(st.dictionaries(SHORT, st.text(max_size=200), max_size=20), HUGE_MAP)


def _port(internal: int, external: int | None) -> agent_pb2.Port:
    port = agent_pb2.Port(internal=internal)
    if external is not None:
        port.external = external
    return port


PORTS = st.builds(_port, INT32, st.none() | INT32)


def _range(a: int, b: int, c: int, d: int) -> agent_pb2.PortRangeBinding:
    binding = agent_pb2.PortRangeBinding()
    setattr(binding.internal, "from", a)
    binding.internal.to = b
    setattr(binding.external, "from", c)
    binding.external.to = d
    return binding


PORT_RANGES = st.builds(_range, INT32, INT32, INT32, INT32)


def _volume(name: str, path: str, size: str | None, kind: int | None) -> agent_pb2.Volume:
    volume = agent_pb2.Volume(name=name, path=path)
    if size is not None:
        volume.size = size
    if kind is not None:
        volume.type = kind  # type: ignore[assignment]
    return volume


VOLUMES = st.builds(
    _volume,
    VOLUME_NAMES,
    PATHS,
    st.none() | st.sampled_from(["1G", "16k", "-1", "abc", "99999999999999999999P", ""]),
    st.none() | st.integers(0, 7),
)
INITS = st.builds(
    lambda name, links, image: agent_pb2.InitContainer(
        name=name,
        image=image,
        volumes=[agent_pb2.VolumeLink(name=a, path=b) for a, b in links],
        command=["true"],
    ),
    NAMES,
    st.lists(st.tuples(VOLUME_NAMES, PATHS), max_size=3),
    st.sampled_from(["local/busybox:1", "", "::", "UPPER/Case"]),
)


def workloads(
    images: st.SearchStrategy[tuple[str, str]],
) -> st.SearchStrategy[agent_pb2.DeployWorkloadRequest]:
    """Workloads whose image comes from ``images`` (the Docker examples keep to local images: a
    fuzzed name must never send the engine to a public registry)."""

    def build(
        workload_id: str,
        name: str,
        image: tuple[str, str],
        ports: list[agent_pb2.Port],
        ranges: list[agent_pb2.PortRangeBinding],
        volumes: list[agent_pb2.Volume],
        env: dict[str, str],
        secrets: dict[str, str],
        inits: list[agent_pb2.InitContainer],
        args: list[str],
        user: int | None,
    ) -> agent_pb2.DeployWorkloadRequest:
        common = agent_pb2.CommonContainerConfig(
            name=name,
            ports=ports,
            portRanges=ranges,
            volumes=volumes,
            environment=env,
            secrets=secrets,
            initContainers=inits,
            commands=["sh", "-c"] if args else [],
            args=args,
        )
        if user is not None:
            common.user = user
        return agent_pb2.DeployWorkloadRequest(
            id=workload_id,
            imageName=image[0],
            tag=image[1],
            common=common,
            dagent=agent_pb2.DagentContainerConfig(labels={"io.berth.test": "1"}),
        )

    return st.builds(
        build,
        st.one_of(st.just(""), st.uuids().map(str), SHORT),
        NAMES,
        images,
        st.lists(PORTS, max_size=3),
        st.lists(PORT_RANGES, max_size=2),
        st.lists(VOLUMES, max_size=3),
        ENV,
        st.dictionaries(SHORT, SECRETS, max_size=3),
        st.lists(INITS, max_size=2),
        st.lists(st.sampled_from(["exit 0", "exit 3", "sleep 60", "echo ünï", ""]), max_size=1),
        st.none() | st.integers(-(2**63), 2**63 - 1),
    )


def deploys(
    prefixes: st.SearchStrategy[str], images: st.SearchStrategy[tuple[str, str]], max_workloads: int = 3
) -> st.SearchStrategy[agent_pb2.AgentCommand]:
    return st.builds(
        lambda deployment_id, prefix, requests: agent_pb2.AgentCommand(
            deploy=agent_pb2.DeployRequest(id=deployment_id, prefix=prefix, requests=requests)
        ),
        st.one_of(st.uuids().map(str), st.text(max_size=40), st.just("")),
        prefixes,
        st.lists(workloads(images), max_size=max_workloads),
    )


def _target(prefix: str, name: str | None) -> common_pb2.ContainerOrPrefix:
    if name is None:
        return common_pb2.ContainerOrPrefix(prefix=prefix)
    return common_pb2.ContainerOrPrefix(container=common_pb2.ContainerIdentifier(prefix=prefix, name=name))


def callbacks(prefixes: st.SearchStrategy[str]) -> st.SearchStrategy[agent_pb2.AgentCommand]:
    """Every non-deploy command that ends on its own (no follows, no ``close``)."""
    ident = st.builds(lambda p, n: common_pb2.ContainerIdentifier(prefix=p, name=n), prefixes, NAMES)
    target = st.builds(_target, prefixes, st.none() | NAMES)
    garbage_token = st.one_of(
        SHORT,
        st.just("a.b.c"),
        st.just("eyJhbGciOiJub25lIn0.eyJzdWIiOltdfQ."),
        st.text(min_size=1000, max_size=5000),
    )
    return st.one_of(
        st.builds(
            lambda i: agent_pb2.AgentCommand(containerInspect=agent_pb2.ContainerInspectRequest(container=i)),
            ident,
        ),
        st.builds(
            lambda i, op: agent_pb2.AgentCommand(
                containerCommand=common_pb2.ContainerCommandRequest(container=i, operation=op)
            ),
            ident,
            st.integers(0, 5),
        ),
        st.builds(
            lambda t: agent_pb2.AgentCommand(deleteContainers=common_pb2.DeleteContainersRequest(target=t)),
            target,
        ),
        st.builds(
            lambda t: agent_pb2.AgentCommand(listSecrets=agent_pb2.ListSecretsRequest(target=t)), target
        ),
        st.builds(
            lambda i, tail: agent_pb2.AgentCommand(
                containerLog=agent_pb2.ContainerLogRequest(container=i, streaming=False, tail=tail)
            ),
            ident,
            UINT32,
        ),
        st.builds(
            lambda p: agent_pb2.AgentCommand(
                containerState=agent_pb2.ContainerStateRequest(prefix=p, oneShot=True)
            ),
            prefixes,
        ),
        st.builds(
            lambda p, n: agent_pb2.AgentCommand(
                containerDelete=agent_pb2.ContainerDeleteRequest(prefix=p, name=n)
            ),
            prefixes,
            NAMES,
        ),
        st.builds(
            lambda t: agent_pb2.AgentCommand(replaceToken=agent_pb2.ReplaceTokenRequest(token=t)),
            garbage_token,
        ),
        st.builds(
            lambda t, tag, timeout: agent_pb2.AgentCommand(
                update=agent_pb2.AgentUpdateRequest(tag=tag, timeoutSeconds=timeout, token=t)
            ),
            garbage_token,
            SHORT,
            INT32,
        ),
    )


def fresh_id() -> str:
    return str(uuid.uuid4())


def plausible_deploys(prefix: str) -> st.SearchStrategy[agent_pb2.AgentCommand]:
    """Deployments that mostly get as far as the engine: the test's prefix, RFC 1123 names, the
    local image; the rest of each workload is as hostile as ``workloads``."""

    def tame(request: agent_pb2.DeployWorkloadRequest, name: str) -> agent_pb2.DeployWorkloadRequest:
        request.common.name = name
        request.common.ClearField("initContainers")
        request.common.ClearField("secrets")
        request.common.ClearField("portRanges")
        del request.common.ports[:]
        request.common.ports.extend(p for p in request.common.ports if 1024 <= p.internal <= 65535)
        return request

    requests = st.builds(
        tame,
        workloads(st.just(("local/busybox", "1"))),
        st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
    )
    return st.builds(
        lambda requests: agent_pb2.AgentCommand(
            deploy=agent_pb2.DeployRequest(id=fresh_id(), prefix=prefix, requests=requests)
        ),
        st.lists(requests, min_size=1, max_size=2, unique_by=lambda r: r.common.name),
    )
