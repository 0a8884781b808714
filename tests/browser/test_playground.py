"""The playground the server serves at ``/``: two headless Chromium pages (fake camera and
microphone) call each other through it, chat both ways and see each other's mute state."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from livekit import rtc

from roomcast.auth import TokenVerifier, VideoGrant, create_token
from roomcast.config import Overrides, load_config
from roomcast.server import Server
from roomcast.web import STATIC_DIR
from tests.conftest import API_KEY, API_SECRET, ServerFactory, free_port, url_of
from tests.integration.sdk import joined, until
from tests.integration.test_media_python import publishing

# -- helpers shared with test_dashboard.py ------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
requires_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # screenshots of each run (gitignored)
DOCS = Path(__file__).resolve().parents[2] / "docs"  # with ROOMCAST_DOCS_SCREENSHOTS=1
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PAGE_TIMEOUT = 30.0
PLAYGROUND = "playground:\n  enabled: true\n"


@pytest.fixture
async def playground_server(start_server: ServerFactory) -> Server:
    """A server with the playground on and the dev keys (so /playground/token exists)."""
    server: Server = await start_server(PLAYGROUND)
    return server


async def wait_for(
    page: Any, expression: str, arg: Any = None, timeout: float = PAGE_TIMEOUT
) -> Any:
    """Poll an (async) page expression until it returns something truthy; return that."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await page.evaluate(expression, arg)
        if result:
            return result
        if loop.time() > deadline:
            alerts = await page.evaluate(
                "() => Array.from(document.querySelectorAll('.alert')).map((a) => a.textContent)"
            )
            raise AssertionError(
                f"{expression} never held; alerts: {alerts}; console errors: {page.console_errors}"
            )
        await asyncio.sleep(0.1)


async def open_app(
    browser: Any, url: str, viewport: dict[str, int] | None = None, init_script: str = ""
) -> Any:
    """Open one of the server's pages and wait until its script has initialised."""
    page = await browser.new_page()
    await page.set_viewport_size(viewport or LAPTOP)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(f"Uncaught {e}"))
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    page.console_errors = errors
    if init_script:
        await page.add_init_script(init_script)
    await page.goto(url)
    await wait_for(
        page,
        "() => (window.playground && window.playground.initialized)"
        " || (window.dashboard && window.dashboard.initialized)",
    )
    return page


async def join_playground(page: Any, room: str, name: str) -> str:
    """Join through the pre-join form (dev tokens); returns the participant's identity."""
    await page.fill("#room-input", room)
    await page.fill("#name-input", name)
    await page.click("#join-button")
    return str(
        await wait_for(
            page,
            "() => window.playground.inCall && window.playground.room.state === 'connected'"
            " && window.playground.room.localParticipant.identity",
        )
    )


