"""Offer/answer pieces both roles share (JSEP, RFC 8829; offer/answer, RFC 3264). Pure functions.

Every Roomcast PeerConnection, server or client, runs one BUNDLEd transport (RFC 8843): the
same ICE credentials, DTLS fingerprint and candidates (`TransportParams`) in every section.
Data channels are SCTP over DTLS (RFC 8841), and a=setup picks the DTLS roles (RFC 5763 §5,
RFC 8842 §5.1). The role policies build their descriptions from these pieces:

- media/publisher_answer.py: the server answers a publisher's offer, as DTLS server.
- media/subscriber_offer.py: the server offers a subscriber its data and track sections.
- client/sdp.py: a client offers and answers in the shape Chrome writes.

Trickle: `candidate_init` / `parse_candidate_init` convert between candidate lines and the JSON
of LiveKit's `TrickleRequest.candidateInit` (an RTCIceCandidateInit).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from roomcast.media.sdp import (
    Codec,
    Extmap,
    Fingerprint,
    Group,
    MediaSection,
    Msid,
    SdpError,
    SessionDescription,
)

RTP_PROTO = "UDP/TLS/RTP/SAVPF"  # RFC 8829 §5.1.2: what offers use for audio/video
DATA_PROTOS = ("UDP/DTLS/SCTP", "TCP/DTLS/SCTP")  # RFC 8841 §4.1
DATA_CHANNEL_FMT = "webrtc-datachannel"  # RFC 8841 §4.1
SCTP_PORT = 5000  # RFC 8841 §5: a=sctp-port; also what every SDK uses
MAX_MESSAGE_SIZE = 262144  # RFC 8841 §6: a=max-message-size (LiveKit's value)
NULL_CONNECTION = "IN IP4 0.0.0.0"  # RFC 8829 §5.2.1: the dummy c= line of a trickle-ICE agent
NULL_RTCP = "9 IN IP4 0.0.0.0"  # RFC 8829 §5.2.1: a=rtcp with the discard port
MAX_CANDIDATE_INIT_SIZE = 4096  # a candidateInit JSON is ~250 bytes

DTLS_ROLES = ("actpass", "active", "passive")  # what an endpoint can be: either, client, server
DTLS_SRTP_PROTOS = ("UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP")  # RFC 5764 §9


@dataclass(slots=True)
class TransportParams:
    """One side of a PeerConnection's transport, the same in every bundled section (one ICE
    agent, one DTLS certificate; RFC 8843 §7.1.3).

    Ours are written into sections by `transport_section`, with the a=setup of that description;
    the peer's are read back by `remote_transport`, which also fills `setup` and `ice_lite`."""

    ufrag: str
    pwd: str
    fingerprint: str  # "sha-256 AB:CD:..." (RFC 8122 §5)
    candidates: list[str] = field(default_factory=list)  # "candidate:1 1 udp ..." (no "a=")
    setup: str | None = None  # the peer's a=setup; ours is chosen per description
    ice_lite: bool = False  # RFC 8839 §5.3

    def __post_init__(self) -> None:
        if len(self.fingerprint.split()) != 2:
            raise ValueError(f"fingerprint must be '<hash-func> <hex pairs>': {self.fingerprint}")


def new_session_id() -> str:
    """RFC 8866 §5.2 / RFC 8829 §5.2.1: a random 64-bit number with the top bit clear."""
    return str(secrets.randbits(62) + 1)


# --- transport -----------------------------------------------------------------------------------


def transport_section(section: MediaSection, params: TransportParams, setup: str) -> MediaSection:
    """Write our transport into `section`: BUNDLE repeats it in every section (RFC 8843 §7.1.3),
    behind the dummy c= line (RFC 8829 §5.2.1). Returns the section."""
    algorithm, value = params.fingerprint.split()
    section.connection = NULL_CONNECTION
    section.ice_ufrag, section.ice_pwd, section.setup = params.ufrag, params.pwd, setup
    section.fingerprints = [Fingerprint(algorithm, value)]
    section.candidates = [candidate_attribute(c) for c in params.candidates]
    section.end_of_candidates = True  # RFC 8840 §8.2: every candidate is already listed
    return section


def remote_transport(desc: SessionDescription) -> TransportParams:
    """The peer's ICE credentials, DTLS fingerprint, a=setup and candidates, from its first live
    section (BUNDLE makes them the same in each, RFC 8843 §7.1.3). Prefers sha-256 among several
    fingerprints (any listed hash identifies the certificate, RFC 8122 §5); without a=setup the
    peer is active (RFC 4145 §4.1). Raises SdpError if credentials or fingerprint are missing."""
    section = next((m for m in desc.media if not m.rejected), None)
    if section is None:
        raise SdpError("no accepted media section")
    ufrag = section.ice_ufrag or desc.ice_ufrag
    pwd = section.ice_pwd or desc.ice_pwd
    if not ufrag or not pwd:
        raise SdpError("no a=ice-ufrag / a=ice-pwd (RFC 8839 §5.4)")
    fingerprints = desc.fingerprints_for(section)
    if not fingerprints:
        raise SdpError("no a=fingerprint for the DTLS transport (RFC 8122 §5)")
    chosen = next((f for f in fingerprints if f.algorithm.lower() == "sha-256"), fingerprints[0])
    return TransportParams(
        ufrag,
        pwd,
        f"{chosen.algorithm} {chosen.value}",
        [c for m in desc.media if not m.rejected for c in m.candidates],
        setup=section.setup or desc.setup or "active",
        ice_lite=desc.ice_lite,
    )


