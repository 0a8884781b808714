"""`roomcast load-test`: synthetic participants against a real server, checked by the official
Python SDK (it must decode the synthetic tracks), by aiortc (the client peer is plain WebRTC),
and as a command line."""

from __future__ import annotations

import asyncio
import os
import re
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from livekit import rtc

from roomcast.client.media import RESOLUTIONS
from roomcast.client.peer import ClientPeer, LocalTrack
from roomcast.loadtest.report import summarize
from roomcast.loadtest.runner import LoadTest, LoadTestConfig
from roomcast.media.sdp import Codec
from roomcast.server import Server
from tests.conftest import API_KEY, API_SECRET, url_of
from tests.integration.sdk import joined
from tests.integration.test_cli import start_dev_server

pytestmark = pytest.mark.media
LOW = RESOLUTIONS["low"]


@asynccontextmanager
async def load_test(config: LoadTestConfig) -> AsyncIterator[LoadTest]:
    """Run a load test in the background until the block ends."""
    test = LoadTest(config)
    stop = asyncio.Event()
    task = asyncio.ensure_future(test.run(stop=stop, progress_interval=0.2))
    try:
        yield test
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def config_for(server: Server, **kwargs: object) -> LoadTestConfig:
    base: dict[str, object] = {
        "url": url_of(server, "ws"),
        "api_key": API_KEY,
        "api_secret": API_SECRET,
        "resolution": "low",
        "num_per_second": 20,
    }
    base.update(kwargs)
    return LoadTestConfig(**base)  # type: ignore[arg-type]


async def video_frames(track: rtc.RemoteTrack, frames: int) -> set[tuple[int, int]]:
    stream = rtc.VideoStream(track)
    sizes: set[tuple[int, int]] = set()
    seen = 0
    try:
        async for event in stream:
            sizes.add((event.frame.width, event.frame.height))
            seen += 1
            if seen >= frames:
                return sizes
    finally:
        await stream.aclose()
    raise AssertionError("video stream ended")


async def audio_frames(track: rtc.RemoteTrack, frames: int) -> tuple[int, float]:
    """(frames decoded with sound in them, loudest mean |x|) over `frames` 10 ms frames."""
    stream = rtc.AudioStream(track, sample_rate=48000, num_channels=1)
    loud = 0
    peak = 0.0
    seen = 0
    try:
        async for event in stream:
            assert event.frame.sample_rate == 48000
            level = float(np.mean(np.abs(np.frombuffer(event.frame.data, dtype=np.int16))))
            loud += level > 0
            peak = max(peak, level)
            seen += 1
            if seen >= frames:
                break
    finally:
        await stream.aclose()
    return loud, peak


@pytest.mark.parametrize("simulcast", [False, True])
async def test_official_sdk_decodes_synthetic_tracks(server: Server, simulcast: bool) -> None:
    config = config_for(
        server,
        room="decode",
        video_publishers=1,
        audio_publishers=1,
        simulcast=simulcast,
        simulate_speakers=True,
    )
    async with joined(server, "decode", "viewer") as (_, events), load_test(config) as test:
        publisher = config.roles()[0].identity
        video, _, _ = await events.wait(
            "track_subscribed",
            lambda t, _p, who: t.kind == rtc.TrackKind.KIND_VIDEO and who.identity == publisher,
        )
        audio, _, _ = await events.wait(
            "track_subscribed",
            lambda t, _p, who: t.kind == rtc.TrackKind.KIND_AUDIO and who.identity == publisher,
        )
        sizes = await asyncio.wait_for(video_frames(video, 30), 20)
        loud, peak = await asyncio.wait_for(audio_frames(audio, 150), 20)
        assert not test.failed
    # Without simulcast only the top layer exists; with it the server picks one of the three.
    expected = {(LOW[-1].width, LOW[-1].height)}
    if simulcast:
        assert sizes <= {(layer.width, layer.height) for layer in LOW}, sizes
    else:
        assert sizes == expected
    assert loud > 50 and peak > 0  # the SDK decoded our opus packets into sound


