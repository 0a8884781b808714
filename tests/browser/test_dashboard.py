"""The dashboard at ``/dashboard``: live rooms, participants and tracks from ``/stats`` and
actions through the RoomService API, driven in headless Chromium next to two playground pages."""

from __future__ import annotations

from typing import Any

from roomcast.auth import VideoGrant
from roomcast.server import Server
from tests.browser.test_playground import (
    PHONE,
    join_playground,
    open_app,
    page_problems,
    playground_server,
    requires_chromium,
    screenshot,
    tile_state,
    wait_for,
)
from tests.conftest import ServerFactory, token, url_of
from tests.integration.data_track_sdk import dt_joined
from tests.integration.sdk import joined

__all__ = ["playground_server"]  # the fixture, re-used from the playground tests

pytestmark = requires_chromium


def admin_token(room: str = "", **grants: bool) -> str:
    grant = VideoGrant(room_list=True, room_create=True, room_admin=bool(room), room=room)
    if grants:
        grant = VideoGrant(room=room, **grants)
    return token(grant)


async def sign_in(page: Any, admin: str) -> None:
    await page.fill("#admin-token", admin)
    await page.click("#login-form button[type=submit]")


def row(room: str, identity: str, kind: str = "") -> str:
    """CSS selector of a participant block (or one of its track rows) on the dashboard."""
    selector = f'.room[data-room="{room}"] .participant[data-identity="{identity}"]'
    return f'{selector} tr[data-kind="{kind}"]' if kind else selector


async def text_of(page: Any, selector: str) -> str:
    return str(await page.evaluate("(s) => document.querySelector(s)?.textContent ?? ''", selector))


async def test_dashboard_shows_rooms_and_acts_on_them(
    playground_server: Server, browser: Any
) -> None:
    url = url_of(playground_server)
    alice = await open_app(browser, url + "/")
    bob = await open_app(browser, url + "/")
    alice_id = await join_playground(alice, "team", "Alice")
    bob_id = await join_playground(bob, "team", "Bob")

    dashboard = await open_app(browser, url + "/dashboard")
    await sign_in(dashboard, admin_token("team"))
    await wait_for(dashboard, "() => !document.querySelector('#board').hidden")
    assert "roomAdmin (team)" in await dashboard.inner_text("#token-info")

    # Both participants with their camera and microphone tracks, codecs and live bitrates.
    for identity in (alice_id, bob_id):
        for kind in ("video", "audio"):
            await wait_for(
                dashboard,
                "(s) => { const r = document.querySelector(s);"
                " return r && !['0', ''].includes(r.children[5].textContent); }",
                row("team", identity, kind),
            )
        video = await dashboard.evaluate(
            "(s) => Array.from(document.querySelector(s).children).map((c) => c.textContent)",
            row("team", identity, "video"),
        )
        kind, source, codec, layers, muted = video[:5]
        assert (kind, source, codec, muted) == ("video", "camera", "VP8", "no"), video
        assert "\u00d7" in layers and video[5].endswith("bps"), video
        assert video[6].endswith("%")
        audio = await text_of(dashboard, row("team", identity, "audio"))
        assert "microphone" in audio and "opus" in audio
    assert "Bob" in await text_of(dashboard, row("team", bob_id))
    assert "2 participants" in await text_of(dashboard, '.room[data-room="team"] .count')
    figures = {f: await text_of(dashboard, f"#{f}") for f in ("cpu", "memory", "pkts-in")}
    assert figures["cpu"].endswith("%") and figures["memory"].endswith("MiB"), figures
    await wait_for(dashboard, "() => parseInt(document.querySelector('#pkts-in').textContent) > 0")
    await screenshot(dashboard, "dashboard", docs_name="dashboard.png")
    await dashboard.set_viewport_size(PHONE)
    await screenshot(dashboard, "dashboard-phone")
    await dashboard.set_viewport_size({"width": 1280, "height": 800})

    # Mute Bob's microphone from the dashboard: his page and Alice's show it.
    await dashboard.click(f'{row("team", bob_id, "audio")} [data-action="mute"]')
    await wait_for(bob, "() => document.querySelector('#mic-button').textContent === 'Unmute'")
    await wait_for(alice, f"() => ({tile_state(bob_id)})()?.micMuted === 'true'")
    await wait_for(
        dashboard,
        "(s) => document.querySelector(s)?.dataset.muted === 'true'",
        row("team", bob_id, "audio"),
    )

    # Create a room, see it, delete it.
    await dashboard.fill("#new-room", "made-on-the-dashboard")
    await dashboard.fill("#new-max", "3")
    await dashboard.click("#create-form button[type=submit]")
    created = '.room[data-room="made-on-the-dashboard"]'
    await wait_for(dashboard, "(s) => !!document.querySelector(s)", created)
    assert "max 3" in await text_of(dashboard, created)
    await dashboard.click(f'{created} [data-action="delete-room"]')
    await wait_for(dashboard, "(s) => !document.querySelector(s)", created)
    assert playground_server.rooms.get("made-on-the-dashboard") is None

    # Remove Bob: his page is disconnected and says why; he leaves the dashboard too.
    await dashboard.click(f'{row("team", bob_id)} [data-action="remove"]')
    await wait_for(bob, "() => window.playground.disconnectReason === 'PARTICIPANT_REMOVED'")
    assert await bob.is_visible("#prejoin")
    assert "removed from the room" in await bob.inner_text("#join-error")
    await wait_for(dashboard, "(s) => !document.querySelector(s)", row("team", bob_id))
    await wait_for(alice, f"() => !({tile_state(bob_id)})()")
    assert await dashboard.is_visible(row("team", alice_id))
    assert not page_problems(alice, bob, dashboard)


