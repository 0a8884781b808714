"""A livekit-agents worker tested against the pytest plugin's `roomcast_server`, as an agent
developer would: the worker (tests/agents/agent.py, from the agents venv) is a subprocess given
``roomcast_server.env``; the test dispatches it with `livekit-api` and talks to it with the
official rtc SDK and the waits of roomcast.testing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest
from livekit import api

from roomcast.testing import (
    RoomcastServer,
    wait_for_data,
    wait_for_frame,
    wait_for_participant,
    wait_for_track,
)
from tests.integration.test_agents import AGENT_APP, AGENTS_PYTHON

AGENT_NAME = "fixture-echo"

pytestmark = pytest.mark.skipif(
    not AGENTS_PYTHON.exists(), reason=f"no livekit-agents venv at {AGENTS_PYTHON}"
)


async def test_agents_worker_against_the_fixture(
    roomcast_server: RoomcastServer, roomcast_room: str, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")},
        **roomcast_server.env,
        "LIVEKIT_AGENT_NAME": AGENT_NAME,  # explicit dispatch only: other tests' rooms stay
        "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE": "0",
        "AGENT_EXECUTOR": "thread",
        "AGENT_IDLE_PROCESSES": "0",
        "AGENT_HTTP_PORT": "0",
        "AGENT_LOAD": "0",
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = await asyncio.create_subprocess_exec(
            str(AGENTS_PYTHON),
            str(AGENT_APP),
            "start",
            "--drain-timeout",
            "5",
            env=env,
            cwd=str(AGENT_APP.parent),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        try:
            await roomcast_server.wait_for_agent_worker(AGENT_NAME, timeout=60)
        except TimeoutError:
            pytest.fail(f"the worker did not register:\n{log_path.read_text()[-3000:]}")
        async with roomcast_server.connect("user", roomcast_room) as user:
            agent_joins = wait_for_participant(user, kind="agent")
            async with roomcast_server.api() as lkapi:
                await lkapi.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=roomcast_room)
                )
            agent = await agent_joins
            assert agent.attributes.get("lk.agent_name") == AGENT_NAME
            tone = await wait_for_track(user, agent.identity, kind="audio")
            assert (await wait_for_frame(tone.track)).sample_rate == 48000
            echo = wait_for_data(user, topic="echo", identity=agent.identity)
            await user.local_participant.publish_data(
                b"ping", topic="echo", destination_identities=[agent.identity]
            )
            assert (await echo).data == b"ping"
    finally:
        roomcast_server.delete_room(roomcast_room)  # ends the job, so the worker drains at once
        with contextlib.suppress(ProcessLookupError):
            worker.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(worker.wait(), 20)
        except TimeoutError:
            worker.kill()
            await worker.wait()
