"""Offer/answer (RFC 3264, JSEP RFC 8829) for Roomcast's two PeerConnections. Pure functions.

- Subscriber PC: the server offers. `build_data_offer` writes the first, data-only offer in
  exactly the shape the SDKs accepted (reference 15 §5 step 2).
- Publisher PC: the client offers, we answer with `build_answer`. We are always ICE-lite and the
  DTLS server (`a=setup:passive`), every accepted section is BUNDLEd onto one transport, and
  audio/video sections are accepted only as the caller's `accept_media` policy decides (for
  example with `plan_recv_media`); everything else is rejected with port 0.
- Trickle: `candidate_init` / `parse_candidate_init` convert between candidate lines and the
  JSON of LiveKit's `TrickleRequest.candidateInit` (an RTCIceCandidateInit).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from roomcast.media.sdp import (
    DIRECTIONS,
    Codec,
    Extmap,
    Fingerprint,
    Group,
    MediaSection,
    MsidSemantic,
    Origin,
    Rid,
    SdpError,
    SessionDescription,
    Simulcast,
    SimulcastRid,
)

SCTP_PORT = 5000  # RFC 8841 §5: a=sctp-port; also what every SDK uses
MAX_MESSAGE_SIZE = 262144  # RFC 8841 §6: a=max-message-size (LiveKit's value)
DATA_CHANNEL_FMT = "webrtc-datachannel"  # RFC 8841 §4.1
DATA_CHANNEL_PROTOS = ("UDP/DTLS/SCTP", "TCP/DTLS/SCTP")  # RFC 8841 §4.1
NULL_CONNECTION = "IN IP4 0.0.0.0"  # JSEP §5.2.1: the dummy c= line of a trickle-ICE agent
NULL_RTCP = "9 IN IP4 0.0.0.0"  # JSEP §5.2.1: a=rtcp with the discard port
MAX_CANDIDATE_INIT_SIZE = 4096  # a candidateInit JSON is ~250 bytes


@dataclass(slots=True)
class IceParams:
    """Our side of the transport, the same in every section we write (one ICE-lite agent, one
    DTLS certificate per PeerConnection)."""

    ufrag: str
    pwd: str
    fingerprint: str  # "sha-256 AB:CD:..." (RFC 8122 §5)
    candidates: list[str] = field(default_factory=list)  # "candidate:1 1 udp ..." (no "a=")

    def __post_init__(self) -> None:
        if len(self.fingerprint.split()) != 2:
            raise ValueError(f"fingerprint must be '<hash-func> <hex pairs>': {self.fingerprint}")


@dataclass(slots=True)
class MediaAnswerPlan:
    """How to answer one offered audio/video section. Everything must come from the offer:
    payload types, codec names and clock rates, extension ids (RFC 3264 §6.1, RFC 8285 §6);
    fmtp and rtcp-fb may be narrowed or munged (e.g. opus usedtx=1)."""

    codecs: list[Codec]  # in the answer's order of preference; the first is the one to send
    extmaps: list[Extmap] = field(default_factory=list)
    direction: str = "recvonly"  # what we want; intersected with what the offer allows
    simulcast: bool = True  # mirror a=rid send / a=simulcast send as recv (RFC 8853 §5.3)


AcceptMedia = Callable[[MediaSection], MediaAnswerPlan | None]


def new_session_id() -> str:
    """RFC 8866 §5.2 / JSEP §5.2.1: a random 64-bit number with the top bit clear."""
    return str(secrets.randbits(62) + 1)


def build_data_offer(ice: IceParams, version: int, *, session_id: str | None = None) -> str:
    """The server's first subscriber offer: one m=application section (reference 15 §5)."""
    desc = SessionDescription(
        origin=Origin(session_id=session_id or new_session_id(), session_version=version),
        groups=[Group("BUNDLE", ["0"])],  # RFC 8843 §7.2
        msid_semantic=MsidSemantic("WMS", ["*"]),
        ice_lite=True,  # RFC 8839 §5.3
    )
    desc.media.append(_data_section(ice, "0", "actpass", DATA_CHANNEL_PROTOS[0]))
    return desc.serialize()


