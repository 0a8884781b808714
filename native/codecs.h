/*
 * Keyframe starts of the video codecs the engine forwards besides VP8 (rtp.h parses VP8's
 * descriptor): the C twins of codecs.py's h264_is_keyframe, h265_is_keyframe, vp9_is_keyframe
 * and av1_is_keyframe, answer for answer. Each reads the payload at d[start, end) and never
 * past it; garbage is "not a keyframe".
 */
#ifndef ROOMCAST_NATIVE_CODECS_H
#define ROOMCAST_NATIVE_CODECS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define H264_SPS 7
#define H264_STAP_A 24
#define H264_FU_A 28

/* RFC 6184: an SPS, in a single NAL unit, a STAP-A (§5.7.1) or the start of an FU-A (§5.8). */
static int h264_keyframe(const uint8_t *d, size_t start, size_t end) {
    if (end <= start) return 0;
    int nal = d[start] & 0x1F;
    if (nal == H264_SPS) return 1;
    if (nal == H264_STAP_A) {
        for (size_t i = start + 1; i + 2 < end;) {
            size_t size = (size_t)d[i] << 8 | d[i + 1];
            if (size == 0 || i + 2 + size > end) return 0;
            if ((d[i + 2] & 0x1F) == H264_SPS) return 1;
            i += 2 + size;
        }
        return 0;
    }
    if (nal == H264_FU_A) return end - start >= 2 && (d[start + 1] & 0x80) &&
                                 (d[start + 1] & 0x1F) == H264_SPS;
    return 0;
}

/* RFC 7798: a VPS (32) or SPS (33), in a single NAL unit, an AP (48) or an FU start (49). */
static int h265_parameter_set(int type) { return type == 32 || type == 33; }

static int h265_keyframe(const uint8_t *d, size_t start, size_t end) {
    if (end < start + 2) return 0;
    int nal = (d[start] >> 1) & 0x3F;
    if (nal == 49)
        return end >= start + 3 && (d[start + 2] & 0x80) && h265_parameter_set(d[start + 2] & 0x3F);
    if (nal == 48) {
        for (size_t i = start + 2; i + 2 < end;) {
            size_t size = (size_t)d[i] << 8 | d[i + 1];
            if (size == 0 || i + 2 + size > end) return 0;
            if (h265_parameter_set((d[i + 2] >> 1) & 0x3F)) return 1;
            i += 2 + size;
        }
        return 0;
    }
    return h265_parameter_set(nal);
}

/* RFC 9628 §4.2: the beginning of a frame (B) not inter-predicted (P = 0), spatial layer 0. */
static int vp9_keyframe(const uint8_t *d, size_t start, size_t end) {
    if (end <= start) return 0;
    uint8_t b0 = d[start];
    if ((b0 & 0x40) || !(b0 & 0x08)) return 0;
    if (!(b0 & 0x20)) return 1; /* no layer indices: one layer */
    size_t i = start + 1;
    if (b0 & 0x80) { /* picture id: 7 or 15 bits */
        if (i >= end) return 0;
        i += (d[i] & 0x80) ? 2 : 1;
    }
    return i < end && ((d[i] >> 1) & 0x07) == 0;
}

/* AV1 RTP payload §4.4: the N bit (a new coded video sequence), or a sequence header OBU
 * (type 1) as the first element. */
static int av1_keyframe(const uint8_t *d, size_t start, size_t end) {
    if (end < start + 2) return 0;
    uint8_t agg = d[start];
    if (agg & 0x08) return 1;
    if (agg & 0x80) return 0; /* Z: the first element continues an OBU */
    size_t i = start + 1;
    if (((agg >> 4) & 0x03) != 1) { /* W != 1: the first element has a LEB128 length */
        for (int k = 0; k < 8; k++) {
            if (i >= end) return 0;
            int more = d[i] & 0x80;
            i++;
            if (!more) break;
        }
    }
    return i < end && ((d[i] >> 3) & 0x0F) == 1;
}

/* LiveKit's packet trailer at the end of a payload d[start, end) (packet_trailer.py
 * trailer_length): its length, 0 when there is none. */
static size_t trailer_length(const uint8_t *d, size_t start, size_t end) {
    if (end < start + 5 || memcmp(d + end - 4, "LKTS", 4) != 0) return 0;
    size_t length = d[end - 5] ^ 0xFF;
    return length < 5 || length > end - start ? 0 : length;
}

#endif
