"""What the receive side knows of one scalable stream (VP9 SVC, or AV1 with Dependency
Descriptors): each packet's layers, which spatial layers keep arriving, and the frame rate of
each temporal layer. `UpTrack` owns one per SVC track; the subscribers' `SvcDownTrack`s ask it
which layers to aim for."""

from __future__ import annotations

import math

from .av1 import DdReader
from .codecs import VP9
from .rtp import find_extension
from .track_sender import PacketInfo

LAYER_TIMEOUT = 1.0  # s without a spatial layer's packets before it counts as stopped
MAX_LAYERS = 8  # spatial and temporal ids are 3 bits
ALL_TEMPORAL = MAX_LAYERS - 1
FPS_WINDOW = 1.0  # s over which temporal layer frame rates are measured
FPS_TOLERANCE = 0.9  # a layer with 90 % of the asked frame rate will do (livekit-server's)


class SvcLayers:
    __slots__ = (
        "codec",
        "dd_ext",
        "dd_reader",
        "fps",
        "frames",
        "spatial_seen",
        "started",
        "window_start",
    )

    def __init__(self, codec: int, dd_ext: int) -> None:
        self.codec = codec  # VP9 or AV1
        self.dd_ext = dd_ext  # AV1: the publisher's Dependency Descriptor extension id
        self.dd_reader = DdReader()
        self.spatial_seen = [-math.inf] * MAX_LAYERS  # when each spatial layer last arrived
        self.frames = [0] * MAX_LAYERS  # frames of each temporal layer in the current window
        self.fps: list[float] = []  # per temporal layer: frames/s of it and the ones below
        self.window_start: float | None = None
        self.started: float | None = None  # the first packet's arrival

    def parse(self, info: PacketInfo, packet: bytes, now: float) -> bool:
        """Read the packet's layers into `info` (vp9 / dd); whether it starts a keyframe."""
        header = info.header
        if self.codec == VP9:
            vp9 = info.vp9
            if not vp9.parse(packet, header.payload_offset, header.payload_end):
                return False
            spatial, temporal, starts = vp9.spatial_id, vp9.temporal_id, vp9.begin
            keyframe = vp9.keyframe
        else:
            dd = info.dd
            found = find_extension(packet, header, self.dd_ext)
            if found is None or not self.dd_reader.read(
                bytes(packet[found[0] : found[0] + found[1]]), dd
            ):
                dd.valid = False
                return False
            descriptor = dd.descriptor
            assert descriptor is not None
            spatial, temporal = descriptor.spatial_id, descriptor.temporal_id
            starts = descriptor.start_of_frame
            keyframe = descriptor.structure is not None and starts
        if self.started is None:
            self.started = now
        self.spatial_seen[spatial] = now
        if starts and spatial == 0:
            self.frames[temporal] += 1
        return keyframe

    def tick(self, now: float) -> None:
        """Close the frame rate window once it is FPS_WINDOW long."""
        if self.window_start is None:
            self.window_start = now
            return
        elapsed = now - self.window_start
        if elapsed < FPS_WINDOW:
            return
        total, fps = 0, []
        for count in self.frames:
            total += count
            fps.append(total / elapsed)
        self.fps = fps if total else []
        self.frames = [0] * MAX_LAYERS
        self.window_start = now

    def best_spatial(self, wanted: int, now: float) -> int:
        """The highest spatial layer ≤ wanted seen lately, else the lowest above it, else
        wanted. In the stream's first LAYER_TIMEOUT a layer not seen yet counts as coming (a
        keyframe brings its layers one after the other)."""
        starting = self.started is None or now - self.started < LAYER_TIMEOUT
        live = [
            now - seen < LAYER_TIMEOUT or (starting and seen == -math.inf)
            for seen in self.spatial_seen
        ]
        for index in range(min(wanted, MAX_LAYERS - 1), -1, -1):
            if live[index]:
                return index
        for index in range(wanted + 1, MAX_LAYERS):
            if live[index]:
                return index
        return wanted

    def temporal_for_fps(self, fps: float) -> int:
        """The lowest temporal layer whose frame rate (with the layers below) is about `fps`;
        every layer when no rate is asked for or none is known yet."""
        if fps <= 0 or not self.fps:
            return ALL_TEMPORAL
        for temporal, rate in enumerate(self.fps):
            if fps * FPS_TOLERANCE <= rate:
                return temporal
        return ALL_TEMPORAL
