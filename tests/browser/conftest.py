"""Browser fixtures: Debian's chromium driven by playwright (never a downloaded browser), and a
static server for the test page and the official livekit-client bundle from tests/node."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import free_port

CHROMIUM = os.environ.get("ROOMCAST_CHROMIUM", "/usr/bin/chromium")
HERE = Path(__file__).resolve().parent
BUNDLE = HERE.parent / "node" / "node_modules" / "livekit-client" / "dist"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]

if not shutil.which(CHROMIUM) or not BUNDLE.is_dir():
    pytest.skip(
        "browser tests need Debian's chromium and tests/node/node_modules: run `make test`",
        allow_module_level=True,
    )


@pytest.fixture
async def page_server() -> AsyncIterator[str]:
    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(HERE / "page" / "index.html")

    async def harness(_: web.Request) -> web.FileResponse:
        return web.FileResponse(HERE / "page" / "harness.js")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/harness.js", harness)
    app.router.add_static("/lib/", BUNDLE)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            permissions=["camera", "microphone"],
        )
        try:
            yield context
        finally:
            await context.close()


async def open_page(browser: Any, page_url: str) -> Any:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.console_errors = errors
    await page.goto(page_url)
    await page.wait_for_function("typeof window.join === 'function'")
    return page
