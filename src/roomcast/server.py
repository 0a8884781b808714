"""Wires the layers together: config → rooms → edge, and runs them until stopped."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from roomcast.auth import TokenVerifier
from roomcast.config import Config
from roomcast.edge.api import TwirpEndpoint
from roomcast.edge.http import create_app
from roomcast.rooms.admin import RoomAdmin
from roomcast.rooms.manager import RoomManager
from roomcast.rooms.room import RoomEvent
from roomcast.webhooks import WebhookNotifier

log = logging.getLogger(__name__)


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.verifier = TokenVerifier(config.keys)
        webhook_key = config.webhook.api_key
        self.webhooks = WebhookNotifier(
            config.webhook.urls, webhook_key, config.keys.get(webhook_key, "")
        )
        self.rooms = RoomManager(config.room, config.limit, self._on_room_event)
        self.admin = RoomAdmin(config, self.rooms)
        self.app = create_app(config.limit.max_api_request_body_size)
        TwirpEndpoint(self.verifier, self.admin).add_routes(self.app)
        self._runner: web.AppRunner | None = None
        self.ports: list[int] = []

    def _on_room_event(self, event: RoomEvent) -> None:
        self.webhooks.notify(event)

    @property
    def bind_addresses(self) -> list[str]:
        return self.config.bind_addresses or ["0.0.0.0"]

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        for address in self.bind_addresses:
            site = web.TCPSite(self._runner, address, self.config.port, reuse_address=True)
            await site.start()
        self.ports = [address[1] for address in self._runner.addresses]
        self.rooms.start()
        log.info(
            "roomcast started on %s port %d",
            ", ".join(self.bind_addresses),
            self.port,
        )

    @property
    def port(self) -> int:
        """The bound HTTP port (useful when configured as 0)."""
        return self.ports[0] if self.ports else self.config.port

    async def stop(self) -> None:
        """Close rooms (participants get SERVER_SHUTDOWN), flush webhooks, stop HTTP."""
        await self.rooms.stop()
        await self.webhooks.close(self.config.shutdown_flush_timeout)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("roomcast stopped")

    async def run_until(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
