"""A VP8 test pattern without an encoder: colour bars over a strip with a moving white square.

Every macroblock is one flat colour, intra DC-predicted (RFC 6386 §12.2) from its
reconstructed neighbours, plus a residual that carries only DC coefficients: the Y2 block's DC
(§14.3, the inverse WHT spreads it to the 16 luma blocks) and each chroma block's DC. At
quantizer index 0 those dequantize exactly (Y2 DC factor 8, chroma DC factor 4, §14.1), so
choosing the coefficient from the difference between the wanted colour and the prediction
reconstructs the colour exactly, and a macroblock whose prediction already is its colour is
skipped (`mb_skip_coeff`). All token probabilities this uses are set to 128 in the frame header
(§13.4), so tokens are coded without the default probability tables; the DCT extra bits keep
their fixed probabilities (§13.2 Pcat1-6). The loop filter is off (vp8.frame_header).

Frames are intra-only, key or not, so any frame decodes on its own; `PatternFrames` caches one
per position of the square.
"""

from __future__ import annotations

from dataclasses import dataclass

from .vp8 import KF_UV_MODE_PROBS, KF_YMODE_PROBS, BoolEncoder, frame_header, frame_start

QUANTIZER = 0  # dequantization factors: Y2 DC 8, chroma DC 4 (§14.1 dc_qlookup[0] = 4)
UNIFORM = 128
# §13.2: DCT extra-bit categories: (first value, probabilities of the extra bits, MSB first).
CATEGORIES = (
    (5, (159,)),
    (7, (165, 145)),
    (11, (173, 148, 140)),
    (19, (176, 155, 140, 135)),
    (35, (180, 157, 141, 134, 130)),
    (67, (254, 254, 243, 230, 196, 177, 153, 140, 133, 130, 129)),
)
# Block types of §13.3: 0 = luma after Y2, 1 = Y2, 2 = chroma. Bands 0 and 1 (positions 0, 1).
TOKEN_PROBS = {
    ((kind * 8 + band) * 3 + context) * 11 + branch: UNIFORM
    for kind in (0, 1, 2)
    for band in (0, 1)
    for context in range(3)
    for branch in range(11)
}

Colour = tuple[int, int, int]  # Y, U (Cb), V (Cr)


def yuv(r: int, g: int, b: int) -> Colour:
    """BT.601 limited range, as WebRTC decoders display VP8."""
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    return round(y), round(u), round(v)


BARS = tuple(
    yuv(*rgb)
    for rgb in (
        (255, 255, 255),  # white
        (255, 255, 0),  # yellow
        (0, 255, 255),  # cyan
        (0, 255, 0),  # green
        (255, 0, 255),  # magenta
        (255, 0, 0),  # red
        (0, 0, 255),  # blue
    )
)
STRIP = yuv(24, 24, 24)
SQUARE = yuv(255, 255, 255)


def write_token(enc: BoolEncoder, value: int) -> None:
    """One DCT token for a non-zero coefficient (§13.2 coeff_tree, every branch at 128), its
    extra bits and its sign."""
    size = abs(value)
    if not 0 < size <= 67 + (1 << 11) - 1:
        raise ValueError(f"coefficient {value} out of range")
    enc.write_bool(UNIFORM, True)  # not EOB
    enc.write_bool(UNIFORM, True)  # not DCT_0
    if size == 1:
        enc.write_bool(UNIFORM, False)
    else:
        enc.write_bool(UNIFORM, True)
        if size <= 4:
            enc.write_bool(UNIFORM, False)
            if size == 2:
                enc.write_bool(UNIFORM, False)
            else:
                enc.write_bool(UNIFORM, True)
                enc.write_bool(UNIFORM, size == 4)
        else:
            enc.write_bool(UNIFORM, True)
            index = max(i for i, (base, _) in enumerate(CATEGORIES) if size >= base)
            if index < 2:  # cat1, cat2
                enc.write_bool(UNIFORM, False)
                enc.write_bool(UNIFORM, index == 1)
            else:
                enc.write_bool(UNIFORM, True)
                enc.write_bool(UNIFORM, index >= 4)
                enc.write_bool(UNIFORM, index in (3, 5))
            base, probs = CATEGORIES[index]
            extra = size - base
            for bit, prob in enumerate(probs):
                enc.write_bool(prob, bool((extra >> (len(probs) - 1 - bit)) & 1))
    enc.write_bool(UNIFORM, value < 0)


def write_dc_block(enc: BoolEncoder, coefficient: int) -> None:
    """A block with only a DC coefficient (or none): the token, then end of block."""
    if coefficient:
        write_token(enc, coefficient)
    enc.write_bool(UNIFORM, False)  # dct_eob


