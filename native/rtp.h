/*
 * Bounds-checked RTP parsing and rewriting for the native forwarding plane: the C twins of
 * media/rtp.py (parse_rtp, extension_elements, ExtensionRewriter.rewrite, build_extension_block)
 * and media/codecs.py (Vp8Descriptor.parse, vp8_write_picture_id). Every read is checked
 * against the packet length; nothing here allocates.
 */
#ifndef ROOMCAST_NATIVE_RTP_H
#define ROOMCAST_NATIVE_RTP_H

#include <stddef.h>
#include <stdint.h>

#define RTP_HEADER_SIZE 12
#define EXT_PROFILE_ONE_BYTE 0xBEDE
#define EXT_PROFILE_TWO_BYTE 0x1000

typedef struct {
    int marker;
    int payload_type;
    uint16_t sequence;
    uint32_t timestamp;
    uint32_t ssrc;
    int csrc_count;
    int extension_profile; /* 0: none */
    size_t extension_start, extension_end;
    size_t payload_offset, payload_end;
    int padding;
} rtp_header;

typedef struct {
    int header_size; /* 0: no valid descriptor */
    int picture_id, picture_id_offset, picture_id_size;
    int tl0picidx, tl0picidx_offset;
    int keyframe;
} vp8_descriptor;

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xFF; }
static inline void wr32(uint8_t *p, uint32_t v) {
    p[0] = v >> 24; p[1] = (v >> 16) & 0xFF; p[2] = (v >> 8) & 0xFF; p[3] = v & 0xFF;
}

/* RFC 3550 §5.1, §5.3.1: 0 on success, -1 when malformed (as parse_rtp raises RtpError). */
static int rtp_parse(const uint8_t *d, size_t n, rtp_header *h) {
    if (n < RTP_HEADER_SIZE || d[0] >> 6 != 2) return -1;
    h->marker = d[1] >> 7;
    h->payload_type = d[1] & 0x7F;
    h->sequence = rd16(d + 2);
    h->timestamp = rd32(d + 4);
    h->ssrc = rd32(d + 8);
    h->csrc_count = d[0] & 0x0F;
    size_t offset = RTP_HEADER_SIZE + 4 * (size_t)h->csrc_count;
    if (offset > n) return -1;
    if (d[0] & 0x10) {
        if (offset + 4 > n) return -1;
        h->extension_profile = rd16(d + offset);
        size_t end = offset + 4 + 4 * (size_t)rd16(d + offset + 2);
        if (end > n) return -1;
        h->extension_start = offset + 4;
        h->extension_end = offset = end;
    } else {
        h->extension_profile = 0;
        h->extension_start = h->extension_end = offset;
    }
    h->payload_offset = offset;
    int padding = (d[0] & 0x20) ? d[n - 1] : 0;
    if ((d[0] & 0x20) && (padding == 0 || offset + (size_t)padding > n)) return -1;
    h->padding = padding;
    h->payload_end = n - (size_t)padding;
    return 0;
}

/* RFC 7741 §4.2, as Vp8Descriptor.parse: 1 when valid, 0 (cleared) when malformed. */
static int vp8_parse(const uint8_t *d, size_t start, size_t end, vp8_descriptor *v) {
    v->header_size = 0;
    v->picture_id = v->picture_id_offset = -1;
    v->picture_id_size = 0;
    v->tl0picidx = v->tl0picidx_offset = -1;
    v->keyframe = 0;
    if (end <= start) return 0;
    uint8_t b0 = d[start];
    size_t i = start + 1;
    if (b0 & 0x80) {
        if (i >= end) return 0;
        uint8_t x = d[i++];
        if (x & 0x80) {
            if (i >= end) return 0;
            if (d[i] & 0x80) {
                if (i + 2 > end) return 0;
                v->picture_id = rd16(d + i) & 0x7FFF;
                v->picture_id_size = 2;
            } else {
                v->picture_id = d[i];
                v->picture_id_size = 1;
            }
            v->picture_id_offset = (int)i;
            i += (size_t)v->picture_id_size;
        }
        if (x & 0x40) {
            if (i >= end) return 0; /* as codecs.py: the picture id read so far stays */
            v->tl0picidx = d[i];
            v->tl0picidx_offset = (int)i;
            i++;
        }
        if (x & 0x30) i++;
    }
    if (i > end) goto bad;
    v->header_size = (int)(i - start);
    v->keyframe = (b0 & 0x10) && (b0 & 0x07) == 0 && i < end && !(d[i] & 0x01);
    return 1;
bad:
    v->header_size = 0;
    v->picture_id = v->picture_id_offset = -1;
    v->picture_id_size = 0;
    v->tl0picidx = v->tl0picidx_offset = -1;
    return 0;
}

