"""Faults the SDKs must survive: dropped signalling (resume), forced full reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from livekit import rtc

from roomcast.rooms.participant import Participant
from roomcast.rooms.transport_manager import ParticipantTransports
from roomcast.server import Server
from tests import signalling
from tests.integration.sdk import ROOM_EVENTS, Events, join_token, joined, room_options, until
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.test_media_python import publishing, subscribed_track, video_frame_size


@pytest.fixture
async def proxy(server: Server) -> AsyncIterator[TcpProxy]:
    tcp = TcpProxy(server.port)
    await tcp.start()
    yield tcp
    await tcp.close()


async def connect_via(proxy: TcpProxy, room: str, identity: str) -> tuple[rtc.Room, Events]:
    client = rtc.Room()
    events = Events(client, [*ROOM_EVENTS, "reconnecting", "reconnected"])
    await client.connect(f"ws://127.0.0.1:{proxy.port}", join_token(room, identity), room_options())
    return client, events


def remote_ufrags(participant: Participant) -> set[str | None]:
    """The client's ICE ufrags on the server's transports of its session (one per
    PeerConnection)."""
    transports = participant.session.transports  # type: ignore[union-attr]
    assert isinstance(transports, ParticipantTransports)
    subscriber = transports._subscriber_transport
    publisher = transports.publisher.transport if transports.publisher is not None else None
    return {t.remote_ufrag for t in {subscriber, publisher} if t is not None}


async def test_signal_drop_resumes_session_and_media_keeps_flowing(
    server: Server, proxy: TcpProxy, signalling: str
) -> None:
    async with joined(server, "resume", "watcher") as (_, watcher_events):
        pub, pub_events = await connect_via(proxy, "resume", "talker")
        try:
            async with publishing(pub):
                await subscribed_track(watcher_events, rtc.TrackKind.KIND_VIDEO, "talker")
                sid_before = pub.local_participant.sid
                room = server.rooms.get("resume")
                assert room is not None
                ufrags_before = remote_ufrags(room.participants["talker"])
                assert len(ufrags_before) == (1 if signalling == "v1" else 2)
                connections_before = proxy.connections
                proxy.cut()
                await pub_events.wait("reconnected", timeout=30)
                assert proxy.connections > connections_before  # a new WebSocket…
                assert pub.local_participant.sid == sid_before  # …for the same session
                # …whose PeerConnections restarted ICE: new credentials on every one.
                await until(lambda: not remote_ufrags(room.participants["talker"]) & ufrags_before)
                # The watcher never saw the talker leave, and media still flows.
                assert not [
                    a
                    for a in watcher_events.all("participant_disconnected")
                    if a[0].identity == "talker"
                ]
                assert room.participants["talker"].sid == sid_before
                async with joined(server, "resume", "late") as (_, late_events):
                    track = await subscribed_track(late_events, rtc.TrackKind.KIND_VIDEO, "talker")
                    assert await asyncio.wait_for(video_frame_size(track), 30) == (320, 240)
                # Signalling works again after the resume: a data packet and a metadata call.
                await pub.local_participant.publish_data(b"after resume", topic="r")
                await watcher_events.wait("data_received", lambda p: p.data == b"after resume")
        finally:
            await pub.disconnect()


@pytest.mark.parametrize(
    ("scenario", "outcome"),
    [
        ("SIMULATE_SIGNAL_RECONNECT", "resumed"),
        ("SIMULATE_NODE_FAILURE", "new session"),
        ("SIMULATE_MIGRATION", "new session"),
        ("SIMULATE_FULL_RECONNECT", "new session"),
        ("SIMULATE_SERVER_LEAVE", "disconnected"),
        ("SIMULATE_SPEAKER", "speaker"),
    ],
)
@pytest.mark.usefixtures("signalling")
async def test_sdk_simulate_scenarios(server: Server, scenario: str, outcome: str) -> None:
    async with (
        joined(server, "sim", "observer") as (_, observer_events),
        joined(server, "sim", "subject") as (subject, _),
    ):
        client_events = Events(subject, ["reconnected", "disconnected"])
        sid_before = subject.local_participant.sid
        room = server.rooms.get("sim")
        assert room is not None
        await subject.simulate_scenario(rtc.SimulateScenarioKind.Value(scenario))

        def session_sid() -> str | None:
            current = room.participants.get("subject")
            return current.sid if current is not None else None

        if outcome == "resumed":
            await client_events.wait("reconnected", timeout=30)
            assert session_sid() == sid_before
        elif outcome == "new session":
            await until(lambda: session_sid() not in (None, sid_before), timeout=30)
            await observer_events.wait(
                "participant_connected", lambda p: p.identity == "subject" and p.sid != sid_before
            )
        elif outcome == "disconnected":
            (reason,) = await client_events.wait("disconnected", timeout=30)
            assert reason == rtc.DisconnectReason.SERVER_SHUTDOWN
            await observer_events.wait(
                "participant_disconnected", lambda p: p.identity == "subject"
            )
        else:
            (speakers,) = await observer_events.wait("active_speakers_changed")
            assert [p.identity for p in speakers] == ["subject"]


async def test_udp_garbage_does_not_disturb_a_call(server: Server) -> None:
    import random
    import socket

    async with (
        joined(server, "noisy", "listener") as (_, events),
        joined(server, "noisy", "speaker") as (speaker, _),
        publishing(speaker),
    ):
        track = await subscribed_track(events, rtc.TrackKind.KIND_VIDEO, "speaker")
        rng = random.Random(7)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(3000):
                first = rng.choice([0, 1, 22, 23, 128, 144, 200, 255])  # STUN/DTLS/RTP/other
                payload = bytes([first]) + rng.randbytes(rng.randrange(0, 1200))
                sock.sendto(payload, ("127.0.0.1", server.mux.port))
                if i % 100 == 0:
                    await asyncio.sleep(0)  # let the server breathe, as real traffic would
        assert await asyncio.wait_for(video_frame_size(track, frames=20), 30) == (320, 240)
        room = server.rooms.get("noisy")
        assert room is not None and sorted(room.participants) == ["listener", "speaker"]


async def test_sigterm_drains_participants_and_webhooks() -> None:
    import signal

    from tests.integration.test_cli import start_dev_server
    from tests.integration.webhook_receiver import WebhookSink

    sink = WebhookSink()
    await sink.start()
    config = f"webhook:\n  api_key: devkey\n  urls: [{sink.url}]\n"
    proc, port = await start_dev_server("--config-body", config)
    try:
        client = rtc.Room()
        events = Events(client, ["disconnected"])
        await client.connect(f"ws://127.0.0.1:{port}", join_token("drain", "dora"))
        await sink.wait_for(2)  # room_started, participant_joined
        proc.send_signal(signal.SIGTERM)
        (reason,) = await events.wait("disconnected", timeout=20)
        assert reason == rtc.DisconnectReason.SERVER_SHUTDOWN
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        names = [e.event for e in await sink.wait_for(4)]
        assert names == ["room_started", "participant_joined", "participant_left", "room_finished"]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sink.stop()


async def test_misbehaving_participant_does_not_disturb_the_others(server: Server) -> None:
    """An authenticated participant floods garbage SRTP (random SSRCs, broken headers) on its
    publisher PC and NACK storms on its subscriber PC; the others' call goes on unchanged."""
    import random

    import aiohttp

    from roomcast.client.media import RESOLUTIONS
    from roomcast.loadtest.participant import LoadParticipant, Role
    from roomcast.media.rtcp import build_nack
    from tests.conftest import url_of

    async with (
        joined(server, "rowdy", "listener") as (_, events),
        joined(server, "rowdy", "speaker") as (speaker, _),
        publishing(speaker),
        aiohttp.ClientSession() as http,
    ):
        track = await subscribed_track(events, rtc.TrackKind.KIND_VIDEO, "speaker")
        role = Role("rowdy", "rowdy", video=True, subscribe=True, layers=RESOLUTIONS["low"])
        rowdy = LoadParticipant(role, url_of(server, "ws"), join_token("rowdy", "rowdy"), http)
        await rowdy.join(asyncio.get_running_loop().time())
        assert rowdy.error is None and rowdy.publisher is not None

        def subscribed_video_ssrcs() -> set[int]:
            return {
                ssrc
                for remote in rowdy.subscriber.remote_tracks.values()
                if remote.kind == "video"
                for ssrc in remote.ssrcs
            }

        # The join ends before the server subscribes the newcomer (once its transport is up,
        # in a renegotiation of its own): wait for the speaker's video in a subscriber offer.
        await until(lambda: bool(subscribed_video_ssrcs()))
        video_ssrcs = subscribed_video_ssrcs()
        recent: list[tuple[int, int]] = []  # (ssrc, seq) of video it received: NACKable
        receive = rowdy.subscriber.on_rtp

        def remember(packet: bytes) -> None:
            ssrc = int.from_bytes(packet[8:12], "big")
            if ssrc in video_ssrcs:
                recent.append((ssrc, int.from_bytes(packet[2:4], "big")))
                del recent[:-64]
            if receive is not None:
                receive(packet)

        rowdy.subscriber.on_rtp = remember
        await until(lambda: len(recent) >= 16)
        rng = random.Random(11)
        for i in range(3000):
            ssrc = rng.getrandbits(32)
            header = bytes([0x80, 96]) + rng.randbytes(6) + ssrc.to_bytes(4, "big")
            rowdy.publisher.send_rtp(header + rng.randbytes(rng.randrange(0, 1000)))
            media_ssrc = recent[-1][0]
            lost = [seq for ssrc, seq in recent[-16:] if ssrc == media_ssrc]
            rowdy.subscriber.send_rtcp(build_nack(1, media_ssrc, lost))  # amplification bait
            if i % 100 == 0:
                await asyncio.sleep(0)
        # The listener still decodes the speaker's video, and nobody was dropped.
        assert await asyncio.wait_for(video_frame_size(track, frames=20), 30) == (320, 240)
        room = server.rooms.get("rowdy")
        assert room is not None and sorted(room.participants) == ["listener", "rowdy", "speaker"]
        totals = server.plane.totals()
        assert totals["unknown_ssrc_dropped"] > 0  # the flood hit the rate limit
        assert totals["nacks_dropped"] > 0  # the NACK-storm guard refused most resends
        assert totals["retransmits"] < totals["nacks"] / 10
        await rowdy.leave()


