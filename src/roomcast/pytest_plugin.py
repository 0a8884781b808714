"""The pytest plugin `pip install roomcast` registers (entry point ``pytest11``: ``roomcast``).

Fixtures (opt-in: nothing starts unless a test asks for one by name):

    roomcast_server   a real Roomcast server on free loopback ports, one per test session
                      (ini option ``roomcast_scope`` = session | package | module | class |
                      function), a `roomcast.testing.RoomcastServer`
    roomcast_room     a fresh room name for the test, deleted (participants disconnected)
                      after it
    roomcast_config   the server's YAML config, from the ini option ``roomcast_config``; a
                      project may override the fixture instead (with the same scope)

The server runs in a thread of its own with its own event loop, so the fixture is the same for
sync tests and async tests on any pytest-asyncio loop scope. Disable with ``-p no:roomcast``.
This module imports nothing of Roomcast until a fixture is used, so loading it costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from roomcast.testing import RoomcastServer

SCOPES = ("session", "package", "module", "class", "function")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "roomcast_config",
        "YAML config (livekit-server format) for the roomcast_server fixture",
        default="",
    )
    parser.addini(
        "roomcast_scope",
        "how long one roomcast_server lives: session (default), package, module, class, function",
        default="session",
    )


def _server_scope(fixture_name: str, config: pytest.Config) -> str:
    scope = str(config.getini("roomcast_scope") or "session")
    if scope not in SCOPES:
        raise pytest.UsageError(f"roomcast_scope = {scope!r}: expected one of {', '.join(SCOPES)}")
    return scope


@pytest.fixture(scope=_server_scope)  # type: ignore[arg-type]
def roomcast_config(pytestconfig: pytest.Config) -> str:
    """YAML merged over the test server's defaults (``port: 0``, random keys, loopback)."""
    return str(pytestconfig.getini("roomcast_config") or "")


@pytest.fixture(scope=_server_scope)  # type: ignore[arg-type]
def roomcast_server(roomcast_config: str) -> Iterator[RoomcastServer]:
    """A running Roomcast server: ``.url``, ``.http_url``, ``.api_key``, ``.api_secret``,
    ``.token(identity, room, **grants)``, ``.connect(identity, room)``, ``.api()``."""
    from roomcast.testing import RoomcastServer

    with RoomcastServer(roomcast_config) as server:
        yield server


@pytest.fixture
def roomcast_room(roomcast_server: RoomcastServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A room name only this test uses; the room is deleted after the test if it exists."""
    name = roomcast_server.new_room(_room_prefix(request.node.name))
    yield name
    roomcast_server.delete_room(name)


def _room_prefix(test_name: str) -> str:
    """The test's name, shortened to what reads well in a room name and the server log."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in test_name)
    return cleaned.strip("-")[:40] or "room"
