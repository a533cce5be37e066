"""Issue 13: the web console, in Debian's headless Chromium, on the real platform, with a real
``berth agent`` process on the real Docker engine and the private registry."""

from __future__ import annotations

import json
import secrets

import pytest
import websockets
from console_browser import accept_dialogs, browser_context, fill_form, sign_in
from e2e_stack import (
    REGISTRY,
    REGISTRY_PASSWORD,
    REGISTRY_USER,
    AgentFactory,
    api_client,
    new_node,
    wait_for_engine,
)

from berth.platform.app import Started

pytestmark = [pytest.mark.e2e]


async def test_sign_in_refuses_a_wrong_token_and_keeps_the_token_out_of_the_browser(
    platform: Started,
) -> None:
    async with browser_context() as context:
        page = await context.new_page()
        await page.goto(platform.http_url + "/nodes")
        assert page.url.endswith("/login")  # pages need a session

        await page.fill("#token", "not-the-token")
        await page.click("button[type=submit]")
        assert "not the platform's API token" in (await page.text_content("[role=alert]") or "")
        assert not any(c["name"] == "berth_session" for c in await context.cookies())

        await sign_in(page, platform.http_url, platform.api_token)
        session = next(c for c in await context.cookies() if c["name"] == "berth_session")
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert platform.api_token not in session["value"]
        assert platform.api_token not in await page.content()
        assert platform.api_token not in page.url

        # the session opens the JSON API for the page, but a state change needs the CSRF token
        no_csrf = await page.evaluate(
            """async () => (await fetch('/api/default/nodes', {
                method: 'POST', headers: {'content-type': 'application/json'},
                body: JSON.stringify({name: 'x'})})).status"""
        )
        assert no_csrf == 401
        listed = await page.evaluate("async () => (await fetch('/api/default/nodes')).status")
        assert listed == 200

        # the WebSocket feeds take the session cookie only from a page of this origin
        cookie = {"cookie": f"berth_session={session['value']}"}
        ws_url = platform.http_url.replace("http", "ws", 1) + "/api/default/ws/nodes/unknown/containers"
        origin = platform.http_url
        async with websockets.connect(ws_url, additional_headers=cookie, origin=origin) as ws:
            assert json.loads(await ws.recv())["status"] == 404  # authorized; the node is unknown
        for headers, from_origin in ((cookie, "http://evil.example"), ({}, origin)):
            with pytest.raises(websockets.InvalidStatus):
                async with websockets.connect(ws_url, additional_headers=headers, origin=from_origin):
                    pass

        # signing out needs the CSRF token too
        forced = await page.evaluate(
            """async () => (await fetch('/logout', {method: 'POST',
                headers: {'content-type': 'application/x-www-form-urlencoded'}, body: 'c=x'})).status"""
        )
        assert forced == 403
        assert await page.evaluate("async () => (await fetch('/api/default/nodes')).status") == 200

        await page.click(".signout button")
        await page.wait_for_selector("#token")
        gone = await page.evaluate("async () => (await fetch('/api/default/nodes')).status")
        assert gone == 401


async def test_create_a_node_and_copy_its_install_command(platform: Started) -> None:
    async with browser_context() as context:
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=platform.http_url)
        page = await context.new_page()
        await sign_in(page, platform.http_url, platform.api_token)
        await page.fill("[data-create-node] input[name=name]", "laptop-node")
        await page.click("[data-create-node] button")
        await page.wait_for_selector("#node-page")
        assert "laptop-node" in (await page.text_content("h1") or "")

        for script_type, marker in (("shell", "curl"), ("powershell", "Invoke"), ("systemd", "curl")):
            await page.select_option("[data-install-form] select[name=scriptType]", script_type)
            await page.click("[data-install-form] button")
            await page.wait_for_function(
                "m => document.getElementById('install-text').textContent.includes(m)", arg=marker
            )
            command = (await page.text_content("#install-text") or "").strip()
            await page.click("[data-copy='#install-text']")
            await page.wait_for_selector("[data-copy][data-copied=true]")
            assert await page.evaluate("navigator.clipboard.readText()") == command
            await page.evaluate("document.querySelector('[data-copy]').removeAttribute('data-copied')")

        async with api_client(platform) as api:
            nodes = (await api.get("/nodes")).json()
            assert [n["name"] for n in nodes] == ["laptop-node"]
            detail = (await api.get(f"/nodes/{nodes[0]['id']}")).json()
            assert detail["install"]["scriptType"] == "systemd"
            assert detail["install"]["command"] == command


def _stack(prefix: str, secret: str) -> str:
    return f"""\
node: ui-node
prefix: {prefix}
registries:
  - {{name: ui-registry, url: "{REGISTRY}", user: {REGISTRY_USER}, password: {REGISTRY_PASSWORD}}}
instances:
  - image: berth/busybox
    tag: "1"
    registry: ui-registry
    config:
      common:
        name: logger
        commands: [sh, -c]
        args:
          - >-
            trap 'exit 0' TERM; i=0;
            while true; do i=$((i+1)); echo "line $i {secret}"; sleep 0.3 & wait $!; done
      dagent: {{labels: {{io.berth.test: "1"}}}}
"""