@pytest.mark.usefixtures("signalling")
async def test_participant_without_signalling_is_kept_while_its_media_is_up(
    server: Server, proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WebSocket dies for good (nothing to resume to) but the PeerConnections stay up:
    the participant stays and its media keeps flowing, until its transport times out.

    The talker is Roomcast's load-test participant, whose media runs without signalling (the
    Rust SDK tears its PeerConnections down when it cannot reach the server)."""
    import aiohttp

    from roomcast.client.media import RESOLUTIONS
    from roomcast.loadtest.participant import LoadParticipant, Role
    from roomcast.rooms import session as session_module

    monkeypatch.setattr(session_module, "SIGNAL_LOST_GRACE", 0.2)  # the no-media case
    # RFC 7675's 30 s, shortened for the test (clients refresh consent every ~5 s).
    server.mux.consent_timeout = 8.0
    loop = asyncio.get_running_loop()
    async with (
        joined(server, "halfway", "listener") as (_, events),
        aiohttp.ClientSession() as http,
    ):
        role = Role("talker", "halfway", video=True, simulcast=False, layers=RESOLUTIONS["low"])
        url = f"ws://127.0.0.1:{proxy.port}"
        talker = LoadParticipant(
            role, url, join_token("halfway", "talker"), http, signalling.current
        )
        await talker.join(loop.time())
        assert talker.error is None

        async def drive() -> None:  # what LoadTest's scheduler does
            while True:
                talker.tick(loop.time())
                await asyncio.sleep(0.01)

        driver = loop.create_task(drive())
        try:
            track = await subscribed_track(events, rtc.TrackKind.KIND_VIDEO, "talker")
            await proxy.close()  # cut, and no new connections: the resume cannot happen
            await asyncio.wait_for(talker.signal.closed.wait(), 10)
            # Well past the 0.2 s grace, the talker's video still arrives: it was kept.
            width, _ = await asyncio.wait_for(video_frame_size(track, frames=45), 30)
            assert width == RESOLUTIONS["low"][-1].width
            room = server.rooms.get("halfway")
            assert room is not None and "talker" in room.participants
        finally:
            driver.cancel()
            talker.subscriber.close()  # its PeerConnections end: consent stops
            if talker.publisher is not None:
                talker.publisher.close()
        await events.wait("participant_disconnected", lambda p: p.identity == "talker")
