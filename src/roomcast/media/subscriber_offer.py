"""The server's offers on a subscriber PeerConnection: data channels plus one sendonly section
per subscribed track (docs/protocol/04-subscribing.md §4.2, docs/protocol/16-media-interop.md §4).

Sections are never reordered: the application section is mid "0", each subscription appends a
section, and an ended subscription keeps its place with port 0 (RFC 3264 §8.2, JSEP §5.2.2).
The pieces both roles share (transport, data section, send section) are in media/jsep.py.

Congestion control needs two things of every section: transport-wide sequence numbers with
their feedback (the extension and `a=rtcp-fb:* transport-cc`, draft-holmer-rmcat-transport-wide-
cc-extensions-01 §4), and for video an RTX stream (RFC 4588 §8.6: an `rtx` payload type per
codec, `apt` naming it, and its SSRC in an `a=ssrc-group:FID`) for retransmissions and probes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from roomcast.media.jsep import (
    RTP_PROTO,
    TransportParams,
    data_section,
    live_mids,
    new_session_id,
    rejected_section,
    send_section,
)
from roomcast.media.rtp import URI_DEPENDENCY_DESCRIPTOR, URI_TRANSPORT_CC
from roomcast.media.sdp import (
    Attribute,
    Codec,
    Extmap,
    Group,
    MediaSection,
    Msid,
    MsidSemantic,
    Origin,
    SessionDescription,
    Ssrc,
    SsrcGroup,
)

DATA_MID = "0"
TRANSPORT_CC_ID = 3
DEPENDENCY_DESCRIPTOR_ID = 12
_NOT_REPAIRED = ("rtx", "red", "ulpfec", "flexfec-03")  # codecs that get no RTX of their own


@dataclass(slots=True)
class OutgoingTrack:
    """One transceiver on the subscriber PC, carrying one published track."""

    mid: str
    kind: str  # "audio" | "video"
    stream_id: str  # "<PA_sid>|<TR_sid>": the SDKs parse it (docs/protocol/04-subscribing.md §4.2)
    track_id: str  # "<TR_sid>"
    ssrc: int
    cname: str
    codecs: list[Codec]
    extmaps: list[Extmap] = field(default_factory=list)
    active: bool = True  # False once unsubscribed: the section stays, with port 0
    rtx_ssrc: int = 0  # video: the SSRC of its RTX stream (RFC 4588), 0 for none

    @property
    def msid(self) -> str:
        return f"{self.stream_id} {self.track_id}"


def build_data_offer(ice: TransportParams, version: int, *, session_id: str | None = None) -> str:
    """A data-only first offer: one m=application section, in exactly the shape the SDKs
    accepted (docs/protocol/15-interop-findings.md §5 step 2)."""
    desc = SessionDescription(
        origin=Origin(session_id=session_id or new_session_id(), session_version=version),
        groups=[Group("BUNDLE", [DATA_MID])],  # RFC 8843 §7.2
        msid_semantic=MsidSemantic("WMS", ["*"]),
        ice_lite=True,  # RFC 8839 §5.3
    )
    desc.media.append(data_section(ice, DATA_MID, "actpass"))  # RFC 8829 §5.2.1: offers actpass
    return desc.serialize()


def build_subscriber_offer(
    ice: TransportParams, session_id: str, version: int, tracks: list[OutgoingTrack]
) -> str:
    desc = SessionDescription(
        origin=Origin(session_id=session_id, session_version=version),
        msid_semantic=MsidSemantic("WMS", ["*"]),
        extmap_allow_mixed=True,  # RFC 8285 §6
        ice_lite=True,  # RFC 8839 §5.3
    )
    desc.media.append(data_section(ice, DATA_MID, "actpass"))  # RFC 8829 §5.2.1: offers actpass
    for track in tracks:
        desc.media.append(_track_section(track, ice) if track.active else _stopped(track))
    desc.groups.append(Group("BUNDLE", live_mids(desc)))  # RFC 8843 §7.2
    return desc.serialize()


def _track_section(track: OutgoingTrack, ice: TransportParams) -> MediaSection:
    msid = Msid(track.stream_id, track.track_id)
    extmaps = track.extmaps or default_extmaps(track.kind, track.codecs)
    codecs = with_congestion_feedback(track.codecs)
    if track.rtx_ssrc:
        codecs = with_rtx(codecs)
    section = send_section(ice, track.kind, track.mid, codecs, extmaps, msid)
    section.extmap_allow_mixed = True
    # a=ssrc with cname and msid (RFC 5576 §4.1): libwebrtc maps the SSRC to the track at once.
    attributes = [Attribute("cname", track.cname), Attribute("msid", track.msid)]
    section.ssrcs = [Ssrc(track.ssrc, attributes)]
    if track.rtx_ssrc and any(c.name.lower() == "rtx" for c in codecs):
        section.ssrc_groups = [SsrcGroup("FID", [track.ssrc, track.rtx_ssrc])]
        section.ssrcs.append(Ssrc(track.rtx_ssrc, list(attributes)))
    return section


def default_extmaps(kind: str, codecs: list[Codec]) -> list[Extmap]:
    """Header extensions offered with a track: transport-wide sequence numbers (the
    subscriber's feedback on them drives its stream allocation), and AV1's Dependency
    Descriptor, which the plane rewrites for each subscriber's layers (AV1 RTP specification,
    appendix A). One id for each in every section: a BUNDLE group is one RTP session (RFC 8843
    §9.1)."""
    extmaps = [Extmap(TRANSPORT_CC_ID, URI_TRANSPORT_CC)]
    if kind == "video" and any(c.name.lower() == "av1" for c in codecs):
        extmaps.append(Extmap(DEPENDENCY_DESCRIPTOR_ID, URI_DEPENDENCY_DESCRIPTOR))
    return extmaps


def with_congestion_feedback(codecs: list[Codec]) -> list[Codec]:
    """`transport-cc` feedback on every codec (audio too: every packet counts)."""
    return [
        Codec(c.payload_type, c.name, c.clock_rate, c.channels, c.fmtp,
              [*c.rtcp_fb, *(["transport-cc"] if "transport-cc" not in c.rtcp_fb else [])])
        for c in codecs
    ]  # fmt: skip


def with_rtx(codecs: list[Codec]) -> list[Codec]:
    """An RTX payload type for each codec that can be repaired (RFC 4588 §8.6), right after
    it: the next payload type when free (libwebrtc's habit, so bundled sections agree), else
    the lowest free dynamic one."""
    used = {c.payload_type for c in codecs}
    out: list[Codec] = []
    for codec in codecs:
        out.append(codec)
        if codec.name.lower() in _NOT_REPAIRED:
            continue
        free = [pt for pt in (codec.payload_type + 1, *range(96, 128)) if pt < 128]
        rtx_pt = next((pt for pt in free if pt not in used), None)
        if rtx_pt is None:
            continue
        used.add(rtx_pt)
        out.append(Codec(rtx_pt, "rtx", codec.clock_rate, fmtp=f"apt={codec.payload_type}"))
    return out


def rtx_payload_types(codecs: list[Codec]) -> dict[int, int]:
    """An answered section's RTX payload types, by the payload type each repairs (apt)."""
    return {
        apt: codec.payload_type
        for codec in codecs
        if codec.name.lower() == "rtx" and (apt := codec.associated_payload_type) is not None
    }


def _stopped(track: OutgoingTrack) -> MediaSection:
    """An ended subscription: its section rejected in place (RFC 3264 §8.2)."""
    fmts = [str(track.codecs[0].payload_type)]
    return rejected_section(MediaSection(track.kind, 0, RTP_PROTO, fmts, mid=track.mid))
