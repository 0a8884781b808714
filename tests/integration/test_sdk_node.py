"""Node `@livekit/rtc-node` (npm, unmodified) and the Python SDK in one room, exchanging data
and audio both ways, on both signalling paths (`/rtc/v1` as the SDKs join, `/rtc` forced)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from livekit import rtc

from roomcast.server import Server
from tests.conftest import url_of
from tests.integration.sdk import join_token, joined
from tests.integration.test_media_python import publishing, sine_energy, subscribed_track

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir(),
    reason="Node SDKs not installed: run `make test` (scripts/install-test-deps.sh)",
)


class NodePeer:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    async def next(self, event: str, timeout: float = 30) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            assert self.proc.stdout is not None
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"node peer exited while waiting for {event}")
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the SDK's own log lines
                self.events.append(item)
                if item.get("event") == event:
                    return item

        return await asyncio.wait_for(read(), timeout)


async def test_node_and_python_participants_exchange_data_and_audio(
    server: Server, signalling: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "data_peer.mjs"),
        url_of(server, "ws"),
        join_token("mixed", "node-user"),
        "py-user",
        signalling,
        cwd=NODE_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    node = NodePeer(proc)
    try:
        connected = await node.next("connected")
        assert connected["sid"].startswith("PA_")
        async with joined(server, "mixed", "py-user") as (py, py_events):
            await node.next("participant_connected")
            (packet,) = await py_events.wait(
                "data_received", lambda p: p.data == b"hello from node"
            )
            assert packet.participant.identity == "node-user" and packet.topic == "node"
            await py.local_participant.publish_data(b"hello from python", topic="py")
            received = await node.next("data")
            assert received == {
                "event": "data",
                "from": "py-user",
                "topic": "py",
                "text": "hello from python",
            }
            # Node's sine reaches Python, and Python's reaches Node.
            track = await subscribed_track(py_events, rtc.TrackKind.KIND_AUDIO, "node-user")
            assert await asyncio.wait_for(sine_energy(track, frames=5), 30) > 0
            async with publishing(py):
                heard = await node.next("audio_heard")
                assert heard["from"] == "py-user"
        assert proc.stdin is not None
        proc.stdin.write(b"quit\n")
        await proc.stdin.drain()
        await node.next("closed")
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
