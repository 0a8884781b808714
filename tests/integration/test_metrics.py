"""/metrics parses with prometheus_client and moves when media flows; /stats for the dashboard."""

from __future__ import annotations

import aiohttp
from livekit import rtc
from prometheus_client.parser import text_string_to_metric_families

from roomcast.auth import VideoGrant
from roomcast.server import Server
from tests.conftest import ServerFactory, free_port, token, url_of
from tests.integration.sdk import joined, until
from tests.integration.test_media_python import publishing, subscribed_track, video_frame_size


async def scrape(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        text = await resp.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + "".join(f",{k}={v}" for k, v in sorted(sample.labels.items()))
            values[key] = sample.value
    return values


async def test_metrics_move_with_media_and_stats_show_tracks(start_server: ServerFactory) -> None:
    prometheus_port = free_port()
    server: Server = await start_server(f"prometheus:\n  port: {prometheus_port}\n")
    before = await scrape(f"http://127.0.0.1:{prometheus_port}/metrics")
    assert before["roomcast_rooms"] == 0 and before["roomcast_packets_in_total"] == 0
    async with (
        joined(server, "metrics", "sub") as (_, sub_events),
        joined(server, "metrics", "pub") as (pub, _),
        publishing(pub),
    ):
        track = await subscribed_track(sub_events, rtc.TrackKind.KIND_VIDEO, "pub")
        await video_frame_size(track)
        await until(lambda: server.rates.track_bps != {} and any(server.rates.track_bps.values()))
        after = await scrape(f"http://127.0.0.1:{prometheus_port}/metrics")
        assert after["roomcast_rooms"] == 1 and after["roomcast_participants"] == 2
        assert after["roomcast_tracks_published"] == 2
        assert after["roomcast_tracks_subscribed"] == 2
        assert after["roomcast_packets_in_total"] > 0 and after["roomcast_packets_out_total"] > 0
        assert after["roomcast_bytes_out_total"] > after["roomcast_packets_out_total"]
        assert after["roomcast_signal_requests_total,type=add_track"] == 2
        assert after["roomcast_forward_seconds_count"] >= 0
        if server.mux.native:  # the engine's own counters: it read and forwarded the media
            assert after["roomcast_forwarding_plane,plane=native"] == 1
            assert after["roomcast_native_engine_total,event=datagrams_in"] > 0
            assert after["roomcast_native_engine_total,event=rtp_in"] > 0
            assert after["roomcast_native_engine_total,event=malformed"] == 0
        else:
            assert after["roomcast_forwarding_plane,plane=python"] == 1

        async with aiohttp.ClientSession() as session:
            url = f"{url_of(server)}/stats"
            admin = VideoGrant(room_list=True, room_admin=True, room="metrics")
            async with session.get(url, params={"access_token": token(admin)}) as resp:
                stats = await resp.json()
            async with session.get(
                url, params={"access_token": token(VideoGrant(room_join=True, room="x"))}
            ) as resp:
                assert resp.status == 401
        (room,) = stats["rooms"]
        publisher = next(p for p in room["participants"] if p["identity"] == "pub")
        kinds = sorted(t["kind"] for t in publisher["tracks"])
        assert kinds == ["audio", "video"]
        assert any(t["bitrate_bps"] > 0 for t in publisher["tracks"])
        assert stats["server"]["memory_mib"] > 0