def dc_predict(above: int | None, left: int | None, size: int) -> int:
    """DC_PRED of a flat above row and left column of ``size`` pixels each (§12.2, §12.3)."""
    if above is None and left is None:
        return 128
    if above is None or left is None:
        return above if left is None else left  # type: ignore[return-value]
    return (size * above + size * left + size) // (2 * size)


@dataclass(frozen=True, slots=True)
class Macroblock:
    skip: bool
    y2: int = 0  # Y2 DC coefficient
    u: int = 0  # DC coefficient of each of the 4 U blocks
    v: int = 0


def plan(colours: list[list[Colour]]) -> list[Macroblock]:
    """Residuals that make each macroblock exactly its colour, in raster order."""
    rows, cols = len(colours), len(colours[0])
    out: list[Macroblock] = []
    for r in range(rows):
        for c in range(cols):
            above = colours[r - 1][c] if r else None
            left = colours[r][c - 1] if c else None
            deltas = [
                colours[r][c][plane]
                - dc_predict(
                    above[plane] if above else None,
                    left[plane] if left else None,
                    16 if plane == 0 else 8,
                )
                for plane in range(3)
            ]
            # Luma: pixel delta = (8c + 3 >> 3) + 4 >> 3 = c // 8 rounded: c = 8 * delta.
            # Chroma: pixel delta = (4c + 4) >> 3: c = 2 * delta.
            block = Macroblock(not any(deltas), 8 * deltas[0], 2 * deltas[1], 2 * deltas[2])
            out.append(block)
    return out


def encode(width: int, height: int, colours: list[list[Colour]], *, key: bool) -> bytes:
    """A VP8 frame showing ``colours`` (one per macroblock, rows of columns)."""
    modes = BoolEncoder()
    frame_header(modes, key=key, quantizer=QUANTIZER, coeff_probs=TOKEN_PROBS)
    tokens = BoolEncoder()
    for block in plan(colours):
        modes.write_bool(1, block.skip)  # mb_skip_coeff (prob_skip_false = 1)
        if key:  # kf_ymode_tree "100" = DC_PRED, kf_uv_mode_tree "0" = DC_PRED (§11.2)
            modes.write_bool(KF_YMODE_PROBS[0], True)
            modes.write_bool(KF_YMODE_PROBS[1], False)
            modes.write_bool(KF_YMODE_PROBS[2], False)
            modes.write_bool(KF_UV_MODE_PROBS[0], False)
        else:  # intra in an inter frame: is_inter_mb 0, DC_PRED "0" (header's probabilities)
            modes.write_bool(255, False)
            modes.write_bool(255, False)
            modes.write_bool(255, False)
        if block.skip:
            continue
        write_dc_block(tokens, block.y2)  # Y2 first (§13.3)
        for _ in range(16):
            tokens.write_bool(UNIFORM, False)  # luma blocks: EOB at position 1
        for coefficient in (block.u,) * 4 + (block.v,) * 4:
            write_dc_block(tokens, coefficient)
    return frame_start(width, height, modes.flush(), key=key) + tokens.flush()


class PatternFrames:
    """Colour bars (top two thirds) over a dark strip with a white square that moves one
    macroblock per frame, back and forth."""

    def __init__(self, width: int = 640, height: int = 360) -> None:
        self.width, self.height = width, height
        self.cols, self.rows = (width + 15) // 16, (height + 15) // 16
        self.split = max(1, self.rows * 2 // 3)
        self._cache: dict[tuple[int, bool], bytes] = {}

    def square_column(self, index: int) -> int:
        span = max(1, self.cols - 2)
        step = index % (2 * span)
        return step if step < span else 2 * span - step

    def colours(self, index: int) -> list[list[Colour]]:
        column = self.square_column(index)
        middle = self.split + (self.rows - self.split) // 2
        grid: list[list[Colour]] = []
        for r in range(self.rows):
            if r < self.split:
                grid.append([BARS[c * len(BARS) // self.cols] for c in range(self.cols)])
            else:
                on_row = r in (middle - 1, middle)
                square = (column, column + 1) if on_row else ()
                grid.append([SQUARE if c in square else STRIP for c in range(self.cols)])
        return grid

    def frame(self, index: int, *, key: bool) -> bytes:
        slot = (self.square_column(index), key)
        data = self._cache.get(slot)
        if data is None:
            data = self._cache[slot] = encode(self.width, self.height, self.colours(index), key=key)
        return data
