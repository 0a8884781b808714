"""Roomcast: a LiveKit-compatible realtime audio/video/data server in Python."""

__version__ = "0.1.0"

# The protocol version we speak to clients (LiveKit `CurrentProtocol`, reference 01).
PROTOCOL_VERSION = 16
