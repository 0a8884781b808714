"""Agent workers across nodes: a room's node can give jobs to a worker connected elsewhere.

A livekit-agents worker keeps one WebSocket to one node (``/agent``), but rooms live on every
node. Each node advertises its workers in the ``roomcast:agent_workers`` hash (a record is
written when it changes, and again if Redis lost it; one over ``MAX_WORKER_RECORD_BYTES``, which
only absurd names make, is not advertised: that worker serves its own node's rooms only);
every other node keeps a ``RemoteWorker`` for each of them in its own registry, so its
dispatcher offers and assigns jobs exactly as to a local worker. A remote worker's offer is a
bus request to the worker's node, assignments and terminations are bus messages, and the job
status updates the worker sends to its own node are forwarded to the room's node.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import redis.asyncio as aioredis
from livekit.protocol import agent, models

from roomcast.agents.dispatcher import Dispatcher
from roomcast.agents.workers import Worker, WorkerClosedError, WorkerRegistry
from roomcast.routing.bus import BusError, Message, NodeBus, b64, unb64
from roomcast.routing.registry import NodeRegistry

log = logging.getLogger(__name__)

WORKERS_KEY = "roomcast:agent_workers"
OFFER_SLACK = 2.0  # seconds added to the availability timeout for the round trip
MAX_WORKER_RECORD_BYTES = 8 * 1024  # names, namespace, version: a few hundred bytes in practice


class RemoteWorker(Worker):
    """A worker connected to another node, as this node's dispatcher sees it."""

    def __init__(self, bus: NodeBus, node_id: str, record: dict[str, Any]) -> None:
        # Deliberately not Worker.__init__: there is no WebSocket here, only the bus.
        self._bus = bus
        self.node_id = node_id
        self.id = str(record["id"])
        self.api_key = str(record["api_key"])
        self.remote = f"node {node_id}"
        self.protocol = 0
        self.job_type = int(record["job_type"])
        self.agent_name = str(record["agent_name"])
        self.namespace = str(record["namespace"])
        self.deployment = str(record["deployment"])
        self.version = str(record["version"])
        self.permissions = models.ParticipantPermission()
        self.permissions.ParseFromString(unb64(str(record["permissions"])))
        self.registered_at = float(record["registered_at"])
        self.jobs = {}
        self.closed = False
        self.json_mode = False
        self.refresh(record)

    def refresh(self, record: dict[str, Any]) -> None:
        self.status = int(record["status"])
        self.load = float(record["load"])
        self.job_count = int(record["job_count"])

    def send(self, message: agent.ServerMessage) -> None:
        if not self.closed:
            self._bus.publish(
                self.node_id,
                {"t": "agent_send", "worker": self.id, "msg": b64(message.SerializeToString())},
            )

    async def offer(self, job: agent.Job, timeout: float) -> agent.AvailabilityResponse:
        if self.closed:
            raise WorkerClosedError(self.id)
        body = {"worker": self.id, "job": b64(job.SerializeToString()), "timeout": timeout}
        try:
            reply = await self._bus.request(
                self.node_id, "agent_offer", body, timeout + OFFER_SLACK
            )
        except BusError as exc:
            if "did not answer" in str(exc):
                raise TimeoutError(str(exc)) from exc
            raise WorkerClosedError(self.id) from exc
        if reply.get("closed"):
            raise WorkerClosedError(self.id)
        if reply.get("timeout"):
            raise TimeoutError("worker did not answer the job offer")
        answer = agent.AvailabilityResponse()
        answer.ParseFromString(unb64(str(reply["answer"])))
        return answer

    def mark_closed(self) -> None:
        self.closed = True

    async def close(self, code: int = 1000, message: str = "") -> None:
        self.mark_closed()