def answer_setup(offered: str | None, our_role: str) -> str:
    """The answer's a=setup for an offer's (RFC 5763 §5, RFC 4145 §4.1).

    `offered` None means active (RFC 4145 §4.1). `our_role` is the DTLS role this endpoint can
    take: "passive" (server only), "active" (client only) or "actpass" (either; then active,
    which RFC 8829 §5.3.1 recommends so the handshake starts with the answer). Raises SdpError
    when the offer leaves no role we can take."""
    if our_role not in DTLS_ROLES:
        raise ValueError(f"our DTLS role must be one of {DTLS_ROLES}, not {our_role!r}")
    offered = offered or "active"
    if offered == "actpass":
        return "passive" if our_role == "passive" else "active"
    ours = {"active": "passive", "passive": "active"}.get(offered)
    if ours is not None and our_role in (ours, "actpass"):
        return ours
    if ours is not None:  # the offer took the role we can only take ourselves
        only, needed = ("server", "active") if our_role == "passive" else ("client", "passive")
        raise SdpError(
            f"the offer says a=setup:{offered}, but this endpoint can only be the DTLS {only}: "
            f"the offer must say actpass or {needed} (RFC 5763 §5)"
        )
    raise SdpError(f"cannot answer a=setup:{offered} (RFC 4145 §4)")


# --- sections ------------------------------------------------------------------------------------


def is_data_section(section: MediaSection) -> bool:
    """An SCTP-over-DTLS data channel section (RFC 8841 §4.1)."""
    return section.proto in DATA_PROTOS and DATA_CHANNEL_FMT in section.fmts


def data_section(
    params: TransportParams,
    mid: str,
    setup: str,
    proto: str = DATA_PROTOS[0],
    *,
    sctp_port: int = SCTP_PORT,
    max_message_size: int | None = MAX_MESSAGE_SIZE,
) -> MediaSection:
    """m=application for data channels (RFC 8841 §4.1, §5, §6), on our transport."""
    section = MediaSection("application", 9, proto, [DATA_CHANNEL_FMT], mid=mid)
    section.sctp_port, section.max_message_size = sctp_port, max_message_size
    return transport_section(section, params, setup)


def send_section(
    params: TransportParams,
    kind: str,
    mid: str,
    codecs: Iterable[Codec],
    extmaps: Iterable[Extmap],
    msid: Msid,
) -> MediaSection:
    """A sendonly audio/video section of an offer: a=setup:actpass (RFC 8829 §5.2.1), rtcp-mux
    and rtcp-rsize (RFC 5761 §5.1.1, RFC 5506 §5), one a=msid (RFC 8830 §2). The role adds
    its SSRCs or simulcast rids."""
    copies = [replace(c, rtcp_fb=list(c.rtcp_fb)) for c in codecs]
    fmts = [str(c.payload_type) for c in copies]
    section = MediaSection(kind, 9, RTP_PROTO, fmts, mid=mid, rtcp=NULL_RTCP)
    transport_section(section, params, "actpass")
    section.direction = "sendonly"
    section.msids = [msid]
    section.rtcp_mux = section.rtcp_rsize = True
    section.codecs = copies
    section.extmaps = [replace(e) for e in extmaps]
    return section


def answer_media_section(
    offered: MediaSection,
    params: TransportParams,
    setup: str,
    *,
    codecs: Iterable[Codec],
    extmaps: Iterable[Extmap],
    direction: str,
) -> MediaSection:
    """An audio/video section answering `offered`: its kind, proto and mid (RFC 3264 §6.1,
    RFC 8829 §5.1.2: the answer's profile matches the offer's), our transport, extmap directions
    seen from our side (RFC 8285 §7), rtcp-mux always and rtcp-rsize if offered. `codecs` and
    `extmaps` must come from the offer; `direction` from `answer_direction`."""
    copies = [replace(c, rtcp_fb=list(c.rtcp_fb)) for c in codecs]
    fmts = [str(c.payload_type) for c in copies] or offered.fmts[:1]
    section = MediaSection(offered.kind, 9, offered.proto, fmts, mid=offered.mid, rtcp=NULL_RTCP)
    transport_section(section, params, setup)
    section.extmaps = [replace(e, direction=reverse_direction(e.direction)) for e in extmaps]
    section.extmap_allow_mixed = offered.extmap_allow_mixed
    section.direction = direction
    section.rtcp_mux, section.rtcp_rsize = True, offered.rtcp_rsize
    section.codecs = copies
    return section


