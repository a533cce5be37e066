"""Kubernetes objects and recorders the kube tests share: a workload using every field, the agent's
own Deployment, a service-account kubeconfig, a DeployEvents recorder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from berth.model import (
    ConfigContainer,
    ContainerState,
    DeploymentStrategy,
    ExposeStrategy,
    HealthCheck,
    ImportContainer,
    InitContainer,
    KubernetesOptions,
    LogLevel,
    Marker,
    Port,
    PortRange,
    PortRangeBinding,
    RegistryAuth,
    ResourceConfig,
    Resources,
    Routing,
    SecretValue,
    Volume,
    VolumeLink,
    VolumeType,
    WorkloadSpec,
    frozen_map,
)
from berth.runtimes.kubernetes import resources
from berth.runtimes.kubernetes.api import KubeApi
from berth.runtimes.kubernetes.api_errors import Request


def full_workload(prefix: str, name: str = "web") -> WorkloadSpec:
    return WorkloadSpec(
        id=f"wl-{name}",
        prefix=prefix,
        name=name,
        image_name="berth/busybox",
        tag="1",
        registry="127.0.0.1:5000",
        registry_auth=RegistryAuth(name="local", url="http://127.0.0.1:5000", user="u", password="p4ss"),
        expose=ExposeStrategy.EXPOSE_WITH_TLS,
        routing=Routing(
            domain="app.example.test", path="api", strip_path=True, upload_limit="10m", port=8080
        ),
        config_container=ConfigContainer(image="127.0.0.1:5000/berth/busybox:1", volume="data", path="/cfg"),
        import_container=ImportContainer(volume="data", command="copy src dst"),
        user=1000,
        tty=True,
        working_directory="/work",
        ports=(Port(8080, 80), Port(9090)),
        port_ranges=(PortRangeBinding(PortRange(7000, 7002), PortRange(17000, 17002)),),
        volumes=(
            Volume("data", "/data", size="2Gi", type=VolumeType.RO, storage_class="fast"),
            Volume("shared", "/shared", type=VolumeType.RWX),
            Volume("cache", "/cache", size="64Mi", type=VolumeType.MEM),
            Volume("scratch", "/scratch", type=VolumeType.TMP),
            Volume("creds", "/creds", type=VolumeType.SECRET),
        ),
        commands=("sh", "-c"),
        args=("httpd -f -p 8080",),
        environment=frozen_map({"MODE": "prod", "LEVEL": "2"}),
        secrets={"API_KEY": SecretValue("s3cr3t")},
        init_containers=(
            InitContainer(
                name="migrate",
                image="127.0.0.1:5000/berth/busybox:1",
                use_parent_config=True,
                volumes=(VolumeLink("data", "/migrate"),),
                command=("sh",),
                args=("-c", "true"),
                environment=frozen_map({"STEP": "1"}),
            ),
        ),
        kubernetes=KubernetesOptions(
            deployment_strategy=DeploymentStrategy.RECREATE,
            health_check=HealthCheck(
                port=8080, liveness_path="/live", readiness_path="/ready", startup_path="/start"
            ),
            resources=ResourceConfig(
                limits=Resources(cpu="0", memory="256Mi"), requests=Resources(cpu="20m")
            ),
            proxy_headers=True,
            use_load_balancer=True,
            annotations=Marker(
                deployment=frozen_map({"team": "a"}),
                service=frozen_map({"svc-note": "x"}),
                ingress=frozen_map({"ing-note": "y"}),
            ),
            labels=Marker(
                deployment=frozen_map({"tier": "web", "app": "hijack"}),
                service=frozen_map({"svc": "1"}),
                ingress=frozen_map({"ing": "1"}),
            ),
            custom_headers=("X-Custom",),
            extra_lb_annotations=frozen_map({"lb.example/kind": "nlb"}),
        ),
    )


def service_account_kubeconfig(
    admin: KubeApi, tmp_path: Path, ns: str, account: str, server_kubeconfig: str
) -> str:
    token = admin.call(
        Request("create", resources.NAMESPACE, ns, account),
        "POST",
        f"/api/v1/namespaces/{ns}/serviceaccounts/{account}/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
        content_type="application/json",
    )["status"]["token"]
    config = yaml.safe_load(Path(server_kubeconfig).read_text())
    config["users"] = [{"name": "agent", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "agent"
    path = tmp_path / "agent.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return str(path)


AGENT_DEPLOYMENT = "dyrectorio-k8s-berth"


def agent_deployment(namespace: str, replicas: int) -> dict[str, object]:
    labels = {"app": AGENT_DEPLOYMENT}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": AGENT_DEPLOYMENT, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "berth", "image": "berth/agent:0.1"}]},
            },
        },
    }


def create_namespace(admin: KubeApi, name: str) -> None:
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


@dataclass
class Recorder:
    """A DeployEvents that keeps everything it is told."""

    logs: list[tuple[LogLevel, str]] = field(default_factory=list)
    instances: list[tuple[str, ContainerState, str]] = field(default_factory=list)
    progress_calls: list[tuple[str, str, float]] = field(default_factory=list)

    async def log(self, level: LogLevel, *lines: str) -> None:
        self.logs.extend((level, line) for line in lines)

    async def instance(
        self, workload_id: str, state: ContainerState, reason: str, level: LogLevel = LogLevel.INFO
    ) -> None:
        self.instances.append((workload_id, state, reason))

    async def progress(self, workload_id: str, status: str, fraction: float) -> None:
        self.progress_calls.append((workload_id, status, fraction))

    def text(self) -> str:
        return "\n".join(line for _, line in self.logs)
