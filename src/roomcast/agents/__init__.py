"""Agents: livekit-agents workers on ``/agent``, dispatch of their jobs, AgentDispatchService."""

from roomcast.agents.service import AgentService
from roomcast.agents.workers import WorkerSnapshot

__all__ = ["AgentService", "WorkerSnapshot"]