def build_answer(
    offer: SessionDescription,
    ice: IceParams,
    accept_media: AcceptMedia | None = None,
    *,
    session_id: str | None = None,
    version: int = 1,
) -> str:
    """Answer a client's (publisher) offer: the same mids in the same order (RFC 3264 §6); the
    first data-channel section accepted, audio/video as `accept_media` decides, the rest
    rejected with port 0. Raises SdpError when nothing can be accepted."""
    bundle = offer.bundle_group()
    answer = SessionDescription(
        origin=Origin(session_id=session_id or new_session_id(), session_version=version),
        extmap_allow_mixed=offer.extmap_allow_mixed,  # RFC 8285 §6: mirror if offered
        ice_lite=True,
    )
    have_data = False
    for index, offered in enumerate(offer.media):
        if offered.mid is None:
            raise SdpError(f"media section {index} ({offered.kind}) has no a=mid (RFC 8843 §7.2)")
        section: MediaSection | None = None
        usable = not offered.rejected and (bundle is None or offered.mid in bundle.mids)
        if usable and offered.kind == "application" and not have_data and _is_data(offered):
            section = _data_section(ice, offered.mid, _answer_setup(offer, offered), offered.proto)
            have_data = True
        elif usable and offered.kind in ("audio", "video") and accept_media is not None:
            plan = accept_media(offered) if _is_dtls_srtp(offered) else None
            if plan is not None:
                section = _media_section(offer, offered, plan, ice)
        answer.media.append(section or _rejected_section(offered))
    accepted = [m.mid for m in answer.media if m.port != 0 and m.mid is not None]
    if not accepted:
        raise SdpError("the offer has no media section Roomcast can accept (need data channels)")
    if bundle is not None:  # RFC 8843 §7.3: only accepted mids, in the offer's group order
        answer.groups.append(Group("BUNDLE", [mid for mid in bundle.mids if mid in accepted]))
    elif len(accepted) > 1:
        raise SdpError("the offer has no a=group:BUNDLE; Roomcast needs every section bundled")
    return answer.serialize()


def plan_recv_media(
    offered: MediaSection,
    *,
    codecs: Sequence[str],
    header_extensions: Sequence[str] = (),
    rtcp_feedback: Sequence[str] = (),
    rtx: bool = True,
    simulcast: bool = True,
) -> MediaAnswerPlan | None:
    """A recvonly plan for a section the client sends on, or None (reject it).

    `codecs` are encoding names in our order of preference ("red", "opus"; "VP8", "H264"); the
    first one offered wins, with the first offered variant of it (the client's preference, e.g.
    among H264 profiles). RED brings the codec(s) its fmtp names (RFC 2198 §5), `rtx` adds each
    chosen codec's RTX (RFC 4588 §8.6). rtcp-fb values not in `rtcp_feedback` are dropped;
    extmaps are those whose URI is in `header_extensions`, with the offered ids.
    """
    if offered.rejected or (offered.direction or "sendrecv") not in ("sendonly", "sendrecv"):
        return None
    wanted = [name.lower() for name in codecs]
    candidates = [c for c in offered.codecs if c.name.lower() in wanted and _complete(offered, c)]
    if not candidates:
        return None
    chosen = [min(candidates, key=lambda c: wanted.index(c.name.lower()))]
    if chosen[0].name.lower() == "red":
        for pt in _red_primaries(chosen[0]):
            primary = offered.codec(pt)
            if primary is not None and primary not in chosen:
                chosen.append(primary)
    if rtx:
        primaries = {c.payload_type for c in chosen}
        rtx_codecs = [c for c in offered.codecs if c.name.lower() == "rtx"]
        chosen += [c for c in rtx_codecs if c.associated_payload_type in primaries]
    allowed_fb = set(rtcp_feedback)
    return MediaAnswerPlan(
        codecs=[replace(c, rtcp_fb=[fb for fb in c.rtcp_fb if fb in allowed_fb]) for c in chosen],
        extmaps=[replace(e) for e in offered.extmaps if e.uri in header_extensions],
        simulcast=simulcast,
    )


