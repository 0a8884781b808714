"""The load test: joins simulated participants at a bounded rate, drives their media from one
scheduler, reports progress, and collects the figures of the final table."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from roomcast.auth import VideoGrant, create_token
from roomcast.client.media import RESOLUTIONS

from .participant import PROTOCOLS, LoadParticipant, Role

TICK = 0.01  # s: scheduler period (audio needs 20 ms, video 33 ms; jitter stays below a tick)
LAYOUTS = ("speaker", "3x3", "4x4", "5x5")
__all__ = ["LAYOUTS", "PROTOCOLS", "LoadTest", "LoadTestConfig"]
TOKEN_TTL = 24 * 3600


@dataclass(slots=True)
class LoadTestConfig:
    url: str
    api_key: str
    api_secret: str
    room: str = ""
    rooms: int = 1
    video_publishers: int = 0
    audio_publishers: int = 0
    subscribers: int = 0
    duration: float = 0.0  # seconds; 0 runs until stopped
    resolution: str = "high"
    simulcast: bool = True
    num_per_second: float = 5.0
    layout: str | None = None
    simulate_speakers: bool = False
    subscribers_first: bool = False  # join order; lk joins publishers first
    protocol: str = "v1"  # signalling: "v1" (/rtc/v1, one PeerConnection) or "v0" (/rtc, two)
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))

    def room_names(self) -> list[str]:
        if self.rooms <= 1:
            return [self.room or "load-test"]
        return [f"{self.room or 'room'}-{i}" for i in range(self.rooms)]

    def roles(self) -> list[Role]:
        """Publishers first (unless `subscribers_first`), then subscribers, spread round-robin
        over the rooms. As in lk, a publisher index below both counts publishes audio and
        video."""
        names = self.room_names()
        layers = RESOLUTIONS[self.resolution]
        roles = []
        for i in range(max(self.video_publishers, self.audio_publishers)):
            roles.append(
                Role(
                    identity=f"pub-{self.run_id}-{i}",
                    room=names[i % len(names)],
                    video=i < self.video_publishers,
                    audio=i < self.audio_publishers,
                    layers=layers,
                    simulcast=self.simulcast,
                    simulate_speaker=self.simulate_speakers,
                )
            )
        subscribers = [
            Role(
                identity=f"sub-{self.run_id}-{i}",
                room=names[i % len(names)],
                subscribe=True,
                layout=self.layout,
            )
            for i in range(self.subscribers)
        ]
        return subscribers + roles if self.subscribers_first else roles + subscribers


class LoadTest:
    def __init__(self, config: LoadTestConfig) -> None:
        self.config = config
        self.participants: list[LoadParticipant] = []
        self.started = 0.0
        self.ended = 0.0
        self._joins: list[asyncio.Task[None]] = []

    @property
    def joined(self) -> int:
        return sum(1 for p in self.participants if p.joined_at is not None and p.error is None)

    @property
    def failed(self) -> list[LoadParticipant]:
        return [p for p in self.participants if p.error is not None]

    async def run(
        self,
        *,
        progress: Callable[[LoadTest], None] | None = None,
        stop: asyncio.Event | None = None,
        progress_interval: float = 1.0,
    ) -> None:
        """Join everyone, run for the duration (or until `stop`), then leave."""
        config = self.config
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            self.started = time.monotonic()
            scheduler = loop.create_task(self._schedule())
            joiner = loop.create_task(self._join_all(session))
            deadline = loop.time() + config.duration if config.duration > 0 else None
            try:
                while not stop.is_set():
                    timeout = progress_interval
                    if deadline is not None:
                        timeout = min(timeout, deadline - loop.time())
                        if timeout <= 0:
                            break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout)
                    if progress is not None:
                        progress(self)
            finally:
                self.ended = time.monotonic()
                joiner.cancel()
                for task in self._joins:
                    task.cancel()
                await asyncio.gather(joiner, *self._joins, return_exceptions=True)
                scheduler.cancel()
                await asyncio.gather(scheduler, return_exceptions=True)
                await asyncio.gather(
                    *(p.leave() for p in self.participants), return_exceptions=True
                )

    async def _join_all(self, session: aiohttp.ClientSession) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        interval = 1 / config.num_per_second
        next_join = loop.time()
        for role in config.roles():
            delay = next_join - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            next_join += interval
            started_at = time.monotonic()
            token = create_token(
                config.api_key,
                config.api_secret,
                identity=role.identity,
                name=role.identity,
                video=VideoGrant(room_join=True, room=role.room),
                ttl_seconds=TOKEN_TTL,
            )
            participant = LoadParticipant(role, config.url, token, session, config.protocol)
            self.participants.append(participant)
            self._joins.append(loop.create_task(participant.join(started_at)))

    async def _schedule(self) -> None:
        """One wake-up per tick for every sender and receiver of the process."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for participant in self.participants:
                if participant.error is None:
                    participant.tick(now)
            await asyncio.sleep(TICK)
