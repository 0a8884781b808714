"""DispatchPolicy: which agent jobs each room event launches, from plain data (no server)."""

from __future__ import annotations

import ast
import inspect

import pytest
from livekit.protocol import agent, agent_dispatch, models

import roomcast.agents.policy as policy_module
from roomcast.agents.jobs import Dispatch
from roomcast.agents.policy import (
    DispatchPolicy,
    Launch,
    Member,
    RoomView,
    room_config_agents,
)
from roomcast.errors import NotFoundError, RoomNotFoundError

State = models.ParticipantInfo.State
ROOM, PUBLISHER, PARTICIPANT = agent.JT_ROOM, agent.JT_PUBLISHER, agent.JT_PARTICIPANT


def member(identity: str, **fields: object) -> Member:
    fields.setdefault("state", State.ACTIVE)
    return Member(identity=identity, sid=f"PA_{identity}", **fields)  # type: ignore[arg-type]


def started(policy: DispatchPolicy, *members: Member, name: str = "demo") -> RoomView:
    """A room instance the policy saw start, with ``members`` in it."""
    room = RoomView(name, f"RM_{name}", members)
    policy.room_started(room.name, room.sid)
    return room


def kinds(launches: list[Launch]) -> list[tuple[str, int, str]]:
    """(agent name, job type, participant identity) of each decision, in order."""
    return [
        (
            each.dispatch.agent_name,
            each.job_type,
            each.participant.identity if each.participant else "",
        )
        for each in launches
    ]


def spec(name: str, metadata: str = "") -> agent_dispatch.RoomAgentDispatch:
    return agent_dispatch.RoomAgentDispatch(agent_name=name, metadata=metadata)


# -- a room's own dispatches ------------------------------------------------------------------
def test_a_new_room_gets_one_implicit_dispatch_for_unnamed_agents() -> None:
    policy = DispatchPolicy()
    room = started(policy)
    launches = policy.init_room(room)
    assert kinds(launches) == [("", ROOM, "")]
    (dispatch,) = policy.dispatches("demo")
    assert dispatch is launches[0].dispatch and dispatch.room == "demo"


def test_create_room_agents_replace_the_implicit_dispatch() -> None:
    policy = DispatchPolicy()
    policy.preset_agents("demo", [spec("alpha", "a"), spec("beta")])
    room = started(policy)
    assert kinds(policy.init_room(room)) == [("alpha", ROOM, ""), ("beta", ROOM, "")]
    assert [d.metadata for d in policy.dispatches("demo")] == ["a", ""]


def test_token_room_config_agents_replace_the_implicit_dispatch() -> None:
    policy = DispatchPolicy()
    config = {"agents": [{"agentName": "helper", "metadata": "m"}]}
    room = started(policy, member("alice", state=State.JOINED, room_config=config))
    assert kinds(policy.init_room(room)) == [("helper", ROOM, "")]
    assert policy.dispatches("demo")[0].metadata == "m"


def test_create_room_agents_win_over_the_token() -> None:
    policy = DispatchPolicy()
    policy.preset_agents("demo", [spec("alpha")])
    config = {"agents": [{"agent_name": "helper"}]}
    room = started(policy, member("alice", state=State.JOINED, room_config=config))
    assert kinds(policy.init_room(room)) == [("alpha", ROOM, "")]


def test_a_preset_only_applies_to_the_room_it_was_made_for() -> None:
    policy = DispatchPolicy()
    policy.preset_agents("demo", [spec("alpha")])
    policy.clear_preset("demo")  # CreateRoom found the room already there, or failed
    assert kinds(policy.init_room(started(policy))) == [("", ROOM, "")]


def test_a_room_created_by_an_agent_gets_no_dispatches() -> None:
    policy = DispatchPolicy()
    room = started(policy, member("bot", state=State.JOINED, dependent=True))
    assert policy.init_room(room) == []
    assert policy.dispatches("demo") == []


