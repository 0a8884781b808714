"""Registered agent workers: their connection, what they serve, their load
(docs/protocol/14-agents.md §1, §2.2).

A ``Worker`` wraps one ``/agent`` WebSocket after its ``register``: messages to it are queued
and written in order by one task, offers wait for the worker's ``availability`` answer. The
``WorkerRegistry`` finds the workers that serve an (agent name, job type, deployment) key;
``agents/offers.py`` chooses among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import unicodedata
from dataclasses import dataclass

from aiohttp import web
from google.protobuf import json_format
from livekit.protocol import agent, models

from roomcast.agents.jobs import JOB_TYPE_NAMES, JobRecord

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
MAX_DEPLOYMENT_LENGTH = 64


def validate_deployment(deployment: str) -> str | None:
    """livekit-server's rule for deployment names; returns the problem or None."""
    if len(deployment.encode()) > MAX_DEPLOYMENT_LENGTH:
        return f"deployment is longer than {MAX_DEPLOYMENT_LENGTH} bytes"
    if "_" in deployment:
        return "deployment must not contain '_'"
    if any(ch.isspace() or unicodedata.category(ch)[0] == "C" for ch in deployment):
        return "deployment must not contain whitespace or control characters"
    return None


def validate_register(request: agent.RegisterWorkerRequest) -> str | None:
    """What is wrong with a ``register`` request, or None."""
    if request.type not in JOB_TYPE_NAMES:
        return f"unknown job type {request.type}"
    return validate_deployment(request.deployment)


class WorkerClosedError(Exception):
    """The worker went away while we waited for it."""


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """A read-only view of a worker (for dashboards and tests)."""

    id: str
    agent_name: str
    job_type: str  # room | publisher | participant
    namespace: str
    deployment: str
    version: str
    status: str  # available | full
    load: float
    job_count: int
    active_jobs: tuple[str, ...]
    registered_at: float
    remote: str

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "agent_name": self.agent_name,
            "job_type": self.job_type,
            "namespace": self.namespace,
            "deployment": self.deployment,
            "version": self.version,
            "status": self.status,
            "load": self.load,
            "job_count": self.job_count,
            "active_jobs": list(self.active_jobs),
            "registered_at": self.registered_at,
            "remote": self.remote,
        }


class Worker:
    """One registered worker connection."""

    def __init__(
        self,
        worker_id: str,
        ws: web.WebSocketResponse,
        api_key: str,
        request: agent.RegisterWorkerRequest,
        *,
        remote: str = "",
        protocol: int = 0,
        json_mode: bool = False,
    ) -> None:
        self.id = worker_id
        self.api_key = api_key  # the agent's room token is signed with the same key
        self.remote = remote
        self.protocol = protocol
        self.job_type: int = request.type
        self.agent_name = request.agent_name
        self.namespace = request.namespace if request.HasField("namespace") else ""
        self.deployment = request.deployment
        self.version = request.version
        self.permissions = models.ParticipantPermission()
        if request.HasField("allowed_permissions"):
            self.permissions.CopyFrom(request.allowed_permissions)
        else:  # Go's default when the worker sends none
            self.permissions.CopyFrom(
                models.ParticipantPermission(
                    can_subscribe=True,
                    can_publish=True,
                    can_publish_data=True,
                    can_update_metadata=True,
                )
            )
        self.status: int = agent.WS_AVAILABLE
        self.load = 0.0
        self.job_count = 0
        self.registered_at = time.time()
        self.jobs: dict[str, JobRecord] = {}  # running on this worker, by job id
        self.closed = False
        self.json_mode = json_mode
        self._ws = ws
        self._offers: dict[str, asyncio.Future[agent.AvailabilityResponse]] = {}
        self._queue: asyncio.Queue[agent.ServerMessage | None] = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.agent_name, self.job_type, self.deployment)

    # -- sending ----------------------------------------------------------------------------
    def send(self, message: agent.ServerMessage) -> None:
        if not self.closed:
            self._queue.put_nowait(message)

    async def _write_loop(self) -> None:
        while True:
            message = await self._queue.get()
            if message is None:
                return
            try:
                if self.json_mode:
                    await self._ws.send_str(json.dumps(json_format.MessageToDict(message)))
                else:
                    await self._ws.send_bytes(message.SerializeToString())
            except (ConnectionError, RuntimeError):
                return

    async def close(self, code: int = CLOSE_NORMAL, message: str = "") -> None:
        """Flush what is queued (briefly), then close the socket."""
        self.mark_closed()
        self._queue.put_nowait(None)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._writer), 1.0)
        if not self._writer.done():
            self._writer.cancel()
        if not self._ws.closed:
            with contextlib.suppress(Exception):
                await self._ws.close(code=code, message=message.encode()[:120])

    def mark_closed(self) -> None:
        """Stop taking offers: everyone waiting for an answer from us tries elsewhere."""
        self.closed = True
        for future in self._offers.values():
            if not future.done():
                future.set_exception(WorkerClosedError(self.id))
        self._offers.clear()

    # -- offers -----------------------------------------------------------------------------
    async def offer(self, job: agent.Job, timeout: float) -> agent.AvailabilityResponse:
        """Send ``availability{job}`` and wait for the worker's answer."""
        if self.closed:
            raise WorkerClosedError(self.id)
        future: asyncio.Future[agent.AvailabilityResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._offers[job.id] = future
        self.send(agent.ServerMessage(availability=agent.AvailabilityRequest(job=job)))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._offers.pop(job.id, None)

    def answer(self, response: agent.AvailabilityResponse) -> bool:
        """The worker's ``availability`` answer; False when nobody asked (late or unknown)."""
        future = self._offers.pop(response.job_id, None)
        if future is None or future.done():
            return False
        future.set_result(response)
        return True

    # -- state ------------------------------------------------------------------------------
    def update(self, message: agent.UpdateWorkerStatus) -> None:
        if message.HasField("status"):
            self.status = message.status
        self.load = message.load
        self.job_count = message.job_count

    @property
    def weight(self) -> float:
        return max(0.0, 1.0 - self.load)

    def snapshot(self) -> WorkerSnapshot:
        return WorkerSnapshot(
            id=self.id,
            agent_name=self.agent_name,
            job_type=JOB_TYPE_NAMES.get(self.job_type, str(self.job_type)),
            namespace=self.namespace,
            deployment=self.deployment,
            version=self.version,
            status="full" if self.status == agent.WS_FULL else "available",
            load=self.load,
            job_count=self.job_count,
            active_jobs=tuple(self.jobs),
            registered_at=self.registered_at,
            remote=self.remote,
        )


class WorkerRegistry:
    def __init__(self) -> None:
        self._workers: dict[str, Worker] = {}

    def add(self, worker: Worker) -> None:
        self._workers[worker.id] = worker

    def remove(self, worker: Worker) -> None:
        if self._workers.get(worker.id) is worker:
            del self._workers[worker.id]

    def get(self, worker_id: str) -> Worker | None:
        return self._workers.get(worker_id)

    def all(self) -> list[Worker]:
        return sorted(self._workers.values(), key=lambda w: w.registered_at)

    def serving(self, agent_name: str, job_type: int, deployment: str) -> list[Worker]:
        key = (agent_name, job_type, deployment)
        return [w for w in self._workers.values() if w.key == key and not w.closed]

    def namespaces(self, agent_name: str, job_type: int, deployment: str) -> list[str]:
        """One job per namespace (legacy SDKs set one; livekit-agents 1.x never does)."""
        return sorted({w.namespace for w in self.serving(agent_name, job_type, deployment)})