def candidate_init(candidate_line: str, mid: str, mline_index: int) -> str:
    """JSON for `TrickleRequest.candidateInit` (RTCIceCandidateInit, W3C webrtc §4.8.1.1).
    `candidate_line` may be "a=candidate:...", "candidate:..." or "" (end of candidates)."""
    candidate = candidate_line.strip().removeprefix("a=")
    if candidate and not candidate.startswith("candidate:"):
        candidate = f"candidate:{candidate}"
    init = {"candidate": candidate, "sdpMid": mid, "sdpMLineIndex": mline_index}
    return json.dumps(init, separators=(",", ":"))


def parse_candidate_init(text: str) -> tuple[str, str | None, int | None]:
    """(candidate, sdpMid, sdpMLineIndex) from a client's candidateInit JSON. The candidate is
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


def application_mid(desc: SessionDescription) -> tuple[str, int] | None:
    """mid and m-line index of the (first live) m=application section: where the server's own
    candidates go when trickled for this PeerConnection (reference 15 §2)."""
    for index, section in enumerate(desc.media):
        if section.kind == "application" and not section.rejected and section.mid is not None:
            return section.mid, index
    return None


# --- sections ------------------------------------------------------------------------------------


def _transport(section: MediaSection, ice: IceParams, setup: str) -> MediaSection:
    algorithm, value = ice.fingerprint.split()
    section.connection = NULL_CONNECTION
    section.ice_ufrag, section.ice_pwd, section.setup = ice.ufrag, ice.pwd, setup
    section.fingerprints = [Fingerprint(algorithm, value)]
    section.candidates = [_candidate_attribute(c) for c in ice.candidates]
    section.end_of_candidates = True  # RFC 8840 §8.2: ICE-lite gathers nothing more
    return section


def _data_section(ice: IceParams, mid: str, setup: str, proto: str) -> MediaSection:
    section = MediaSection("application", 9, proto, [DATA_CHANNEL_FMT], mid=mid)
    section.sctp_port, section.max_message_size = SCTP_PORT, MAX_MESSAGE_SIZE
    return _transport(section, ice, setup)


def _media_section(
    offer: SessionDescription, offered: MediaSection, plan: MediaAnswerPlan, ice: IceParams
) -> MediaSection:
    _check_plan(offered, plan)
    direction = _answer_direction(
        offered.direction or offer.direction or "sendrecv", plan.direction
    )
    fmts = [str(c.payload_type) for c in plan.codecs]
    section = MediaSection(offered.kind, 9, offered.proto, fmts, mid=offered.mid, rtcp=NULL_RTCP)
    _transport(section, ice, _answer_setup(offer, offered))
    section.extmaps = [replace(e, direction=_reverse(e.direction)) for e in plan.extmaps]
    section.extmap_allow_mixed = offered.extmap_allow_mixed
    section.direction = direction
    section.rtcp_mux, section.rtcp_rsize = True, offered.rtcp_rsize
    section.codecs = [replace(c, rtcp_fb=list(c.rtcp_fb)) for c in plan.codecs]
    if plan.simulcast and direction in ("recvonly", "sendrecv") and offered.simulcast is not None:
        _mirror_simulcast(offered, offered.simulcast, section)
    return section


def _rejected_section(offered: MediaSection) -> MediaSection:
    """RFC 3264 §6 / RFC 8843 §7.3.3: port 0, one format, the mid kept."""
    section = MediaSection(offered.kind, 0, offered.proto, offered.fmts[:1], mid=offered.mid)
    section.connection = NULL_CONNECTION
    if offered.kind != "application":
        section.direction = "inactive"
    return section


def _mirror_simulcast(offered: MediaSection, simulcast: Simulcast, section: MediaSection) -> None:
    """RFC 8853 §5.3.2 / RFC 8851 §6.2: the answerer reverses send rids to recv; a rid whose
    pt= restriction names no payload type we answered is dropped."""
    answered = {c.payload_type for c in section.codecs}
    kept: list[Rid] = []
    for rid in offered.rids:
        if rid.direction != "send":
            continue
        pts = rid.payload_types()
        if pts is not None and not answered.intersection(pts):
            continue
        kept.append(Rid(rid.id, "recv", _restrict_pts(rid.params, answered)))
    kept_ids = {rid.id for rid in kept}
    streams = [[r for r in alts if r.id in kept_ids] for alts in simulcast.send]
    streams = [[SimulcastRid(r.id, r.paused) for r in alts] for alts in streams if alts]
    if streams:
        section.simulcast = Simulcast(recv=streams)
        listed = {r.id for alts in streams for r in alts}
        section.rids = [rid for rid in kept if rid.id in listed]


def _restrict_pts(params: str, answered: set[int]) -> str:
    items = []
    for item in params.split(";"):
        key, _, value = item.strip().partition("=")
        if key == "pt":
            value = ",".join(p for p in value.split(",") if _is_number(p) and int(p) in answered)
        if key:
            items.append(f"{key}={value}" if value or "=" in item else key)
    return ";".join(items)


def _check_plan(offered: MediaSection, plan: MediaAnswerPlan) -> None:
    """A plan is server policy, so a bad one is our bug: ValueError, not SdpError."""
    if not plan.codecs:
        raise ValueError(f"answer plan for mid {offered.mid} has no codecs")
    if plan.direction not in DIRECTIONS:
        raise ValueError(f"answer plan direction {plan.direction!r} is not one of {DIRECTIONS}")
    for codec in plan.codecs:
        original = offered.codec(codec.payload_type)
        if original is None or (original.name.lower(), original.clock_rate) != (
            codec.name.lower(),
            codec.clock_rate,
        ):
            raise ValueError(
                f"codec {codec.payload_type} {codec.name} not offered in {offered.mid}"
            )
    offered_ids = {(e.id, e.uri) for e in offered.extmaps}
    for extmap in plan.extmaps:
        if (extmap.id, extmap.uri) not in offered_ids:
            raise ValueError(f"extmap {extmap.id} {extmap.uri} not offered in {offered.mid}")


# --- helpers -------------------------------------------------------------------------------------


def _is_data(section: MediaSection) -> bool:
    return section.proto in DATA_CHANNEL_PROTOS and DATA_CHANNEL_FMT in section.fmts


def _is_dtls_srtp(section: MediaSection) -> bool:
    """DTLS-SRTP profiles (RFC 5764 §8) with RTCP multiplexed (we have one port per PC)."""
    return section.proto in ("UDP/TLS/RTP/SAVPF", "UDP/TLS/RTP/SAVP") and section.rtcp_mux


def _answer_setup(offer: SessionDescription, offered: MediaSection) -> str:
    """We are always the DTLS server (reference 15 §2), so we answer passive (RFC 5763 §5;
    RFC 4145 §4.1: an offer without a=setup means active)."""
    role = offered.setup or offer.setup or "active"
    if role not in ("actpass", "active"):
        raise SdpError(
            f"mid {offered.mid} offers a=setup:{role}; Roomcast can only be the DTLS server, so "
            "the offer must say actpass or active (RFC 5763 §5)"
        )
    return "passive"


def _answer_direction(offered: str, wanted: str) -> str:
    """RFC 3264 §6.1: we may receive only what the offerer sends, and vice versa."""
    receive = offered in ("sendonly", "sendrecv") and wanted in ("recvonly", "sendrecv")
    send = offered in ("recvonly", "sendrecv") and wanted in ("sendonly", "sendrecv")
    return {(True, True): "sendrecv", (True, False): "recvonly", (False, True): "sendonly"}.get(
        (receive, send), "inactive"
    )


def _reverse(direction: str | None) -> str | None:
    """RFC 8285 §7: an extmap direction in an answer is the offer's, seen from our side."""
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(direction or "", direction)


def _red_primaries(red: Codec) -> list[int]:
    """Payload types named by RED's fmtp "111/111" (RFC 2198 §5; RFC 2198bis)."""
    return [int(pt) for pt in (red.fmtp or "").strip().split("/") if _is_number(pt)]


def _complete(offered: MediaSection, codec: Codec) -> bool:
    """False for RED whose primary codec is not offered (nothing to put inside it)."""
    if codec.name.lower() != "red":
        return True
    return any(offered.codec(pt) is not None for pt in _red_primaries(codec))


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) < 10


def _candidate_attribute(candidate: str) -> str:
    candidate = candidate.strip().removeprefix("a=")
    return candidate if candidate.startswith("candidate:") else f"candidate:{candidate}"
