"""Offers and answers written by a client peer (RFC 3264, JSEP RFC 8829). Pure functions.

A client offers sendonly audio/video sections (the publisher PeerConnection), shaped like
Chrome's: simulcast by `a=rid`/`a=simulcast` without SSRCs (RFC 8853), a single stream with
`a=ssrc` lines. On LiveKit's `/rtc/v1` it also offers recvonly sections (`ReceiveSection`) for
what it will receive, and the data section (`DataSection`) as the SDKs do, and reads the tracks
the server sends from the answer (`remote_tracks_of`). It answers a server's offer (the
subscriber PeerConnection of `/rtc`) with recvonly sections taking the offered codecs and
extension ids as they are. Everything is BUNDLEd on one transport with one ICE ufrag/pwd and one
DTLS certificate (RFC 8843). The pieces both roles share (transport, data section, setup rule,
the remote's transport) are in media/jsep.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from roomcast.media.jsep import (
    NULL_RTCP,
    RTP_PROTO,
    SCTP_PORT,
    TransportParams,
    answer_bundle,
    answer_direction,
    answer_media_section,
    answer_setup,
    data_section,
    is_data_section,
    rejected_section,
    remote_transport,
    send_section,
    transport_section,
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
    Rid,
    SdpError,
    SessionDescription,
    Simulcast,
    SimulcastRid,
    Ssrc,
)


@dataclass(slots=True)
class LocalTrack:
    """One track a client sends: a sendonly section in the offer.

    `ssrcs` has one SSRC per simulcast layer, in the order of `rids` (low → high, like
    LiveKit's q/h/f); without `rids` there is a single SSRC, announced with `a=ssrc` lines."""

    kind: str  # "audio" | "video"
    track_id: str  # the msid track id; LiveKit matches it to AddTrackRequest.cid
    stream_id: str
    codecs: list[Codec]
    extmaps: list[Extmap] = field(default_factory=list)
    ssrcs: list[int] = field(default_factory=list)
    rids: list[str] = field(default_factory=list)
    mid: str = ""  # set by build_offer


@dataclass(slots=True)
class ReceiveSection:
    """A recvonly section a client offers for what it will receive (LiveKit's `/rtc/v1`, where
    the server answers it sendonly with a track, or inactive)."""

    kind: str  # "audio" | "video"
    codecs: list[Codec]
    extmaps: list[Extmap] = field(default_factory=list)
    mid: str = ""  # set by build_offer


@dataclass(slots=True)
class DataSection:
    """The m=application section for data channels in an offer (RFC 8841 §5: SCTP port 5000)."""

    mid: str = ""  # set by build_offer


OfferSection = LocalTrack | ReceiveSection | DataSection


@dataclass(slots=True)
class RemoteTrack:
    """One sending section of the remote's offer: what we receive on it."""

    mid: str
    kind: str
    stream_id: str | None  # msid stream id (LiveKit: "<PA_sid>|<TR_sid>")
    track_id: str | None  # msid track id (LiveKit: "<TR_sid>")
    ssrcs: list[int]
    codecs: list[Codec]
    extmaps: list[Extmap]


def build_offer(
    ice: TransportParams,
    sections: Sequence[OfferSection],
    *,
    session_id: str,
    version: int,
) -> str:
    """An offer: one sendonly section per track, one recvonly section per ReceiveSection and
    the data section, mids "0", "1", … in order (an offer that only appends keeps every earlier
    mid, as JSEP §5.2.2 requires of subsequent offers)."""
    desc = _session(session_id, version)
    for index, section in enumerate(sections):
        section.mid = str(index)
        if isinstance(section, LocalTrack):
            desc.media.append(_send_section(ice, section))
        elif isinstance(section, ReceiveSection):
            desc.media.append(_receive_section(ice, section))
        else:
            desc.media.append(data_section(ice, section.mid, "actpass"))
    desc.groups.append(Group("BUNDLE", [s.mid for s in sections]))  # RFC 8843 §7.2
    return desc.serialize()


def remote_tracks_of(answer: SessionDescription) -> list[RemoteTrack]:
    """The tracks the remote sends in its answer to our offer (sendonly sections)."""
    return [
        _remote_track(section)
        for section in answer.media
        if not section.rejected and section.direction in ("sendonly", "sendrecv")
    ]


def build_answer(
    offer: SessionDescription,
    ice: TransportParams,
    *,
    session_id: str,
    version: int,
    accept_data: bool = True,
) -> tuple[str, list[RemoteTrack]]:
    """Answer an offer: receive every audio/video section the remote sends on, with all of its
    codecs and extension ids; accept the first data section (without running SCTP on it unless
    the caller does) or reject it. Returns the SDP and the tracks we will receive."""
    # Either DTLS role suits a client; the remote's offer decides (active when it says actpass).
    setup = answer_setup(remote_transport(offer).setup, "actpass")
    desc = _session(session_id, version)
    desc.extmap_allow_mixed = offer.extmap_allow_mixed
    tracks: list[RemoteTrack] = []
    have_data = False
    for offered in offer.media:
        if offered.mid is None:
            raise SdpError(f"{offered.kind} section without a=mid (RFC 8843 §7.2)")
        if offered.rejected:
            desc.media.append(rejected_section(offered))
        elif offered.kind == "application":
            usable = accept_data and not have_data and is_data_section(offered)
            have_data = have_data or usable
            desc.media.append(
                _data_section(ice, offered, setup) if usable else rejected_section(offered)
            )
        elif offered.kind in ("audio", "video") and offered.proto.endswith("SAVPF"):
            section = _recv_section(ice, offered, setup)
            desc.media.append(section)
            if section.direction == "recvonly":
                tracks.append(_remote_track(offered))
        else:
            desc.media.append(rejected_section(offered))
    group = answer_bundle(offer, desc)
    if group is not None:
        desc.groups.append(group)
    return desc.serialize(), tracks


# --- sections ------------------------------------------------------------------------------


def _session(session_id: str, version: int) -> SessionDescription:
    return SessionDescription(
        origin=Origin(session_id=session_id, session_version=version),
        msid_semantic=MsidSemantic("WMS", ["*"]),
    )


def _send_section(ice: TransportParams, track: LocalTrack) -> MediaSection:
    msid = Msid(track.stream_id, track.track_id)
    section = send_section(ice, track.kind, track.mid, track.codecs, track.extmaps, msid)
    if track.rids:  # RFC 8851 §4 / RFC 8853 §5.1, no SSRCs in the SDP (as Chrome)
        section.rids = [Rid(rid, "send") for rid in track.rids]
        section.simulcast = Simulcast(send=[[SimulcastRid(rid)] for rid in track.rids])
    else:
        msid_value = f"{track.stream_id} {track.track_id}"
        section.ssrcs = [
            Ssrc(ssrc, [Attribute("cname", track.stream_id), Attribute("msid", msid_value)])
            for ssrc in track.ssrcs[:1]
        ]
    return section


def _receive_section(ice: TransportParams, receive: ReceiveSection) -> MediaSection:
    """A recvonly section of an offer (RFC 8829 §5.2.1: a=setup:actpass, rtcp-mux)."""
    codecs = [replace(c, rtcp_fb=list(c.rtcp_fb)) for c in receive.codecs]
    fmts = [str(c.payload_type) for c in codecs]
    section = MediaSection(receive.kind, 9, RTP_PROTO, fmts, mid=receive.mid, rtcp=NULL_RTCP)
    transport_section(section, ice, "actpass")
    section.direction = "recvonly"
    section.rtcp_mux = section.rtcp_rsize = True
    section.codecs = codecs
    section.extmaps = [replace(e) for e in receive.extmaps]
    return section


def _recv_section(ice: TransportParams, offered: MediaSection, setup: str) -> MediaSection:
    """Receive what the remote sends, with every codec and extension it offered."""
    return answer_media_section(
        offered,
        ice,
        setup,
        codecs=offered.codecs,
        extmaps=offered.extmaps,
        direction=answer_direction(offered.direction or "sendrecv", "recvonly"),
    )


def _data_section(ice: TransportParams, offered: MediaSection, setup: str) -> MediaSection:
    """Mirror the remote's SCTP port and message size limit (RFC 8841 §5, §6)."""
    return data_section(
        ice,
        offered.mid or "",
        setup,
        offered.proto,
        sctp_port=offered.sctp_port or SCTP_PORT,
        max_message_size=offered.max_message_size,
    )


def _remote_track(offered: MediaSection) -> RemoteTrack:
    msid = offered.msid
    repairs = {g.ssrcs[1] for g in offered.ssrc_groups if g.semantics == "FID" and len(g.ssrcs) > 1}
    return RemoteTrack(
        mid=offered.mid or "",
        kind=offered.kind,
        stream_id=msid.stream_id if msid is not None else None,
        track_id=msid.track_id if msid is not None else None,
        ssrcs=[s.ssrc for s in offered.ssrcs if s.ssrc not in repairs],
        codecs=list(offered.codecs),
        extmaps=list(offered.extmaps),
    )
