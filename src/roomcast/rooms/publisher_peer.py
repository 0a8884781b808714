"""The publisher PeerConnection of one participant: the client offers, the server answers.

Sending audio/video sections are matched to AddTrackRequests (msid track id == cid, else the
first pending track of the same kind: docs/protocol/03-publishing.md §3.2) and accepted recvonly;
everything else the client offers (the 3+3 recvonly sections left over from the v1 attempt,
docs/protocol/15-interop-findings.md) is rejected. A section that stops sending unpublishes its
track.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from livekit.protocol import models, rtc

from roomcast.media.jsep import TransportParams, application_mid, candidate_init
from roomcast.media.publisher_answer import MediaAnswerPlan, build_answer, plan_recv_media
from roomcast.media.rtp import URI_DEPENDENCY_DESCRIPTOR
from roomcast.media.sdp import MediaSection, SessionDescription
from roomcast.media.transport import PeerTransport
from roomcast.rooms.participant import Participant

log = logging.getLogger(__name__)

AUDIO_CODECS = ("red", "opus")
VIDEO_CODECS = ("vp8", "h264", "vp9", "av1")
HEADER_EXTENSIONS = (
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
)
# AV1's spatial and temporal layers are selected from its Dependency Descriptor (AV1 RTP
# specification, appendix A); VP9's from its payload descriptor, so only AV1 asks for it.
DEPENDENCY_DESCRIPTOR_CODECS = ("av1",)
# goog-remb: Chrome only sends its top simulcast layer once it gets a bandwidth estimate.
VIDEO_FEEDBACK = ("nack", "nack pli", "ccm fir", "goog-remb")
AUDIO_FEEDBACK = ("nack",)
_KIND = {"audio": models.TrackType.AUDIO, "video": models.TrackType.VIDEO}


@dataclass(slots=True)
class MatchedSection:
    """An accepted sending section, and the pending track (cid) it carries."""

    section: MediaSection
    plan: MediaAnswerPlan
    cid: str | None  # None when no AddTrackRequest matches (yet)


def plan_for(section: MediaSection, preferred: str | None = None) -> MediaAnswerPlan | None:
    """Receive the codec the track was published with (`preferred`, e.g. "vp9": browsers offer
    every codec, VP8 first, and leave the choice to the server), else the client's first offered
    codec among those we forward."""
    supported = AUDIO_CODECS if section.kind == "audio" else VIDEO_CODECS
    offered = [c.name.lower() for c in section.codecs if c.name.lower() in supported]
    if section.kind == "audio" and "red" in offered and "opus" in offered:
        preference = ["red", "opus"]  # RED carries opus; forwarded as received
    elif preferred is not None and preferred in offered and preferred != "red":
        preference = [preferred]
    else:
        preference = [name for name in offered if name != "red"][:1]
    if not preference:
        return None
    extensions: tuple[str, ...] = HEADER_EXTENSIONS
    if preference[0] in DEPENDENCY_DESCRIPTOR_CODECS:
        extensions = (*extensions, URI_DEPENDENCY_DESCRIPTOR)
    return plan_recv_media(
        section,
        codecs=preference,
        header_extensions=extensions,
        rtcp_feedback=VIDEO_FEEDBACK if section.kind == "video" else AUDIO_FEEDBACK,
        rtx=False,  # without RTX, NACKed packets come back on the media SSRC
        simulcast=True,
    )


def _inactive_plan(section: MediaSection) -> MediaAnswerPlan | None:
    """Answer a section the client does not send on: bundled, inactive, one codec."""
    real = [
        c for c in section.codecs if c.name.lower() not in ("rtx", "red", "ulpfec", "flexfec-03")
    ]
    if not real or section.kind not in ("audio", "video"):
        return None
    return MediaAnswerPlan(codecs=[replace(real[0], rtcp_fb=[])], direction="inactive")


def _sending(section: MediaSection) -> bool:
    return not section.rejected and (section.direction or "sendrecv") in ("sendonly", "sendrecv")


class PublisherPeer:
    """Implements `TrackPublisher` (rooms/contracts.py) on the publisher PeerConnection."""

    def __init__(
        self,
        transport: PeerTransport,
        participant: Participant,
        send: Callable[[rtc.SignalResponse], None],
    ) -> None:
        self.transport = transport
        self._participant = participant
        self._send = send
        self.published: dict[str, str] = {}  # mid -> track sid
        # Plans of sections accepted before: a section once accepted stays accepted (inactive
        # when the client stops sending), since libwebrtc cannot un-bundle it (RFC 8843 §7.3.3).
        self._plans: dict[str, MediaAnswerPlan] = {}
        self._candidates_sent = False

    def send_rtcp(self, packet: bytes) -> None:
        self.transport.send_rtcp(packet)

    def _ice(self) -> TransportParams:
        t = self.transport
        return TransportParams(t.ice_ufrag, t.ice_pwd, t.fingerprint, t.local_candidates())

    def answer(
        self, offer: SessionDescription, offer_id: int
    ) -> tuple[list[MatchedSection], list[str]]:
        """Answer the offer; return newly matched sections and mids that stopped sending.

        Raises SdpError when the offer cannot be answered.
        """
        pending = dict(self._participant.pending_tracks)
        matched: list[MatchedSection] = []

        def accept(section: MediaSection) -> MediaAnswerPlan | None:
            if section.mid is None:
                return None
            if not _sending(section):
                # Keep not-sending sections bundled (inactive) rather than rejected: when a
                # rejected m-line is recycled for a new track, libwebrtc moves the BUNDLE tag to
                # a new transport and tears down the one carrying our data channels.
                if section.rejected:
                    return None
                return self._plans.get(section.mid) or _inactive_plan(section)
            published = self.published.get(section.mid)
            cid = None if published is not None else self._match(section, pending)
            plan = plan_for(section, self._track_codec(published, pending.get(cid or "")))
            if plan is None:
                return None
            self._plans[section.mid] = plan
            if published is None:
                if cid is not None:
                    pending.pop(cid)
                matched.append(MatchedSection(section, plan, cid))
            return plan

        sdp = build_answer(offer, self._ice(), accept)
        # m-lines never leave a description (JSEP recycles them): plans of mids the offer no
        # longer has are dead, so the table stays as large as one offer (sdp caps that).
        offered = {section.mid for section in offer.media}
        for mid in [mid for mid in self._plans if mid not in offered]:
            del self._plans[mid]
        self._send(
            rtc.SignalResponse(answer=rtc.SessionDescription(type="answer", sdp=sdp, id=offer_id))
        )
        self._trickle_candidates(offer)
        sending = {m.section.mid for m in matched} | {
            s.mid for s in offer.media if s.mid in self.published and _sending(s)
        }
        stopped = [mid for mid in self.published if mid not in sending]
        return matched, stopped

    def _track_codec(
        self, published_sid: str | None, pending: models.TrackInfo | None
    ) -> str | None:
        """The codec name ("vp9") a section's track was published with: the one it already
        uses, or the first of its AddTrackRequest's simulcast codecs."""
        info = self._participant.tracks.get(published_sid) if published_sid else pending
        if info is None:
            return None
        if published_sid:
            mime = info.mime_type
        else:  # empty when the client named no codec (no simulcast_codecs)
            mime = info.codecs[0].mime_type if info.codecs else ""
        return mime.partition("/")[2].lower() or None

    @staticmethod
    def _match(section: MediaSection, pending: dict[str, models.TrackInfo]) -> str | None:
        """The pending track this section carries: the one its msid names, else the first
        of the same kind. Never a track of the other kind: an audio grant (e.g. microphone
        only) must not carry video."""
        kind = _KIND.get(section.kind)
        msid = section.msid
        if msid is not None and msid.track_id is not None:
            named = pending.get(msid.track_id)
            if named is not None and named.type == kind:
                return msid.track_id
        for cid, info in pending.items():
            if info.type == kind:
                return cid
        return None

    def _trickle_candidates(self, offer: SessionDescription) -> None:
        if self._candidates_sent:
            return
        located = application_mid(offer) or next(
            ((m.mid, i) for i, m in enumerate(offer.media) if m.mid and not m.rejected), None
        )
        if located is None:
            return
        self._candidates_sent = True
        mid, index = located
        candidates = self.transport.local_candidates()
        for i, candidate in enumerate(candidates):
            self._send(
                rtc.SignalResponse(
                    trickle=rtc.TrickleRequest(
                        candidateInit=candidate_init(candidate, mid, index),
                        target=rtc.SignalTarget.PUBLISHER,
                        final=i == len(candidates) - 1,  # as livekit: the last one
                    )
                )
            )
