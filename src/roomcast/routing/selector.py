"""Chooses the node for a new room (livekit-server's ``node_selector``,
docs/protocol/12-config-cli-multinode.md §12.4).

``kind`` filters: ``any`` keeps every serving node, ``cpuload``/``sysload`` drop nodes above
their limit (all nodes are kept if that would leave none, so a busy cluster still serves).
``sort_by`` then picks the least loaded; ties go to the local node, then to the lowest id, so
placement is predictable. Pluggable: pass any callable with ``select``'s signature to Placement.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from roomcast.config import NodeSelectorConfig
from roomcast.routing.registry import NodeRecord

Selector = Callable[[Sequence[NodeRecord], str], NodeRecord]


def _load(node: NodeRecord, sort_by: str) -> float:
    stats = node.stats
    if sort_by == "cpuload":
        return stats.cpu_load
    if sort_by == "rooms":
        return float(stats.rooms)
    if sort_by == "clients":
        return float(stats.clients)
    return stats.sysload


def _full(node: NodeRecord) -> bool:
    return 0 < node.stats.max_rooms <= node.stats.rooms


def make_selector(config: NodeSelectorConfig) -> Selector:
    def select(nodes: Sequence[NodeRecord], local_id: str) -> NodeRecord:
        serving = [n for n in nodes if n.state == "serving"] or list(nodes)
        if not serving:
            raise LookupError("no nodes available")
        # Nodes at their limit.max_rooms take no new room while another node can.
        serving = [n for n in serving if not _full(n)] or serving
        candidates = serving
        if config.kind == "cpuload":
            candidates = [n for n in serving if n.stats.cpu_load < config.cpu_load_limit]
        elif config.kind == "sysload":
            candidates = [n for n in serving if n.stats.sysload < config.sysload_limit]
        candidates = candidates or serving
        if config.sort_by == "random":
            return random.choice(candidates)
        return min(candidates, key=lambda n: (_load(n, config.sort_by), n.id != local_id, n.id))

    return select
