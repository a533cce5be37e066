"""Private data at rest: the data folder is 0700 and its files 0600 (SQLite's journal files
included), registry passwords, secret values, install tokens and the JWT secret are sealed, and a
store written by an older version (plain values, bad rows) is migrated at start and still lists."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path

import httpx
import pytest
from platform_harness import Harness, make_config, secret_deployment

from berth.errors import ConfigError
from berth.platform.app import PlatformServer

PASSWORD = "registry-pass-7f3a9c"
SECRET_VALUE = "deploy-secret-51b2e8"
OWN_SECRET = "own-secret-9d04aa"


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def _assert_private(folder: Path) -> None:
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in _files(folder):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for sub in (p for p in folder.rglob("*") if p.is_dir()):
        assert stat.S_IMODE(sub.stat().st_mode) & 0o077 == 0, sub


def _grep(folder: Path, *needles: str) -> list[tuple[str, str]]:
    found = []
    for path in _files(folder):
        data = path.read_bytes()
        found.extend((path.name, n) for n in needles if n.encode() in data)
    return found


async def _start(data_dir: Path, templates: Path) -> tuple[PlatformServer, httpx.AsyncClient]:
    server = PlatformServer(make_config(data_dir, templates))
    started = await server.start()
    api = httpx.AsyncClient(
        base_url=f"{started.http_url}/api/default",
        headers={"authorization": f"Bearer {started.api_token}"},
        timeout=10,
    )
    return server, api


async def test_a_preexisting_0755_folder_is_made_private(tmp_path: Path, templates: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / "api-token").write_text("old-token\n")
    (data_dir / "api-token").chmod(0o644)
    server, api = await _start(data_dir, templates)
    try:
        node = (await api.post("/nodes", json={"name": "n"})).json()["id"]
        await api.post(f"/nodes/{node}/script", json={"type": "docker"})
        assert (data_dir / "platform.db-wal").exists()
        _assert_private(data_dir)
    finally:
        await api.aclose()
        await server.stop()
    _assert_private(data_dir)


async def test_a_folder_owned_by_another_user_is_refused(tmp_path: Path, templates: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the folder to another user")
    data_dir = tmp_path / "theirs"
    data_dir.mkdir(mode=0o700)
    os.chown(data_dir, 65534, 65534)
    server = PlatformServer(make_config(data_dir, templates))
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        await server.start()
    await server.stop()


async def test_passwords_and_secrets_are_never_stored_in_clear(platform: Harness) -> None:
    api = platform.api
    node_id = await platform.create_node()
    registry = await api.post(
        "/registries", json={"name": "r", "url": "127.0.0.1:5000", "user": "u", "password": PASSWORD}
    )
    assert registry.status_code == 201 and registry.json()["hasPassword"] is True
    assert PASSWORD not in registry.text
    body = secret_deployment(
        node_id, registry.json()["id"], SECRET_VALUE, OWN_SECRET, prefix="p", image="busybox", name="w"
    )
    created = await api.post("/deployments", json=body)
    assert created.status_code == 201, created.text
    assert SECRET_VALUE not in created.text and OWN_SECRET not in created.text
    script = (await api.post(f"/nodes/{node_id}/script", json={"type": "docker"})).json()
    token = script["installToken"]
    jwt_secret_rows = sqlite3.connect(platform.data_dir / "platform.db").execute(
        "SELECT value FROM meta WHERE key = 'jwt_secret'"
    )
    assert next(jwt_secret_rows)[0].startswith("sealed:v1:")
    await platform.server.stop()
    assert _grep(platform.data_dir, PASSWORD, SECRET_VALUE, OWN_SECRET, token) == []
    platform.server = PlatformServer(platform.started.config)
    platform.started = await platform.server.start()
    listed = (await api.get("/deployments")).json()
    assert listed[0]["secretKeys"] == ["SHARED"]


def _write_v1_store(data_dir: Path) -> dict[str, str]:
    """A store as version 1 wrote it: instances inside the deployment document, values in clear,
    and a node whose name is a lone surrogate (saved although its create answered 500)."""
    data_dir.mkdir(mode=0o755)
    db = sqlite3.connect(data_dir / "platform.db")
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE nodes (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
        CREATE TABLE registries (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
        CREATE TABLE deployments (id TEXT PRIMARY KEY, node_id TEXT NOT NULL, doc TEXT NOT NULL);
        CREATE TABLE node_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, node_id TEXT NOT NULL,
          created_at REAL NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL);
        CREATE TABLE deployment_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, deployment_id TEXT NOT NULL,
          created_at REAL NOT NULL, data TEXT NOT NULL);
        """
    )
    now = time.time()
    ids = {"bad": "node-bad", "good": "node-good", "registry": "reg-1", "deployment": "dep-1"}
    db.execute("INSERT INTO meta VALUES ('jwt_secret', 'clear-jwt-secret-0a1b2c')")
    for node_id, name in ((ids["bad"], "\ud800bad\x00name"), (ids["good"], "good")):
        doc = {"id": node_id, "name": name, "created_at": now, "installer": None}
        db.execute("INSERT INTO nodes VALUES (?, ?)", (node_id, json.dumps(doc)))
    registry = {
        "id": ids["registry"],
        "name": "r",
        "url": "h:5000",
        "created_at": now,
        "user": "u",
        "password": PASSWORD,
    }
    db.execute("INSERT INTO registries VALUES (?, ?)", (ids["registry"], json.dumps(registry)))
    deployment = {
        "id": ids["deployment"],
        "node_id": ids["good"],
        "prefix": "p",
        "created_at": now,
        "status": "successful",
        "secrets": {"SHARED": SECRET_VALUE},
        "instances": [
            {
                "id": "inst-1",
                "image": "busybox",
                "tag": "1",
                "config": {"common": {"name": "w", "secrets": {"OWN": OWN_SECRET}}},
                "state": "running",
                "reason": "Up",
            }
        ],
    }
    db.execute(
        "INSERT INTO deployments VALUES (?, ?, ?)", (ids["deployment"], ids["good"], json.dumps(deployment))
    )
    db.commit()
    db.close()
    return ids


async def test_an_old_store_is_migrated_sealed_and_its_bad_rows_repairable(
    tmp_path: Path, templates: Path
) -> None:
    data_dir = tmp_path / "data"
    ids = _write_v1_store(data_dir)
    assert len(_grep(data_dir, PASSWORD, SECRET_VALUE, OWN_SECRET)) == 3  # the search finds clear values
    server, api = await _start(data_dir, templates)
    try:
        nodes = await api.get("/nodes")
        assert nodes.status_code == 200, nodes.text
        bad = next(n for n in nodes.json() if n["id"] == ids["bad"])
        assert "\ufffd" in bad["name"] and "bad" in bad["name"]
        deployment = (await api.get(f"/deployments/{ids['deployment']}")).json()
        assert deployment["instances"][0]["state"] == "running"
        assert deployment["instances"][0]["config"]["common"]["secrets"] == {"OWN": ""}
        assert (await api.get("/registries")).json()[0]["hasPassword"] is True
        repaired = await api.put(f"/nodes/{ids['bad']}", json={"name": "repaired"})
        assert repaired.status_code == 204, repaired.text
        assert (await api.get(f"/nodes/{ids['bad']}")).json()["name"] == "repaired"
        assert (await api.delete(f"/nodes/{ids['bad']}")).status_code == 204
    finally:
        await api.aclose()
        await server.stop()
    _assert_private(data_dir)
    assert _grep(data_dir, PASSWORD, SECRET_VALUE, OWN_SECRET, "clear-jwt-secret-0a1b2c") == []
