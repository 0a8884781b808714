"""The demo media of `roomcast room join --publish-demo`: the VP8 test pattern decodes (libvpx,
through PyAV) to exactly the colours it encodes, key frames and inter frames alike, and the
looped opus packets are a 440 Hz tone (libopus). The Twirp client's error mapping."""

from __future__ import annotations

import math

import av
import numpy as np
import pytest

from roomcast.client import tone_opus, vp8
from roomcast.client.pattern import BARS, SQUARE, STRIP, PatternFrames, encode, yuv
from roomcast.client.roomservice import _error_of, http_url


def decode_planes(codec: av.CodecContext, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (frame,) = codec.decode(av.Packet(data))
    planes = frame.to_ndarray(format="yuv420p")
    h, w = frame.height, frame.width
    y = planes[:h]
    u = planes[h : h + h // 4].reshape(h // 2, w // 2)
    v = planes[h + h // 4 :].reshape(h // 2, w // 2)
    return y, u, v


@pytest.mark.parametrize("size", [(640, 360), (320, 176), (100, 60)])
def test_every_macroblock_decodes_to_its_colour(size: tuple[int, int]) -> None:
    width, height = size
    pattern = PatternFrames(width, height)
    codec = av.CodecContext.create("libvpx", "r")
    for index, key in ((0, True), (1, False), (2, False), (9, True), (10, False)):
        y, u, v = decode_planes(codec, pattern.frame(index, key=key))
        colours = pattern.colours(index)
        expected_y = np.array([[c[0] for c in row] for row in colours], dtype=np.uint8)
        expected_u = np.array([[c[1] for c in row] for row in colours], dtype=np.uint8)
        expected_v = np.array([[c[2] for c in row] for row in colours], dtype=np.uint8)
        # Each macroblock is 16x16 luma and 8x8 chroma pixels of its colour, cropped.
        luma, chroma = np.ones((16, 16), np.uint8), np.ones((8, 8), np.uint8)
        assert (y == np.kron(expected_y, luma)[:height, :width]).all()
        assert (u == np.kron(expected_u, chroma)[: height // 2, : width // 2]).all()
        assert (v == np.kron(expected_v, chroma)[: height // 2, : width // 2]).all()


def test_extreme_colours_and_large_jumps_are_exact() -> None:
    """Every DCT token size: neighbours from black to white exercise up to DCT_CAT6."""
    colours = [[yuv(0, 0, 0), yuv(255, 255, 255), (1, 1, 1), (255, 255, 255), (128, 130, 126)]]
    colours.append([(254, 2, 250), (17, 240, 5), (80, 81, 79), (3, 128, 128), (200, 60, 190)])
    codec = av.CodecContext.create("libvpx", "r")
    y, u, v = decode_planes(codec, encode(80, 32, colours, key=True))
    for r, row in enumerate(colours):
        for c, (cy, cu, cv) in enumerate(row):
            assert y[r * 16 + 8, c * 16 + 8] == cy
            assert (u[r * 8 + 4, c * 8 + 4], v[r * 8 + 4, c * 8 + 4]) == (cu, cv)


def test_the_square_moves_and_flat_areas_cost_nothing() -> None:
    pattern = PatternFrames()
    columns = [pattern.square_column(i) for i in range(80)]
    assert columns[:3] == [0, 1, 2] and max(columns) == pattern.cols - 2 and min(columns) == 0
    assert pattern.colours(0)[0][0] == BARS[0] and pattern.colours(0)[-1][-1] == STRIP
    assert SQUARE in pattern.colours(5)[pattern.split + (pattern.rows - pattern.split) // 2]
    assert len(pattern.frame(3, key=True)) < 4000  # only colour edges carry a residual
    assert pattern.frame(3, key=False) is pattern.frame(3, key=False)  # cached


def test_the_grey_frames_are_unchanged() -> None:
    """vp8.frame_header gained parameters; without them it writes what it always wrote."""
    codec = av.CodecContext.create("libvpx", "r")
    y, u, v = decode_planes(codec, vp8.frame(64, 48, key=True, size=500))
    assert len(vp8.frame(64, 48, key=True, size=500)) == 500
    assert (y == 128).all() and (u == 128).all() and (v == 128).all()


def test_the_tone_is_440_hz_and_loops_without_a_seam() -> None:
    packets = tone_opus.packets()
    assert len(packets) == 50 and all(p[0] >> 3 == 23 for p in packets)  # CELT FB 20 ms
    codec = av.CodecContext.create("libopus", "r")
    codec.sample_rate, codec.layout = 48000, "mono"
    samples = []
    for packet in packets * 3:
        for frame in codec.decode(av.Packet(packet)):
            samples.append(frame.to_ndarray().reshape(-1))
    pcm = np.concatenate(samples).astype(float)
    if np.abs(pcm).max() <= 1.0:
        pcm *= 32767
    looped = pcm[48000:]  # the 2nd and 3rd passes, across a loop boundary
    spectrum = np.abs(np.fft.rfft(looped))
    peak = np.fft.rfftfreq(len(looped), 1 / 48000)[spectrum.argmax()]
    assert math.isclose(peak, 440, abs_tol=2)
    tone = spectrum[np.abs(np.fft.rfftfreq(len(looped), 1 / 48000) - 440) < 5].sum()
    assert tone / spectrum.sum() > 0.5  # a clean tone, no click at each loop


def test_api_errors_and_urls() -> None:
    error = _error_of(404, b'{"code": "not_found", "msg": "requested room does not exist"}')
    assert (error.code, error.message, error.status) == (
        "not_found",
        "requested room does not exist",
        404,
    )
    proxy = _error_of(502, b"<html>Bad Gateway</html>")
    assert (proxy.code, proxy.message) == ("unknown", "HTTP 502: <html>Bad Gateway</html>")
    assert http_url("ws://h:7880") == "http://h:7880"
    assert http_url("wss://lk.example.com/") == "https://lk.example.com"
    assert http_url("127.0.0.1:7880") == "http://127.0.0.1:7880"
    with pytest.raises(ValueError, match="not a LiveKit server URL"):
        http_url("ftp://x")
