#!/usr/bin/env python3
"""Screenshots of the web console for the README, taken with Debian's headless Chromium.

Run ``make demo`` first (it leaves a platform, an agent and the demo stack running), then
``.venv/bin/python tools/console-screenshots.py``. The script signs in with the demo's API token,
opens the node page with live logs, deploys a changed version of the demo stack from the console
(so that the first deployment becomes obsolete and the two can be compared) and writes PNGs to
docs/console/. It prints how long it took from sign-in to the first live log line on the page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from playwright.async_api import Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 60_000

CHANGED_STACK = """\
node: demo-node
prefix: berth-demo
secrets: {GREETING: "hello again, from the console"}
instances:
  - image: berth/busybox
    tag: "1"
    registry: demo-registry
    config:
      common:
        name: web
        commands: [sh, -c]
        args:
          - >-
            mkdir -p /www && echo 'Hello from Berth, v2' > /www/index.html &&
            trap 'exit 0' TERM; httpd -f -v -p 8080 -h /www & wait $!
        ports: [{internal: 8080, external: %(web_port)d}]
      dagent: {restartPolicy: UNLESS_STOPPED}
  - image: berth/busybox
    tag: "1"
    registry: demo-registry
    config:
      common:
        name: logger
        commands: [sh, -c]
        args:
          - >-
            trap 'exit 0' TERM; i=0;
            while true; do i=$((i+1)); echo "tick $i: $GREETING"; sleep 1 & wait $!; done
        environment: {LOG_STYLE: plain}
      dagent: {restartPolicy: UNLESS_STOPPED}
"""


async def shoot(page: Page, out: Path, name: str) -> None:
    await page.wait_for_timeout(300)  # let transitions and the live dot settle for the picture
    await page.screenshot(path=str(out / f"{name}.png"))
    print(f"wrote {out / name}.png")


async def run(demo_dir: Path, out: Path) -> None:
    state = json.loads(await asyncio.to_thread((demo_dir / "demo.json").read_text))
    url = state["url"]
    token = (await asyncio.to_thread((demo_dir / "platform" / "api-token").read_text)).strip()
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))

        await page.goto(url + "/")
        await shoot(page, out, "sign-in")
        started = time.monotonic()
        await page.fill("#token", token)
        await page.click("button[type=submit]")
        await page.wait_for_selector("#nodes")
        await shoot(page, out, "nodes")

        await page.click("text=demo-node")
        await page.wait_for_selector('[data-container="berth-demo/logger"]')
        await page.click('[data-container="berth-demo/logger"] [data-op="logs"]')
        await page.wait_for_selector("#logs .log-line")
        print(f"sign-in to the first live log line on the node page: {time.monotonic() - started:.1f} s")
        print(f"first live log line on the console at {time.time():.3f} (epoch seconds)")
        await page.wait_for_function("n => document.querySelectorAll('#logs .log-line').length >= n", arg=4)
        await page.evaluate("document.getElementById('logs-card').scrollIntoView({block: 'end'})")
        await shoot(page, out, "node-logs")
        await page.evaluate("window.scrollTo(0, 0)")
        await shoot(page, out, "node")

        web = await page.text_content('[data-container="berth-demo/web"] td:nth-child(5)') or ""
        web_port = int(web.split("→")[0]) if "→" in web else 8080
        await page.goto(url + "/deployments/new")
        await page.fill("#stack", CHANGED_STACK % {"web_port": web_port})
        await page.evaluate("document.getElementById('stack').scrollTop = 0")
        await shoot(page, out, "new-deployment")
        await page.click("[data-panel=yaml] button[type=submit]")
        await page.wait_for_selector('#deployment-status [data-status="successful"]')
        await shoot(page, out, "deployment")

        await page.click("#history a.btn")
        await page.wait_for_selector("#diff")
        await shoot(page, out, "compare")

        await page.goto(url + "/deployments")
        await shoot(page, out, "deployments")
        await browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--demo-dir", type=Path, default=Path(os.environ.get("BERTH_DEMO_DIR", "/var/tmp/berth-demo"))
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "console"
    )
    args = parser.parse_args()
    asyncio.run(run(args.demo_dir, args.out))


if __name__ == "__main__":
    main()
