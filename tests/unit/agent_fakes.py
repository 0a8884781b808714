"""Hand-written fakes for the agents package: a clock moved by hand, workers driven by the test."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from livekit.protocol import agent, models

from roomcast.agents.workers import Worker, WorkerClosedError

API_KEY = "devkey"
API_SECRET = "secret"


async def run_until(condition: Callable[[], bool], steps: int = 100) -> None:
    """Let the event loop run callbacks (no clock time passes) until ``condition`` holds."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


@dataclass(order=True)
class FakeTimer:
    when: float
    order: int
    callback: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A `Clock` whose time moves only in `advance` (which runs the timers that fall due)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[FakeTimer] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_soon(self, callback: Callable[[], object]) -> FakeTimer:
        return self.call_later(0.0, callback)

    def call_later(self, delay: float, callback: Callable[[], object]) -> FakeTimer:
        timer = FakeTimer(self.now + delay, next(self._order), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def advance(self, seconds: float = 0.0) -> None:
        self.now += seconds
        while self._timers and self._timers[0].when <= self.now:
            timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()

    @property
    def pending(self) -> int:
        return sum(1 for timer in self._timers if not timer.cancelled)


class FakeWorker(Worker):
    """A registered worker without a socket: offers land in ``inbox`` until the test answers."""

    def __init__(
        self,
        worker_id: str,
        inbox: asyncio.Queue[tuple[FakeWorker, agent.Job]],
        *,
        agent_name: str = "",
        job_type: int = agent.JT_ROOM,
        namespace: str = "",
        load: float = 0.0,
        status: int = agent.WS_AVAILABLE,
        api_key: str = API_KEY,
    ) -> None:
        # Deliberately not Worker.__init__ (it needs a WebSocket), as routing's RemoteWorker.
        self.id = worker_id
        self.api_key = api_key
        self.remote = "fake"
        self.protocol = 0
        self.job_type = job_type
        self.agent_name = agent_name
        self.namespace = namespace
        self.deployment = ""
        self.version = "fake"
        self.permissions = models.ParticipantPermission(
            can_subscribe=True, can_publish=True, can_publish_data=True
        )
        self.status = status
        self.load = load
        self.job_count = 0
        self.registered_at = 0.0
        self.jobs = {}
        self.closed = False
        self.json_mode = False
        self._offers = {}
        self.inbox = inbox
        self.sent: list[agent.ServerMessage] = []

    def send(self, message: agent.ServerMessage) -> None:
        if not self.closed:
            self.sent.append(message)

    async def offer(self, job: agent.Job, timeout: float) -> agent.AvailabilityResponse:
        """Waits for `answer` or `mark_closed` only: the timeout is the caller's clock's job."""
        if self.closed:
            raise WorkerClosedError(self.id)
        future: asyncio.Future[agent.AvailabilityResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._offers[job.id] = future
        self.inbox.put_nowait((self, job))
        try:
            return await future
        finally:
            self._offers.pop(job.id, None)

    def accept(self, job: agent.Job, identity: str = "") -> None:
        assert self.answer(
            agent.AvailabilityResponse(job_id=job.id, available=True, participant_identity=identity)
        )

    def refuse(self, job: agent.Job) -> None:
        assert self.answer(agent.AvailabilityResponse(job_id=job.id, available=False))

    def assignments(self) -> list[agent.JobAssignment]:
        return [m.assignment for m in self.sent if m.WhichOneof("message") == "assignment"]

    def terminations(self) -> list[str]:
        return [m.termination.job_id for m in self.sent if m.WhichOneof("message") == "termination"]
