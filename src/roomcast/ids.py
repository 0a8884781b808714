"""Identifiers with LiveKit's prefixes: the SDKs depend on them
(docs/protocol/02-join-and-transports.md §2.8)."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits

ROOM_PREFIX = "RM_"
PARTICIPANT_PREFIX = "PA_"
TRACK_PREFIX = "TR_"
WEBHOOK_EVENT_PREFIX = "EV_"
NODE_PREFIX = "ND_"


def new_sid(prefix: str, length: int = 12) -> str:
    """A random id such as ``PA_3Zk9q1XbTt2m`` (12 base62 characters, as LiveKit's shortuuid)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))
