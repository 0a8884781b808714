"""Shared fixtures: a real Roomcast server on a free loopback port, and token helpers."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings
from livekit import api

from roomcast.auth import VideoGrant, create_token
from roomcast.config import Overrides, load_config
from roomcast.media.native_plane import ENV_VARIABLE as ENV_PLANE
from roomcast.server import Server
from tests import signalling as signalling_path

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


_handed_out: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A free port, never the same number twice in one test run: a port picked for one role
    (a node's HTTP port) is not bound until its server starts, and the kernel would hand it out
    again for another (that node's ICE-TCP port), which the server refuses."""
    while True:
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


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

# Both forwarding planes (media/native_plane.py) run the tests marked `both_planes`; the
# native one only where it was built (else those cases are skipped, saying why).
PLANES = ("python", "native")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("both_planes") is not None:
        metafunc.parametrize("forwarding_plane", PLANES, indirect=True)


@pytest.fixture(autouse=True)
def _servers_of_this_test() -> None:
    """Autouse, so set up before every other fixture: the servers started in this test, in
    tests/signalling.py, start empty."""
    signalling_path.servers.clear()


@pytest.fixture
def forwarding_plane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The plane the servers of this test run (ROOMCAST_FORWARDING_PLANE); unparametrized
    tests get the configured default (auto: native where built)."""
    plane = getattr(request, "param", None)
    if plane is None:
        return "auto"
    if plane == "native":
        from roomcast.media.native_plane import native_module

        module, reason = native_module()
        if module is None:
            pytest.skip(f"the native forwarding plane is not built: {reason}")
    monkeypatch.setenv(ENV_PLANE, plane)
    return str(plane)


@pytest.fixture
async def start_server(forwarding_plane: str) -> AsyncIterator[ServerFactory]:
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
        signalling_path.servers.append(server)
        return server

    yield start
    for server in reversed(started):
        await server.stop()


@pytest.fixture(params=["v1", "v0"])
def signalling(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test with the official SDKs on both signalling paths (tests/signalling.py):
    "v1" as they join by default, "v0" forced. Afterwards every server the test started must
    have seen only that path: the SDKs did not fall back. (Tests on `roomcast serve`
    processes check those themselves: tests/integration/cluster.py.)"""
    path: str = request.param
    signalling_path.current = path
    try:
        yield path
    finally:
        signalling_path.current = "v1"
    servers = list(signalling_path.servers)
    seen = [dict(server.rtc.requests_by_path) for server in servers]
    expected = signalling_path.PATHS[path]
    assert all(set(paths) <= {expected} for paths in seen), f"on {path} the servers saw {seen}"
    assert any(seen) or not servers, f"no server saw {expected}"


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