def test_a_room_created_by_an_agent_still_gets_its_create_room_agents() -> None:
    policy = DispatchPolicy()
    policy.preset_agents("demo", [spec("alpha")])
    room = started(policy, member("bot", state=State.JOINED, dependent=True))
    assert kinds(policy.init_room(room)) == [("alpha", ROOM, "")]


def test_a_room_is_initialised_once_and_only_for_its_own_instance() -> None:
    policy = DispatchPolicy()
    room = started(policy)
    assert policy.init_room(RoomView("demo", "RM_other")) == []  # an earlier or later instance
    assert not policy.is_initialized("demo", room.sid)
    assert len(policy.init_room(room)) == 1
    assert policy.is_initialized("demo", room.sid)
    assert policy.init_room(room) == []
    assert len(policy.dispatches("demo")) == 1


def test_room_config_parsing() -> None:
    assert room_config_agents(None) == []
    assert room_config_agents({}) == []
    assert [a.agent_name for a in room_config_agents({"agents": [{"agentName": "x"}]})] == ["x"]
    assert [a.agent_name for a in room_config_agents({"agents": [{"agent_name": "y"}]})] == ["y"]
    assert room_config_agents({"agents": "not a list"}) == []
    assert room_config_agents({"unknownField": 1}) == []


# -- participants -----------------------------------------------------------------------------
def test_participant_jobs_when_a_participant_joins_once_per_participant() -> None:
    policy = DispatchPolicy()
    policy.preset_agents("demo", [spec("alpha"), spec("beta")])
    room = started(policy)
    policy.init_room(room)
    alice = member("alice")
    launches = policy.participant_joined(room.name, room.sid, alice)
    assert kinds(launches) == [("alpha", PARTICIPANT, "alice"), ("beta", PARTICIPANT, "alice")]
    assert policy.participant_joined(room.name, room.sid, alice) == []
    # The same identity joining again is a new participant (new sid): a new job.
    again = Member("alice", "PA_alice2", State.ACTIVE)
    assert len(policy.participant_joined(room.name, room.sid, again)) == 2


def test_publisher_jobs_on_the_first_published_track() -> None:
    policy = DispatchPolicy()
    room = started(policy)
    policy.init_room(room)
    dee = member("dee", publisher=True)
    assert kinds(policy.track_published(room.name, room.sid, dee)) == [("", PUBLISHER, "dee")]
    assert policy.track_published(room.name, room.sid, dee) == []  # second track: no new job
    # PUBLISHER and PARTICIPANT jobs are counted apart.
    assert kinds(policy.participant_joined(room.name, room.sid, dee)) == [("", PARTICIPANT, "dee")]


def test_agents_never_start_agent_jobs() -> None:
    policy = DispatchPolicy()
    room = started(policy)
    policy.init_room(room)
    bot = member("bot", dependent=True, publisher=True)
    assert policy.participant_joined(room.name, room.sid, bot) == []
    assert policy.track_published(room.name, room.sid, bot) == []


def test_participant_events_wait_for_the_room_s_own_dispatches() -> None:
    policy = DispatchPolicy()
    room = started(policy)
    alice = member("alice")
    assert policy.participant_joined(room.name, room.sid, alice) == []  # not initialised yet
    policy.init_room(room)
    assert policy.participant_joined("demo", "RM_other", alice) == []  # another instance
    assert policy.participant_joined("elsewhere", room.sid, alice) == []  # unknown room
    assert len(policy.participant_joined(room.name, room.sid, alice)) == 1


