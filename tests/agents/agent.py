"""A minimal livekit-agents app that needs no AI provider: it joins the room, publishes a
440 Hz tone, and echoes data.

Data a participant sends on topic ``echo`` comes back on topic ``echo``; anything sent on topic
``job`` is answered on ``job`` with a JSON description of the agent's job.

Run it against a dev server (`roomcast serve --dev`), from the agents venv
(`scripts/agents-venv.sh`):

    LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret \\
        .venv-agents/bin/python tests/agents/agent.py start

Environment (all optional):
    LIVEKIT_AGENT_NAME     register for explicit dispatch under this name (default: unnamed,
                           dispatched automatically to every new room)
    AGENT_TYPE             room (default) or publisher: one job per publishing participant
    AGENT_EXECUTOR         process (default) or thread: where jobs run
    AGENT_IDLE_PROCESSES   job processes kept warm (default: the framework's)
    AGENT_HTTP_PORT        health-check port (default 8081; 0 picks a free one)
    AGENT_LOAD             report this fixed load instead of the CPU load, and never report
                           the worker full (tests use 0)
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import AgentServer, JobContext, JobExecutorType, WorkerType, cli

SAMPLE_RATE = 48000
FRAME_SAMPLES = SAMPLE_RATE // 100  # 10 ms
TONE_HZ = 440
AMPLITUDE = 0.3 * 32767

log = logging.getLogger("echo-agent")


def _server_options() -> dict[str, Any]:
    options: dict[str, Any] = {}
    if os.environ.get("AGENT_EXECUTOR", "process") == "thread":
        options["job_executor_type"] = JobExecutorType.THREAD
    if "AGENT_IDLE_PROCESSES" in os.environ:
        options["num_idle_processes"] = int(os.environ["AGENT_IDLE_PROCESSES"])
    if "AGENT_HTTP_PORT" in os.environ:
        options["port"] = int(os.environ["AGENT_HTTP_PORT"])
    if "AGENT_LOAD" in os.environ:
        fixed = float(os.environ["AGENT_LOAD"])
        options["load_fnc"] = lambda: fixed
        # Never full: a job being launched counts as a whole 0.7 against the threshold otherwise.
        options["load_threshold"] = math.inf
    return options


server = AgentServer(**_server_options())
worker_type = (
    WorkerType.PUBLISHER if os.environ.get("AGENT_TYPE") == "publisher" else WorkerType.ROOM
)


async def play_tone(room: rtc.Room) -> None:
    source = rtc.AudioSource(SAMPLE_RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("tone", source)
    await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    t = np.arange(FRAME_SAMPLES)
    n = 0
    while True:
        phase = 2 * math.pi * TONE_HZ * (t + n) / SAMPLE_RATE
        samples = (AMPLITUDE * np.sin(phase)).astype(np.int16)
        n += FRAME_SAMPLES
        frame = rtc.AudioFrame(samples.tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES)
        await source.capture_frame(frame)  # paced by the source's queue


@server.rtc_session(type=worker_type)
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    room = ctx.room
    job = ctx.job
    log.info("agent joined %s as %s", room.name, room.local_participant.identity)

    def describe() -> bytes:
        return json.dumps(
            {
                "job_id": job.id,
                "dispatch_id": job.dispatch_id,
                "type": int(job.type),
                "agent_name": job.agent_name,
                "metadata": job.metadata,
                "participant": job.participant.identity if job.HasField("participant") else "",
                "identity": room.local_participant.identity,
            }
        ).encode()

    tasks: set[asyncio.Task[None]] = set()

    def reply(payload: bytes, topic: str, to: str) -> None:
        task = asyncio.create_task(
            room.local_participant.publish_data(payload, topic=topic, destination_identities=[to])
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    @room.on("data_received")
    def on_data(packet: rtc.DataPacket) -> None:
        sender = packet.participant
        if sender is None or sender.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return
        if packet.topic == "echo":
            reply(packet.data, "echo", sender.identity)
        elif packet.topic == "job":
            reply(describe(), "job", sender.identity)

    # The entrypoint returns at once: the tone runs until the job shuts down (the room closes,
    # the dispatch is deleted), even if that happens while the track is being published.
    tone = asyncio.create_task(play_tone(room))

    async def stop_tone(reason: str) -> None:
        tone.cancel()

    ctx.add_shutdown_callback(stop_tone)


if __name__ == "__main__":
    cli.run_app(server)
