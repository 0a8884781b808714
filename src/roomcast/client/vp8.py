"""Synthetic VP8 frames that any decoder accepts (RFC 6386), with no encoder.

Every frame is a real VP8 bitstream describing a flat grey picture: each macroblock is intra
DC-predicted with no residual (`mb_skip_coeff` = 1), so a decoder reads a few bits per
macroblock and never touches the token partition. That partition is zero padding up to the
size the caller asks for, which lets a load test send any bitrate at any resolution while
subscribers (browsers, the official SDKs) decode without errors.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from functools import cache

# RFC 6386 §13.4: probabilities of the coefficient-probability update flags, [4][8][3][11].
# Each row lists its leading entries; the rest of the 11 are 255.
_COEFF_UPDATE_ROWS = """
-
-
-
176 246
223 241 252
249 253 253
255 244 252
234 254 254
253
255 246 254
239 253 254
254 255 254
255 248 254
251 255 254
-
255 253 254
251 254 254
254 255 254
255 254 253 255 254
250 255 254 255 254
254
-
-
-
217
225 252 241 253 255 255 254
234 250 241 250 253 255 253 254
255 254
223 254 254
238 253 254 254
255 248 254
249 254
-
255 253
247 254
-
255 253 254
252
-
255 254 254
253
-
255 254 253
250
254
-
-
-
186 251 250
234 251 244 254
251 251 243 253 254 255 254
255 253 254
236 253 254
251 253 253 254 254
255 254 254
254 254 254
-
255 254
254 254
254
-
254
-
-
-
-
-
-
-
-
-
-
248
250 254 252 254
248 254 249 253
255 253 253
246 253 253
252 254 251 254 254
255 254 252
248 254 253
253 255 254 254
255 251 254
245 251 254
253 253 254
255 251 253
252 253 254
255 254
255 252
249 255 254
255 255 254
255 255 253
250
-
-
254
-
"""


def _coeff_update_probs() -> tuple[int, ...]:
    probs: list[int] = []
    for row in _COEFF_UPDATE_ROWS.split("\n")[1:-1]:
        values = [] if row == "-" else [int(v) for v in row.split()]
        probs += values + [255] * (11 - len(values))
    assert len(probs) == 4 * 8 * 3 * 11
    return tuple(probs)


COEFF_UPDATE_PROBS = _coeff_update_probs()
# RFC 6386 §17.2: vp8_mv_update_probs[2][19].
MV_UPDATE_PROBS = (
    237, 246, 253, 253, 254, 254, 254, 254, 254, 254, 254, 254, 254, 254, 250, 250, 252, 254, 254,
    231, 243, 245, 253, 254, 254, 254, 254, 254, 254, 254, 254, 254, 254, 251, 251, 254, 254, 254,
)  # fmt: skip
KF_YMODE_PROBS = (145, 156, 163, 128)  # RFC 6386 §11.2 kf_ymode_prob
KF_UV_MODE_PROBS = (142, 114, 183)  # §11.2 kf_uv_mode_prob
START_CODE = b"\x9d\x01\x2a"  # §9.1
QUANTIZER = 10  # y_ac_qi; irrelevant without residual


class BoolEncoder:
    """The boolean entropy encoder of RFC 6386 §7.3 (`write_bool`, `flush_bool_encoder`)."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.range = 255
        self.bottom = 0
        self.bit_count = 24

    def _add_one_to_output(self) -> None:
        i = len(self.output) - 1
        while i >= 0 and self.output[i] == 255:
            self.output[i] = 0
            i -= 1
        self.output[i] += 1

    def write_bool(self, prob: int, value: bool) -> None:
        split = 1 + (((self.range - 1) * prob) >> 8)
        if value:
            self.bottom += split
            self.range -= split
        else:
            self.range = split
        while self.range < 128:
            self.range <<= 1
            if self.bottom & (1 << 31):
                self._add_one_to_output()
            self.bottom = (self.bottom << 1) & 0xFFFFFFFF
            self.bit_count -= 1
            if not self.bit_count:
                self.output.append(self.bottom >> 24)
                self.bottom &= (1 << 24) - 1
                self.bit_count = 8

    def write_literal(self, value: int, bits: int) -> None:
        """L(n) of §19: n bits at probability 128, most significant first."""
        for shift in range(bits - 1, -1, -1):
            self.write_bool(128, bool((value >> shift) & 1))

    def flush(self) -> bytes:
        c = self.bit_count
        v = self.bottom
        if v & (1 << (32 - c)):
            self._add_one_to_output()
        v = (v << (c & 7)) & 0xFFFFFFFF
        for _ in range(c >> 3):
            v = (v << 8) & 0xFFFFFFFF
        for _ in range(4):
            self.output.append(v >> 24)
            v = (v << 8) & 0xFFFFFFFF
        return bytes(self.output)