async def test_loopback_load_test_counts_every_packet(server: Server) -> None:
    config = config_for(
        server, room="count", video_publishers=2, audio_publishers=1, subscribers=3, duration=3
    )
    test = LoadTest(config)
    await asyncio.wait_for(test.run(), 30)
    summary = summarize(test)
    assert not summary.failed
    assert summary.joined == summary.participants == 5
    assert summary.tracks == 3  # 2 video + 1 audio
    for row in summary.subscribers:
        assert row.tracks_receiving == row.tracks_offered == 3, row
        assert row.packets > 100 and row.lost == 0, row
        assert row.first_media is not None and row.join is not None
    for track in summary.track_rows:
        assert track.subscribers == 3
        assert track.sent_packets > 0 and track.received_packets > 0
        # Simulcast: subscribers get one of the three layers, never more than was sent.
        assert track.received_packets <= 3 * track.sent_packets
    assert summary.loss == 0.0 and summary.packets > 0
    assert summary.join_p50 is not None and summary.media_p95 is not None


async def test_layout_asks_the_server_for_small_layers(server: Server) -> None:
    """A 3x3 grid shows 640x360 tiles (as lk asks): of 320x180, 640x360 and 1280x720 the
    server must forward the smallest that covers the tile (h), not the top layer."""
    config = config_for(
        server,
        room="layout",
        video_publishers=1,
        subscribers=1,
        layout="3x3",
        duration=3,
        resolution="high",
    )
    test = LoadTest(config)
    await asyncio.wait_for(test.run(), 30)
    summary = summarize(test)
    assert not summary.failed
    (sub,) = summary.subscribers
    assert sub.packets > 0 and sub.lost == 0
    # The subscriber sees the plane's SSRC, not the layer's: compare rates instead. The
    # h layer (450 kbps) is far from q (160 kbps) and f (1.7 Mbps).
    assert 250_000 < sub.bitrate < 1_000_000, sub.bitrate


async def test_client_peer_with_aiortc_both_directions() -> None:
    """The client peer is plain WebRTC: aiortc answers its offer (we are the DTLS server
    then) and it answers aiortc's offer (DTLS client, ICE controlled)."""
    sender = ClientPeer()
    await sender.start()
    track = LocalTrack(
        kind="video",
        track_id="t",
        stream_id="s",
        codecs=[Codec(96, "VP8", 90000, rtcp_fb=["nack", "nack pli"])],
        ssrcs=[4242],
    )
    remote = RTCPeerConnection()
    try:
        await remote.setRemoteDescription(
            RTCSessionDescription(sender.create_offer([track]), "offer")
        )
        await remote.setLocalDescription(await remote.createAnswer())
        sender.set_answer(remote.localDescription.sdp)
        await sender.wait_connected(10)
        for seq in range(50):
            header = struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 4242)
            sender.send_rtp(header + b"\x10" + bytes(100))
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)
        (receiver,) = remote.getReceivers()
        stats = await receiver.getStats()
        inbound = [s for s in stats.values() if s.type == "inbound-rtp"]
        assert inbound and inbound[0].packetsReceived == 50
    finally:
        await remote.close()
        sender.close()

    offerer = RTCPeerConnection()
    answerer = ClientPeer()
    await answerer.start()
    try:
        offerer.addTransceiver("audio", direction="sendonly")
        await offerer.setLocalDescription(await offerer.createOffer())
        answer = answerer.answer(offerer.localDescription.sdp)
        assert "a=setup:active" in answer and "a=recvonly" in answer
        await offerer.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await answerer.wait_connected(10)
        assert answerer.ice.controlling is False
    finally:
        await offerer.close()
        answerer.close()


