"""Shared fixtures: a real Roomcast server on a free loopback port, and token helpers."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import settings
from livekit import api

from roomcast.auth import VideoGrant, create_token
from roomcast.config import Overrides, load_config
from roomcast.server import Server

# Property tests check behaviour, never speed: Hypothesis's per-example deadline is a timing
# assertion that a busy machine fails.
settings.register_profile("roomcast", deadline=None)
settings.load_profile("roomcast")

API_KEY = "devkey"
API_SECRET = "secret"


def pytest_configure(config: pytest.Config) -> None:
    """Roomcast's own pytest plugin (roomcast.pytest_plugin), also where the installed
    `roomcast` predates its pytest11 entry point; `-p no:roomcast` still turns it off."""
    manager = config.pluginmanager
    if not manager.has_plugin("roomcast") and not manager.is_blocked("roomcast"):
        import roomcast.pytest_plugin

        manager.register(roomcast.pytest_plugin, "roomcast")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_and_tcp_port() -> int:
    """A port number free for UDP and TCP (TURN serves both on turn.udp_port)."""
    while True:
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def free_tcp_ports(count: int) -> int:
    """The first of `count` consecutive free TCP ports (`roomcast serve --workers N` gives
    worker i the ICE-TCP port rtc.tcp_port + i)."""
    while True:
        first = free_port()
        try:
            for offset in range(1, count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", first + offset))
        except OSError:
            continue
        return first


ServerFactory = Callable[..., Any]


@pytest.fixture
async def start_server() -> AsyncIterator[ServerFactory]:
    """Start servers with a YAML config body; all are stopped at the end of the test."""
    started: list[Server] = []

    async def start(config_body: str = "", **overrides: Any) -> Server:
        body = f"port: 0\nkeys:\n  {API_KEY}: {API_SECRET}\nbind_addresses: [127.0.0.1]\n"
        body += f"rtc:\n  udp_port: {free_port(socket.SOCK_DGRAM)}\n  tcp_port: {free_port()}\n"
        body += config_body
        config = load_config(Overrides(config_body=body, **overrides), environ={})
        server = Server(config)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        await server.stop()


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    return await start_server()  # type: ignore[no-any-return]


def url_of(server: Server, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.port}"


@pytest.fixture
async def lkapi(server: Server) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(url_of(server), API_KEY, API_SECRET)
    yield client
    await client.aclose()


def token(video: VideoGrant | None = None, **kwargs: Any) -> str:
    return create_token(API_KEY, API_SECRET, video=video, **kwargs)
