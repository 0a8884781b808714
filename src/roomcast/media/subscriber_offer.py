"""The server's offers on a subscriber PeerConnection: data channels plus one sendonly section
per subscribed track (docs/protocol/04-subscribing.md §4.2, docs/protocol/16-media-interop.md §4).

Sections are never reordered: the application section is mid "0", each subscription appends a
section, and an ended subscription keeps its place with port 0 (RFC 3264 §8.2, JSEP §5.2.2).
The pieces both roles share (transport, data section, send section) are in media/jsep.py.
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
from roomcast.media.rtp import URI_DEPENDENCY_DESCRIPTOR
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
)

DATA_MID = "0"
DEPENDENCY_DESCRIPTOR_ID = 12


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
    section = send_section(ice, track.kind, track.mid, track.codecs, extmaps, msid)
    section.extmap_allow_mixed = True
    # a=ssrc with cname and msid (RFC 5576 §4.1): libwebrtc maps the SSRC to the track at once.
    section.ssrcs = [
        Ssrc(
            track.ssrc,
            [Attribute("cname", track.cname), Attribute("msid", track.msid)],
        )
    ]
    return section


def default_extmaps(kind: str, codecs: list[Codec]) -> list[Extmap]:
    """Header extensions offered with a track: AV1's Dependency Descriptor, which the plane
    rewrites for each subscriber's layers (AV1 RTP specification, appendix A). One id for it in
    every section: a BUNDLE group is one RTP session (RFC 8843 §9.1)."""
    if kind == "video" and any(c.name.lower() == "av1" for c in codecs):
        return [Extmap(DEPENDENCY_DESCRIPTOR_ID, URI_DEPENDENCY_DESCRIPTOR)]
    return []


def _stopped(track: OutgoingTrack) -> MediaSection:
    """An ended subscription: its section rejected in place (RFC 3264 §8.2)."""
    fmts = [str(track.codecs[0].payload_type)]
    return rejected_section(MediaSection(track.kind, 0, RTP_PROTO, fmts, mid=track.mid))
