"""Agents: livekit-agents workers, the dispatch of their jobs, and what the server reads of them.

- `service` — `AgentService`: registry + dispatcher as the server holds them; read-only views.
- `dispatcher` — `Dispatcher`: room events and AgentDispatchService calls in, job launches out.
- `policy` — `DispatchPolicy`: which jobs launch for which room events (no I/O, no asyncio).
- `offers` — `JobOffers`: offer a job to one worker at a time, assign it, mint the agent token.
- `workers` — `Worker` (one registered connection), `WorkerRegistry`, registration checks.
- `jobs` — `JobRecord` and `Dispatch`: what is recorded about jobs and dispatches.
- `clock` — the `Clock` every deadline here runs on (the event loop, or a fake in tests).

The ``/agent`` WebSocket and the AgentDispatchService Twirp handlers live in the edge
(``edge/agent_endpoint.py``, ``edge/agent_dispatch_service.py``); ``routing/agents.py`` lets a
room's node offer jobs to workers connected to other nodes.
"""

from roomcast.agents.service import AgentService
from roomcast.agents.workers import WorkerSnapshot

__all__ = ["AgentService", "WorkerSnapshot"]
