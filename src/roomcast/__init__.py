"""Roomcast: a LiveKit-compatible realtime audio/video/data server in Python."""

__version__ = "0.1.0"

# The protocol version we speak to clients (LiveKit `CurrentProtocol`,
# docs/protocol/01-signalling-connection.md).
PROTOCOL_VERSION = 16

# The livekit-server version whose client-facing behaviour we implement. SDKs gate features on
# ServerInfo.version (the Rust SDK refuses RPC below 1.8.0), so this is what they are told;
# our own version goes into ServerInfo.debug_info.
LIVEKIT_COMPATIBLE_VERSION = "1.9.0"