@pytest.mark.docker
async def test_deploy_follow_logs_and_stop_a_container_from_the_console(
    platform: Started, prefix: str, agents: AgentFactory
) -> None:
    async with api_client(platform) as api:
        node_id, install_token = await new_node(api, "ui-node")
        agent = agents("agent", install_token, platform.config)
        await wait_for_engine()

    marker = "m" + secrets.token_hex(4)
    async with browser_context() as context:
        page = await context.new_page()
        accept_dialogs(page)
        await sign_in(page, platform.http_url, platform.api_token)
        status = f"#nodes [data-node='{node_id}'] [data-status]"
        assert await page.text_content(status) == "unreachable"
        await agent.start()  # the nodes list follows the node's status without a reload
        await page.wait_for_selector(f"#nodes [data-node='{node_id}'] [data-status=connected]")
        assert (await page.text_content(f"#nodes [data-node='{node_id}'] [data-version]") or "").startswith(
            "0.15.4-berth"
        )

        # a deployment from a pasted stack, followed live to SUCCESSFUL
        await page.goto(platform.http_url + "/deployments/new")
        await page.fill("#stack", _stack(prefix, marker))
        await page.click("[data-panel=yaml] button[type=submit]")
        await page.wait_for_selector("#deployment-page")
        await page.wait_for_selector("#deployment-status [data-status=successful]", timeout=120_000)
        assert await page.text_content("#instances [data-state] [data-status]") == "running"
        events = await page.text_content("#events") or ""
        assert "deployment successful" in events and "logger: running" in events
        assert await page.is_visible("[data-when=finished]")  # redeploy offered once finished

        # the node page: the container in its prefix group, live, and its live logs
        await page.goto(f"{platform.http_url}/nodes/{node_id}")
        row = f'[data-container="{prefix}/logger"]'
        await page.wait_for_selector(f"{row} [data-status=running]")
        await page.click(f"{row} [data-op=logs]")
        await page.wait_for_selector("#logs .log-line")
        first = await page.locator("#logs .log-line").count()
        await page.wait_for_function(
            "n => document.querySelectorAll('#logs .log-line').length >= n", arg=first + 3
        )
        assert marker in (await page.text_content("#logs") or "")

        # inspect shows the engine's view of the container
        await page.click(f"{row} [data-op=inspect]")
        await page.wait_for_selector("#inspect-dialog[open]")
        assert prefix in (await page.text_content("#inspect-body") or "")
        await page.click("#inspect-dialog button")

        # stopped from the page: the live state changes without a reload
        await page.click(f"{row} [data-op=stop]")
        await page.wait_for_selector(f"{row} [data-state=exited]", timeout=60_000)
        await page.click(f"{row} [data-op=start]")
        await page.wait_for_selector(f"{row} [data-state=running]", timeout=60_000)


async def test_registries_and_deployment_forms(platform: Started) -> None:
    async with api_client(platform) as api:
        node_id = (await api.post("/nodes", json={"name": "form-node"})).json()["id"]
    async with browser_context() as context:
        page = await context.new_page()
        accept_dialogs(page)
        await sign_in(page, platform.http_url, platform.api_token)

        await page.goto(platform.http_url + "/registries")
        form = "[data-registry-form]"
        await fill_form(page, form, name="local", url="127.0.0.1:5000")
        await fill_form(page, form, user="berth", password="pw-not-shown")
        await page.click(f"{form} button")
        await page.wait_for_selector("#registries td.strong")
        row = await page.text_content("#registries tbody") or ""
        assert "local" in row and "set" in row and "pw-not-shown" not in await page.content()
        # the same name again updates it (the stored password is kept when the field is empty)
        await fill_form(page, form, name="local", url="127.0.0.1:5001", user="berth")
        await page.click(f"{form} button")
        await page.wait_for_selector("#registries code:text('127.0.0.1:5001')")
        assert await page.locator("#registries [data-registry-name]").count() == 1
        assert "set" in (await page.text_content("#registries tbody") or "")

        # a pasted stack that is not valid names the problem and keeps the text
        await page.goto(platform.http_url + "/deployments/new")
        await page.fill("#stack", "node: form-node\nprefix: Not_A_Label\ninstances: [{image: x}]\n")
        await page.click("[data-panel=yaml] button[type=submit]")
        assert "prefix" in (await page.text_content("#form-error") or "")
        assert "Not_A_Label" in await page.input_value("#stack")

        # the small form: created, and not started because the node is not connected
        await page.click("[data-tab=form]")
        panel = "[data-panel=form]"
        await page.select_option(f"{panel} select[name=node]", node_id)
        await fill_form(page, panel, prefix="shop", name="web", image="berth/busybox", tag="1")
        await fill_form(page, panel, ports="8080:18080", environment="MODE=demo")
        await page.select_option(f"{panel} select[name=registry]", "local")
        await page.click(f"{panel} button[type=submit]")
        await page.wait_for_selector("#deployment-page")
        assert "could not start" in (await page.text_content(".alert-warn") or "")
        assert await page.is_visible("[data-when=preparing]")
        async with api_client(platform) as api:
            [deployment] = (await api.get("/deployments")).json()
            common = deployment["instances"][0]["config"]["common"]
            assert common["ports"] == [{"internal": 8080, "external": 18080}]
            assert common["environment"] == {"MODE": "demo"}
            assert deployment["instances"][0]["image"]["registryId"] is not None

        await page.goto(f"{platform.http_url}/nodes/{node_id}")
        assert "created · name form-node" in (await page.text_content("#activity") or "")
        await page.click("text=New deployment")
        assert (await page.input_value("#stack")).startswith("node: form-node\n")

        missing = await page.goto(platform.http_url + "/nodes/no-such-node")
        assert missing is not None and missing.status == 404
        assert "not found" in (await page.text_content(".alert-bad") or "")
        await page.goto(platform.http_url + "/registries")

        # a form posted without the session's CSRF token changes nothing
        status = await page.evaluate(
            """async () => (await fetch('/deployments/new', {method: 'POST',
                headers: {'content-type': 'application/x-www-form-urlencoded'},
                body: 'mode=yaml&stack=x'})).status"""
        )
        assert status == 403
