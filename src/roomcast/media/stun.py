"""ICE-lite STUN responder: parse Binding requests, authenticate them, build the answers.

No I/O: the UDP mux hands us bytes and a source address, we hand back bytes to send.
A lite agent never sends checks and is always the controlled agent (RFC 8445 §2.5, §6.1.1),
so answering Binding requests is all the ICE there is.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

from aioice import stun

# RFC 8445 §5.3: ice-char = ALPHA / DIGIT / "+" / "/". We use letters and digits only, so the
# values are safe inside SDP, JSON and the "<ufrag>:<ufrag>" USERNAME without escaping.
_ICE_ALPHABET = string.ascii_letters + string.digits
UFRAG_LENGTH = 8  # RFC 8839 §5.4: at least 4 characters (24 bits of randomness)
PWD_LENGTH = 24  # RFC 8839 §5.4: at least 22 characters (128 bits of randomness)


def random_ice_string(length: int) -> str:
    return "".join(secrets.choice(_ICE_ALPHABET) for _ in range(length))


def parse_stun(data: bytes) -> stun.Message | None:
    """Parse a STUN message; None for anything that is not one (truncated, garbage, bad
    FINGERPRINT). aioice raises ValueError for most errors but struct.error, UnicodeDecodeError
    or IndexError for malformed attribute values, so catch them all: input is untrusted."""
    try:
        return stun.parse_message(data)
    except Exception:
        return None


def local_ufrag_of(message: stun.Message) -> str | None:
    """Our ufrag from a Binding request's USERNAME "<receiver ufrag>:<sender ufrag>"
    (RFC 8445 §7.2.2: the receiver's fragment comes first)."""
    if message.message_method != stun.Method.BINDING:
        return None
    if message.message_class != stun.Class.REQUEST:
        return None
    username = message.attributes.get("USERNAME")
    if not isinstance(username, str):
        return None
    local, sep, _remote = username.partition(":")
    return local if sep and local else None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one Binding request means for the transport."""

    response: bytes | None  # bytes to send back to the source address, or None (drop)
    authenticated: bool  # MESSAGE-INTEGRITY verified with our pwd
    use_candidate: bool  # the controlling agent nominated this pair (RFC 8445 §7.2.2)
    remote_ufrag: str  # sender's fragment from USERNAME ("" if absent)


_DROP = CheckResult(response=None, authenticated=False, use_candidate=False, remote_ufrag="")


class IceLiteResponder:
    """Answers connectivity checks addressed to one ufrag/pwd pair (one PeerConnection)."""

    def __init__(self, ufrag: str, pwd: str) -> None:
        self.ufrag = ufrag
        # Short-term credential: the key is our own pwd, as UTF-8 (RFC 8489 §9.2.2; RFC 8445
        # §7.2.2: the check is signed with the password of the agent receiving it).
        self._key = pwd.encode("utf8")

    def handle(self, message: stun.Message, addr: tuple[str, int]) -> CheckResult:
        if local_ufrag_of(message) != self.ufrag:
            return _DROP  # not a Binding request for us: never answer (no reflection)
        username: str = message.attributes["USERNAME"]
        remote_ufrag = username.partition(":")[2]
        if "MESSAGE-INTEGRITY" not in message.attributes:
            # RFC 8489 §9.2.4: a request without MESSAGE-INTEGRITY gets 400 Bad Request.
            return CheckResult(
                response=_error(message, 400, "Bad Request"),
                authenticated=False,
                use_candidate=False,
                remote_ufrag=remote_ufrag,
            )
        if not message.check_message_integrity(self._key):
            # RFC 8445 §7.3 / RFC 8489 §9.2.4: integrity mismatch → 401 Unauthorized, sent
            # without MESSAGE-INTEGRITY (we cannot sign for a sender who lacks our pwd).
            return CheckResult(
                response=_error(message, 401, "Unauthorized"),
                authenticated=False,
                use_candidate=False,
                remote_ufrag=remote_ufrag,
            )
        # Role conflicts (RFC 8445 §7.3.1.1) are not checked: a lite agent is always controlled,
        # and answering success to an ICE-CONTROLLED check also worked with libwebrtc
        # (docs/protocol/15-interop-findings.md).
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=message.transaction_id,
        )
        # RFC 8445 §7.3.1.2 / RFC 8489 §14.2: the response reflects the source address.
        response.attributes["XOR-MAPPED-ADDRESS"] = addr[:2]
        # add_message_integrity() also appends FINGERPRINT; libwebrtc needs both
        # (docs/protocol/15-interop-findings.md).
        response.add_message_integrity(self._key)
        return CheckResult(
            response=bytes(response),
            authenticated=True,
            use_candidate="USE-CANDIDATE" in message.attributes,
            remote_ufrag=remote_ufrag,
        )


def _error(request: stun.Message, code: int, reason: str) -> bytes:
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.ERROR,
        transaction_id=request.transaction_id,
    )
    response.attributes["ERROR-CODE"] = (code, reason)
    response.add_fingerprint()
    return bytes(response)