#define MAX_ELEMENTS 64

/*
 * ExtensionRewriter.rewrite_split: write into `out` (capacity `cap`) the bytes after the fixed
 * header of the rewritten packet (CSRCs, the extension block with ids mapped through `ids` and
 * unmapped ones dropped, then `extra` as element `extra_id` when given, payload and padding).
 * Returns their length, or -1 if `cap` is too small; `*first_byte` gets the new first byte,
 * `*payload_offset` where the payload starts in the rewritten packet. `n` may stop short of the
 * packet (a trailer cut off): the payload is what lies between its offset and `n`.
 */
static long rtp_rewrite_tail_with(const uint8_t *d, size_t n, const rtp_header *h,
                                  const uint8_t *ids, int maps, int tw_id, int extra_id,
                                  const uint8_t *extra, size_t extra_len, uint8_t *out, size_t cap,
                                  uint8_t *first_byte, size_t *payload_offset, long *tw_offset) {
    size_t csrc_end = RTP_HEADER_SIZE + 4 * (size_t)h->csrc_count;
    *tw_offset = -1;
    if (!h->extension_profile && !tw_id && !extra) {
        if (n - RTP_HEADER_SIZE > cap) return -1;
        memcpy(out, d + RTP_HEADER_SIZE, n - RTP_HEADER_SIZE);
        *first_byte = d[0];
        *payload_offset = h->payload_offset;
        return (long)(n - RTP_HEADER_SIZE);
    }
    /* Elements kept: (subscriber id, value, length); with `tw_id` the transport-wide sequence
       number comes first (its value 0, written when the packet is sent), as rtp.py lays it. */
    int kid[MAX_ELEMENTS + 2];
    const uint8_t *kval[MAX_ELEMENTS + 2];
    size_t klen[MAX_ELEMENTS + 2];
    int kept = 0, one_byte = 1, base = tw_id ? 1 : 0;
    if (maps && h->extension_profile) {
        size_t i = h->extension_start, end = h->extension_end;
        int bad = 0;
        if (h->extension_profile == EXT_PROFILE_ONE_BYTE) {
            while (i < end && kept < MAX_ELEMENTS) {
                uint8_t b = d[i];
                if (b == 0) { i++; continue; }
                int id = b >> 4;
                if (id == 15) break;
                size_t len = (size_t)(b & 0x0F) + 1;
                if (i + 1 + len > end) { bad = 1; break; }
                if (ids[id]) { kid[kept] = ids[id]; kval[kept] = d + i + 1; klen[kept] = len; kept++; }
                i += 1 + len;
            }
        } else if ((h->extension_profile & 0xFFF0) == EXT_PROFILE_TWO_BYTE) {
            while (i < end && kept < MAX_ELEMENTS) {
                int id = d[i];
                if (id == 0) { i++; continue; }
                if (i + 2 > end) { bad = 1; break; }
                size_t len = d[i + 1];
                if (i + 2 + len > end) { bad = 1; break; }
                if (ids[id] && len) {
                    kid[kept] = ids[id]; kval[kept] = d + i + 2; klen[kept] = len; kept++;
                }
                i += 2 + len;
            }
        }
        if (bad) kept = 0; /* a malformed block forwards no extensions (extension_elements) */
    }
    if (tw_id) {
        memmove(kid + 1, kid, sizeof(int) * (size_t)kept);
        memmove(kval + 1, kval, sizeof(kval[0]) * (size_t)kept);
        memmove(klen + 1, klen, sizeof(size_t) * (size_t)kept);
        kid[0] = tw_id;
        kval[0] = NULL;
        klen[0] = 2;
        kept++;
    }
    if (extra) {
        kid[kept] = extra_id;
        kval[kept] = extra;
        klen[kept] = extra_len;
        kept++;
    }
    for (int k = 0; k < kept; k++)
        if (kid[k] < 1 || kid[k] > 14 || klen[k] < 1 || klen[k] > 16) one_byte = 0;
    size_t body = 0;
    for (int k = 0; k < kept; k++) body += (one_byte ? 1 : 2) + klen[k];
    size_t padded = (body + 3) & ~(size_t)3;
    size_t block = kept ? 4 + padded : 0;
    size_t csrc = csrc_end - RTP_HEADER_SIZE;
    size_t payload = n - h->payload_offset;
    if (csrc + block + payload > cap) return -1;
    uint8_t *o = out;
    memcpy(o, d + RTP_HEADER_SIZE, csrc);
    o += csrc;
    if (kept) {
        wr16(o, one_byte ? EXT_PROFILE_ONE_BYTE : EXT_PROFILE_TWO_BYTE);
        wr16(o + 2, (uint16_t)(padded / 4));
        o += 4;
        for (int k = 0; k < kept; k++) {
            if (one_byte) {
                *o++ = (uint8_t)(kid[k] << 4 | (int)(klen[k] - 1));
            } else {
                *o++ = (uint8_t)kid[k];
                *o++ = (uint8_t)klen[k];
            }
            if (k < base) {
                *tw_offset = RTP_HEADER_SIZE + (long)(o - out);
                memset(o, 0, 2);
            } else {
                memcpy(o, kval[k], klen[k]);
            }
            o += klen[k];
        }
        memset(o, 0, padded - body);
        o += padded - body;
    }
    memcpy(o, d + h->payload_offset, payload);
    o += payload;
    *first_byte = kept ? (d[0] | 0x10) : (d[0] & 0xEF);
    *payload_offset = csrc_end + block;
    return (long)(o - out);
}

