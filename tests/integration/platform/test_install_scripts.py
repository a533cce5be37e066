"""Install scripts: the repository's templates render completely; a missing template is a clear 500."""

from __future__ import annotations

from kits.platform_harness import Harness


async def test_missing_template_is_a_clear_server_error(platform: Harness) -> None:
    node_id = await platform.create_node()
    response = await platform.api.post(
        f"/nodes/{node_id}/script", json={"type": "k8s", "scriptType": "shell"}
    )
    assert response.status_code == 500
    assert "install-k8s.yaml.tmpl" in response.json()["message"]
    bad = await platform.api.post(
        f"/nodes/{node_id}/script", json={"type": "k8s", "scriptType": "powershell"}
    )
    assert bad.status_code == 400 and bad.json()["property"] == "scriptType"
    powershell = await platform.api.post(
        f"/nodes/{node_id}/script", json={"type": "docker", "scriptType": "powershell"}
    )
    assert powershell.status_code == 201 and "Invoke-Expression" in powershell.json()["command"]
