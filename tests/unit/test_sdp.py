"""SDP parser/writer fed with what the SDKs sent (docs/protocol/15-interop-findings.md,
docs/protocol/16-media-interop.md), plus broken input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomcast.media.sdp import (
    MAX_SDP_SIZE,
    Attribute,
    Codec,
    Extmap,
    Fingerprint,
    Msid,
    MsidSemantic,
    Rid,
    SdpError,
    SessionDescription,
    SimulcastRid,
    SsrcGroup,
)

FP_CHROME = (
    "1F:7C:68:A8:EB:15:62:9A:20:7E:BF:97:E9:D2:51:67:"
    "CA:C7:9D:97:37:34:EF:29:95:FE:41:CE:18:70:66:48"
)
FP_RUST = (
    "4D:BD:AC:C9:CA:E3:8F:D3:E2:43:F1:72:E4:2D:05:35:"
    "18:BC:4D:BE:94:D3:5C:2F:2C:03:8C:31:D5:16:02:A5"
)

CHROME_VIDEO_FMTS = (
    "96 97 102 103 104 105 106 107 108 109 127 125 39 40 45 46 98 99 100 101 112 113 116 117 118"
)

# Chrome 156 + livekit-client 2.23.0, first publisher offer: camera with simulcast q/h/f, VP8
# preferred, no data section yet, no a=ssrc lines (docs/protocol/16-media-interop.md §7).
CHROME_SIMULCAST_OFFER = f"""v=0
o=- 7032891522462318264 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic:  WMS
m=video 9 UDP/TLS/RTP/SAVPF {CHROME_VIDEO_FMTS}
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:9xQ+
a=ice-pwd:Cg3ZkJmHtN0lHc4P2m9qVxfW
a=ice-options:trickle
a=fingerprint:sha-256 {FP_CHROME}
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 urn:3gpp:video-orientation
a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type
a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing
a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space
a=extmap:9 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=extmap:13 https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension
a=extmap:14 http://www.webrtc.org/experiments/rtp-hdrext/video-layers-allocation00
a=sendonly
a=msid:e9f4d4cd-6180-4b7f-bfdc-ffe651c48c3d af343d97-2c08-493c-b21c-3a72efca5df4
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=fmtp:96 x-google-start-bitrate=1000
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=rtcp-fb:102 goog-remb
a=rtcp-fb:102 transport-cc
a=rtcp-fb:102 ccm fir
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:104 H264/90000
a=rtcp-fb:104 goog-remb
a=rtcp-fb:104 transport-cc
a=rtcp-fb:104 ccm fir
a=rtcp-fb:104 nack
a=rtcp-fb:104 nack pli
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f
a=rtpmap:105 rtx/90000
a=fmtp:105 apt=104
a=rtpmap:106 H264/90000
a=rtcp-fb:106 goog-remb
a=rtcp-fb:106 transport-cc
a=rtcp-fb:106 ccm fir
a=rtcp-fb:106 nack
a=rtcp-fb:106 nack pli
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:107 rtx/90000
a=fmtp:107 apt=106
a=rtpmap:108 H264/90000
a=rtcp-fb:108 goog-remb
a=rtcp-fb:108 transport-cc
a=rtcp-fb:108 ccm fir
a=rtcp-fb:108 nack
a=rtcp-fb:108 nack pli
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f
a=rtpmap:109 rtx/90000
a=fmtp:109 apt=108
a=rtpmap:127 H264/90000
a=rtcp-fb:127 goog-remb
a=rtcp-fb:127 transport-cc
a=rtcp-fb:127 ccm fir
a=rtcp-fb:127 nack
a=rtcp-fb:127 nack pli
a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f
a=rtpmap:125 rtx/90000
a=fmtp:125 apt=127
a=rtpmap:39 H264/90000
a=rtcp-fb:39 goog-remb
a=rtcp-fb:39 transport-cc
a=rtcp-fb:39 ccm fir
a=rtcp-fb:39 nack
a=rtcp-fb:39 nack pli
a=fmtp:39 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f
a=rtpmap:40 rtx/90000
a=fmtp:40 apt=39
a=rtpmap:45 AV1/90000
a=rtcp-fb:45 goog-remb
a=rtcp-fb:45 transport-cc
a=rtcp-fb:45 ccm fir
a=rtcp-fb:45 nack
a=rtcp-fb:45 nack pli
a=fmtp:45 level-idx=5;profile=0;tier=0
a=rtpmap:46 rtx/90000
a=fmtp:46 apt=45
a=rtpmap:98 VP9/90000
a=rtcp-fb:98 goog-remb
a=rtcp-fb:98 transport-cc
a=rtcp-fb:98 ccm fir
a=rtcp-fb:98 nack
a=rtcp-fb:98 nack pli
a=fmtp:98 profile-id=0
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=rtpmap:100 VP9/90000
a=rtcp-fb:100 goog-remb
a=rtcp-fb:100 transport-cc
a=rtcp-fb:100 ccm fir
a=rtcp-fb:100 nack
a=rtcp-fb:100 nack pli
a=fmtp:100 profile-id=2
a=rtpmap:101 rtx/90000
a=fmtp:101 apt=100
a=rtpmap:112 H264/90000
a=rtcp-fb:112 goog-remb
a=rtcp-fb:112 transport-cc
a=rtcp-fb:112 ccm fir
a=rtcp-fb:112 nack
a=rtcp-fb:112 nack pli
a=fmtp:112 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f
a=rtpmap:113 rtx/90000
a=fmtp:113 apt=112
a=rtpmap:116 red/90000
a=rtpmap:117 rtx/90000
a=fmtp:117 apt=116
a=rtpmap:118 ulpfec/90000
a=rtcp-xr:rcvr-rtt=all
a=rid:q send
a=rid:h send
a=rid:f send
a=simulcast:send q;h;f
"""

# Chrome's answer to our data-only subscriber offer (docs/protocol/15-interop-findings.md §2/§3):
# two spaces after "msid-semantic:", trickle, setup active, no candidates.
CHROME_DATA_ANSWER = f"""v=0
o=- 2243116862367436511 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=msid-semantic:  WMS
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=ice-ufrag:Jv2h
a=ice-pwd:2FQ1sVwH3ok1m4H2o9sE0xYz
a=ice-options:trickle
a=fingerprint:sha-256 {FP_CHROME}
a=setup:active
a=mid:0
a=sctp-port:5000
a=max-message-size:262144
"""


def _rust_audio_recvonly(mid: int) -> str:
    return f"""m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Wq3b
