"""The ICE side of one server transport, without I/O: an ICE-lite agent (RFC 8445 §2.5).

It answers the checks addressed to its credentials (`stun.IceLiteResponder`), picks the address
to send to, and carries ICE restarts: new local credentials, with the old ones still answered
until the first check with the new ones arrives, so consent checks in flight are not lost
(RFC 8445 §9, RFC 8839 §4.4.1.1.1). Consent freshness (RFC 7675) is the owner's to report to
its `SecureChannel` on every authenticated check.
"""

from __future__ import annotations

from dataclasses import dataclass

from aioice import stun

from .stun import IceLiteResponder, local_ufrag_of

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class IceCheck:
    """What one Binding request means for the transport."""

    response: bytes | None  # send back to the source address, or None (drop silently)
    authenticated: bool  # MESSAGE-INTEGRITY verified with our (current or previous) pwd
    retired_ufrag: str | None = None  # an ICE restart completed: stop routing this ufrag


_UNAUTHENTICATED = IceCheck(response=None, authenticated=False)


class IceLiteAgent:
    """Credentials, restarts and the remote address of one PeerConnection's transport."""

    def __init__(self, ufrag: str, pwd: str) -> None:
        self.pwd = pwd
        self.remote_ufrag: str | None = None
        # Where we send: the first checked address until the controlling agent nominates a
        # pair (RFC 8445 §8.1.1: USE-CANDIDATE), then the nominated one.
        self.remote_address: Address | None = None
        self._responder = IceLiteResponder(ufrag, pwd)
        self._previous: IceLiteResponder | None = None  # until the restart completes
        self._restarted_since_remote = False

    @property
    def ufrag(self) -> str:
        return self._responder.ufrag

    @property
    def previous_ufrag(self) -> str | None:
        """The ufrag before an ICE restart, still answered until a check uses the new one."""
        return None if self._previous is None else self._previous.ufrag

    def set_remote_credentials(self, ufrag: str, pwd: str) -> bool:
        """The remote's credentials (a lite agent checks nothing with them). New ones are an
        ICE restart, which the answerer must follow with new credentials of its own (RFC 8839
        §4.4.1.1.1): True when the caller must `restart(…, answering=True)` now. False when
        our own restart already changed them, or nothing changed."""
        restarted = self.remote_ufrag is not None and ufrag != self.remote_ufrag
        self.remote_ufrag = ufrag
        must_restart = restarted and not self._restarted_since_remote
        self._restarted_since_remote = False
        return must_restart

    def restart(self, ufrag: str, pwd: str, *, answering: bool = False) -> str | None:
        """Take new local credentials (RFC 8445 §9). `answering`: this follows the remote's
        restart; otherwise ours comes first and the remote's new credentials will not need
        another. Returns the ufrag of an earlier, uncompleted restart, to stop routing now."""
        retired = self.previous_ufrag
        self._previous = self._responder
        self._responder = IceLiteResponder(ufrag, pwd)
        self.pwd = pwd
        self._restarted_since_remote = not answering
        return retired

    def handle(self, message: stun.Message, addr: Address) -> IceCheck:
        responder, previous = self._responder, self._previous
        if previous is not None and local_ufrag_of(message) == previous.ufrag:
            responder = previous  # a check still using the credentials before the restart
        result = responder.handle(message, addr)
        if not result.authenticated:
            return IceCheck(result.response, False) if result.response else _UNAUTHENTICATED
        retired = None
        if previous is not None and responder is self._responder:
            self._previous = None  # the restart is done: drop the old credentials
            retired = previous.ufrag
        if self.remote_address is None or result.use_candidate:
            self.remote_address = addr
        return IceCheck(result.response, True, retired)
