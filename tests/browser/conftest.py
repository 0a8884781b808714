"""Browser fixtures: Debian's chromium driven by playwright (never a downloaded browser), a
static server for the test page and the official npm livekit-client bundle, and `BrowserPage`,
a typed wrapper around the page's JS helpers (page/harness.js).

Chromium comes from `scripts/install-test-deps.sh` (`make test`); the tests are skipped only
when /usr/bin/chromium is absent. A missing livekit-client bundle is an error, not a skip.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests import signalling

CHROMIUM = Path("/usr/bin/chromium")
HERE = Path(__file__).resolve().parent
PAGE_DIR = HERE / "page"
BUNDLE = HERE.parent / "node" / "node_modules" / "livekit-client" / "dist"

requires_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} is absent: install it with `make test-deps` (scripts/install-test-deps.sh)",
)

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This network is closed: without these Chromium keeps dialling Google's services.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Fake camera (1280x720 test pattern) and microphone (a beep), no permission prompt.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]

# Each page call is bounded: the JS helpers have their own (shorter) timeouts and say what they
# waited for; this one only catches a call that never settles.
CALL_TIMEOUT = 30.0
WAIT_MS = 20_000


@pytest.fixture
async def page_server() -> AsyncIterator[str]:
    """http://127.0.0.1:<free port>/ serving page/ and livekit-client's dist/ as /lib/."""
    bundle = BUNDLE / "livekit-client.umd.js"
    if not bundle.is_file():
        pytest.fail(f"{bundle} is missing: run `make test-deps` (npm ci in tests/node)")

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE_DIR / "index.html")

    async def harness(_: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE_DIR / "harness.js")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/harness.js", harness)
    app.router.add_static("/lib/", BUNDLE)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    """A Chromium context with a fresh --user-data-dir, camera and microphone allowed."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            permissions=["camera", "microphone"],
        )
        try:
            yield context
        finally:
            await context.close()


class BrowserPage:
    """One tab running page/harness.js; methods await the JS helpers of the same name."""

    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.name = name
        self.joined = False
        self.console: list[str] = []  # console errors and warnings, page errors
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.console.append(f"[pageerror] {error}"))

    def _on_console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            text = message.text  # signalling URLs carry the token and join request: shorten
            self.console.append(f"[{message.type}] {text[:300]}{'…' if len(text) > 300 else ''}")

    @property
    def page_errors(self) -> list[str]:
        """Uncaught exceptions in the page."""
        return [line for line in self.console if line.startswith("[pageerror]")]

    async def diagnostics(self) -> str:
        try:
            events = await asyncio.wait_for(
                self.page.evaluate("() => window.rc ? window.rc.events.slice(-30) : []"), 5
            )
        except Exception as exc:  # the page may be gone; the report must still come out
            events = [f"<events unavailable: {exc}>"]
        return (
            f"page {self.name!r} console errors/warnings:\n  "
            + "\n  ".join(self.console[-30:] or ["(none)"])
            + f"\npage {self.name!r} room events: {json.dumps(events)}"
        )

    async def call(self, function: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
        """`await window.<function>(...args)` in the page, failing with the page's diagnostics."""
        from playwright.async_api import Error as PlaywrightError

        try:
            return await asyncio.wait_for(
                self.page.evaluate(f"(args) => window.{function}(...args)", list(args)), timeout
            )
        except (PlaywrightError, TimeoutError) as exc:
            message = str(exc) or type(exc).__name__
            raise AssertionError(
                f"{function}() in page {self.name!r} failed: {message}\n" + await self.diagnostics()
            ) from exc

    async def join(
        self,
        url: str,
        token: str,
        *,
        camera: bool = False,
        microphone: bool = False,
        simulcast: bool = True,
        room_options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        publish = {"camera": camera, "microphone": microphone, "simulcast": simulcast}
        options = {"publish": publish, "roomOptions": signalling.browser_room_options(room_options)}
        info: dict[str, Any] = await self.call("join", url, token, options)
        self.joined = True
        return info

    async def publish_data(self, text: str, topic: str | None = None, **opts: Any) -> None:
        await self.call("publishData", text, topic, opts)

    async def wait_for_data(self, timeout_ms: int = WAIT_MS, **match: Any) -> dict[str, Any]:
        """The first DataReceived packet with these fields (text, from_, topic, kind)."""
        if "from_" in match:
            match["from"] = match.pop("from_")
        packet: dict[str, Any] = await self.call("waitForData", match, timeout_ms)
        return packet

    async def remote_participants(self) -> list[dict[str, Any]]:
        participants: list[dict[str, Any]] = await self.call("remoteParticipants")
        return participants

    async def wait_for_participant(self, identity: str, timeout_ms: int = WAIT_MS) -> Any:
        return await self.call("waitForParticipant", identity, timeout_ms)

    async def wait_for_participant_gone(self, identity: str, timeout_ms: int = WAIT_MS) -> None:
        await self.call("waitForParticipantGone", identity, timeout_ms)

    async def wait_for_tracks(
        self, identity: str, kinds: list[str], timeout_ms: int = WAIT_MS
    ) -> dict[str, Any]:
        participant: dict[str, Any] = await self.call("waitForTracks", identity, kinds, timeout_ms)
        return participant

    async def stats(self) -> dict[str, list[dict[str, Any]]]:
        """Inbound RTP summaries per subscribed remote track: {"video": [...], "audio": [...]}."""
        stats: dict[str, list[dict[str, Any]]] = await self.call("getStats")
        return stats

    async def wait_for_inbound(
        self, identity: str, timeout_ms: int = WAIT_MS, **minimum: float
    ) -> dict[str, list[dict[str, Any]]]:
        """getStats() once `identity`'s tracks reach the minimums (framesDecoded, frameWidth,
        totalSamplesReceived, totalAudioEnergy)."""
        stats: dict[str, list[dict[str, Any]]] = await self.call(
            "waitForInbound", identity, minimum, timeout_ms
        )
        return stats

    async def outbound_video_layers(self) -> dict[str, dict[str, Any]]:
        layers: dict[str, dict[str, Any]] = await self.call("outboundVideoLayers")
        return layers

    async def wait_for_outbound_layer(
        self, rid: str, timeout_ms: int = WAIT_MS
    ) -> dict[str, dict[str, Any]]:
        layers: dict[str, dict[str, Any]] = await self.call("waitForOutboundLayer", rid, timeout_ms)
        return layers

    async def leave(self) -> Any:
        reason = await self.call("leave")
        self.joined = False
        return reason


NewPage = Callable[[str], Awaitable[BrowserPage]]


@pytest.fixture
async def new_page(browser: Any, page_server: str) -> AsyncIterator[NewPage]:
    """Opens test pages (`await new_page("alice")`); joined ones leave their room at the end."""
    pages: list[BrowserPage] = []

    async def open_page(name: str = "page") -> BrowserPage:
        page = BrowserPage(await browser.new_page(), name)
        pages.append(page)
        await page.page.goto(page_server)
        await page.page.wait_for_function("window.harnessReady === true", timeout=10_000)
        return page

    yield open_page
    for page in pages:
        if page.joined:
            try:
                await page.call("leave", timeout=5)
            except AssertionError:
                pass  # the test already failed or the server is gone; closing the tab is enough