a=ice-pwd:0Zb1yK8wqS3T6f4mN2xGhU7e
a=ice-options:trickle goog-sped-v1
a=fingerprint:sha-256 {FP_RUST}
a=setup:actpass
a=mid:{mid}
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=recvonly
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
"""


def _rust_video_recvonly(mid: int) -> str:
    fb = "".join(
        f"a=rtcp-fb:{pt} goog-remb\na=rtcp-fb:{pt} transport-cc\na=rtcp-fb:{pt} ccm fir\n"
        f"a=rtcp-fb:{pt} nack\na=rtcp-fb:{pt} nack pli\n"
        for pt in ("{pt}",)
    )
    codecs = [
        (96, "VP8/90000", None),
        (97, "rtx/90000", "apt=96"),
        (98, "VP9/90000", "profile-id=0"),
        (99, "rtx/90000", "apt=98"),
        (100, "VP9/90000", "profile-id=2"),
        (101, "rtx/90000", "apt=100"),
        (35, "AV1/90000", "level-idx=5;profile=0;tier=0"),
        (36, "rtx/90000", "apt=35"),
        (
            102,
            "H264/90000",
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
        ),
        (103, "rtx/90000", "apt=102"),
        (116, "red/90000", None),
        (117, "rtx/90000", "apt=116"),
        (118, "ulpfec/90000", None),
    ]
    lines = ""
    for pt, rtpmap, fmtp in codecs:
        lines += f"a=rtpmap:{pt} {rtpmap}\n"
        if rtpmap.split("/")[0] in ("VP8", "VP9", "AV1", "H264"):
            lines += fb.replace("{pt}", str(pt))
        if fmtp:
            lines += f"a=fmtp:{pt} {fmtp}\n"
    return f"""m=video 9 UDP/TLS/RTP/SAVPF {" ".join(str(c[0]) for c in codecs)}
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Wq3b
a=ice-pwd:0Zb1yK8wqS3T6f4mN2xGhU7e
a=ice-options:trickle goog-sped-v1
a=fingerprint:sha-256 {FP_RUST}
a=setup:actpass
a=mid:{mid}
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:13 urn:3gpp:video-orientation
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type
a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing
a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=recvonly
a=rtcp-mux
a=rtcp-rsize
{lines}"""


# livekit 1.2.1 (Rust SDK / libwebrtc) publisher offer after the /rtc/v1 404 and the v0 retry:
# 3 recvonly audio + 3 recvonly video sections left from the single-PC layout, then the data
# section; mids 7..13, a=sctp-init, trickle goog-sped-v1 (docs/protocol/15-interop-findings.md §2).
RUST_FALLBACK_OFFER = (
    """v=0
