"""The server's answer to a publisher's offer (RFC 3264, JSEP RFC 8829). Pure functions.

On the publisher PeerConnection the client offers and `build_answer` answers. We are always
ICE-lite and the DTLS server (`a=setup:passive`), every accepted section is BUNDLEd onto one
transport, and audio/video sections are accepted only as the caller's `accept_media` policy
decides (for example with `plan_recv_media`); everything else is rejected with port 0. The
pieces both roles share (transport, data section, setup rule) are in media/jsep.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from roomcast.media.jsep import (
    DTLS_SRTP_PROTOS,
    TransportParams,
    answer_bundle,
    answer_direction,
    answer_media_section,
    answer_setup,
    data_section,
    is_data_section,
    live_mids,
    new_session_id,
    rejected_section,
)
from roomcast.media.sdp import (
    DIRECTIONS,
    Codec,
    Extmap,
    MediaSection,
    Msid,
    MsidSemantic,
    Origin,
    Rid,
    SdpError,
    SessionDescription,
    Simulcast,
    SimulcastRid,
    Ssrc,
    SsrcGroup,
)


@dataclass(slots=True)
class MediaAnswerPlan:
    """How to answer one offered audio/video section. Everything must come from the offer:
    payload types, codec names and clock rates, extension ids (RFC 3264 §6.1, RFC 8285 §6);
    fmtp and rtcp-fb may be narrowed or munged (e.g. opus usedtx=1)."""

    codecs: list[Codec]  # in the answer's order of preference; the first is the one to send
    extmaps: list[Extmap] = field(default_factory=list)
    direction: str = "recvonly"  # what we want; intersected with what the offer allows
    simulcast: bool = True  # mirror a=rid send / a=simulcast send as recv (RFC 8853 §5.3)
    # What we send on a section the client receives on (direction "sendonly"): its a=msid
    # (RFC 8830 §2) and a=ssrc lines (RFC 5576 §4.1).
    msid: Msid | None = None
    ssrcs: list[Ssrc] = field(default_factory=list)
    ssrc_groups: list[SsrcGroup] = field(default_factory=list)  # FID: RTX (RFC 4588 §8.6)


AcceptMedia = Callable[[MediaSection], MediaAnswerPlan | None]


def build_answer(
    offer: SessionDescription,
    ice: TransportParams,
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
        ice_lite=True,  # RFC 8839 §5.3
    )
    have_data = False
    for index, offered in enumerate(offer.media):
        if offered.mid is None:
            raise SdpError(f"media section {index} ({offered.kind}) has no a=mid (RFC 8843 §7.2)")
        section: MediaSection | None = None
        usable = not offered.rejected and (bundle is None or offered.mid in bundle.mids)
        if usable and offered.kind == "application" and not have_data and is_data_section(offered):
            setup = _answer_setup(offer, offered)
            section = data_section(ice, offered.mid, setup, offered.proto)
            have_data = True
        elif usable and offered.kind in ("audio", "video") and accept_media is not None:
            plan = accept_media(offered) if _is_dtls_srtp(offered) else None
            if plan is not None:
                section = _media_section(offer, offered, plan, ice)
        answer.media.append(section or rejected_section(offered))
    if any(section.msids for section in answer.media):
        answer.msid_semantic = MsidSemantic("WMS", ["*"])  # RFC 8830 §2: we send streams
    if not live_mids(answer):
        raise SdpError("the offer has no media section Roomcast can accept (need data channels)")
    group = answer_bundle(offer, answer)
    if group is not None:
        answer.groups.append(group)
    elif len(live_mids(answer)) > 1:
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


# --- sections ------------------------------------------------------------------------------------


def _media_section(
    offer: SessionDescription, offered: MediaSection, plan: MediaAnswerPlan, ice: TransportParams
) -> MediaSection:
    _check_plan(offered, plan)
    direction = answer_direction(offered.direction or offer.direction or "sendrecv", plan.direction)
    section = answer_media_section(
        offered,
        ice,
        _answer_setup(offer, offered),
        codecs=plan.codecs,
        extmaps=plan.extmaps,
        direction=direction,
    )
    if plan.simulcast and direction in ("recvonly", "sendrecv") and offered.simulcast is not None:
        _mirror_simulcast(offered, offered.simulcast, section)
    if plan.msid is not None and direction in ("sendonly", "sendrecv"):
        section.msids = [plan.msid]
        section.ssrcs = [replace(s, attributes=list(s.attributes)) for s in plan.ssrcs]
        section.ssrc_groups = [replace(g, ssrcs=list(g.ssrcs)) for g in plan.ssrc_groups]
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


def _is_dtls_srtp(section: MediaSection) -> bool:
    """DTLS-SRTP profiles (RFC 5764 §9) with RTCP multiplexed (we have one port per PC)."""
    return section.proto in DTLS_SRTP_PROTOS and section.rtcp_mux


def _answer_setup(offer: SessionDescription, offered: MediaSection) -> str:
    """We are always the DTLS server (docs/protocol/15-interop-findings.md §2), so we answer
    passive."""
    return answer_setup(offered.setup or offer.setup, "passive")


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