async def test_cli_against_dev_server_prints_table() -> None:
    server, port = await start_dev_server()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "roomcast",
            "load-test",
            "--url",
            f"ws://127.0.0.1:{port}",
            "--api-key",
            "devkey",
            "--api-secret",
            "secret",
            "--video-publishers",
            "2",
            "--subscribers",
            "3",
            "--duration",
            "3s",
            "--video-resolution",
            "low",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        server.terminate()
        await server.wait()
    text = out.decode()
    assert proc.returncode == 0, err.decode() + text
    total = text.split("Total")[-1]
    assert re.search(r"\| 5/5\s+\| 2\s+\| 6\s+\|", total), text  # 3 subscribers x 2 tracks
    assert "0.00% (0)" in total, text
    rows = [[c.strip() for c in line.split("|")] for line in text.splitlines()]
    subscribers = [row for row in rows if row[0].startswith("sub-")]
    assert len(subscribers) == 3, text
    for _, _, tracks, _, packets, lost, loss, *_ in subscribers:
        assert (tracks, lost, loss) == ("2/2", "0", "0.00%"), text
        assert int(packets) > 50, text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--video-codec", "h264", "--publishers", "1"], "not supported"),
        (["--duration", "soon", "--subscribers", "1"], "invalid duration"),
        (["--layout", "2x2", "--subscribers", "1"], "--layout must be one of"),
        (["--video-resolution", "4k", "--publishers", "1"], "--video-resolution"),
        ([], "nothing to do"),
        (["--num-per-second", "0", "--subscribers", "1"], "--num-per-second"),
    ],
)
async def test_cli_rejects_bad_input(flags: list[str], message: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "roomcast",
        "load-test",
        "--url",
        "ws://127.0.0.1:9",
        "--api-key",
        "k",
        "--api-secret",
        "s",
        *flags,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert message in err.decode()


async def test_cli_needs_a_url() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "roomcast",
        "load-test",
        "--subscribers",
        "1",
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and "--url is required" in err.decode()


async def test_scaling_bench_smoke() -> None:
    """bench/scaling.py with tiny N: every participant joins, media flows without loss, and
    the server figures come from a live process."""
    from bench import scaling

    steps, storm = await scaling.run([1, 3], window=0.5, storm=3, storm_rate=20)
    assert [(s.scenario, s.participants) for s in steps] == [
        ("one room", 1),
        ("one room", 3),
        ("rooms", 1),
        ("rooms", 3),
    ]
    for step in steps:
        assert step.joined == step.participants and step.failed == 0, step
        assert step.server_rss > 10 and step.server_cpu >= 0 and step.loss == 0, step
        if step.participants > 1:
            assert step.packets_per_s > 0, step
    assert storm is not None and storm.failed == 0
    assert storm.join_p50 is not None and storm.media_p95 is not None
    assert storm.join_p50 <= storm.media_p95


async def test_signalling_bench_smoke() -> None:
    from bench import signalling

    results = await signalling.run(seconds=0.5, concurrency=2, joins=4, sdk=2)
    assert [r.name for r in results] == [
        "ListRooms",
        "CreateRoom+DeleteRoom",
        "WS joins v0",
        "WS joins v1",
        "full joins (ICE+DTLS) v0",
        "full joins (ICE+DTLS) v1",
        "SDK joins v0",
        "SDK joins v1",
    ]
    for result in results:
        assert result.errors == 0, result.first_error
        assert result.operations > 0 and result.p50 is not None
    assert [r.operations for r in results[2:]] == [4, 4, 4, 4, 2, 2]


async def test_rooms_are_isolated(server: Server) -> None:
    """Publishers join first (as lk does), one per room; each subscriber must receive only
    its own room's tracks."""
    config = config_for(
        server,
        room="iso",
        rooms=2,
        video_publishers=2,
        audio_publishers=2,
        subscribers=2,
        duration=2,
    )
    test = LoadTest(config)
    await asyncio.wait_for(test.run(), 30)
    assert not test.failed
    own = {p.role.room: set(p.track_sids.values()) for p in test.participants if p.role.video}
    for p in test.participants:
        if p.role.subscribe:
            assert set(p.received) == own[p.role.room], (p.role.room, sorted(p.received))