o=- 5820369131458624719 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 7 8 9 10 11 12 13
a=extmap-allow-mixed
a=msid-semantic: WMS
"""
    + "".join(_rust_audio_recvonly(mid) for mid in (7, 8, 9))
    + "".join(_rust_video_recvonly(mid) for mid in (10, 11, 12))
    + f"""m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=ice-ufrag:Wq3b
a=ice-pwd:0Zb1yK8wqS3T6f4mN2xGhU7e
a=ice-options:trickle goog-sped-v1
a=fingerprint:sha-256 {FP_RUST}
a=setup:actpass
a=mid:13
a=sctp-port:5000
a=max-message-size:262144
a=sctp-init:Fe4UTQ9v9OiIJIIvhVsA2wGdZSli6l0Xz57i3hBWe27J2nH/8E9TkPyKUfn0E+iV
"""
)

# Older Chrome / plan-B style simulcast: SSRCs and groups in the SDP, session-level ICE.
SSRC_SIMULCAST_OFFER = f"""v=0
o=mozilla...THIS_IS_SDPARTA-99.0 6127893561524838484 0 IN IP4 0.0.0.0
s=-
t=0 0
a=ice-ufrag:ab12
a=ice-pwd:0123456789abcdef0123456789
a=fingerprint:sha-256 {FP_CHROME}
a=group:BUNDLE a v
a=msid-semantic:WMS *
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=sendrecv
a=mid:a
a=setup:actpass
a=rtcp-mux
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:111 opus/48000/2
a=rtcp-fb:* nack
a=ssrc:1001 cname:xyz
a=ssrc:1001 msid:stream0 audio0
m=video 9 UDP/TLS/RTP/SAVPF 96 97
c=IN IP4 0.0.0.0
b=AS:2000
a=sendonly
a=mid:v
a=setup:actpass
a=rtcp-mux
a=rtpmap:96 VP8/90000
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=x-google-flag:conference
a=ssrc-group:SIM 2001 2002 2003
a=ssrc-group:FID 2001 3001
a=ssrc:2001 cname:xyz
a=ssrc:2001 msid:stream0 video0
a=ssrc:3001 cname:xyz
a=ssrc:2002 cname:xyz
a=ssrc:2003 cname:xyz
a=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host generation 0
a=end-of-candidates
"""

FIXTURES = {
    "chrome-simulcast": CHROME_SIMULCAST_OFFER,
    "chrome-data-answer": CHROME_DATA_ANSWER,
    "rust-fallback": RUST_FALLBACK_OFFER,
    "ssrc-simulcast": SSRC_SIMULCAST_OFFER,
}


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def parse(text: str) -> SessionDescription:
    return SessionDescription.parse(crlf(text))


# --- what the parser extracts ------------------------------------------------------------------


def test_chrome_simulcast_offer() -> None:
    desc = parse(CHROME_SIMULCAST_OFFER)
    assert desc.origin.session_id == "7032891522462318264" and desc.origin.session_version == 2
    assert desc.bundle_group() is not None and desc.bundle_group().mids == ["0"]  # type: ignore[union-attr]
    assert desc.extmap_allow_mixed
    assert desc.msid_semantic == MsidSemantic("WMS", [])
    (video,) = desc.media
    assert (video.kind, video.port, video.proto, video.mid) == (
        "video",
        9,
        "UDP/TLS/RTP/SAVPF",
        "0",
    )
    assert video.direction == "sendonly" and video.rtcp_mux and video.rtcp_rsize
    assert video.ice_ufrag == "9xQ+" and video.ice_options == ["trickle"]
    assert video.fingerprints == [Fingerprint("sha-256", FP_CHROME)]
    assert video.setup == "actpass" and video.rtcp == "9 IN IP4 0.0.0.0"
    assert video.msid == Msid(
        "e9f4d4cd-6180-4b7f-bfdc-ffe651c48c3d", "af343d97-2c08-493c-b21c-3a72efca5df4"
    )
    assert [c.payload_type for c in video.codecs] == [int(f) for f in video.fmts]
    assert video.codecs[0] == Codec(
        96,
        "VP8",
        90000,
        None,
        "x-google-start-bitrate=1000",
        ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"],
    )
    rtx = video.codec(97)
    assert rtx is not None and rtx.associated_payload_type == 96 and rtx.rtcp_fb == []
    h264 = video.codec(102)
    assert h264 is not None and h264.parameters()["profile-level-id"] == "42001f"
    assert video.codec(45) is not None and video.codec(45).name == "AV1"  # type: ignore[union-attr]
    assert Extmap(10, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id") in video.extmaps
    assert [e.id for e in video.extmaps] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14]
    assert video.rids == [Rid("q", "send"), Rid("h", "send"), Rid("f", "send")]
    assert video.simulcast is not None and video.simulcast.rids("send") == ["q", "h", "f"]
    assert video.simulcast.send == [[SimulcastRid("q")], [SimulcastRid("h")], [SimulcastRid("f")]]
    assert video.ssrcs == [] and video.candidates == []
    assert video.attributes == [Attribute("rtcp-xr", "rcvr-rtt=all")]


def test_rust_fallback_offer() -> None:
    desc = parse(RUST_FALLBACK_OFFER)
    assert [m.mid for m in desc.media] == ["7", "8", "9", "10", "11", "12", "13"]
    assert [m.kind for m in desc.media] == ["audio"] * 3 + ["video"] * 3 + ["application"]
    assert [m.direction for m in desc.media[:6]] == ["recvonly"] * 6
    assert desc.msid_semantic == MsidSemantic("WMS", [])
    assert all(m.ice_options == ["trickle", "goog-sped-v1"] for m in desc.media)
    audio = desc.media[0]
    assert [c.name for c in audio.codecs][:2] == ["opus", "red"]
    assert audio.codec(111) == Codec(
        111, "opus", 48000, 2, "minptime=10;useinbandfec=1", ["transport-cc"]
    )
    assert audio.codec(63) is not None and audio.codec(63).fmtp == "111/111"  # type: ignore[union-attr]
    assert audio.msid is None
    data = desc.media[6]
    assert (data.proto, data.fmts) == ("UDP/DTLS/SCTP", ["webrtc-datachannel"])
    assert data.sctp_port == 5000 and data.max_message_size == 262144
    assert data.attributes == [
        Attribute("sctp-init", "Fe4UTQ9v9OiIJIIvhVsA2wGdZSli6l0Xz57i3hBWe27J2nH/8E9TkPyKUfn0E+iV")
    ]
    assert desc.section("13") is data
    assert desc.fingerprints_for(data) == [Fingerprint("sha-256", FP_RUST)]


def test_chrome_two_space_msid_semantic_is_written_back_normally() -> None:
    desc = parse(CHROME_DATA_ANSWER)
    assert desc.msid_semantic == MsidSemantic("WMS", [])
    assert "a=msid-semantic: WMS\r\n" in desc.serialize()
    assert desc.media[0].setup == "active" and desc.media[0].candidates == []


def test_ssrcs_groups_session_level_ice_and_unknown_attributes() -> None:
    desc = parse(SSRC_SIMULCAST_OFFER)
    assert desc.origin.username == "mozilla...THIS_IS_SDPARTA-99.0"
    assert desc.ice_ufrag == "ab12" and desc.msid_semantic == MsidSemantic("WMS", ["*"])
    audio, video = desc.media
    assert audio.mid == "a" and audio.codec(111) is not None
    assert audio.codec(111).fmtp == "minptime=10;useinbandfec=1"  # type: ignore[union-attr]
    assert audio.attributes == [Attribute("rtcp-fb", "* nack")]  # wildcard kept as is
    assert audio.msid == Msid("stream0", "audio0")  # from a=ssrc msid: (no a=msid)
    assert desc.fingerprints_for(audio) == [Fingerprint("sha-256", FP_CHROME)]
    assert video.bandwidths == ["AS:2000"]
    assert video.ssrc_groups == [
        SsrcGroup("SIM", [2001, 2002, 2003]),
        SsrcGroup("FID", [2001, 3001]),
    ]
    assert [s.ssrc for s in video.ssrcs] == [2001, 3001, 2002, 2003]
    assert video.ssrcs[0].get("msid") == "stream0 video0" and video.ssrcs[0].get("x") is None
    assert video.attributes == [Attribute("x-google-flag", "conference")]
    assert video.candidates == [
        "candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host generation 0"
    ]
    assert video.end_of_candidates


def test_unknown_attributes_keep_their_order_and_valueless_form() -> None:
    text = CHROME_DATA_ANSWER + "a=zeta\na=alpha:\na=bundle-only\na=alpha:2\n"
    desc = parse(text)
    assert desc.media[0].attributes == [
        Attribute("zeta"),
        Attribute("alpha", ""),
        Attribute("bundle-only"),
        Attribute("alpha", "2"),
    ]
    assert "a=zeta\r\na=alpha:\r\na=bundle-only\r\na=alpha:2\r\n" in desc.serialize()


def test_port_zero_is_rejected_unless_bundle_only() -> None:
    text = CHROME_DATA_ANSWER.replace("m=application 9", "m=application 0")
    assert parse(text).media[0].rejected
    assert not parse(text + "a=bundle-only\n").media[0].rejected


def test_lf_crlf_and_bytes_give_the_same_description() -> None:
    for text in FIXTURES.values():
        expected = SessionDescription.parse(text)
        assert SessionDescription.parse(crlf(text)) == expected
        assert SessionDescription.parse(crlf(text).encode()) == expected


def test_fmtp_and_rtcp_fb_before_rtpmap() -> None:
    text = CHROME_DATA_ANSWER.split("m=")[0] + (
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\nc=IN IP4 0.0.0.0\na=mid:0\n"
        "a=fmtp:111 useinbandfec=1\na=rtcp-fb:111 nack\na=rtpmap:111 opus/48000/2\n"
    )
    codec = parse(text).media[0].codec(111)
    assert codec == Codec(111, "opus", 48000, 2, "useinbandfec=1", ["nack"])


def test_rid_params_and_paused_simulcast_alternatives() -> None:
    text = CHROME_SIMULCAST_OFFER.replace(
        "a=rid:q send\n", "a=rid:q send pt=96,97;max-width=320\n"
    ).replace("a=simulcast:send q;h;f", "a=simulcast:send q,~h;f recv x")
    text = text.replace("a=rid:f send\n", "a=rid:f send\na=rid:x recv\n")
    video = parse(text).media[0]
    assert video.rids[0] == Rid("q", "send", "pt=96,97;max-width=320")
    assert video.rids[0].payload_types() == [96, 97] and video.rids[1].payload_types() is None
    assert video.simulcast is not None
    assert video.simulcast.send == [
        [SimulcastRid("q"), SimulcastRid("h", True)],
        [SimulcastRid("f")],
    ]
    assert video.simulcast.rids("recv") == ["x"]
    assert "a=simulcast:send q,~h;f recv x\r\n" in parse(text).serialize()


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_round_trip(name: str, line_end: str) -> None:
    first = SessionDescription.parse(FIXTURES[name].replace("\n", line_end))
    text = first.serialize()
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    assert SessionDescription.parse(text) == first
    assert SessionDescription.parse(text).serialize() == text


@pytest.mark.parametrize("name", ["chrome-simulcast", "rust-fallback"])
def test_serialize_keeps_every_line_of_libwebrtc_output(name: str) -> None:
    """Apart from ordering and the msid-semantic spacing, nothing is lost or invented."""
    original = {line for line in FIXTURES[name].splitlines() if line}
    written = set(parse(FIXTURES[name]).serialize().splitlines())
    assert written - original == {"a=msid-semantic: WMS"} - original
    assert original - written <= {"a=msid-semantic:  WMS"}


# --- broken input ------------------------------------------------------------------------------

HEAD = "v=0\no=- 1 2 IN IP4 127.0.0.1\ns=-\nt=0 0\n"
AUDIO = "m=audio 9 UDP/TLS/RTP/SAVPF 111\nc=IN IP4 0.0.0.0\na=mid:0\n"

BROKEN = [
    ("", None, "must start with v=0"),
    ("hello world", 1, "expected <type>=<value>"),
    ("v=1\n", 1, "must start with v=0"),
    ("o=- 1 2 IN IP4 127.0.0.1\nv=0\n", 1, "must start with v=0"),
    ("v=0\ns=-\nt=0 0\n", 4, "missing o="),
    ("v=0\no=- 1 2 IN IP4 127.0.0.1\ns=-\n" + AUDIO, 4, "missing t="),
    ("v=0\no=- 1 2 IN IP4\ns=-\nt=0 0\n", 2, "o= needs 6 fields"),
    ("v=0\no=- 1 x IN IP4 1.2.3.4\ns=-\nt=0 0\n", 2, "sess-version"),
    (HEAD + "s=again\n", 5, "more than one s="),
    (HEAD + "x=unknown\n", 5, "expected <type>=<value>"),
    (HEAD + "A=upper\n", 5, "expected <type>=<value>"),
    (HEAD + "a=\n", 5, "attribute without a name"),
    (HEAD + "a=group:BUNDLE 0 1\n" + AUDIO, 5, "names mid '1'"),
    (HEAD + "m=audio 9 UDP/TLS/RTP/SAVPF\n", 5, "m= needs"),
    (HEAD + "m=audio nine UDP/TLS/RTP/SAVPF 111\n", 5, "m= port"),
    (HEAD + "m=audio 70000 UDP/TLS/RTP/SAVPF 111\n", 5, "m= port"),
    (HEAD + "m=audio \u0669 UDP/TLS/RTP/SAVPF 111\n", 5, "m= port"),
    (HEAD + "m=audio 9/0 UDP/TLS/RTP/SAVPF 111\n", 5, "number of ports"),
    (HEAD + "m=audio 9 UDP/TLS/RTP/SAVPF opus\n", 5, "payload type"),
    (HEAD + "m=audio 9 UDP/TLS/RTP/SAVPF 128\n", 5, "payload type"),
    (HEAD + AUDIO + "t=0 0\n", 8, "t= is not allowed in a media section"),
    (HEAD + AUDIO + "c=IN IP4 1.2.3.4\n", 8, "more than one c="),
    (HEAD + AUDIO + "a=mid:1\n", 8, "more than one a=mid"),
    (HEAD + AUDIO + AUDIO, 10, "a=mid '0' is used by two"),
    (HEAD + AUDIO + "a=rtpmap:111 opus\n", 8, "a=rtpmap needs"),
    (HEAD + AUDIO + "a=rtpmap:111 opus/x/2\n", 8, "clock rate"),
    (HEAD + AUDIO + "a=rtpmap:111\n", 8, "a=rtpmap needs 2"),
    (HEAD + AUDIO + "a=rtpmap:1111 opus/48000\n", 8, "payload type"),
    (HEAD + AUDIO + "a=rtpmap:111 a/1\na=rtpmap:111 b/1\n", 9, "twice"),
    (HEAD + AUDIO + "a=rtpmap:111 a/1\na=fmtp:111 x\na=fmtp:111 y\n", 10, "fmtp"),
    (HEAD + AUDIO + "a=rtpmap:111 a/1\na=rtcp-fb:111\n", 9, "feedback type"),
    (HEAD + AUDIO + "a=setup:sideways\n", 8, "a=setup must be"),
    (HEAD + AUDIO + "a=fingerprint:sha-256\n", 8, "a=fingerprint needs 2"),
    (HEAD + AUDIO + "a=ice-ufrag:a\na=ice-ufrag:b\n", 9, "more than one a=ice-ufrag"),
    (HEAD + AUDIO + "a=sendrecv\na=recvonly\n", 9, "conflicts"),
    (HEAD + AUDIO + "a=rtcp-mux:yes\n", 8, "takes no value"),
    (HEAD + AUDIO + "a=extmap:0 urn:x\n", 8, "a=extmap id"),
    (HEAD + AUDIO + "a=extmap:1/sideways urn:x\n", 8, "a=extmap direction"),
    (HEAD + AUDIO + "a=extmap:1 urn:x\na=extmap:1 urn:y\n", 9, "used twice"),
    (HEAD + AUDIO + "a=msid:a b c\n", 8, "a=msid"),
    (HEAD + AUDIO + "a=ssrc:123\n", 8, "a=ssrc needs"),
    (HEAD + AUDIO + "a=ssrc:abc cname:x\n", 8, "a=ssrc SSRC"),
    (HEAD + AUDIO + "a=ssrc:4294967296 cname:x\n", 8, "a=ssrc SSRC"),
    (HEAD + AUDIO + "a=ssrc-group:FID 1 x\n", 8, "a=ssrc-group SSRC"),
    (HEAD + AUDIO + "a=rid:q sideways\n", 8, "send or recv"),
    (HEAD + AUDIO + "a=rid:q! send\n", 8, "a=rid id"),
    (HEAD + AUDIO + "a=rid:q send\na=rid:q send\n", 9, "twice"),
    (HEAD + AUDIO + "a=simulcast:send\n", 8, "a=simulcast needs"),
    (HEAD + AUDIO + "a=simulcast:send q;;f\n", 8, "a=simulcast rid"),
    (HEAD + AUDIO + "a=simulcast:send q send h\n", 8, "repeated"),
    (HEAD + AUDIO + "a=sctp-port:65536\n", 8, "a=sctp-port"),
    (HEAD + AUDIO + "a=max-message-size:-1\n", 8, "a=max-message-size"),
    (HEAD + AUDIO + "a=mid\n", 8, "a=mid needs 1"),
    (HEAD + AUDIO.replace("a=mid:0", "a=mid:0,1"), 7, "not a token"),
    (HEAD + AUDIO + "a=candidate:\n", 8, "a=candidate is empty"),
    (HEAD + "a=msid-semantic:\n", 5, "a=msid-semantic needs"),
    (HEAD + "a=x\x00y\n", 5, "NUL"),
    (HEAD + "a=x\ry\n", 5, "CR"),
]


@pytest.mark.parametrize(("text", "line", "problem"), BROKEN)
def test_broken_input_names_line_and_problem(text: str, line: int | None, problem: str) -> None:
    with pytest.raises(SdpError) as caught:
        SessionDescription.parse(crlf(text))
    assert caught.value.line == line
    assert problem in str(caught.value)
    assert (f"SDP line {line}:" if line else "SDP:") in str(caught.value)


def test_sdp_error_is_a_value_error() -> None:
    assert issubclass(SdpError, ValueError)


def test_oversized_and_non_utf8_input() -> None:
    with pytest.raises(SdpError, match="larger than"):
        SessionDescription.parse(HEAD + "a=x:" + "y" * MAX_SDP_SIZE)
    with pytest.raises(SdpError, match="larger than"):
        SessionDescription.parse(b"v=0\n" + b"a" * MAX_SDP_SIZE)
    with pytest.raises(SdpError, match="UTF-8"):
        SessionDescription.parse(HEAD.encode() + b"s=\xff\xfe\n")


@pytest.mark.parametrize("name", ["rust-fallback", "chrome-simulcast", "ssrc-simulcast"])
def test_every_truncation_before_the_last_mid_is_an_error(name: str) -> None:
    """Once the BUNDLE group is read, any cut before the last a=mid leaves a grouped mid without
    its section. (A cut before the group leaves a valid session-only description.)"""
    text = crlf(FIXTURES[name])
    group_end = text.index("\r\n", text.index("a=group:BUNDLE"))
    last_mid_end = text.index("\r\n", text.rindex("a=mid:"))
    # Every line boundary, plus cuts inside lines (every 7th character, to keep this fast).
    cuts = {i for i, ch in enumerate(text[:last_mid_end]) if ch == "\n"}
    cuts |= set(range(0, last_mid_end, 7))
    for cut in sorted(c for c in cuts if c > group_end):
        with pytest.raises(SdpError):
            SessionDescription.parse(text[:cut])
    SessionDescription.parse(text[: last_mid_end + 2])  # the full mid line is enough


# --- properties --------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=600) | st.binary(max_size=600))
def test_arbitrary_input_raises_only_sdp_error(data: str | bytes) -> None:
    try:
        SessionDescription.parse(data)
    except SdpError:
        pass


_ALL_LINES = sorted({line for text in FIXTURES.values() for line in text.splitlines() if line})
_NOISE = st.sampled_from([" ", ":", "/", ";", "~", ",", "=", "0", "99", "\t", "é", "a", "-"])


@st.composite
def sdp_like(draw: st.DrawFn) -> str:
    """Lines from real descriptions, shuffled, repeated and mutated, behind a valid header."""
    lines = draw(st.lists(st.sampled_from(_ALL_LINES), max_size=40))
    mutated = []
    for line in lines:
        if draw(st.booleans()):
            at = draw(st.integers(0, len(line)))
            line = line[:at] + draw(_NOISE) + line[at + draw(st.integers(0, 3)) :]
        mutated.append(line)
    media = "m=video 9 UDP/TLS/RTP/SAVPF 96 97\n" if draw(st.booleans()) else ""
    return HEAD + media + "\n".join(mutated) + "\n"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sdp_like())
def test_whatever_parses_round_trips(text: str) -> None:
    try:
        first = SessionDescription.parse(text)
    except SdpError:
        return
    written = first.serialize()
    again = SessionDescription.parse(written)
    assert again == first
    assert again.serialize() == written


def test_a_description_with_too_many_media_sections_is_refused() -> None:
    """Each section costs per-participant state: a hostile offer may not hold thousands."""
    from roomcast.media.sdp import MAX_MEDIA_SECTIONS

    head = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    section = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{}\r\na=rtpmap:111 opus/48000/2\r\n"
    fits = head + "".join(section.format(i) for i in range(MAX_MEDIA_SECTIONS))
    assert len(SessionDescription.parse(fits).media) == MAX_MEDIA_SECTIONS
    with pytest.raises(SdpError, match="media sections"):
        SessionDescription.parse(fits + section.format(MAX_MEDIA_SECTIONS))
