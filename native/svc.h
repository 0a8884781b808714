/*
 * VP9 scalable video in one stream, per subscriber: the C twins of media/vp9.py
 * (Vp9Descriptor.parse with _parse_ss, Vp9Selector) and media/svc_downtrack.py SequenceMunger,
 * answer for answer. Pure functions on caller-owned state: no allocation, every read of the
 * payload bounds-checked against d[start, end).
 */
#ifndef ROOMCAST_NATIVE_SVC_H
#define ROOMCAST_NATIVE_SVC_H

#include <stddef.h>
#include <stdint.h>

/* -- VP9 payload descriptor (RFC 9628 §4.2) -------------------------------------------------- */

#define VP9_MAX_TEMPORAL 7 /* TID is 3 bits: "every temporal layer" */

typedef struct {            /* Vp9Descriptor (resolutions are not kept: the engine needs none) */
    int header_size;        /* 0: no valid descriptor */
    int picture_id, inter_picture, flexible, begin, end, temporal_id, switching_up,
        spatial_id, inter_layer, tl0picidx, keyframe;
} vp9_descriptor;

/* Vp9Descriptor.clear */
static void vp9_clear(vp9_descriptor *v) {
    v->header_size = 0;
    v->picture_id = -1;
    v->inter_picture = v->flexible = v->begin = v->end = 0;
    v->temporal_id = v->switching_up = v->spatial_id = v->inter_layer = 0;
    v->tl0picidx = -1;
    v->keyframe = 0;
}

/* Vp9Descriptor._parse_ss, §4.2.1 scalability structure: N_S, Y (resolutions), G (picture
 * group). The index after it, or 0 when it is cut short (i > start always, so 0 is free).
 * Like Python it may answer an index up to 3 past `end` (a picture's last reference
 * count); the caller refuses that. */
static size_t vp9_parse_ss(const uint8_t *d, size_t i, size_t end) {
    if (i >= end) return 0;
    uint8_t b = d[i++];
    size_t layers = (size_t)(b >> 5) + 1;
    if (b & 0x10) { /* Y: a width and height per spatial layer */
        if (end - i < 4 * layers) return 0;
        i += 4 * layers;
    }
    if (b & 0x08) { /* G */
        if (i >= end) return 0;
        int pictures = d[i++];
        for (int n = 0; n < pictures; n++) {
            if (i >= end) return 0;
            size_t refs = (d[i] >> 2) & 0x03;
            i += 1 + refs;
        }
    }
    return i;
}

/* Vp9Descriptor.parse on payload d[start, end): 1, or 0 when malformed. As in Python, a
 * descriptor cut short before the scalability structure keeps the fields read so far (its
 * header_size and keyframe are 0); one with a bad scalability structure is cleared. */
static int vp9_parse(const uint8_t *d, size_t start, size_t end, vp9_descriptor *v) {
    vp9_clear(v);
    if (end <= start) return 0;
    uint8_t b0 = d[start];
    size_t i = start + 1;
    v->inter_picture = !!(b0 & 0x40);
    v->flexible = !!(b0 & 0x10);
    v->begin = !!(b0 & 0x08);
    v->end = !!(b0 & 0x04);
    if (b0 & 0x80) { /* I: picture id, M selects 15 bits */
        if (i >= end) return 0;
        if (d[i] & 0x80) {
            if (end - i < 2) return 0;
            v->picture_id = ((d[i] << 8) | d[i + 1]) & 0x7FFF;
            i += 2;
        } else {
            v->picture_id = d[i++];
        }
    }
    if (b0 & 0x20) { /* L: layer indices */
        if (i >= end) return 0;
        uint8_t layers = d[i++];
        v->temporal_id = layers >> 5;
        v->switching_up = !!(layers & 0x10);
        v->spatial_id = (layers >> 1) & 0x07;
        v->inter_layer = layers & 0x01;
        if (!v->flexible) { /* TL0PICIDX (non-flexible mode) */
            if (i >= end) return 0;
            v->tl0picidx = d[i++];
        }
    }
    if (v->flexible && v->inter_picture) { /* P_DIFFs, N bit says another follows */
        for (int n = 0; n < 3; n++) {
            if (i >= end) return 0;
            int more = d[i++] & 0x01;
            if (!more) break;
        }
    }
    if (b0 & 0x02) { /* V: scalability structure */
        i = vp9_parse_ss(d, i, end);
        if (i == 0) {
            vp9_clear(v);
            return 0;
        }
    }
    if (i > end) {
        vp9_clear(v);
        return 0;
    }
    v->header_size = (int)(i - start);
    v->keyframe = v->begin && !v->inter_picture && v->spatial_id == 0;
    return 1;
}

/* -- media/vp9.py Vp9Selector ---------------------------------------------------------------- */

/* `vp9_select` sees every packet once, in arrival order; a new target takes effect at the next
 * picture, so that every picture sent ends with exactly one marker. */
typedef struct {
    int target_spatial, target_temporal;
    int limit_spatial, limit_temporal;     /* the target as of the current picture's start */
    int current_spatial, current_temporal; /* -1: not started (waiting for a keyframe) */
} vp9_selector;