# -- API dispatches ---------------------------------------------------------------------------
def test_an_added_dispatch_launches_for_everyone_already_there() -> None:
    policy = DispatchPolicy()
    policy.init_room(started(policy))  # empty at first: the implicit dispatch's ROOM job only
    room = RoomView(
        "demo",
        "RM_demo",
        (
            member("alice"),  # active: PARTICIPANT
            member("dee", publisher=True),  # active publisher: PARTICIPANT and PUBLISHER
            member("joining", state=State.JOINED),  # not active yet: nothing
            member("gone", state=State.DISCONNECTED, publisher=True),  # left: nothing
            member("bot", dependent=True, publisher=True),  # an agent: nothing
        ),
    )
    dispatch = Dispatch.create("demo", "helper")
    assert kinds(policy.add_dispatch(room, dispatch)) == [
        ("helper", ROOM, ""),
        ("helper", PARTICIPANT, "alice"),
        ("helper", PARTICIPANT, "dee"),
        ("helper", PUBLISHER, "dee"),
    ]
    assert dispatch in policy.dispatches("demo")
    # Those already served by this dispatch are not launched again when their event comes.
    assert kinds(policy.participant_joined(room.name, room.sid, member("alice"))) == [
        ("", PARTICIPANT, "alice")  # the implicit dispatch's job only
    ]


def test_the_room_s_own_dispatches_launch_for_those_already_active() -> None:
    policy = DispatchPolicy()
    room = started(policy, member("alice"), member("joining", state=State.JOINED))
    assert kinds(policy.init_room(room)) == [("", ROOM, ""), ("", PARTICIPANT, "alice")]


def test_a_dispatch_can_come_before_the_room_s_own() -> None:
    policy = DispatchPolicy()
    room = RoomView("demo", "RM_demo")
    policy.room_started(room.name, room.sid)
    assert kinds(policy.add_dispatch(room, Dispatch.create("demo", "helper"))) == [
        ("helper", ROOM, "")
    ]
    assert kinds(policy.init_room(room)) == [("", ROOM, "")]
    assert [d.agent_name for d in policy.dispatches("demo")] == ["helper", ""]


def test_a_dispatch_for_a_newer_room_instance_starts_fresh() -> None:
    policy = DispatchPolicy()
    old = started(policy)
    policy.init_room(old)
    newer = RoomView("demo", "RM_newer")
    policy.add_dispatch(newer, Dispatch.create("demo", "helper"))
    assert [d.agent_name for d in policy.dispatches("demo")] == ["helper"]
    assert not policy.is_initialized("demo", newer.sid)


def test_deleting_a_dispatch_stops_its_launches() -> None:
    policy = DispatchPolicy()
    room = started(policy)
    policy.init_room(room)
    dispatch = Dispatch.create("demo", "helper")
    policy.add_dispatch(room, dispatch)
    assert policy.delete_dispatch("demo", dispatch.id) is dispatch
    assert dispatch.deleted_at > 0
    assert dispatch not in policy.dispatches("demo")
    assert kinds(policy.participant_joined(room.name, room.sid, member("alice"))) == [
        ("", PARTICIPANT, "alice")
    ]
    with pytest.raises(NotFoundError):
        policy.delete_dispatch("demo", dispatch.id)
    with pytest.raises(RoomNotFoundError):
        policy.delete_dispatch("elsewhere", dispatch.id)


def test_listing_dispatches() -> None:
    policy = DispatchPolicy()
    room = started(policy)
    policy.init_room(room)
    dispatch = Dispatch.create("demo", "helper")
    policy.add_dispatch(room, dispatch)
    assert len(policy.list_dispatches("demo")) == 2
    assert policy.list_dispatches("demo", dispatch.id) == [dispatch]
    assert policy.list_dispatches("demo", "AD_unknown") == []
    with pytest.raises(RoomNotFoundError):
        policy.list_dispatches("elsewhere")


def test_a_finished_room_hands_back_its_dispatches_once() -> None:
    policy = DispatchPolicy()
    room = started(policy)
    policy.init_room(room)
    assert policy.room_finished("demo", "RM_other") == []  # not this instance: kept
    assert len(policy.dispatches("demo")) == 1
    (dispatch,) = policy.room_finished("demo", room.sid)
    assert dispatch.agent_name == ""
    assert policy.dispatches("demo") == [] and policy.room("demo") is None
    assert policy.room_finished("demo", room.sid) == []


def test_the_policy_does_no_io_and_no_asyncio() -> None:
    tree = ast.parse(inspect.getsource(policy_module))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & {"asyncio", "socket", "aiohttp", "redis", "time", "random"}
