"""A real HTTP endpoint that records webhooks and verifies them with the official receiver."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web
from livekit import api
from livekit.protocol import webhook

from tests.conftest import API_KEY, API_SECRET, free_port


@dataclass
class WebhookSink:
    fail_next: int = 0  # answer this many requests with HTTP 503 first
    events: list[webhook.WebhookEvent] = field(default_factory=list)
    attempts: int = 0
    content_types: list[str] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503, text="try later")
        body = await request.text()
        receiver = api.WebhookReceiver(api.TokenVerifier(API_KEY, API_SECRET))
        # The raw Authorization value: a "Bearer " prefix would fail verification here.
        event = receiver.receive(body, request.headers["Authorization"])
        self.content_types.append(request.headers["Content-Type"])
        async with self._arrived:
            self.events.append(event)
            self._arrived.notify_all()
        return web.Response(text="ok")

    async def wait_for(self, count: int, timeout: float = 20) -> list[webhook.WebhookEvent]:
        async def enough() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.events) >= count)

        await asyncio.wait_for(enough(), timeout)
        return self.events[:count]

    def names(self) -> list[str]:
        return [e.event for e in self.events]