def rejected_section(offered: MediaSection) -> MediaSection:
    """RFC 3264 §6 / RFC 8843 §7.3.3: port 0, one format, the mid kept."""
    section = MediaSection(offered.kind, 0, offered.proto, offered.fmts[:1], mid=offered.mid)
    section.connection = NULL_CONNECTION
    if offered.kind != "application":
        section.direction = "inactive"
    return section


def answer_direction(offered: str, wanted: str) -> str:
    """RFC 3264 §6.1: we may receive only what the offerer sends, and vice versa."""
    receive = offered in ("sendonly", "sendrecv") and wanted in ("recvonly", "sendrecv")
    send = offered in ("recvonly", "sendrecv") and wanted in ("sendonly", "sendrecv")
    return {(True, True): "sendrecv", (True, False): "recvonly", (False, True): "sendonly"}.get(
        (receive, send), "inactive"
    )


def reverse_direction(direction: str | None) -> str | None:
    """RFC 8285 §7: an extmap direction in an answer is the offer's, seen from our side."""
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction or "", direction)


def live_mids(desc: SessionDescription) -> list[str]:
    """mids of the sections not rejected (port != 0), in m= line order."""
    return [m.mid for m in desc.media if m.port != 0 and m.mid is not None]


def answer_bundle(offer: SessionDescription, answer: SessionDescription) -> Group | None:
    """The answer's BUNDLE group: the accepted mids of the offer's group, in its order
    (RFC 8843 §7.3); None when the offer has no group."""
    bundle = offer.bundle_group()
    if bundle is None:
        return None
    accepted = set(live_mids(answer))
    return Group("BUNDLE", [mid for mid in bundle.mids if mid in accepted])


# --- candidates ----------------------------------------------------------------------------------


def candidate_attribute(candidate: str) -> str:
    """The attribute value `candidate:...` from `a=candidate:...`, `candidate:...` or a bare
    candidate (RFC 8839 §5.1)."""
    candidate = candidate.strip().removeprefix("a=")
    return candidate if candidate.startswith("candidate:") else f"candidate:{candidate}"


def application_mid(desc: SessionDescription) -> tuple[str, int] | None:
    """mid and m-line index of the (first live) m=application section: where the server's own
    candidates go when trickled for this PeerConnection
    (docs/protocol/15-interop-findings.md §2)."""
    for index, section in enumerate(desc.media):
        if section.kind == "application" and not section.rejected and section.mid is not None:
            return section.mid, index
    return None


def candidate_init(candidate_line: str, mid: str, mline_index: int) -> str:
    """JSON for `TrickleRequest.candidateInit` (RTCIceCandidateInit, W3C webrtc §4.8.1.1).
    `candidate_line` may be "a=candidate:...", "candidate:..." or "" (end of candidates)."""
    candidate = candidate_line.strip().removeprefix("a=")
    if candidate and not candidate.startswith("candidate:"):
        candidate = f"candidate:{candidate}"
    init = {"candidate": candidate, "sdpMid": mid, "sdpMLineIndex": mline_index}
    return json.dumps(init, separators=(",", ":"))


def parse_candidate_init(text: str) -> tuple[str, str | None, int | None]:
    """(candidate, sdpMid, sdpMLineIndex) from a candidateInit JSON. The candidate is
    "candidate:..." or "" (end of candidates, RFC 8838 §4). Raises SdpError on anything else."""
    if len(text) > MAX_CANDIDATE_INIT_SIZE:
        raise SdpError(f"candidateInit is larger than {MAX_CANDIDATE_INIT_SIZE} bytes")
    try:
        init = json.loads(text)
    except (ValueError, RecursionError):
        raise SdpError("candidateInit is not JSON") from None
    if not isinstance(init, dict):
        raise SdpError("candidateInit must be a JSON object")
    candidate, mid, index = init.get("candidate"), init.get("sdpMid"), init.get("sdpMLineIndex")
    if not isinstance(candidate, str):
        raise SdpError("candidateInit.candidate must be a string")
    candidate = candidate.strip().removeprefix("a=")
    if candidate:
        fields = candidate.removeprefix("candidate:").split()
        # RFC 8839 §5.1: foundation component transport priority address port "typ" type ...
        if not candidate.startswith("candidate:") or len(fields) < 8 or fields[6] != "typ":
            raise SdpError(f"candidateInit.candidate is not an ICE candidate: {candidate[:60]!r}")
    if mid is not None and not isinstance(mid, str):
        raise SdpError("candidateInit.sdpMid must be a string or null")
    if index is not None and (type(index) is not int or not 0 <= index < 1024):
        raise SdpError("candidateInit.sdpMLineIndex must be a small non-negative integer or null")
    return candidate, mid, index