class ClusterAgents:
    def __init__(
        self,
        client: aioredis.Redis,
        bus: NodeBus,
        nodes: NodeRegistry,
        workers: WorkerRegistry,
        dispatcher: Dispatcher,
    ) -> None:
        self._client = client
        self._bus = bus
        self._nodes = nodes
        self._workers = workers
        self._dispatcher = dispatcher
        self._advertised: dict[str, str] = {}  # worker id → the record last written
        self._too_large: set[str] = set()  # workers not advertised (logged once each)
        self._job_nodes: dict[str, str] = {}  # job id → room node, for our workers' jobs
        dispatcher.forward_job_update = self._forward_job_update
        bus.on_request("agent_offer", self._serve_offer)
        bus.on("agent_send", self._on_send)
        bus.on("agent_job_update", self._on_job_update)
        nodes.on_heartbeat(self.sync)

    def _local(self) -> list[Worker]:
        return [w for w in self._workers.all() if not isinstance(w, RemoteWorker)]

    async def sync(self) -> None:
        """Advertise our workers; mirror the other nodes' workers into our registry."""
        records = self._our_records()
        changed = {i: r for i, r in records.items() if self._advertised.get(i) != r}
        gone = set(self._advertised) - set(records)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                if changed:
                    pipe.hset(WORKERS_KEY, mapping=dict(changed))  # type: ignore[arg-type]
                if gone:
                    pipe.hdel(WORKERS_KEY, *gone)
                pipe.hgetall(WORKERS_KEY)
                results = await pipe.execute()
        except BaseException:
            # Unknown state: rewrite every record and delete the gone ones next time.
            self._advertised = dict.fromkeys([*records, *gone], "")
            raise
        stored: dict[bytes, bytes] = results[-1]
        # A record Redis does not hold as written (lost in a restart) is written next time.
        self._advertised = {
            i: r if stored.get(i.encode()) == r.encode() else "" for i, r in records.items()
        }
        seen: set[str] = set()
        stale: list[str] = []
        for raw in stored.values():
            try:
                record = json.loads(raw)
                node_id = str(record["node"])
            except (ValueError, KeyError, TypeError):
                continue
            if node_id == self._nodes.node_id:
                continue
            if not self._nodes.is_alive(node_id):
                stale.append(str(record.get("id", "")))
                continue
            seen.add(str(record["id"]))
            existing = self._workers.get(str(record["id"]))
            if isinstance(existing, RemoteWorker):
                existing.refresh(record)
            elif existing is None:
                try:
                    self._workers.add(RemoteWorker(self._bus, node_id, record))
                except (KeyError, ValueError, TypeError):
                    log.warning("ignoring a malformed worker record from node %s", node_id)
        for worker in self._workers.all():
            if isinstance(worker, RemoteWorker) and worker.id not in seen:
                worker.mark_closed()
                self._workers.remove(worker)
        if stale:
            await self._client.hdel(WORKERS_KEY, *[s for s in stale if s])

    def _our_records(self) -> dict[str, str]:
        records: dict[str, str] = {}
        for worker in self._local():
            if worker.closed:
                continue
            record = _record(worker, self._nodes.node_id)
            if len(record) <= MAX_WORKER_RECORD_BYTES:
                records[worker.id] = record
            elif worker.id not in self._too_large:
                self._too_large.add(worker.id)
                self._bus.count_limit_hit("agent_worker_record_size")
                log.warning(
                    "agent worker %s: its %d-byte record is not advertised to other nodes",
                    worker.id,
                    len(record),
                )
        self._too_large &= {w.id for w in self._local()}
        return records

    # -- the worker's node --------------------------------------------------------------------
    async def _serve_offer(self, body: Message) -> Message:
        worker = self._workers.get(str(body.get("worker")))
        if worker is None or isinstance(worker, RemoteWorker) or worker.closed:
            return {"closed": True}
        job = agent.Job()
        job.ParseFromString(unb64(str(body["job"])))
        try:
            answer = await worker.offer(job, float(body.get("timeout", 10.0)))
        except WorkerClosedError:
            return {"closed": True}
        except TimeoutError:
            return {"timeout": True}
        return {"answer": b64(answer.SerializeToString())}

    def _on_send(self, message: Message) -> None:
        worker = self._workers.get(str(message.get("worker")))
        if worker is None or isinstance(worker, RemoteWorker):
            return
        server_message = agent.ServerMessage()
        server_message.ParseFromString(unb64(str(message.get("msg", ""))))
        which = server_message.WhichOneof("message")
        if which == "assignment":
            self._job_nodes[server_message.assignment.job.id] = str(message.get("from"))
        elif which == "termination":
            self._job_nodes.pop(server_message.termination.job_id, None)
        worker.send(server_message)

    def _forward_job_update(self, worker: Worker, update: agent.UpdateJobStatus) -> bool:
        """A job update from our worker for a job whose room is on another node."""
        node_id = self._job_nodes.get(update.job_id)
        if node_id is None:
            return False
        if update.status in (agent.JS_SUCCESS, agent.JS_FAILED):
            del self._job_nodes[update.job_id]
        self._bus.publish(
            node_id,
            {
                "t": "agent_job_update",
                "worker": worker.id,
                "update": b64(update.SerializeToString()),
            },
        )
        return True

    # -- the room's node ----------------------------------------------------------------------
    def _on_job_update(self, message: Message) -> None:
        worker = self._workers.get(str(message.get("worker")))
        if not isinstance(worker, RemoteWorker):
            return
        update = agent.UpdateJobStatus()
        update.ParseFromString(unb64(str(message.get("update", ""))))
        self._dispatcher.job_update(worker, update)

    async def close(self) -> None:
        if self._advertised:
            try:
                await asyncio.wait_for(self._client.hdel(WORKERS_KEY, *self._advertised), 2)
            except Exception as exc:  # best effort: dead nodes' workers are dropped anyway
                log.debug("could not withdraw agent workers: %s", exc)


def _record(worker: Worker, node_id: str) -> str:
    return json.dumps(
        {
            "id": worker.id,
            "node": node_id,
            "api_key": worker.api_key,
            "job_type": worker.job_type,
            "agent_name": worker.agent_name,
            "namespace": worker.namespace,
            "deployment": worker.deployment,
            "version": worker.version,
            "permissions": b64(worker.permissions.SerializeToString()),
            "registered_at": worker.registered_at,
            "status": worker.status,
            "load": worker.load,
            "job_count": worker.job_count,
        }
    )
