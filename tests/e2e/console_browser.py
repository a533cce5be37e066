"""Debian's Chromium, headless, driven by Playwright (never a browser of Playwright's own)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from playwright.async_api import BrowserContext, Page, async_playwright

CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS: Final = 30_000


@asynccontextmanager
async def browser_context() -> AsyncIterator[BrowserContext]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            context.set_default_timeout(TIMEOUT_MS)
            yield context
            await context.close()
        finally:
            await browser.close()


async def sign_in(page: Page, base_url: str, token: str) -> None:
    await page.goto(base_url + "/")
    await page.fill("#token", token)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#nodes")


async def fill_form(page: Page, form: str, **fields: str) -> None:
    """Types each value into the form's field of that name (``form``: the form's selector)."""
    for name, value in fields.items():
        await page.fill(f"{form} [name={name}]", value)


def accept_dialogs(page: Page) -> None:
    """Confirms every ``window.confirm`` (delete, stop...) the page asks."""

    async def _accept(dialog: object) -> None:
        await dialog.accept()  # type: ignore[attr-defined]

    page.on("dialog", _accept)
