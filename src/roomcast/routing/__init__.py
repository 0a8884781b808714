"""Multi-node routing through Redis (docs/protocol/12-config-cli-multinode.md §12.5).

A room lives on exactly one node. Any node accepts a signalling WebSocket or a RoomService call
and relays it to the room's node over Redis pub/sub; nodes find each other through heartbeats.
Without a Redis address nothing here runs: one process is the embedded default.
"""
