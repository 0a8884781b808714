"""One official Python SDK participant as a process, for the network lab (tests/lab/peers.py).

Run under `ip netns exec` to put it in a client network. It joins, publishes a 440 Hz sine
(microphone) and a moving gradient (camera), subscribes to everyone, decodes what it gets, and
reports on stdout, one JSON object a line:

    {"event": "connected", "join_s": 0.41, "sid": "PA_…"}          Room.connect() returned
    {"event": "first_frame", "kind": "video", "from": "near", "t": 0.93}   decoded; t: seconds
                                                                    since connect() was called
    {"event": "data", "from": "near", "payload": "hi"}
    {"event": "reconnecting"} / {"event": "reconnected"} / {"event": "disconnected", …}
    {"event": "reply", "id": 3, …}                                  the answer to a command

Commands come on stdin, one JSON object a line, each with an "id" for its reply:
    {"cmd": "stats"}        frames decoded per kind, the worst video gap since "mark", and the
                            ICE candidate pair each PeerConnection uses (from getStats)
    {"cmd": "mark"}         start measuring video gaps and counting frames from now
    {"cmd": "frames", "video": 20, "audible": 20, "within": 20}   reply (with "stats") once that
                            many frames were decoded since "mark", or an error after "within" s
    {"cmd": "data", "payload": "…"}        publish_data, reliable, topic "lab"
    {"cmd": "simulate", "scenario": "SIMULATE_SIGNAL_RECONNECT"}   Room.simulate_scenario
    {"cmd": "quit"}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from typing import Any

import numpy as np
from livekit import rtc

SAMPLE_RATE = 48000
FRAME_SAMPLES = 480  # 10 ms
AMPLITUDE = 0.3 * 32767


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Peer:
    def __init__(self, width: int, height: int, fps: int) -> None:
        self.room = rtc.Room()  # on the running loop: the SDK delivers its events there
        self.width, self.height, self.fps = width, height, fps
        self.started = 0.0
        self.frames: dict[str, int] = {"audio": 0, "audible": 0, "video": 0}
        self.marked_frames: dict[str, int] = dict(self.frames)
        self.marked_at = 0.0
        self.first_frame: dict[str, float] = {}
        self.last_video = 0.0
        self.worst_video_gap = 0.0
        self.video_size = (0, 0)
        self.tasks: list[asyncio.Task[None]] = []
        self.progress = asyncio.Event()  # set on every decoded frame

    # -- publishing --------------------------------------------------------------------------
    async def publish(self) -> None:
        audio_source = rtc.AudioSource(SAMPLE_RATE, 1)
        video_source = rtc.VideoSource(self.width, self.height)
        local = self.room.local_participant
        await local.publish_track(
            rtc.LocalAudioTrack.create_audio_track("sine", audio_source),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )
        await local.publish_track(
            rtc.LocalVideoTrack.create_video_track("gradient", video_source),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=False),
        )
        self.tasks.append(asyncio.create_task(self.feed_audio(audio_source)))
        self.tasks.append(asyncio.create_task(self.feed_video(video_source)))

    async def feed_audio(self, source: rtc.AudioSource) -> None:
        t = np.arange(FRAME_SAMPLES)
        n = 0
        while True:
            wave = AMPLITUDE * np.sin(2 * math.pi * 440 * (t + n) / SAMPLE_RATE)
            n += FRAME_SAMPLES
            frame = rtc.AudioFrame(wave.astype(np.int16).tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES)
            await source.capture_frame(frame)

    async def feed_video(self, source: rtc.VideoSource) -> None:
        width, height = self.width, self.height
        frame = np.zeros((height, width, 4), dtype=np.uint8)
        frame[..., 3] = 255
        step = 0
        while True:
            frame[..., 0] = (np.arange(width) + step) % 256
            frame[..., 1] = (np.arange(height)[:, None] + 2 * step) % 256
            source.capture_frame(
                rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, frame.tobytes())
            )
            step += 4
            await asyncio.sleep(1 / self.fps)

    # -- receiving ---------------------------------------------------------------------------
    def on_track(self, track: rtc.Track, _: Any, participant: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            self.tasks.append(asyncio.create_task(self.read_video(track, participant.identity)))
        elif track.kind == rtc.TrackKind.KIND_AUDIO:
            self.tasks.append(asyncio.create_task(self.read_audio(track, participant.identity)))

    async def read_video(self, track: rtc.Track, sender: str) -> None:
        async for event in rtc.VideoStream(track):
            now = time.monotonic()
            if self.last_video:
                self.worst_video_gap = max(self.worst_video_gap, now - self.last_video)
            self.last_video = now
            self.frames["video"] += 1
            self.video_size = (event.frame.width, event.frame.height)
            self.first("video", sender)
            self.progress.set()

    async def read_audio(self, track: rtc.Track, sender: str) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        async for event in stream:
            self.frames["audio"] += 1
            samples = np.frombuffer(event.frame.data, dtype=np.int16)
            if samples.size and float(np.mean(np.abs(samples))) > AMPLITUDE / 10:
                self.frames["audible"] += 1
                self.first("audio", sender)
                self.progress.set()

    def first(self, kind: str, sender: str) -> None:
        if kind not in self.first_frame:
            self.first_frame[kind] = time.monotonic() - self.started
            emit("first_frame", kind=kind, **{"from": sender}, t=self.first_frame[kind])

    # -- commands ----------------------------------------------------------------------------
    async def stats(self) -> dict[str, Any]:
        paths = {}
        if self.room.isconnected():
            stats = await self.room.get_rtc_stats()
            paths = {
                "publisher": selected_pair(stats.publisher_stats),
                "subscriber": selected_pair(stats.subscriber_stats),
            }
        since_mark = {k: self.frames[k] - self.marked_frames[k] for k in self.frames}
        return {
            "frames": dict(self.frames),
            "since_mark": since_mark,
            "seconds_since_mark": time.monotonic() - self.marked_at,
            "worst_video_gap": self.worst_video_gap,
            "video_size": list(self.video_size),
            "paths": paths,
        }

    async def await_frames(self, minimum: dict[str, int], timeout: float) -> None:
        async def reached() -> None:
            while any(self.frames[k] - self.marked_frames[k] < n for k, n in minimum.items()):
                self.progress.clear()
                await self.progress.wait()

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            since = {k: self.frames[k] - self.marked_frames[k] for k in self.frames}
            raise TimeoutError(f"{since} frames since mark after {timeout} s") from None

    def mark(self) -> None:
        self.marked_at = time.monotonic()
        self.marked_frames = dict(self.frames)
        self.worst_video_gap = 0.0
        self.last_video = time.monotonic() if self.last_video else 0.0

    async def serve_commands(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            command = json.loads(line)
            name, ident = command.get("cmd"), command.get("id")
            try:
                if name == "quit":
                    emit("reply", id=ident)
                    return
                if name == "stats":
                    emit("reply", id=ident, **await self.stats())
                elif name == "frames":
                    minimum = {k: int(command[k]) for k in ("video", "audible") if k in command}
                    await self.await_frames(minimum, float(command.get("within", 20)))
                    emit("reply", id=ident, **await self.stats())
                elif name == "mark":
                    self.mark()
                    emit("reply", id=ident)
                elif name == "data":
                    await self.room.local_participant.publish_data(
                        command["payload"].encode(), reliable=True, topic="lab"
                    )
                    emit("reply", id=ident)
                elif name == "simulate":
                    kind = rtc.SimulateScenarioKind.Value(command["scenario"])
                    await self.room.simulate_scenario(kind)
                    emit("reply", id=ident)
                else:
                    emit("reply", id=ident, error=f"unknown command {name!r}")
            except Exception as exc:  # report it; the test decides
                emit("reply", id=ident, error=f"{type(exc).__name__}: {exc}")

    async def run(self, url: str, token: str) -> None:
        room = self.room
        room.on("track_subscribed", self.on_track)
        room.on(
            "data_received",
            lambda packet: emit(
                "data",
                payload=packet.data.decode(errors="replace"),
                **{"from": packet.participant.identity if packet.participant else ""},
            ),
        )
        room.on("reconnecting", lambda: emit("reconnecting"))
        room.on("reconnected", lambda: emit("reconnected", t=time.monotonic() - self.started))
        room.on("disconnected", lambda reason: emit("disconnected", reason=int(reason)))
        room.on(
            "participant_connected",
            lambda p: emit("participant_connected", identity=p.identity),
        )
        self.started = time.monotonic()
        try:
            await room.connect(url, token)
        except Exception as exc:
            emit("connect_failed", error=f"{type(exc).__name__}: {exc}")
            return
        emit("connected", join_s=time.monotonic() - self.started, sid=room.local_participant.sid)
        await self.publish()
        emit("published")
        try:
            await self.serve_commands()
        finally:
            for task in self.tasks:
                task.cancel()
            await room.disconnect()


def selected_pair(stats: list[Any]) -> dict[str, Any]:
    """The candidate pair the PeerConnection's transport selected, and its two candidates."""
    by_id = {}
    for stat in stats:
        which = stat.WhichOneof("stats")
        item = getattr(stat, which)
        by_id[item.rtc.id] = (which, item)
    for which, item in by_id.values():
        if which != "transport" or not item.transport.selected_candidate_pair_id:
            continue
        _, pair = by_id.get(item.transport.selected_candidate_pair_id, (None, None))
        if pair is None:
            continue
        out: dict[str, Any] = {
            "changes": item.transport.selected_candidate_pair_changes,
            "bytes_sent": pair.candidate_pair.bytes_sent,
            "bytes_received": pair.candidate_pair.bytes_received,
        }
        for side, key in (("local", "local_candidate_id"), ("remote", "remote_candidate_id")):
            _, candidate = by_id.get(getattr(pair.candidate_pair, key), (None, None))
            if candidate is not None:
                c = candidate.candidate
                out[side] = {
                    "protocol": c.protocol,
                    "address": c.address,
                    "port": c.port,
                    "type": rtc.stats.IceCandidateType.Name(c.candidate_type),
                    "tcp_type": (
                        rtc.stats.IceTcpCandidateType.Name(c.tcp_type)
                        if c.protocol == "tcp"
                        else ""
                    ),
                    # a relay candidate's leg to its TURN server: TRANSPORT_UDP/TCP/TLS
                    "relay_protocol": (
                        rtc.stats.IceServerTransportProtocol.Name(c.relay_protocol)
                        if c.HasField("relay_protocol")
                        else ""
                    ),
                    "url": c.url,
                }
        return out
    return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=int, default=20)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    async def run() -> None:
        await Peer(width, height, args.fps).run(args.url, args.token)

    asyncio.run(run())


if __name__ == "__main__":
    main()