static void vp9_selector_init(vp9_selector *s) {
    s->target_spatial = 0;
    s->target_temporal = VP9_MAX_TEMPORAL;
    s->limit_spatial = 0;
    s->limit_temporal = VP9_MAX_TEMPORAL;
    s->current_spatial = s->current_temporal = -1;
}

static void vp9_selector_reset(vp9_selector *s) { s->current_spatial = s->current_temporal = -1; }

static void vp9_selector_set_target(vp9_selector *s, int spatial, int temporal) {
    s->target_spatial = spatial;
    s->target_temporal = temporal;
}

static int vp9_selector_started(const vp9_selector *s) { return s->current_spatial >= 0; }

/* Going up a spatial layer waits for a layer frame without inter-picture prediction, which
 * only a keyframe brings with L3T3_KEY and most encoders. */
static int vp9_selector_needs_keyframe(const vp9_selector *s) {
    return !vp9_selector_started(s) || s->current_spatial < s->target_spatial;
}

static int vp9_min(int a, int b) { return a < b ? a : b; }

/* Vp9Selector.select: -1 (drop) or the marker byte to send (0x80 or 0). */
static int vp9_select(vp9_selector *s, const vp9_descriptor *d, int marker) {
    int sid = d->spatial_id, tid = d->temporal_id;
    int picture_start = d->begin && sid == 0;
    if (picture_start) { /* the target may change here, not inside a picture */
        s->limit_spatial = s->target_spatial;
        s->limit_temporal = s->target_temporal;
    }
    if (!vp9_selector_started(s)) {
        if (!d->keyframe) return -1;
        s->current_spatial = 0;
        s->current_temporal = vp9_min(tid, s->limit_temporal);
    } else if (picture_start) { /* switching down is safe at any picture */
        s->current_spatial = vp9_min(s->current_spatial, s->limit_spatial);
        s->current_temporal = vp9_min(s->current_temporal, s->limit_temporal);
    }
    if (d->begin && s->current_temporal < tid && tid <= s->limit_temporal &&
        (d->switching_up || !d->inter_picture))
        s->current_temporal = tid;
    if (d->begin && s->current_spatial < sid && sid <= s->limit_spatial && !d->inter_picture)
        s->current_spatial = sid;
    if (sid > s->current_spatial || tid > s->current_temporal) return -1;
    /* The end of the highest kept spatial layer ends the picture for this subscriber, unless
     * a higher layer of a keyframe may still be switched to. */
    if (d->end && sid == s->current_spatial &&
        (d->inter_picture || s->current_spatial >= s->limit_spatial))
        return 0x80;
    return marker;
}

/* -- media/svc_downtrack.py SequenceMunger --------------------------------------------------- */

/* Output sequence numbers for a stream some packets of which are not sent (RFC 3550 §5.1: the
 * receiver must see no gap for them). Forwarded packets are numbered one after the other; a gap
 * in the input (loss, reordering) keeps its size in the output, so a late packet gets the
 * number reserved for it and a lost one is NACKed as usual. */
#define MUNGER_SIZE 1024  /* power of two */
#define MUNGER_MAX_GAP 256 /* larger jumps (a restarted sender) reserve nothing */

typedef struct {
    int32_t tags[MUNGER_SIZE];      /* input sequence number of each reserved slot, or -1 */
    uint16_t reserved[MUNGER_SIZE]; /* the output number reserved for it */
    uint16_t highest, next_out;
} seq_munger;

/* SequenceMunger.__init__ (SvcDownTrack always calls start before number). */
static void munger_init(seq_munger *m) {
    for (int n = 0; n < MUNGER_SIZE; n++) {
        m->tags[n] = -1;
        m->reserved[n] = 0;
    }
    m->highest = m->next_out = 0;
}

/* SequenceMunger.start: `in_seq` will be numbered `out_seq` if it is sent. */
static void munger_start(seq_munger *m, uint16_t in_seq, uint16_t out_seq) {
    m->highest = (uint16_t)(in_seq - 1);
    m->next_out = out_seq;
    for (int n = 0; n < MUNGER_SIZE; n++) m->tags[n] = -1;
}

/* SequenceMunger.number: the output sequence number of this input packet, or -1 when it is
 * not sent. */
static int munger_number(seq_munger *m, uint16_t in_seq, int send) {
    uint16_t delta = (uint16_t)(in_seq - m->highest);
    if (delta > 0 && delta < 0x8000) { /* newer than any before */
        if (delta > 1 && delta <= MUNGER_MAX_GAP) {
            for (uint16_t k = 1; k < delta; k++) {
                uint16_t missing = (uint16_t)(m->highest + k);
                m->tags[missing & (MUNGER_SIZE - 1)] = missing;
                m->reserved[missing & (MUNGER_SIZE - 1)] = m->next_out++;
            }
        }
        m->highest = in_seq;
        if (!send) return -1;
        return m->next_out++;
    }
    int slot = in_seq & (MUNGER_SIZE - 1);
    if (m->tags[slot] != in_seq) return -1; /* a duplicate, or older than the reservations */
    m->tags[slot] = -1;
    return send ? m->reserved[slot] : -1;
}

#endif
