"""Renders the install scripts from the templates in ``install-scripts/`` (owned by the shipping
work): ``@@KEY@@`` placeholders are filled with the install token, the advertised address, the CA,
the node name and the agent image. The platform never writes templates itself.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from berth.platform.problems import ServerMisconfigured

TEMPLATES: Final = {
    ("docker", "shell"): ("install-docker.sh.tmpl", "text/x-shellscript; charset=utf-8"),
    ("docker", "powershell"): ("install-docker.ps1.tmpl", "text/plain; charset=utf-8"),
    ("docker", "systemd"): ("install-systemd.sh.tmpl", "text/x-shellscript; charset=utf-8"),
    ("k8s", "shell"): ("install-k8s.yaml.tmpl", "application/yaml; charset=utf-8"),
}
DEFAULT_DATA_DIR: Final = "/srv/berth"
WORKLOAD_NAME: Final = "berth"
_PLACEHOLDER = re.compile(r"@@([A-Z0-9_]+)@@")


def find_templates_dir(configured: Path | None = None) -> Path:
    """``--install-scripts-dir``, then ``BERTH_INSTALL_SCRIPTS_DIR``, then the packaged copy, then
    ``<repo>/install-scripts`` next to the source tree."""
    if configured is not None:
        return configured
    from_env = os.environ.get("BERTH_INSTALL_SCRIPTS_DIR")
    if from_env:
        return Path(from_env)
    package = Path(__file__).resolve().parents[1]
    packaged = package / "install_scripts"
    if packaged.is_dir():
        return packaged
    return package.parents[1] / "install-scripts"


@dataclass(frozen=True)
class InstallScripts:
    templates_dir: Path
    base_url: str
    team: str
    advertise: str
    ca_pem: str
    insecure: bool
    image: str

    def _template(self, node_type: str, script_type: str) -> tuple[Path, str]:
        file_name, media_type = TEMPLATES[(node_type, script_type)]
        return self.templates_dir / file_name, media_type

    def require(self, node_type: str, script_type: str) -> None:
        path, _ = self._template(node_type, script_type)
        if not path.is_file():
            raise ServerMisconfigured(
                f"Install script template {path.name} is missing in {self.templates_dir}"
            )

    def script_url(self, node_id: str) -> str:
        return f"{self.base_url}/api/{self.team}/nodes/{node_id}/script"

    def one_line_command(self, node_id: str, node_type: str, script_type: str) -> str:
        url = self.script_url(node_id)
        if node_type == "k8s":
            return f"curl -sSfL '{url}' | kubectl apply -f -"
        if script_type == "powershell":
            return (
                f"Invoke-WebRequest -UseBasicParsing -Uri '{url}' "
                "| Select-Object -ExpandProperty Content | Invoke-Expression"
            )
        if script_type == "systemd":
            return f"curl -sSfL '{url}' | sudo sh -"
        return f"curl -sSfL '{url}' | sh -"

    def values(self, node_name: str, token: str, root_path: str) -> dict[str, str]:
        return {
            "GRPC_TOKEN": token,
            "NODE_NAME": "".join(node_name.lower().split()),
            "PLATFORM_ADDRESS": self.advertise,
            "CA_PEM": "" if self.insecure else self.ca_pem,
            # one line, for YAML (the k8s manifest's ConfigMap binaryData)
            "CA_PEM_B64": "" if self.insecure else base64.b64encode(self.ca_pem.encode()).decode(),
            "INSECURE": "true" if self.insecure else "false",
            "IMAGE": self.image,
            "WORKLOAD_NAME": WORKLOAD_NAME,
            "DATA_DIR": root_path or DEFAULT_DATA_DIR,
        }

    def render(
        self, *, node_name: str, node_type: str, script_type: str, token: str, root_path: str
    ) -> tuple[str, str]:
        """Blocking file read of a small template (a few KiB)."""
        path, media_type = self._template(node_type, script_type)
        try:
            template = path.read_text()
        except FileNotFoundError:
            raise ServerMisconfigured(
                f"Install script template {path.name} is missing in {self.templates_dir}"
            ) from None
        values = self.values(node_name, token, root_path)
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template), media_type
