"""Room placement choices (routing/selector.py): pure functions over node records."""

from __future__ import annotations

from roomcast.config import NodeSelectorConfig
from roomcast.routing.registry import NodeRecord, NodeStats
from roomcast.routing.selector import make_selector


def node(node_id: str, **stats: float) -> NodeRecord:
    return NodeRecord(id=node_id, stats=NodeStats(**stats))  # type: ignore[arg-type]


def test_least_loaded_wins_and_ties_go_to_the_local_node() -> None:
    select = make_selector(NodeSelectorConfig(sort_by="rooms"))
    nodes = [node("a", rooms=3), node("b", rooms=1), node("c", rooms=1)]
    assert select(nodes, "a").id == "b"  # fewest rooms; b before c by id
    assert select(nodes, "c").id == "c"  # a tie goes to the node asking
    by_load = make_selector(NodeSelectorConfig())  # sort_by sysload
    assert by_load([node("a", sysload=0.9), node("b", sysload=0.2)], "a").id == "b"


def test_kind_filters_overloaded_nodes_but_never_leaves_none() -> None:
    select = make_selector(NodeSelectorConfig(kind="cpuload", sort_by="rooms", cpu_load_limit=0.8))
    busy, idle = node("a", cpu_load=0.95, rooms=0), node("b", cpu_load=0.1, rooms=5)
    assert select([busy, idle], "a").id == "b"  # a has fewer rooms but is over its limit
    assert select([busy], "a").id == "a"  # all over the limit: still placed somewhere


def test_nodes_at_max_rooms_are_skipped_and_draining_nodes_avoided() -> None:
    select = make_selector(NodeSelectorConfig(sort_by="rooms"))
    full = node("a", rooms=2, max_rooms=2)
    assert select([full, node("b", rooms=9)], "a").id == "b"
    draining = node("c", rooms=0)
    draining.state = "draining"
    assert select([draining, node("d", rooms=4)], "c").id == "d"
    assert select([full], "a").id == "a"  # only full nodes left: it answers resource_exhausted
