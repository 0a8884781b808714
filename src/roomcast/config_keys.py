"""livekit-server config keys that Roomcast accepts but does not act on, and what to do instead.

An existing livekit.yaml must load, so these keys are not errors; but a user migrating from
livekit-server must not believe they have, say, TURN when they do not. `ignored_keys` finds the
ones a config actually sets; the server logs them in one WARNING at start-up.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

_NOT_YET = "not supported yet"

# Dotted key → why it does nothing here, and what to use instead. A section name (e.g. "audio")
# covers everything under it.
IGNORED: dict[str, str] = {
    # Features Roomcast does not have.
    "turn.allow_restricted_peer_cidrs": "Roomcast's TURN relays only to its own media port",
    "turn.deny_peer_cidrs": "Roomcast's TURN relays only to its own media port",
    "rtc.allow_tcp_fallback": "clients fall back to ICE over TCP on their own: libwebrtc "
    "tries the TCP candidate when UDP fails",
    "rtc.force_tcp": f"{_NOT_YET}: UDP and TCP candidates are always both offered",
    "rtc.tcp_fallback_rtt_threshold": f"{_NOT_YET}: no server-driven TCP fallback",
    "rtc.allow_udp_unstable_fallback": f"{_NOT_YET}: no server-driven TCP fallback",
    "rtc.external_ip_only": f"{_NOT_YET}: set rtc.node_ip to the public address instead",
    "rtc.congestion_control": f"{_NOT_YET}: publishers get a fixed REMB, subscribers every "
    "layer they ask for",
    "rtc.interfaces": "Roomcast advertises one address: rtc.node_ip, or the bound address",
    "rtc.use_mdns": "Roomcast advertises one address: rtc.node_ip, or the bound address",
    "rtc.use_ice_lite": "Roomcast is always an ICE-lite server",
    "rtc.enable_loopback_candidate": "Roomcast advertises one address: rtc.node_ip, or the "
    "bound address",
    "rtc.batch_io": "not used by Roomcast's media plane",
    "rtc.use_stun_port_as_ice": "not used by Roomcast's media plane",
    "rtc.pli_throttle": "Roomcast throttles keyframe requests at one per 0.5 s per layer",
    "rtc.packet_buffer_size_video": "Roomcast keeps a 512-packet NACK cache per stream",
    "rtc.packet_buffer_size_audio": "Roomcast keeps a 512-packet NACK cache per stream",
    "rtc.reconnect_on_publication_error": "not used by Roomcast",
    "rtc.reconnect_on_subscription_error": "not used by Roomcast",
    "rtc.reconnect_on_data_channel_error": "not used by Roomcast",
    "audio": "Roomcast's speaker detection uses fixed settings (0.4 s updates)",
    "video": "Roomcast's dynacast uses fixed settings (5 s pause delay)",
    "ingress": f"{_NOT_YET}: no ingress",
    "sip": f"{_NOT_YET}: no SIP",
    "signal_relay": "Roomcast relays signalling between nodes through Redis streams",
    "psrpc": "Roomcast relays between nodes through Redis streams",
    "agents": "agent dispatch needs no configuration in Roomcast",
    "metric": "not used by Roomcast",
    "trace": "not used by Roomcast",
    "node_stats": "not used by Roomcast",
    "api": "not used by Roomcast",
    "debug_handler": "not used by Roomcast",
    "enable_participant_data_blob": "not used by Roomcast",
    "room.create_room_timeout": "not used by Roomcast",
    "room.create_room_attempts": "not used by Roomcast",
    "room.update_batch_target_size": "participant updates are sent one by one",
    "room.room_configurations": f"{_NOT_YET}: named room configurations",
    "room.max_metadata_size": "use limit.max_metadata_size",
    "room.playout_delay": f"{_NOT_YET}: no playout delay extension",
    "room.sync_streams": f"{_NOT_YET}: no stream synchronisation",
    "room.enable_full_room_in_webhooks": "webhooks carry the room as livekit-server's default",
    "limit.bytes_per_sec": f"{_NOT_YET}: no per-node bandwidth limit",
    "logging.sample": "not used by Roomcast",
    "logging.pion_level": "Roomcast has no pion",
    "logging.component_levels": "not used by Roomcast",
    "webhook.url_notifier": "not used by Roomcast",
    "webhook.resource_url_notifier": "not used by Roomcast",
    "webhook.filter_params": f"{_NOT_YET}: webhook filters",
    "redis.cluster_addresses": f"{_NOT_YET}: Redis Cluster (use a single Redis or Sentinel)",
    "redis.max_redirects": f"{_NOT_YET}: Redis Cluster",
    "node_selector.algorithm": "Roomcast places a room on the least loaded node",
    "node_selector.regions": f"{_NOT_YET}: region-aware placement",
}

# Keys Roomcast reads, but not as livekit-server does: said once at start-up too.
REINTERPRETED: dict[str, str] = {
    "rtc.port_range_start": "Roomcast serves all WebRTC traffic on one UDP port: it uses "
    "port_range_start as rtc.udp_port (open just that port)",
    "rtc.port_range_end": "Roomcast serves all WebRTC traffic on one UDP port "
    "(rtc.port_range_start)",
}


def accepted_unknown(section: str, key: str) -> bool:
    """Is `section.key` a livekit-server key Roomcast accepts without a field of its own?"""
    path = f"{section}.{key}" if section else key
    return path in IGNORED


def ignored_keys(raw: Mapping[str, Any], *, udp_port_set: bool = False) -> list[tuple[str, str]]:
    """(key, note) for every key in a user's config that does nothing, or less than in
    livekit-server, in the order they appear."""
    found = []
    for path in _paths(raw):
        if path in IGNORED:
            found.append((path, IGNORED[path]))
        elif path in REINTERPRETED and not udp_port_set:
            found.append((path, REINTERPRETED[path]))
    return found


def _paths(raw: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in raw.items():
        path = f"{prefix}{key}"
        if path in IGNORED:
            yield path  # a whole section: named once
            continue
        if isinstance(value, Mapping):
            yield from _paths(value, f"{path}.")
        else:
            yield path
