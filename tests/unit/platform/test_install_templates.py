"""The repository's install-script templates render completely (no placeholder left)."""

from __future__ import annotations

import pytest

from berth.platform.install_scripts import TEMPLATES, InstallScripts, find_templates_dir


def test_repository_templates_render_completely() -> None:
    folder = find_templates_dir()
    present = [key for key, (name, _) in TEMPLATES.items() if (folder / name).is_file()]
    if not present:
        pytest.fail(f"no install script template found in {folder}")
    scripts = InstallScripts(
        templates_dir=folder,
        base_url="http://127.0.0.1:8000",
        team="default",
        advertise="platform.example:5000",
        ca_pem="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        insecure=False,
        image="berth:0.1",
    )
    for node_type, script_type in present:
        text, _ = scripts.render(
            node_name="Edge Node 1",
            node_type=node_type,
            script_type=script_type,
            token="header.payload.signature",
            root_path="",
        )
        assert "@@" not in text, (node_type, script_type)
        assert "header.payload.signature" in text and "platform.example:5000" in text
        assert "edgenode1" in text
