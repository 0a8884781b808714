"""The long-term credential mechanism of a TURN request (RFC 8489 §9.2): realm and nonce
challenges, and the check of USERNAME and MESSAGE-INTEGRITY. No I/O.

Nonces are stateless: `<expiry, hex><tag>` where the tag is an HMAC, under a key of this
process, of the expiry and the client's IP, so a nonce is bound to who it was given to and
stale after NONCE_LIFETIME (438, and the client retries with the new one, §9.2.4).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from aioice import stun

from .credentials import Credential, CredentialVerifier

NONCE_LIFETIME = 600.0  # s, coturn's default stale-nonce time
_TAG_SIZE = 16  # hex characters of the HMAC kept in the nonce


def error_response(
    request: stun.Message, code: int, reason: str, key: bytes | None = None, **attributes: object
) -> stun.Message:
    response = stun.Message(request.message_method, stun.Class.ERROR, request.transaction_id)
    response.attributes["ERROR-CODE"] = (code, reason)
    response.attributes.update(attributes)
    if key is not None:
        response.add_message_integrity(key)
    else:
        response.add_fingerprint()
    return response


class NonceIssuer:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def issue(self, client_ip: str, now: float) -> bytes:
        expiry = f"{int(now + NONCE_LIFETIME):x}"
        return (expiry + self._tag(expiry, client_ip)).encode()

    def valid(self, nonce: bytes, client_ip: str, now: float) -> bool:
        text = nonce.decode("ascii", "replace")
        expiry, tag = text[:-_TAG_SIZE], text[-_TAG_SIZE:]
        try:
            until = int(expiry, 16)
        except ValueError:
            return False
        return until >= now and hmac.compare_digest(tag, self._tag(expiry, client_ip))

    def _tag(self, expiry: str, client_ip: str) -> str:
        digest = hmac.new(self._key, f"{expiry}|{client_ip}".encode(), hashlib.sha256)
        return digest.hexdigest()[:_TAG_SIZE]


class Authenticator:
    """Checks one request's long-term credential; answers the challenge when it fails."""

    def __init__(self, verifier: CredentialVerifier, nonces: NonceIssuer | None = None) -> None:
        self.verifier = verifier
        self.nonces = nonces or NonceIssuer()

    def check(
        self, request: stun.Message, client_ip: str, now: float, wall: float, *, allocating: bool
    ) -> Credential | stun.Message:
        """The request's credential, or the error response to send (RFC 8489 §9.2.4).
        `now` is monotonic (nonces), `wall` Unix time (credential expiry)."""
        attributes = request.attributes
        if "MESSAGE-INTEGRITY" not in attributes:
            return self._challenge(request, client_ip, now, 401, "Unauthorized")
        username, realm, nonce = (attributes.get(k) for k in ("USERNAME", "REALM", "NONCE"))
        if not isinstance(username, str) or not isinstance(realm, str) or nonce is None:
            return error_response(request, 400, "Bad Request")
        if not isinstance(nonce, bytes) or not self.nonces.valid(nonce, client_ip, now):
            return self._challenge(request, client_ip, now, 438, "Stale Nonce")
        credential = None
        if realm == self.verifier.realm:
            credential = self.verifier.verify(username, wall, allocating=allocating)
        if credential is None or not request.check_message_integrity(credential.key):
            return self._challenge(request, client_ip, now, 401, "Unauthorized")
        return credential

    def _challenge(
        self, request: stun.Message, client_ip: str, now: float, code: int, reason: str
    ) -> stun.Message:
        return error_response(
            request,
            code,
            reason,
            REALM=self.verifier.realm,
            NONCE=self.nonces.issue(client_ip, now),
        )
