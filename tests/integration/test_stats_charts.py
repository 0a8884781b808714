"""What /stats gives the dashboard's charts: per-room totals (bitrate, packets/s, worst loss) even
where participants are not listed, packets/s per track, and the connection-quality slot."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from livekit.protocol import models

from roomcast.auth import VideoGrant
from roomcast.server import Server
from tests.conftest import token, url_of
from tests.integration.sdk import joined
from tests.integration.test_media_python import publishing, subscribed_track, video_frame_size


async def fetch_stats(server: Server, grant: VideoGrant) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url_of(server)}/stats", params={"access_token": token(grant)}) as resp,
    ):
        assert resp.status == 200
        stats: dict[str, Any] = await resp.json()
        return stats


async def test_rooms_carry_totals_and_participants_a_quality_slot(server: Server) -> None:
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
        assert all(p["connection_quality"] is None for p in room["participants"])

        # Without roomAdmin of the room its participants are not listed, its totals still are.
        listed_only = await fetch_stats(server, VideoGrant(room_list=True))
        (summary,) = listed_only["rooms"]
        assert summary["participants"] == [] and summary["bitrate_bps"] > 0

        live = server.rooms.get("charts")
        assert live is not None
        publisher = next(p for p in live.live_participants() if p.identity == "pub")
        publisher.connection_quality = models.ConnectionQuality.POOR  # type: ignore[attr-defined]
        (room,) = (await fetch_stats(server, admin))["rooms"]
        quality = {p["identity"]: p["connection_quality"] for p in room["participants"]}
        assert quality == {"pub": "poor", "sub": None}