/* ExtensionRewriter.rewrite: rtp_rewrite_tail_with, no extra element. */
static long rtp_rewrite_tail(const uint8_t *d, size_t n, const rtp_header *h, const uint8_t *ids,
                             int maps, int tw_id, uint8_t *out, size_t cap, uint8_t *first_byte,
                             size_t *payload_offset, long *tw_offset) {
    return rtp_rewrite_tail_with(d, n, h, ids, maps, tw_id, 0, NULL, 0, out, cap, first_byte,
                                 payload_offset, tw_offset);
}

/* The value of extension element `id` in a parsed packet (RFC 8285 §4.2, §4.3): its offset,
 * with its length in `*len`; -1 when absent or the block is malformed before it. */
static long rtp_find_extension(const uint8_t *d, const rtp_header *h, int id, size_t *len) {
    if (id <= 0 || !h->extension_profile) return -1;
    size_t i = h->extension_start, end = h->extension_end;
    if (h->extension_profile == EXT_PROFILE_ONE_BYTE) {
        while (i < end) {
            uint8_t b = d[i];
            if (b == 0) { i++; continue; }
            int element = b >> 4;
            if (element == 15) return -1;
            *len = (size_t)(b & 0x0F) + 1;
            if (i + 1 + *len > end) return -1;
            if (element == id) return (long)(i + 1);
            i += 1 + *len;
        }
    } else if ((h->extension_profile & 0xFFF0) == EXT_PROFILE_TWO_BYTE) {
        while (i < end) {
            int element = d[i];
            if (element == 0) { i++; continue; }
            if (i + 2 > end || i + 2 + d[i + 1] > end) return -1;
            *len = d[i + 1];
            if (element == id) return (long)(i + 2);
            i += 2 + *len;
        }
    }
    return -1;
}

/* Where the 2-byte value of extension element `id` starts in an RTP packet, -1 when there is
 * none (or it is not 2 bytes, or the block is malformed): as rtp.py find_extension. */
static long rtp_find_tw(const uint8_t *d, size_t n, int id) {
    rtp_header h;
    size_t len = 0;
    if (id <= 0 || rtp_parse(d, n, &h) < 0) return -1;
    long at = rtp_find_extension(d, &h, id, &len);
    return at >= 0 && len == 2 ? at : -1;
}

#endif
