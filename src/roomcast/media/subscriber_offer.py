"""The server's offers on a subscriber PeerConnection: data channels plus one sendonly section
per subscribed track (reference 04 §4.2, reference 16 §4).

Sections are never reordered: the application section is mid "0", each subscription appends a
section, and an ended subscription keeps its place with port 0 (RFC 3264 §8.2, JSEP §5.2.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from roomcast.media.negotiation import (
    DATA_CHANNEL_PROTOS,
    NULL_CONNECTION,
    NULL_RTCP,
    IceParams,
    _data_section,
    _transport,
)
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

RTP_PROTO = "UDP/TLS/RTP/SAVPF"  # JSEP §5.1.2
DATA_MID = "0"


@dataclass(slots=True)
class OutgoingTrack:
    """One transceiver on the subscriber PC, carrying one published track."""

    mid: str
    kind: str  # "audio" | "video"
    stream_id: str  # "<PA_sid>|<TR_sid>": the SDKs parse it (reference 04 §4.2)
    track_id: str  # "<TR_sid>"
    ssrc: int
    cname: str
    codecs: list[Codec]
    extmaps: list[Extmap] = field(default_factory=list)
    active: bool = True  # False once unsubscribed: the section stays, with port 0

    @property
    def msid(self) -> str:
        return f"{self.stream_id} {self.track_id}"


def build_subscriber_offer(
    ice: IceParams, session_id: str, version: int, tracks: list[OutgoingTrack]
) -> str:
    desc = SessionDescription(
        origin=Origin(session_id=session_id, session_version=version),
        msid_semantic=MsidSemantic("WMS", ["*"]),
        extmap_allow_mixed=True,  # RFC 8285 §6
        ice_lite=True,  # RFC 8839 §5.3
    )
    desc.media.append(_data_section(ice, DATA_MID, "actpass", DATA_CHANNEL_PROTOS[0]))
    for track in tracks:
        desc.media.append(_track_section(track, ice) if track.active else _stopped(track))
    bundled = [m.mid for m in desc.media if m.port != 0 and m.mid is not None]
    desc.groups.append(Group("BUNDLE", bundled))  # RFC 8843 §7.2
    return desc.serialize()


def _track_section(track: OutgoingTrack, ice: IceParams) -> MediaSection:
    fmts = [str(c.payload_type) for c in track.codecs]
    section = MediaSection(track.kind, 9, RTP_PROTO, fmts, mid=track.mid, rtcp=NULL_RTCP)
    _transport(section, ice, "actpass")
    section.direction = "sendonly"
    section.msids = [Msid(track.stream_id, track.track_id)]  # RFC 8830 §2
    section.rtcp_mux = section.rtcp_rsize = True  # RFC 5761 §5.1.1, RFC 5506 §5
    section.codecs = list(track.codecs)
    section.extmaps = list(track.extmaps)
    section.extmap_allow_mixed = True
    # a=ssrc with cname and msid (RFC 5576 §4.1): libwebrtc maps the SSRC to the track at once.
    section.ssrcs = [
        Ssrc(
            track.ssrc,
            [Attribute("cname", track.cname), Attribute("msid", track.msid)],
        )
    ]
    return section


def _stopped(track: OutgoingTrack) -> MediaSection:
    section = MediaSection(
        track.kind, 0, RTP_PROTO, [str(track.codecs[0].payload_type)], mid=track.mid
    )
    section.connection = NULL_CONNECTION
    section.direction = "inactive"
    return section
