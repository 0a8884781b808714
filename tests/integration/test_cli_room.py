"""`roomcast room …` (lk-style room commands) as processes against a running `roomcast serve
--dev` process, with participants of the official Python SDK on the other side."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest
import pytest_asyncio
from livekit import api, rtc

from roomcast.testing import wait_for_data, wait_for_event, wait_for_participant, wait_for_track
from tests.integration.test_cli import start_dev_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLI_TIMEOUT = 60.0


@dataclass
class Dev:
    url: str
    env: dict[str, str]  # LIVEKIT_URL set; the dev key and secret are the CLI's defaults

    def token(self, identity: str, room: str) -> str:
        grants = api.VideoGrants(room_join=True, room=room)
        access = api.AccessToken("devkey", "secret").with_identity(identity)
        return access.with_grants(grants).to_jwt()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def dev() -> AsyncIterator[Dev]:
    proc, port = await start_dev_server()
    url = f"ws://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    try:
        yield Dev(url, {**env, "LIVEKIT_URL": url})
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


async def room_cli(dev: Dev, *args: str, env: dict[str, str] | None = None) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomcast", "room", *args,
        env=env or dev.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def connect(dev: Dev, identity: str, room: str, **options: bool) -> rtc.Room:
    client = rtc.Room()
    await client.connect(dev.url, dev.token(identity, room), rtc.RoomOptions(**options))
    return client


async def test_rooms_create_list_update_delete(dev: Dev) -> None:
    created = await room_cli(
        dev, "create", "cli-rooms", "--empty-timeout", "60", "--departure-timeout", "5",
        "--max-participants", "3", "--metadata", "first",
    )  # fmt: skip
    assert created.code == 0, created.err
    assert created.out.startswith("Created room cli-rooms (RM_")
    assert "empty timeout 60 s, departure timeout 5 s, max participants 3" in created.out

    listed = await room_cli(dev, "list")
    header, *rows = listed.out.splitlines()
    assert header.split() == ["ROOM", "ID", "NAME", "PARTICIPANTS", "PUBLISHERS", "CREATED"]
    assert any(row.split()[1:4] == ["cli-rooms", "0", "0"] for row in rows), listed.out
    as_json = await room_cli(dev, "list", "cli-rooms", "--json")
    (room,) = as_json.json()["rooms"]  # type: ignore[index]
    assert (room["name"], room["max_participants"], room["metadata"]) == ("cli-rooms", 3, "first")
    assert (await room_cli(dev, "list", "no-such-room")).out == "No matching rooms.\n"

    updated = await room_cli(dev, "update", "cli-rooms", "--metadata", "second")
    assert updated.out == "Updated the metadata of room cli-rooms: 'second'\n"
    alias = await room_cli(dev, "update-metadata", "cli-rooms", "--metadata", "third", "-j")
    assert alias.json()["metadata"] == "third"  # type: ignore[index]

    deleted = await room_cli(dev, "delete", "cli-rooms")
    assert (deleted.code, deleted.out) == (0, "Deleted room cli-rooms\n")
    gone = await room_cli(dev, "list", "cli-rooms", "--json")
    assert gone.json() == {"rooms": []}


async def test_agents_file_dispatches_with_the_room(dev: Dev, tmp_path: object) -> None:
    from pathlib import Path

    agents = Path(str(tmp_path)) / "agents.json"
    agents.write_text(json.dumps({"dispatches": [{"agent_name": "helper", "metadata": "m"}]}))
    created = await room_cli(dev, "create", "cli-agents", "--agents-file", str(agents), "--json")
    assert created.code == 0, created.err
    assert created.json()["name"] == "cli-agents"  # type: ignore[index]
    bad = await room_cli(dev, "create", "cli-agents-2", "--agents-file", "/nonexistent.json")
    assert bad.code == 2 and "--agents-file /nonexistent.json" in bad.err
    await room_cli(dev, "delete", "cli-agents")


async def test_participant_commands_act_on_sdk_participants(dev: Dev) -> None:
    room = "cli-people"
    alice = await connect(dev, "alice", room)
    bob = await connect(dev, "bob", room, auto_subscribe=False)
    try:
        source = rtc.AudioSource(48000, 1)
        mic = rtc.LocalAudioTrack.create_audio_track("mic", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        publication = await alice.local_participant.publish_track(mic, options)
        await wait_for_track(bob, "alice", kind="audio", subscribed=False)

        listed = await room_cli(dev, "participants", "list", room)
        header, *rows = listed.out.splitlines()
        assert header.split() == ["IDENTITY", "NAME", "SID", "STATE", "KIND", "TRACKS", "JOINED"]
        by_identity = {row.split()[0]: row.split() for row in rows}
        assert by_identity["alice"][3:6] == ["active", "standard", "audio"], listed.out
        people = await room_cli(dev, "participants", "list", room, "--json")
        assert sorted(p["identity"] for p in people.json()["participants"]) == ["alice", "bob"]  # type: ignore[index]

        got = await room_cli(dev, "participants", "get", "--room", room, "alice")
        assert "identity     alice" in got.out and publication.sid in got.out
        assert "permissions  publish, subscribe, publish data" in got.out
        got_json = await room_cli(dev, "participants", "get", "-r", room, "alice", "-j")
        assert got_json.json()["tracks"][0]["sid"] == publication.sid  # type: ignore[index]

        # Metadata and permissions (only the fields given change, as lk's --permissions).
        changed = wait_for_event(alice, "participant_permissions_changed")
        updated = await room_cli(
            dev, "participants", "update", "-r", room, "alice", "--metadata", "vip",
            "--attribute", "team=blue", "--permissions", '{"can_publish_data": false}',
        )  # fmt: skip
        assert (updated.code, updated.out) == (0, f"Updated alice in room {room}\n"), updated.err
        await changed
        assert alice.local_participant.metadata == "vip"
        assert alice.local_participant.attributes == {"team": "blue"}
        assert not alice.local_participant.permissions.can_publish_data
        assert alice.local_participant.permissions.can_publish

        muted = wait_for_event(bob, "track_muted")
        mute = await room_cli(dev, "mute-track", "-r", room, "-i", "alice", publication.sid)
        assert mute.out == f"Muted audio track {publication.sid} of alice in room {room}\n"
        await muted

        subscribed = wait_for_track(bob, "alice", kind="audio")
        sub = await room_cli(
            dev, "update-subscriptions", "--room", room, "--identity", "bob", publication.sid
        )
        assert sub.out == f"Subscribed bob to {publication.sid}\n", sub.err
        await subscribed

        message = wait_for_data(bob, topic="ops", identity="")
        sent = await room_cli(dev, "send-data", "--room", room, "--topic", "ops", "-i", "bob", "hi")
        assert sent.out == f"Sent 2 bytes to bob in room {room} on topic 'ops'\n"
        assert (await message).data == b"hi"

        removed = wait_for_event(alice, "disconnected")
        out = await room_cli(dev, "participants", "remove", "--room", room, "alice")
        assert out.out == f"Removed alice from room {room}\n"
        assert await removed == (rtc.DisconnectReason.PARTICIPANT_REMOVED,)
    finally:
        for client in (alice, bob):
            await client.disconnect()


async def test_errors_say_what_went_wrong(dev: Dev) -> None:
    nobody = await room_cli(dev, "list", "--url", "ws://127.0.0.1:1")
    assert nobody.code == 1 and nobody.out == ""
    assert "cannot reach http://127.0.0.1:1 (connection refused)" in nobody.err
    assert "Is the server running?" in nobody.err

    wrong = await room_cli(dev, "list", "--api-secret", "not-the-secret")
    assert wrong.code == 1
    assert "the server refused the credentials" in wrong.err and "--api-secret" in wrong.err

    unknown_key = dict(dev.env, LIVEKIT_API_KEY="nokey")  # from the environment, like lk
    refused = await room_cli(dev, "delete", "x", env=unknown_key)
    assert refused.code == 1 and "refused the credentials" in refused.err

    missing = await room_cli(dev, "delete", "no-such-room")
    assert missing.code == 1
    assert "room 'no-such-room' not found" in missing.err
    as_json = await room_cli(dev, "participants", "list", "no-such-room", "--json")
    assert as_json.code == 1
    assert as_json.json()["error"]["code"] == "not_found"  # type: ignore[index]

    await room_cli(dev, "create", "cli-errors")
    ghost = await room_cli(dev, "participants", "remove", "-r", "cli-errors", "ghost")
    assert "participant 'ghost' in room 'cli-errors' not found" in ghost.err

    for args, expected in (
        (("create", "x", "--empty-timeout", "-1"), "--empty-timeout must not be negative"),
        (("participants", "update", "-r", "cli-errors", "a"), "nothing to update"),
        (("participants", "update", "-r", "r", "a", "--attribute", "novalue"), "KEY=VALUE"),
        (("mute-track", "TR_x", "--identity", "a"), "--room"),
        (("list", "--url", "ftp://example"), "not a LiveKit server URL"),
    ):
        result = await room_cli(dev, *args)
        assert result.code == 2, (args, result)
        assert expected in result.err, (args, result.err)
    await room_cli(dev, "delete", "cli-errors")


async def test_join_publishes_a_test_pattern_and_a_tone(dev: Dev) -> None:
    room = "cli-demo"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomcast", "room", "join", room, "--identity", "demo",
        "--name", "Demo", "--publish-demo", env=dev.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    viewer = rtc.Room()
    try:
        await viewer.connect(dev.url, dev.token("viewer", room))
        demo = await wait_for_participant(viewer, "demo", timeout=30)
        assert demo.name == "Demo"
        video = await wait_for_track(viewer, "demo", kind="video", timeout=30)
        audio = await wait_for_track(viewer, "demo", kind="audio")
        assert (video.name, audio.name) == ("test pattern", "tone")

        # Colour bars: white, yellow, cyan, green, magenta, red, blue, left to right.
        stream = rtc.VideoStream(video.track)
        frames = 0
        async for event in stream:
            frames += 1
            if frames == 5:
                rgba = event.frame.convert(rtc.VideoBufferType.RGBA)
                break
        await stream.aclose()
        assert (rgba.width, rgba.height) == (640, 360)
        pixels = np.frombuffer(rgba.data, dtype=np.uint8).reshape(360, 640, 4)
        middles = [pixels[100, int((i + 0.5) * 640 / 7), :3] for i in range(7)]
        bars = [tuple(int(v) > 128 for v in rgb) for rgb in middles]
        assert bars == [
            (True, True, True), (True, True, False), (False, True, True), (False, True, False),
            (True, False, True), (True, False, False), (False, False, True),
        ]  # fmt: skip

        # The tone: 440 Hz dominates what the SDK decodes.
        sound = rtc.AudioStream(audio.track, sample_rate=48000, num_channels=1)
        chunks: list[np.ndarray] = []
        async for event in sound:
            chunks.append(np.frombuffer(event.frame.data, dtype=np.int16))
            if len(chunks) == 120:  # 1.2 s
                break
        await sound.aclose()
        samples = np.concatenate(chunks[20:]).astype(float)
        spectrum = np.abs(np.fft.rfft(samples))
        peak = np.fft.rfftfreq(len(samples), 1 / 48000)[spectrum.argmax()]
        assert math.isclose(peak, 440, abs_tol=5), peak
        assert np.sqrt(np.mean(samples**2)) > 1000
    finally:
        await viewer.disconnect()
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    log = out.decode()
    assert proc.returncode == 0, log + err.decode()
    assert f"joined room {room}" in log and "as demo" in log
    assert "publishing video track TR_" in log and "colour bars, VP8 640x360" in log
    assert "publishing audio track TR_" in log and "440 Hz tone" in log
    # The viewer joined before or after the demo: listed at the join, or reported joining.
    assert "in the room: viewer, standard" in log or "joined: viewer, standard" in log, log
    assert "left: viewer" in log and log.rstrip().endswith("left the room")


async def test_join_with_a_refused_token_says_why(dev: Dev) -> None:
    refused = await room_cli(dev, "join", "r", "--api-secret", "not-the-secret", "--duration", "5")
    assert refused.code == 1
    assert "the server refused the token" in refused.err, refused.err
    assert "--api-secret" in refused.err
    nobody = await room_cli(dev, "join", "r", "--url", "ws://127.0.0.1:1", "--duration", "5")
    assert nobody.code == 1 and "cannot connect to ws://127.0.0.1:1" in nobody.err, nobody.err


async def test_join_reports_being_removed(dev: Dev) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomcast", "room", "join", "cli-kick", "--identity", "kicked",
        env=dev.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    watcher = await connect(dev, "watcher", "cli-kick")
    try:
        await wait_for_participant(watcher, "kicked", timeout=30)
        removed = await room_cli(dev, "participants", "remove", "-r", "cli-kick", "kicked")
        assert removed.code == 0, removed.err
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        await watcher.disconnect()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1
    assert "the server closed the session: PARTICIPANT_REMOVED" in out.decode()