async def screenshot(page: Any, name: str, docs_name: str = "") -> Path:
    """Save a screenshot under tests/browser/artifacts (and docs/ when asked to)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))
    if docs_name and os.environ.get("ROOMCAST_DOCS_SCREENSHOTS"):
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS / docs_name)
    return path


HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}

# Decoded video from `identity` on this page: the tile's <video> size and the receiver's stats.
REMOTE_VIDEO = """async (identity) => {
  const tile = document.querySelector(`.tile.camera[data-identity="${identity}"]`);
  const participant = window.playground.room.remoteParticipants.get(identity);
  const track = participant && participant.getTrackPublication('camera')?.track;
  if (!tile || tile.dataset.videoOn !== 'true' || !track || !track.receiver) return null;
  const video = tile.querySelector('video');
  let framesDecoded = 0;
  (await track.receiver.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp') framesDecoded += s.framesDecoded || 0;
  });
  if (video.videoWidth === 0 || framesDecoded < 10) return null;
  return { width: video.videoWidth, height: video.videoHeight, framesDecoded };
}"""

CHAT_TEXTS = """() => Array.from(document.querySelectorAll('#messages li:not(.empty)'))
  .map((li) => ({ from: li.dataset.from, text: li.querySelector('.text').textContent }))"""


def page_problems(*pages: Any) -> list[str]:
    """Uncaught exceptions and Content-Security-Policy violations on these pages."""
    return [
        e
        for page in pages
        for e in page.console_errors
        if "Uncaught" in e or "Content Security Policy" in e
    ]


def tile_state(identity: str, source: str = "camera") -> str:
    return (
        f"() => {{ const t = document.querySelector("
        f'\'.tile[data-identity="{identity}"][data-source="{source}"]\');'
        f" return t ? {{...t.dataset}} : null; }}"
    )


async def send_chat(page: Any, text: str) -> None:
    await page.fill("#chat-input", text)
    await page.press("#chat-input", "Enter")


async def has_message(page: Any, sender: str, text: str) -> bool:
    messages = await page.evaluate(CHAT_TEXTS)
    return any(m["from"] == sender and m["text"] == text for m in messages)


async def wait_message(page: Any, sender: str, text: str) -> None:
    await wait_for(
        page,
        "([from, text]) => Array.from(document.querySelectorAll('#messages li'))"
        ".some((li) => li.dataset.from === from && li.querySelector('.text').textContent === text)",
        [sender, text],
    )


# -- HTTP behaviour (no browser needed) ---------------------------------------------------------


async def test_root_is_the_health_check_unless_a_browser_asks(
    start_server: ServerFactory,
) -> None:
    plain = await start_server()
    enabled = await start_server("playground:\n  enabled: true\n")
    async with aiohttp.ClientSession() as http:
        for server, headers, expected in [
            (plain, {}, "OK"),
            (plain, HTML, "OK"),  # playground off: always the health check
            (enabled, {}, "OK"),  # load balancers and curl
            (enabled, {"Accept": "*/*"}, "OK"),
        ]:
            async with http.get(url_of(server) + "/", headers=headers) as response:
                assert response.status == 200 and await response.text() == expected
        async with http.get(url_of(enabled) + "/", headers=HTML) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert "Content-Security-Policy" in response.headers
            assert "Roomcast playground" in await response.text()
        async with http.head(url_of(enabled) + "/") as response:
            assert response.status == 200
        # The playground's other routes exist only when it is enabled.
        for path in ("/dashboard", "/playground/config", "/static/playground.js"):
            async with http.get(url_of(plain) + path, headers=HTML) as response:
                assert response.status == 404, path
            async with http.get(url_of(enabled) + path, headers=HTML) as response:
                assert response.status == 200, path
        version = (STATIC_DIR / "vendor" / "VERSION").read_text().strip()
        async with http.get(url_of(enabled) + "/playground/config") as response:
            config = await response.json()
        assert config["dev_tokens"] is True and config["livekit_client"] == version
        async with http.get(url_of(enabled) + "/static/vendor/livekit-client.umd.js") as response:
            assert response.status == 200
            assert "sourceMappingURL" not in await response.text()
        async with http.get(url_of(enabled) + "/static/../config.py") as response:
            assert response.status in (403, 404)


async def test_dev_token_endpoints_need_the_dev_keys(start_server: ServerFactory) -> None:
    dev = await start_server("playground:\n  enabled: true\n")
    other = await start_server(
        "playground:\n  enabled: true\nkeys:\n  prodkey: a-long-production-secret\n"
    )
    verifier = TokenVerifier({API_KEY: API_SECRET})
    async with aiohttp.ClientSession() as http:
        query = "?room=demo&identity=alice-1&name=Alice"
        async with http.get(url_of(dev) + "/playground/token" + query) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "no-store"
            body = await response.json()
        assert body["url"] == f"ws://127.0.0.1:{dev.port}"
        claims = verifier.verify(body["token"])
        grant = claims.video
        assert (claims.identity, claims.name, grant.room) == ("alice-1", "Alice", "demo")
        assert grant.room_join and grant.can_publish and grant.can_subscribe
        assert grant.can_publish_data and grant.can_update_own_metadata
        assert not (grant.room_admin or grant.room_list or grant.room_create)
        for bad in ("?identity=x", "?room=demo", "?room=demo&identity=" + "x" * 300):
            async with http.get(url_of(dev) + "/playground/token" + bad) as response:
                assert response.status == 400, bad
                assert (await response.json())["error"]

        async with http.get(url_of(dev) + "/playground/admin-token?room=demo") as response:
            admin = verifier.verify((await response.json())["token"]).video
        assert admin.room_list and admin.room_create and admin.is_admin_of("demo")
        assert not admin.room_join
        async with http.get(url_of(dev) + "/playground/admin-token") as response:
            admin = verifier.verify((await response.json())["token"]).video
        assert admin.room_list and not admin.room_admin

        # Other keys: no token endpoints at all, and the page is told to ask for a token.
        for path in ("/playground/token" + query, "/playground/admin-token?room=demo"):
            async with http.get(url_of(other) + path) as response:
                assert response.status == 404
        async with http.get(url_of(other) + "/playground/config") as response:
            assert (await response.json())["dev_tokens"] is False


def test_dev_mode_turns_the_playground_on_unless_the_yaml_says_no() -> None:
    def load(dev: bool, body: str = "") -> bool:
        extra = "" if dev else "keys:\n  k: s\n"
        config = load_config(Overrides(dev=dev, config_body=body + extra or None), environ={})
        return config.playground.enabled

    assert load(dev=True) is True
    assert load(dev=True, body="playground:\n  enabled: false\n") is False
    assert load(dev=False) is False
    assert load(dev=False, body="playground:\n  enabled: true\n") is True


# -- two browsers through the playground --------------------------------------------------------


@requires_chromium
async def test_two_pages_call_chat_and_see_mute_state(
    playground_server: Server, browser: Any
) -> None:
    url = url_of(playground_server) + "/"
    alice = await open_app(browser, url)
    bob = await open_app(browser, url)
    await screenshot(alice, "playground-prejoin")
    alice_id = await join_playground(alice, "call", "Alice")
    bob_id = await join_playground(bob, "call", "Bob")

    # Each page shows the other's camera tile with decoded frames.
    for page, other in ((alice, bob_id), (bob, alice_id)):
        video = await wait_for(page, REMOTE_VIDEO, other)
        assert video["width"] > 0 and video["height"] > 0
        state = await page.evaluate(tile_state(other))
        assert state["micMuted"] == "false"
    assert "Bob" in await alice.inner_text(f'.tile[data-identity="{bob_id}"] .name')

    # Chat both ways, over LiveKit's chat topic.
    await send_chat(alice, "Hi Bob, can you see me?")
    await wait_message(bob, alice_id, "Hi Bob, can you see me?")
    await send_chat(bob, "Yes, loud and clear!")
    await wait_message(alice, bob_id, "Yes, loud and clear!")
    await wait_message(alice, alice_id, "Hi Bob, can you see me?")  # own message shown once
    messages = await alice.evaluate(CHAT_TEXTS)
    assert len(messages) == 2, messages  # text stream + legacy packet de-duplicated
    assert await alice.evaluate("() => document.querySelectorAll('#messages b').length") == 2
    await wait_for(alice, REMOTE_VIDEO, bob_id)
    await screenshot(alice, "playground-alice", docs_name="playground.png")
    await screenshot(bob, "playground-bob")

    # Mute the microphone and stop the camera on Alice's page: Bob's page shows both.
    await alice.click("#mic-button")
    await wait_for(bob, f"() => ({tile_state(alice_id)})()?.micMuted === 'true'")
    assert await alice.inner_text("#mic-button") == "Unmute"
    await alice.click("#cam-button")
    await wait_for(bob, f"() => ({tile_state(alice_id)})()?.videoOn === 'false'")
    assert await bob.is_visible(f'.tile[data-identity="{alice_id}"] .avatar')
    await alice.click("#mic-button")
    await wait_for(bob, f"() => ({tile_state(alice_id)})()?.micMuted === 'false'")

    # Leaving takes Alice's tiles off Bob's page.
    await alice.click("#leave-button")
    await wait_for(alice, "() => !document.querySelector('#prejoin').hidden")
    await wait_for(bob, f"() => !({tile_state(alice_id)})()")
    assert not page_problems(alice, bob)


@requires_chromium
async def test_screen_share_and_phone_layout(playground_server: Server, browser: Any) -> None:
    url = url_of(playground_server) + "/?room=share"
    sharer = await open_app(browser, url)
    viewer = await open_app(browser, url, viewport=PHONE)
    await screenshot(viewer, "playground-prejoin-phone")
    sharer_id = await join_playground(sharer, "share", "Sharer")
    await join_playground(viewer, "share", "Viewer")
    await sharer.click("#screen-button")
    await wait_for(sharer, "() => window.playground.room.localParticipant.isScreenShareEnabled")
    await wait_for(viewer, f"() => ({tile_state(sharer_id, 'screen_share')})()?.videoOn === 'true'")
    assert await sharer.inner_text("#screen-button") == "Stop sharing"
    await wait_for(viewer, REMOTE_VIDEO, sharer_id)
    await screenshot(viewer, "playground-call-phone")
    await viewer.click("#settings-button")
    await wait_for(viewer, "() => document.querySelectorAll('#cam-switch option').length > 0")
    assert await viewer.is_visible("#mic-switch")
    await screenshot(viewer, "playground-devices-phone")
    await viewer.click("#settings-button")
    await viewer.click("#chat-button")
    await send_chat(viewer, "typed on a phone")
    await wait_message(
        sharer,
        await viewer.evaluate("() => window.playground.room.localParticipant.identity"),
        "typed on a phone",
    )
    await screenshot(viewer, "playground-chat-phone")
    await sharer.click("#screen-button")
    await wait_for(viewer, f"() => !({tile_state(sharer_id, 'screen_share')})()")


DENY_MEDIA = """
navigator.mediaDevices.getUserMedia = async () => {
  throw new DOMException('Permission denied', 'NotAllowedError');
};
"""


@requires_chromium
async def test_clear_errors_in_dev_mode(start_server: ServerFactory, browser: Any) -> None:
    server = await start_server("playground:\n  enabled: true\nroom:\n  max_participants: 1\n")
    url = url_of(server) + "/"
    # Camera and microphone denied: said so, and the person can still join to watch and chat.
    denied = await open_app(browser, url, init_script=DENY_MEDIA)
    error = await denied.inner_text("#join-error")
    assert "camera and microphone was denied" in error and "site settings" in error
    assert not await denied.is_checked("#cam-check")
    await screenshot(denied, "playground-camera-denied")
    await join_playground(denied, "full", "Denied")
    await denied.click("#cam-button")
    await wait_for(
        denied, "() => document.querySelector('#call-alert').textContent.includes('denied')"
    )

    # The room holds one participant: the next one is told so before connecting.
    second = await open_app(browser, url)
    await second.fill("#room-input", "full")
    await second.click("#join-button")
    await wait_for(
        second, "() => document.querySelector('#join-error').textContent.includes('full')"
    )
    assert "Room is full" in await second.inner_text("#join-error")
    assert await second.is_visible("#prejoin")

    # The server cannot be reached when joining.
    await second.route("**/playground/token*", lambda route: route.abort())
    await second.fill("#room-input", "another")
    await second.click("#join-button")
    await wait_for(
        second, "() => document.querySelector('#join-error').textContent.includes('Cannot reach')"
    )


@requires_chromium
async def test_clear_errors_with_pasted_tokens(start_server: ServerFactory, browser: Any) -> None:
    key, secret = "prodkey", "a-long-production-secret"
    server = await start_server(
        f"playground:\n  enabled: true\nroom:\n  max_participants: 1\nkeys:\n  {key}: {secret}\n"
    )
    page = await open_app(browser, url_of(server) + "/")
    assert await page.is_visible("#token-input") and not await page.is_visible("#room-input")
    assert await page.input_value("#url-input") == url_of(server, "ws")

    def mint(room: str, identity: str, signing_secret: str = secret, ttl: float = 600) -> str:
        grant = VideoGrant(room_join=True, room=room)
        return create_token(key, signing_secret, identity=identity, video=grant, ttl_seconds=ttl)

    async def attempt(token: str, expected: str, server_url: str = "") -> None:
        await page.fill("#token-input", token)
        await page.fill("#url-input", server_url or url_of(server, "ws"))
        await page.click("#join-button")
        await wait_for(
            page,
            "(text) => document.querySelector('#join-error').textContent.includes(text)",
            expected,
        )

    await attempt("not a token", "does not look like an access token")
    await attempt(mint("demo", "eve", ttl=-3600), "expired")
    await attempt(mint("demo", "eve", signing_secret="wrong"), "server rejected the token")
    await screenshot(page, "playground-bad-token")
    closed = f"ws://127.0.0.1:{free_port()}"
    await attempt(mint("demo", "eve"), "Cannot reach the server", server_url=closed)
    first = rtc.Room()  # the room's one seat is taken: refused before the upgrade (HTTP 403)
    await first.connect(url_of(server, "ws"), mint("full", "first"))
    try:
        await attempt(mint("full", "eve"), "room has exceeded its max participants (1)")
    finally:
        await first.disconnect()
    await attempt(mint("demo", "eve"), "")  # a good token joins
    await wait_for(page, "() => window.playground.inCall")


@requires_chromium
async def test_chat_interoperates_with_livekit_apps(
    playground_server: Server, browser: Any
) -> None:
    """Chat uses @livekit/components' wire format: a text stream on "lk.chat" plus the legacy
    JSON packet on "lk-chat-topic" (same id, ``ignoreLegacy``); both kinds are displayed."""
    page = await open_app(browser, url_of(playground_server) + "/")
    page_id = await join_playground(page, "interop", "Web")
    streams: list[tuple[str, str, str]] = []

    async def read_stream(reader: Any, identity: str) -> None:
        streams.append((reader.info.stream_id, await reader.read_all(), identity))

    # py publishes first: the Python SDK sends no media after its own data (see the report).
    async with (
        joined(playground_server, "interop", "py") as (py, events),
        publishing(py),
    ):
        py.register_text_stream_handler(
            "lk.chat", lambda reader, identity: asyncio.ensure_future(read_stream(reader, identity))
        )
        # A loud sine and a gradient from the SDK: the page shows py's video and speaking.
        await wait_for(page, REMOTE_VIDEO, "py")
        await wait_for(page, f"() => ({tile_state('py')})()?.speaking === 'true'")
        assert await page.is_visible('.tile[data-identity="py"].speaking .speaking-dot')
        await screenshot(page, "playground-python-speaker")

        await send_chat(page, "from the playground")
        (packet,) = await events.wait("data_received", lambda p: p.topic == "lk-chat-topic")
        legacy = json.loads(packet.data)
        assert packet.participant.identity == page_id
        assert legacy["message"] == "from the playground" and legacy["ignoreLegacy"] is True
        assert isinstance(legacy["timestamp"], int) and legacy["id"]
        await until(lambda: bool(streams))
        assert streams == [(legacy["id"], "from the playground", page_id)]

        # An older LiveKit app (legacy packet only) and a current one (text stream).
        markup = '<img src=x onerror="window.x=1"> legacy hello'
        old = {"id": "py-1", "timestamp": int(time.time() * 1000), "message": markup}
        await py.local_participant.publish_data(json.dumps(old), topic="lk-chat-topic")
        await wait_message(page, "py", markup)
        await py.local_participant.send_text("stream hello", topic="lk.chat")
        await wait_message(page, "py", "stream hello")
        texts = [m["text"] for m in await page.evaluate(CHAT_TEXTS)]
        assert texts == ["from the playground", markup, "stream hello"]
        assert await page.evaluate("() => !document.querySelector('#messages img') && !window.x")
    assert not page_problems(page)
