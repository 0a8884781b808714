"""What /stats gives the dashboard's charts: per-room totals (bitrate, packets/s, worst loss) even
where participants are not listed, packets/s per track, and each participant's connection
quality as the server scored it."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from roomcast.auth import VideoGrant
from roomcast.server import Server
from tests.conftest import token, url_of
from tests.integration.sdk import joined, until
from tests.integration.test_media_python import publishing, subscribed_track, video_frame_size


async def fetch_stats(server: Server, grant: VideoGrant) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url_of(server)}/stats", params={"access_token": token(grant)}) as resp,
    ):
        assert resp.status == 200
        stats: dict[str, Any] = await resp.json()
        return stats


async def test_rooms_carry_totals_and_participants_their_quality(server: Server) -> None:
    admin = VideoGrant(room_list=True, room_admin=True, room="charts")
    async with (
        joined(server, "charts", "sub") as (_, sub_events),
        joined(server, "charts", "pub") as (pub, _),
        publishing(pub),
    ):
        await video_frame_size(await subscribed_track(sub_events, 2, "pub"))
        # Packet rates are taken between two /stats answers at least a second apart: poll
        # (as the dashboard does) until both rates show the media.
        for _ in range(100):
            (room,) = (await fetch_stats(server, admin))["rooms"]
            if room["packets_per_s"] > 0 and room["bitrate_bps"] > 0:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"no packet rate in /stats: {room}")
        tracks = [t for p in room["participants"] for t in p["tracks"]]
        assert room["bitrate_bps"] == sum(t["bitrate_bps"] for t in tracks)
        assert room["packets_per_s"] == round(sum(t["packets_per_s"] for t in tracks), 1)
        assert room["loss"] == max(t["loss"] for t in tracks)

        # Without roomAdmin of the room its participants are not listed, its totals still are.
        listed_only = await fetch_stats(server, VideoGrant(room_list=True))
        (summary,) = listed_only["rooms"]
        assert summary["participants"] == [] and summary["bitrate_bps"] > 0

        # Connection quality: what the server last sent to the room (rooms/subscriptions.py,
        # every 5 s). A clean loopback call scores EXCELLENT or GOOD.
        live = server.rooms.get("charts")
        assert live is not None
        await until(
            lambda: all(p.connection_quality is not None for p in live.live_participants()),
            timeout=15,
        )
        (room,) = (await fetch_stats(server, admin))["rooms"]
        for participant in room["participants"]:
            assert participant["connection_quality"] in ("excellent", "good"), participant
            assert 1.0 <= participant["connection_score"] <= 4.5
