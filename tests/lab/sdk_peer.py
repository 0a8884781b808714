"""One official Python SDK participant as a process, for the network lab (tests/lab/peers.py).

Run under `ip netns exec` to put it in a client network. It joins, publishes a 440 Hz sine
(microphone) and a moving gradient (camera), subscribes to everyone, decodes what it gets, and
reports on stdout, one JSON object a line:

    {"event": "connected", "join_s": 0.41, "sid": "PA_…"}          Room.connect() returned
    {"event": "first_frame", "kind": "video", "from": "near", "t": 0.93}   decoded; t: seconds
                                                                    since connect() was called
    {"event": "data", "from": "near", "payload": "hi"}
    {"event": "quality", "identity": "far", "quality": 2}           connection_quality_changed
    {"event": "reconnecting"} / {"event": "reconnected"} / {"event": "disconnected", …}
    {"event": "reply", "id": 3, …}                                  the answer to a command

Commands come on stdin, one JSON object a line, each with an "id" for its reply:
    {"cmd": "stats"}        frames decoded per kind, the worst video gap since "mark", and the
                            ICE candidate pair each PeerConnection uses (from getStats)
    {"cmd": "mark"}         start measuring video gaps and counting frames from now
    {"cmd": "frames", "video": 20, "audible": 20, "within": 20}   reply (with "stats") once that
                            many frames were decoded since "mark", or an error after "within" s
    {"cmd": "size", "size": "1280x720", "frames": 10, "within": 20}   reply (with "stats") once
                            that many video frames of that size were decoded from now on
    {"cmd": "still", "seconds": 1, "within": 10}   reply (with "stats") once no video frame was
                            decoded for that long
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
from collections.abc import Iterator
from typing import Any

import numpy as np
from livekit import rtc

SAMPLE_RATE = 48000
FRAME_SAMPLES = 480  # 10 ms
AMPLITUDE = 0.3 * 32767
FREEZE = 0.5  # s between two decoded video frames that counts as a freeze
FINE = 16  # luma of the "smooth" pattern's every other column (see smooth_frames)


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Peer:
    def __init__(
        self,
        width: int,
        height: int,
        fps: int,
        *,
        simulcast: bool = False,
        publish: str = "all",
        pattern: str = "stripes",
    ) -> None:
        self.room = rtc.Room()  # on the running loop: the SDK delivers its events there
        self.width, self.height, self.fps = width, height, fps
        self.simulcast = simulcast
        self.publishes = publish  # "all", "audio" or "none"
        self.pattern = pattern
        self.started = 0.0
        self.frames: dict[str, int] = {"audio": 0, "audible": 0, "video": 0}
        self.marked_frames: dict[str, int] = dict(self.frames)
        self.marked_at = 0.0
        self.first_frame: dict[str, float] = {}
        self.last_video = 0.0
        self.worst_video_gap = 0.0
        self.video_size = (0, 0)
        self.video_sizes: dict[str, int] = {}  # "WxH" → frames decoded at it since the mark
        self.all_sizes: dict[str, int] = {}  # the same, since the start
        self.video_gaps: list[float] = []  # gaps over FREEZE between video frames since it
        self.tasks: list[asyncio.Task[None]] = []
        self.progress = asyncio.Event()  # set on every decoded frame

    # -- publishing --------------------------------------------------------------------------
    async def publish(self) -> None:
        if self.publishes == "none":
            return
        audio_source = rtc.AudioSource(SAMPLE_RATE, 1)
        local = self.room.local_participant
        await local.publish_track(
            rtc.LocalAudioTrack.create_audio_track("sine", audio_source),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )
        self.tasks.append(asyncio.create_task(self.feed_audio(audio_source)))
        if self.publishes == "audio":
            return
        video_source = rtc.VideoSource(self.width, self.height)
        await local.publish_track(
            rtc.LocalVideoTrack.create_video_track("gradient", video_source),
            rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA, simulcast=self.simulcast),
        )
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
        """Frames at `fps`, on a schedule (a late frame does not delay the next ones)."""
        width, height = self.width, self.height
        frames = self.smooth_frames() if self.pattern == "smooth" else self.stripe_frames()
        period = 1 / self.fps
        due = time.monotonic()
        for buffer_type, data in frames:
            source.capture_frame(rtc.VideoFrame(width, height, buffer_type, data))
            due += period
            delay = due - time.monotonic()
            if delay < -period:
                due = time.monotonic()  # more than a frame behind: drop the backlog
            await asyncio.sleep(max(0.0, delay))

    def stripe_frames(self) -> Iterator[tuple[int, bytes]]:
        """Stripes that keep moving (RGBA): every layer encodes at its ceiling."""
        width, height = self.width, self.height
        frame = np.zeros((height, width, 4), dtype=np.uint8)
        frame[..., 3] = 255
        step = 0
        while True:
            frame[..., 0] = (np.arange(width) + step) % 256
            frame[..., 1] = (np.arange(height)[:, None] + 2 * step) % 256
            yield rtc.VideoBufferType.RGBA, frame.tobytes()
            step += 4

    def smooth_frames(self) -> Iterator[tuple[int, bytes]]:
        """A soft ramp whose top eighth slides by a pixel a frame, in I420 (no conversion):
        cheap to make and to encode, each simulcast layer well below its ceiling. Every other
        column is a little brighter: a detail that flips with each frame's shift at full size
        and averages out when scaled down, so the top layer costs far more than the others
        (here, at 1280x720 and 20 fps: q ≈ 45, h ≈ 180, f ≈ 940 kbit/s)."""
        width, height = self.width, self.height
        ramp = (np.abs((np.arange(2 * width) % 512) - 256) // 8 + 64).astype(np.uint8)
        ramp[1::2] += FINE  # every other column: detail only the full size keeps
        luma = np.empty((height, width), dtype=np.uint8)
        luma[:] = ramp[:width]
        chroma = bytes([96]) * ((width // 2) * (height // 2))
        top = height // 8
        step = 0
        while True:
            luma[:top] = ramp[step % width : step % width + width]
            yield rtc.VideoBufferType.I420, luma.tobytes() + chroma + chroma
            step += 1

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
                gap = now - self.last_video
                self.worst_video_gap = max(self.worst_video_gap, gap)
                if gap > FREEZE:
                    self.video_gaps.append(round(gap, 3))
            self.last_video = now
            self.frames["video"] += 1
            self.video_size = (event.frame.width, event.frame.height)
            size = f"{event.frame.width}x{event.frame.height}"
            self.video_sizes[size] = self.video_sizes.get(size, 0) + 1
            self.all_sizes[size] = self.all_sizes.get(size, 0) + 1
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
        paths: dict[str, Any] = {}
        inbound: dict[str, Any] = {}
        outbound: dict[str, Any] = {}
        if self.room.isconnected():
            stats = await self.room.get_rtc_stats()
            paths = {
                "publisher": selected_pair(stats.publisher_stats),
                "subscriber": selected_pair(stats.subscriber_stats),
            }
            inbound = inbound_video(stats.subscriber_stats)
            outbound = outbound_video(stats.publisher_stats)
        since_mark = {k: self.frames[k] - self.marked_frames[k] for k in self.frames}
        return {
            "frames": dict(self.frames),
            "since_mark": since_mark,
            "seconds_since_mark": time.monotonic() - self.marked_at,
            "worst_video_gap": self.worst_video_gap,
            # how long the picture has stood still now (a freeze not over yet is no gap yet)
            "video_stalled": time.monotonic() - self.last_video if self.last_video else None,
            "video_size": list(self.video_size),
            "video_sizes": dict(self.video_sizes),
            "video_gaps": list(self.video_gaps),
            "paths": paths,
            "inbound_video": inbound,
            "outbound_video": outbound,
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

    async def await_size(self, size: str, frames: int, timeout: float) -> None:
        start = self.all_sizes.get(size, 0)

        async def reached() -> None:
            while self.all_sizes.get(size, 0) - start < frames:
                self.progress.clear()
                await self.progress.wait()

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.all_sizes} frames by size after {timeout} s") from None

    async def await_still(self, seconds: float, timeout: float) -> None:
        """Until no video frame was decoded for `seconds`."""

        async def still() -> None:
            while True:
                quiet = time.monotonic() - self.last_video if self.last_video else seconds
                if quiet >= seconds:
                    return
                self.progress.clear()
                try:  # woken by a frame, or when the quiet time would be reached
                    await asyncio.wait_for(self.progress.wait(), seconds - quiet)
                except TimeoutError:
                    pass

        try:
            await asyncio.wait_for(still(), timeout)
        except TimeoutError:
            raise TimeoutError(f"video still decoding after {timeout} s") from None

    def mark(self) -> None:
        self.marked_at = time.monotonic()
        self.marked_frames = dict(self.frames)
        self.worst_video_gap = 0.0
        self.video_sizes = {}
        self.video_gaps = []
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
                elif name == "size":
                    frames = int(command.get("frames", 10))
                    await self.await_size(command["size"], frames, float(command["within"]))
                    emit("reply", id=ident, **await self.stats())
                elif name == "still":
                    await self.await_still(float(command["seconds"]), float(command["within"]))
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

    async def run(self, url: str, token: str, options: rtc.RoomOptions) -> None:
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
        room.on(
            "connection_quality_changed",
            lambda p, quality: emit("quality", identity=p.identity, quality=int(quality)),
        )
        self.started = time.monotonic()
        try:
            await room.connect(url, token, options)
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


def inbound_video(stats: list[Any]) -> dict[str, int]:
    """The subscriber PeerConnection's video receive counters, summed over its streams."""
    out = {"packets_received": 0, "packets_lost": 0, "frames_decoded": 0, "nacks": 0}
    for stat in stats:
        if stat.WhichOneof("stats") != "inbound_rtp":
            continue
        item = stat.inbound_rtp
        if item.stream.kind != "video":
            continue
        out["packets_received"] += item.received.packets_received
        out["packets_lost"] += item.received.packets_lost
        out["frames_decoded"] += item.inbound.frames_decoded
        out["nacks"] += item.inbound.nack_count
    return out