def frame_header(
    enc: BoolEncoder,
    *,
    key: bool,
    quantizer: int = QUANTIZER,
    coeff_probs: Mapping[int, int] | None = None,
) -> None:
    """§19.2 frame_header() with every optional feature off. ``coeff_probs`` updates token
    probabilities (§13.4): flat index ((type * 8 + band) * 3 + context) * 11 + branch → prob."""
    updates = coeff_probs or {}
    if key:
        enc.write_literal(0, 1)  # color_space
        enc.write_literal(0, 1)  # clamping_type
    enc.write_literal(0, 1)  # segmentation_enabled
    enc.write_literal(0, 1)  # filter_type
    enc.write_literal(0, 6)  # loop_filter_level: 0 turns the loop filter off
    enc.write_literal(0, 3)  # sharpness_level
    enc.write_literal(0, 1)  # loop_filter_adj_enable
    enc.write_literal(0, 2)  # log2_nbr_of_dct_partitions: one token partition
    enc.write_literal(quantizer, 7)  # y_ac_qi
    enc.write_literal(0, 5)  # no y_dc, y2_dc, y2_ac, uv_dc, uv_ac deltas
    if key:
        enc.write_literal(1, 1)  # refresh_entropy_probs
    else:
        enc.write_literal(0, 1)  # refresh_golden_frame
        enc.write_literal(0, 1)  # refresh_alternate_frame
        enc.write_literal(0, 2)  # copy_buffer_to_golden
        enc.write_literal(0, 2)  # copy_buffer_to_alternate
        enc.write_literal(0, 1)  # sign_bias_golden
        enc.write_literal(0, 1)  # sign_bias_alternate
        enc.write_literal(0, 1)  # refresh_entropy_probs: our updates last one frame
        enc.write_literal(1, 1)  # refresh_last
    for index, prob in enumerate(COEFF_UPDATE_PROBS):  # §13.4 token_prob_update()
        new_prob = updates.get(index)
        enc.write_bool(prob, new_prob is not None)
        if new_prob is not None:
            enc.write_literal(new_prob, 8)
    enc.write_literal(1, 1)  # mb_no_skip_coeff
    enc.write_literal(1, 8)  # prob_skip_false = 1: "skip" costs almost nothing
    if not key:
        enc.write_literal(255, 8)  # prob_intra = 255: intra macroblocks are cheap
        enc.write_literal(128, 8)  # prob_last
        enc.write_literal(128, 8)  # prob_gf
        # §16.2: make DC_PRED (the first tree branch) cheap for Y and for chroma.
        enc.write_literal(1, 1)  # intra_16x16_prob_update_flag
        for prob in (255, 128, 128, 128):
            enc.write_literal(prob, 8)
        enc.write_literal(1, 1)  # intra_chroma_prob_update_flag
        for prob in (255, 128, 128):
            enc.write_literal(prob, 8)
        for prob in MV_UPDATE_PROBS:  # §17.2 mv_prob_update(): none
            enc.write_bool(prob, False)


def _first_partition(mb_count: int, *, key: bool) -> bytes:
    enc = BoolEncoder()
    frame_header(enc, key=key)
    for _ in range(mb_count):  # §19.3 macroblock_header()
        enc.write_bool(1, True)  # mb_skip_coeff: no residual
        if key:
            # kf_ymode_tree "100" = DC_PRED (§11.2), then uv DC_PRED "0".
            enc.write_bool(KF_YMODE_PROBS[0], True)
            enc.write_bool(KF_YMODE_PROBS[1], False)
            enc.write_bool(KF_YMODE_PROBS[2], False)
            enc.write_bool(KF_UV_MODE_PROBS[0], False)
        else:
            enc.write_bool(255, False)  # is_inter_mb = 0 (prob_intra 255)
            enc.write_bool(255, False)  # ymode_tree "0" = DC_PRED (updated prob 255)
            enc.write_bool(255, False)  # uv_mode_tree "0" = DC_PRED
    return enc.flush()


@cache
def frame_prefix(width: int, height: int, *, key: bool) -> bytes:
    """Everything a decoder reads of a frame: frame tag, key frame header, first partition."""
    if not (0 < width < 1 << 14 and 0 < height < 1 << 14):
        raise ValueError(f"VP8 frame size {width}x{height} out of range")
    mb_count = ((width + 15) // 16) * ((height + 15) // 16)
    return frame_start(width, height, _first_partition(mb_count, key=key), key=key)


def frame_start(width: int, height: int, first_partition: bytes, *, key: bool) -> bytes:
    """§9.1 frame tag (key frame flag, version 0, show_frame, partition size), the key frame's
    start code and size, then the first partition."""
    tag = (0 if key else 1) | (1 << 4) | (len(first_partition) << 5)
    header = struct.pack("<I", tag)[:3]
    if key:
        header += START_CODE + struct.pack("<HH", width, height)  # scale bits 0
    return header + first_partition


def frame(width: int, height: int, *, key: bool, size: int = 0) -> bytes:
    """A complete frame of at least `size` bytes (zero padding in the token partition)."""
    prefix = frame_prefix(width, height, key=key)
    return prefix + bytes(max(0, size - len(prefix)))
