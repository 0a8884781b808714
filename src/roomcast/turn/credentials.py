"""TURN credentials: the embedded server's short-lived per-participant ones, and the TURN REST
API's time-limited ones for external servers that share a secret (coturn's
`use-auth-secret`). No I/O.

Embedded (as livekit-server mints them, in our own format): the username says who and until
when, `<expiry>:<participant sid>:<api key>`; the password is an HMAC of it under that API key's
secret, so any node holding the key verifies it without state. The long-term credential key is
MD5(username ":" realm ":" password) (RFC 8489 §9.2.2). Expiry is checked only when an
allocation is made: a participant's Refresh, CreatePermission and ChannelBind keep working past
it, as in livekit-server, so a long call keeps its relay.

REST API (draft-uberti-behave-turn-rest-00 §2.2, what coturn implements): username
`<expiry>:<user>`, password base64(HMAC-SHA1(secret, username)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

REALM = "roomcast"


def embedded_credentials(
    api_key: str, secret: str, participant_sid: str, ttl: int, now: float
) -> tuple[str, str]:
    """(username, password) for one participant on the embedded TURN server, valid for `ttl`
    seconds from `now` (Unix time)."""
    username = f"{int(now) + ttl}:{participant_sid}:{api_key}"
    return username, _password(secret, username)


def rest_api_credentials(secret: str, user: str, ttl: int, now: float) -> tuple[str, str]:
    """(username, credential) for an external TURN server that shares `secret`."""
    username = f"{int(now) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """The MESSAGE-INTEGRITY key of a long-term credential (RFC 8489 §9.2.2, MD5)."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


def _password(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class Credential:
    """A verified username: whose it is (the participant, for quotas) and its integrity key."""

    username: str
    user: str
    key: bytes


class CredentialVerifier:
    """Verifies embedded-TURN usernames against the node's API keys."""

    def __init__(self, keys: Mapping[str, str], realm: str = REALM) -> None:
        self._keys = keys
        self.realm = realm

    def verify(self, username: str, now: float, *, allocating: bool) -> Credential | None:
        """The credential of `username` (its key lets MESSAGE-INTEGRITY be checked), or None
        when it is not one of ours, or (`allocating`) expired at `now` (Unix time)."""
        expiry, sep, rest = username.partition(":")
        user, sep2, api_key = rest.partition(":")
        if not (sep and sep2 and expiry.isdigit() and user):
            return None
        secret = self._keys.get(api_key)
        if secret is None:
            return None
        if allocating and int(expiry) < now:
            return None
        password = _password(secret, username)
        return Credential(username, user, long_term_key(username, self.realm, password))