def outbound_video(stats: list[Any]) -> dict[str, dict[str, Any]]:
    """What the publisher PeerConnection sends per simulcast layer (rid, or "single")."""
    out: dict[str, dict[str, Any]] = {}
    for stat in stats:
        if stat.WhichOneof("stats") != "outbound_rtp":
            continue
        item = stat.outbound_rtp
        if item.stream.kind != "video":
            continue
        outbound = item.outbound
        out[outbound.rid or "single"] = {
            "active": outbound.active,
            "bytes_sent": item.sent.bytes_sent,
            "frames_sent": outbound.frames_sent,
            "size": f"{outbound.frame_width}x{outbound.frame_height}",
            "target_bitrate": outbound.target_bitrate,
            "limited_by": int(outbound.quality_limitation_reason),
        }
    return out


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
    parser.add_argument("--simulcast", action="store_true")
    parser.add_argument("--publish", choices=("all", "audio", "none"), default="all")
    parser.add_argument("--pattern", choices=("stripes", "smooth"), default="stripes")
    # "v0": forced onto /rtc (RoomOptions.single_peer_connection False); "v1": the default.
    parser.add_argument("--signalling", choices=["v0", "v1"], default="v1")
    args = parser.parse_args()
    options = rtc.RoomOptions(single_peer_connection=False if args.signalling == "v0" else None)
    width, height = (int(v) for v in args.size.split("x"))

    async def run() -> None:
        peer = Peer(
            width,
            height,
            args.fps,
            simulcast=args.simulcast,
            publish=args.publish,
            pattern=args.pattern,
        )
        await peer.run(args.url, args.token, options)

    asyncio.run(run())


if __name__ == "__main__":
    main()