async def test_dashboard_refuses_tokens_without_admin_grants(
    start_server: ServerFactory, browser: Any
) -> None:
    server = await start_server("playground:\n  enabled: true\n")
    dashboard = await open_app(browser, url_of(server) + "/dashboard")

    async def refused(admin: str, expected: str) -> None:
        await sign_in(dashboard, admin)
        await wait_for(
            dashboard,
            "(t) => document.querySelector('#login-error').textContent.includes(t)",
            expected,
        )
        assert await dashboard.is_hidden("#board")

    await refused(token(VideoGrant(room_join=True, room="team"), identity="eve"), "join token")
    await refused(token(VideoGrant(room_create=True)), "needs roomList")
    await refused("garbage", "does not look like an access token")
    await screenshot(dashboard, "dashboard-refused")
    assert await dashboard.evaluate("() => sessionStorage.getItem('roomcast.admin-token')") is None

    async with joined(server, "team", "py") as (py, events):
        # roomAdmin for another room: the dashboard opens and counts the room's participants,
        # but lists them only to an admin of that room (as ListParticipants), so none here.
        await sign_in(dashboard, admin_token("elsewhere"))
        team = '.room[data-room="team"]'
        await wait_for(dashboard, "(s) => !!document.querySelector(s)", team)
        assert "1 participant" in await text_of(dashboard, f"{team} .count")
        assert await dashboard.is_visible(f"{team} .unlisted")
        assert not await dashboard.query_selector(row("team", "py"))
        assert py.isconnected()

        # The server stops answering: the dashboard says so and keeps trying.
        await dashboard.route("**/stats", lambda route: route.abort())
        await wait_for(
            dashboard,
            "() => document.querySelector('#board-status').textContent.includes('unreachable')",
        )
        await screenshot(dashboard, "dashboard-unreachable")
        await dashboard.unroute("**/stats")
        await wait_for(dashboard, "() => document.querySelector('#board-status').hidden")

        # Dev keys: the dev admin token mints roomAdmin per room, so removing works.
        await dashboard.click("#logout")
        await dashboard.click("#dev-login")
        await wait_for(dashboard, "(s) => !!document.querySelector(s)", row("team", "py"))
        await dashboard.click(f'{row("team", "py")} [data-action="remove"]')
        await events.wait("disconnected")
        await wait_for(dashboard, "(s) => !document.querySelector(s)", row("team", "py"))


async def test_dashboard_lists_data_tracks(start_server: ServerFactory, browser: Any) -> None:
    server = await start_server("playground:\n  enabled: true\n")
    async with dt_joined(server, "sensors", "robot") as (robot, _):
        dashboard = await open_app(browser, url_of(server) + "/dashboard")
        await sign_in(dashboard, admin_token("sensors"))
        participant = row("sensors", "robot")
        await wait_for(dashboard, "(s) => !!document.querySelector(s)", participant)
        assert await dashboard.is_visible(f"{participant} .no-tracks")
        track = await robot.local_participant.publish_data_track(name="lidar")
        cells = f"{participant} tr[data-data-track='{track.info.sid}'] td"
        await wait_for(dashboard, "(s) => !!document.querySelector(s)", cells)
        texts = await dashboard.evaluate(
            "(s) => Array.from(document.querySelectorAll(s)).map((c) => c.textContent)", cells
        )
        assert texts == ["lidar", track.info.sid, "1", "none"], texts
        assert await dashboard.is_hidden(f"{participant} .no-tracks")
        assert await dashboard.is_hidden(f"{participant} .tracks:not(.data-tracks)")
        await track.unpublish()
        await wait_for(dashboard, "(s) => !document.querySelector(s)", cells)
        assert await dashboard.is_visible(f"{participant} .no-tracks")
        assert not page_problems(dashboard)
