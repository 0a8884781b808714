"""Roomcast as compare.py measures it: `roomcast serve` in a subprocess (optionally under
cProfile), one publisher and N subscribers joined over LiveKit signalling with Roomcast's own
client peer. Everything a real deployment has stays on: NACK cache and retransmissions,
RTCP (SR to subscribers, RR/REMB/PLI to the publisher), per-track stats and metrics. The
subscribers send an RR every second and NACK every gap, as libwebrtc does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
from livekit.protocol import models
from livekit.protocol import rtc as proto

from bench.relays.base import Relay, RelayUnavailable
from bench.sinks import Sink, nack_sender
from roomcast.auth import VideoGrant, create_token
from roomcast.client.peer import ClientPeer, LocalTrack
from roomcast.client.signal import PUBLISHER, SUBSCRIBER, SignalClient
from roomcast.media.sdp import Codec

HOST = "127.0.0.1"
API_KEY, API_SECRET = "devkey", "secret"
ROOM = "bench"
CONNECT_CONCURRENCY = 10  # subscribers joining at once
VP8 = Codec(96, "VP8", 90000, rtcp_fb=["goog-remb", "ccm fir", "nack", "nack pli"])
# Info logs (as in production), no join rate limit for 150 joins from one address.
# Congestion control off unless asked for (the relays next to it estimate nothing either);
# on, the subscribers' packets carry transport-wide numbers and send records are kept.
CONFIG = """
logging: {level: warn}
rtc: {tcp_port: 0, congestion_control: {enabled: %s}}
limit: {joins_per_second_per_ip: 10000, join_burst_per_ip: 10000}
"""


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _token(identity: str) -> str:
    grant = VideoGrant(room_join=True, room=ROOM)
    return create_token(API_KEY, API_SECRET, identity=identity, video=grant)


class _Participant:
    """A signalling connection and one client peer (its publisher or its subscriber PC)."""

    def __init__(self, http: aiohttp.ClientSession, target: int) -> None:
        self.signal = SignalClient(http)
        self.peer = ClientPeer(host=HOST)
        self.target = target
        self.signal.on_trickle = self._on_trickle

    def _on_trickle(self, candidate: str, target: int) -> None:
        if target == self.target:
            self.peer.add_remote_candidate(candidate)

    async def close(self) -> None:
        self.peer.close()
        await self.signal.close()


async def _start_server(
    profile: Path | None, plane: str, congestion_control: bool
) -> tuple[asyncio.subprocess.Process, str]:
    port, udp_port = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    command = [sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += ["-m", "roomcast", "serve", "--keys", f"{API_KEY}: {API_SECRET}"]
    command += ["--bind", HOST, "--port", str(port), "--udp-port", str(udp_port)]
    command += ["--config-body", CONFIG % ("true" if congestion_control else "false")]
    env = {**os.environ, "ROOMCAST_FORWARDING_PLANE": plane}
    process = await asyncio.create_subprocess_exec(*command, env=env)
    url = f"http://{HOST}:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            if process.returncode is not None:
                raise RelayUnavailable(f"roomcast serve exited with {process.returncode}")
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return process, url
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    process.kill()
    raise RelayUnavailable("roomcast serve did not answer on its HTTP port within 10 s")


async def _publish(http: aiohttp.ClientSession, url: str, ssrc: int) -> _Participant:
    pub = _Participant(http, PUBLISHER)
    await pub.signal.connect(url, _token("publisher"), auto_subscribe=False)
    await pub.peer.start()
    answered = asyncio.get_running_loop().create_future()

    def on_answer(description: proto.SessionDescription) -> None:
        pub.peer.set_answer(description.sdp)
        if not answered.done():
            answered.set_result(None)

    pub.signal.on_answer = on_answer
    request = proto.AddTrackRequest(
        cid="bench-video",
        name="camera",
        type=models.TrackType.VIDEO,
        source=models.TrackSource.CAMERA,
        width=640,
        height=360,
    )
    await asyncio.wait_for(pub.signal.add_track(request), 10)
    track = LocalTrack("video", "bench-video", "bench", [VP8], ssrcs=[ssrc])
    pub.signal.send_offer(pub.peer.create_offer([track]))
    await asyncio.wait_for(answered, 10)
    await pub.peer.wait_connected(15)
    return pub


async def _subscribe(
    http: aiohttp.ClientSession, url: str, identity: str, sink: Sink, rtcp_ssrc: int
) -> _Participant:
    sub = _Participant(http, SUBSCRIBER)
    await sub.peer.start()

    def on_offer(description: proto.SessionDescription) -> None:
        sub.signal.send_answer(sub.peer.answer(description.sdp), description.id)

    sub.signal.on_offer = on_offer
    sub.peer.on_rtp = sink.on_rtp
    sink.on_gap = nack_sender(sub.peer.send_rtcp, rtcp_ssrc)
    await sub.signal.connect(url, _token(identity), auto_subscribe=True)
    await sub.peer.wait_connected(30)
    return sub


async def start(
    fanout: int,
    publisher_ssrc: int,
    *,
    profile: Path | None = None,
    plane: str = "python",
    congestion_control: bool = False,
) -> Relay:
    """`plane`: the server's forwarding plane (media/native_plane.py), python or native;
    `congestion_control`: rtc.congestion_control.enabled (the server's default is on)."""
    process, url = await _start_server(profile, plane, congestion_control)
    # One WebSocket per participant: no pool limit (aiohttp's default is 100 connections).
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    participants: list[_Participant] = []

    async def close() -> None:
        for participant in participants:
            await participant.close()
        await http.close()
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # a clean exit, so cProfile writes its file
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()

    try:
        publisher = await _publish(http, url, publisher_ssrc)
        participants.append(publisher)
        sinks = [Sink() for _ in range(fanout)]
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def join(index: int) -> None:
            async with gate:
                sub = await _subscribe(http, url, f"sub-{index}", sinks[index], 0x7000 + index)
                participants.append(sub)

        await asyncio.gather(*(join(i) for i in range(fanout)))
    except BaseException:
        await close()
        raise
    subscribers = participants[1:]

    def tick() -> None:  # RFC 3550 §6.4.2: receiver reports from every subscriber
        for index, (sub, sink) in enumerate(zip(subscribers, sinks, strict=False)):
            report = sink.receiver_report(0x7000 + index)
            if report is not None:
                sub.peer.send_rtcp(report)

    name = "Roomcast native" if plane == "native" else "Roomcast"
    name += " CC" if congestion_control else ""
    return Relay(name, process.pid, publisher.peer.send_rtp, sinks, close, tick)
