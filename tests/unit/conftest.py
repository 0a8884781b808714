"""Fixtures shared by the unit tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from roomcast.media.native_plane import native_module


@pytest.fixture(params=[1, 2], ids=["1-sender", "2-senders"])
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[object, socket.socket]]:
    """A running native engine on a loopback socket, with the receive thread sending (1) and
    with two sender threads (the modules using it skip where the engine is not built)."""
    native, why = native_module()
    if native is None:
        pytest.skip(f"native plane not built: {why}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    eng = native.Engine(sock.fileno(), request.param)
    eng.start()
    yield eng, sock
    eng.stop()
    sock.close()
