/*
 * AV1's Dependency Descriptor (AV1 RTP specification, appendix A) for the native plane: the C
 * twins of media/dependency_descriptor.py (parse; dd_rewrite stands in for serialize, see
 * there) and of media/av1.py (DdReader, DdPacket, DdSelector), decision for decision.
 *
 * Pure functions on fixed-size structs: every read is bounds-checked, nothing allocates. Where
 * Python's lists are unbounded, C rejects what does not fit its arrays as malformed: more than
 * DD_MAX_FDIFFS reference diffs in a template or a frame (Python accepts any number). The
 * other limits are the format's own (64 templates, 32 decode targets, 32 chains), as Python's.
 */
#ifndef ROOMCAST_NATIVE_DD_H
#define ROOMCAST_NATIVE_DD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define DD_MAX_TEMPLATES 64
#define DD_MAX_TARGETS 32
#define DD_MAX_CHAINS 32
#define DD_MAX_FDIFFS 16 /* reference diffs of a template or a frame; more: malformed */
#define DD_MAX_SPATIAL 8 /* spatial ids fit 3 bits: render resolutions per spatial id */
#define DD_HISTORY 512   /* av1.py _HISTORY */
#define DD_MAX_LAYER_ID 7
#define DD_MAX_TEMPORAL 7 /* av1.py MAX_TEMPORAL */
/* A rewritten descriptor is at most 4 bytes longer than its original (a mask of up to 32 bits
 * added): room for any descriptor that came in one extension element (255 bytes). */
#define DD_MAX_BYTES 259

#define DD_NOT_PRESENT 0 /* decode target indications (§A.8.3.1, table A.1) */
#define DD_DISCARDABLE 1
#define DD_SWITCH 2
#define DD_REQUIRED 3

typedef struct {
    uint8_t spatial, temporal, nfdiffs;
    uint8_t dtis[DD_MAX_TARGETS];
    uint16_t fdiffs[DD_MAX_FDIFFS];
    uint8_t chain_diffs[DD_MAX_CHAINS];
} dd_template;

typedef struct { /* DependencyStructure */
    int template_id_offset, dt_count, ntemplates, chain_count;
    uint8_t protected_by[DD_MAX_TARGETS];
    dd_template templates[DD_MAX_TEMPLATES];
    uint8_t dt_spatial[DD_MAX_TARGETS], dt_temporal[DD_MAX_TARGETS]; /* decode_target_layers */
    uint8_t high_first[DD_MAX_TARGETS]; /* decode targets in targets_high_first order */
    uint32_t all_targets;
    int has_resolutions, nresolutions; /* render_resolutions(), one per spatial id */
    int widths[DD_MAX_SPATIAL], heights[DD_MAX_SPATIAL]; /* 1 to 65536 */
} dd_structure;

typedef struct { /* DependencyDescriptor, resolved against a structure */
    int start_of_frame, end_of_frame, template_id, frame_number, spatial, temporal;
    int ndtis, nfdiffs, nchains; /* ndtis, nchains: the structure's counts (0 chains: none) */
    uint8_t dtis[DD_MAX_TARGETS];
    uint16_t fdiffs[DD_MAX_FDIFFS];
    uint8_t chain_diffs[DD_MAX_CHAINS];
    int attached;                /* the packet carries a structure */
    int has_mask; uint32_t mask; /* active_decode_targets_bitmask, when present */
    int custom_dtis, custom_fdiffs, custom_chains;
} dd_descriptor;

/* -- bits (§A.8.1) ---------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *d;
    size_t bits, pos;
    int err; /* sticky: a read past the end; every later read gives 0 */
} dd_bits;

/* f(n), n <= 32: n bits, most significant first. */
static uint32_t dd_f(dd_bits *r, int n) {
    if (r->err || (size_t)n > r->bits - r->pos) {
        r->err = 1;
        return 0;
    }
    uint64_t v = 0;
    size_t pos = r->pos;
    int left = n;
    while (left > 0) {
        int off = (int)(pos & 7), take = 8 - off;
        if (take > left) take = left;
        v = v << take | ((uint32_t)r->d[pos >> 3] >> (8 - off - take) & ((1u << take) - 1));
        pos += (size_t)take;
        left -= take;
    }
    r->pos = pos;
    return (uint32_t)v;
}

static int dd_bit_length(uint32_t n) {
    int w = 0;
    while (n) { w++; n >>= 1; }
    return w;
}

/* ns(n), 1 <= n <= 33: a non-symmetric unsigned value in [0, n). */
static uint32_t dd_ns(dd_bits *r, uint32_t n) {
    int w = dd_bit_length(n);
    uint32_t m = (1u << w) - n;
    uint32_t v = dd_f(r, w - 1);
    if (v < m) return v;
    return (v << 1) - m + dd_f(r, 1);
}

typedef struct {
    uint8_t *d;
    size_t cap, bits;
    int err; /* sticky: no room */
} dd_writer;

static void dd_put(dd_writer *w, int n, uint32_t v) {
    for (int i = n - 1; i >= 0; i--) {
        size_t byte = w->bits >> 3;
        if (byte >= w->cap) {
            w->err = 1;
            return;
        }
        int bit = 7 - (int)(w->bits & 7);
        if (bit == 7) w->d[byte] = 0; /* zero_padding comes free */
        w->d[byte] |= (uint8_t)((v >> i & 1) << bit);
        w->bits++;
    }
}

/* Bits [from, to) of r's data, as they were. */
static void dd_copy_bits(dd_writer *w, const uint8_t *d, size_t from, size_t to) {
    dd_bits r = {d, to, from, 0};
    while (r.pos < to && !w->err) {
        int n = to - r.pos > 16 ? 16 : (int)(to - r.pos);
        dd_put(w, n, dd_f(&r, n));
    }
}

static uint32_t dd_width_mask(int bits) {
    return bits >= 32 ? 0xFFFFFFFFu : (1u << bits) - 1;
}

/* -- parse ------------------------------------------------------------------------------------ */

typedef struct { /* what a splice needs of a structure it skips */
    int dt_count, chain_count;
} dd_shape;

/* template_dependency_structure() (§A.8.2) into s (NULL: only skipped); 0, or -1 when
 * malformed (as _read_structure raises DdError, plus more than DD_MAX_FDIFFS diffs). */
static int dd_read_structure(dd_bits *r, dd_structure *s, dd_shape *shape) {
    int offset = (int)dd_f(r, 6);
    int dt_count = (int)dd_f(r, 5) + 1;
    uint8_t spatial_of[DD_MAX_TEMPLATES], temporal_of[DD_MAX_TEMPLATES];
    int n = 0, spatial = 0, temporal = 0;
    for (;;) { /* template_layers() */
        if (n >= DD_MAX_TEMPLATES) return -1;
        if (spatial > DD_MAX_LAYER_ID || temporal > DD_MAX_LAYER_ID) return -1;
        spatial_of[n] = (uint8_t)spatial;
        temporal_of[n] = (uint8_t)temporal;
        n++;
        uint32_t idc = dd_f(r, 2);
        if (r->err) return -1;
        if (idc == 1) temporal++;
        else if (idc == 2) spatial++, temporal = 0;
        else if (idc == 3) break;
    }
    if (s) {
        s->template_id_offset = offset;
        s->dt_count = dt_count;
        s->ntemplates = n;
        for (int i = 0; i < n; i++) {
            s->templates[i].spatial = spatial_of[i];
            s->templates[i].temporal = temporal_of[i];
        }
    }
    for (int i = 0; i < n; i++) /* template_dtis() */
        for (int dt = 0; dt < dt_count; dt++) {
            uint8_t dti = (uint8_t)dd_f(r, 2);
            if (s) s->templates[i].dtis[dt] = dti;
        }
    for (int i = 0; i < n; i++) { /* template_fdiffs() */
        int k = 0;
        while (dd_f(r, 1)) {
            if (k >= DD_MAX_FDIFFS) return -1;
            uint16_t fdiff = (uint16_t)(dd_f(r, 4) + 1);
            if (s) s->templates[i].fdiffs[k] = fdiff;
            k++;
        }
        if (s) s->templates[i].nfdiffs = (uint8_t)k;
    }
    int chain_count = (int)dd_ns(r, (uint32_t)dt_count + 1); /* template_chains() */
    if (s) s->chain_count = chain_count;
    if (chain_count) {
        for (int dt = 0; dt < dt_count; dt++) {
            uint8_t chain = (uint8_t)dd_ns(r, (uint32_t)chain_count);
            if (s) s->protected_by[dt] = chain;
        }
        for (int i = 0; i < n; i++)
            for (int c = 0; c < chain_count; c++) {
                uint8_t diff = (uint8_t)dd_f(r, 4);
                if (s) s->templates[i].chain_diffs[c] = diff;
            }
    }
    int has_resolutions = (int)dd_f(r, 1); /* render_resolutions() */
    int nres = has_resolutions ? spatial_of[n - 1] + 1 : 0;
    for (int i = 0; i < nres; i++) {
        int width = (int)dd_f(r, 16) + 1, height = (int)dd_f(r, 16) + 1;
        if (s) s->widths[i] = width, s->heights[i] = height;
    }
    if (r->err) return -1;
    if (shape) shape->dt_count = dt_count, shape->chain_count = chain_count;
    if (!s) return 0;
    s->has_resolutions = has_resolutions;
    s->nresolutions = nres;
    /* DependencyStructure.__post_init__: decode_target_layers(), targets_high_first. */
    uint32_t keys[DD_MAX_TARGETS];
    for (int dt = 0; dt < dt_count; dt++) {
        int top_s = 0, top_t = 0;
        for (int i = 0; i < n; i++) {
            if (!s->templates[i].dtis[dt]) continue;
            if (s->templates[i].spatial > top_s) top_s = s->templates[i].spatial;
            if (s->templates[i].temporal > top_t) top_t = s->templates[i].temporal;
        }
        s->dt_spatial[dt] = (uint8_t)top_s;
        s->dt_temporal[dt] = (uint8_t)top_t;
        keys[dt] = (uint32_t)top_s << 16 | (uint32_t)top_t << 8 | (uint32_t)dt;
    }
    for (int i = 1; i < dt_count; i++) { /* sorted(..., reverse=True): insertion sort */
        uint32_t key = keys[i];
        int j = i - 1;
        while (j >= 0 && keys[j] < key) {
            keys[j + 1] = keys[j];
            j--;
        }
        keys[j + 1] = key;
    }
    for (int i = 0; i < dt_count; i++) s->high_first[i] = (uint8_t)(keys[i] & 0xFF);
    s->all_targets = dd_width_mask(dt_count);
    return 0;
}

/* dependency_descriptor.parse: 0 on success, -1 on DdError (or more than DD_MAX_FDIFFS custom
 * fdiffs). `current` may be NULL. When the packet attaches a structure it is parsed into
 * *attached (caller's storage, which must be given; it is overwritten even when the packet
 * turns out malformed) and used. */
static int dd_parse(const uint8_t *raw, size_t len, const dd_structure *current,
                    dd_structure *attached, dd_descriptor *out) {
    if (len < 3) return -1;
    memset(out, 0, offsetof(dd_descriptor, dtis));
    out->attached = out->has_mask = 0;
    out->mask = 0;
    out->custom_dtis = out->custom_fdiffs = out->custom_chains = 0;
    out->start_of_frame = raw[0] >> 7;
    out->end_of_frame = raw[0] >> 6 & 1;
    out->template_id = raw[0] & 0x3F;
    out->frame_number = raw[1] << 8 | raw[2];
    const dd_structure *structure = current;
    dd_bits r = {raw, 8 * len, 24, 0};
    if (len > 3) {
        int is_attached = (int)dd_f(&r, 1);
        int active_present = (int)dd_f(&r, 1);
        out->custom_dtis = (int)dd_f(&r, 1);
        out->custom_fdiffs = (int)dd_f(&r, 1);
        out->custom_chains = (int)dd_f(&r, 1);
        if (is_attached) {
            if (!attached || dd_read_structure(&r, attached, NULL) < 0) return -1;
            structure = attached;
            out->attached = 1;
        }
        if (!structure) return -1;
        if (active_present) {
            out->has_mask = 1;
            out->mask = dd_f(&r, structure->dt_count);
        }
    }
    if (!structure) return -1;
    int index = (out->template_id + DD_MAX_TEMPLATES - structure->template_id_offset) %
                DD_MAX_TEMPLATES;
    if (index >= structure->ntemplates) return -1;
    const dd_template *t = &structure->templates[index];
    out->spatial = t->spatial;
    out->temporal = t->temporal;
    out->ndtis = structure->dt_count;
    memcpy(out->dtis, t->dtis, (size_t)structure->dt_count);
    out->nfdiffs = t->nfdiffs;
    memcpy(out->fdiffs, t->fdiffs, sizeof(uint16_t) * t->nfdiffs);
    out->nchains = structure->chain_count;
    memcpy(out->chain_diffs, t->chain_diffs, (size_t)structure->chain_count);
    if (len > 3) {
        if (out->custom_dtis)
            for (int dt = 0; dt < structure->dt_count; dt++) out->dtis[dt] = (uint8_t)dd_f(&r, 2);
        if (out->custom_fdiffs) {
            int k = 0;
            for (uint32_t size = dd_f(&r, 2); size; size = dd_f(&r, 2)) {
                if (k >= DD_MAX_FDIFFS) return -1;
                out->fdiffs[k++] = (uint16_t)(dd_f(&r, 4 * (int)size) + 1);
            }
            out->nfdiffs = k;
        }
        if (out->custom_chains)
            for (int c = 0; c < structure->chain_count; c++)
                out->chain_diffs[c] = (uint8_t)dd_f(&r, 8);
        if (r.err) return -1;
    }
    return 0;
}

/* -- rewrite ---------------------------------------------------------------------------------- */

/* The splice behind dd_rewrite. The original's fields are found with its structure's counts:
 * the attached structure's, else parse_dt_count and chain_count (-1: unknown, the custom chain
 * diffs run to the last whole byte, which is exact for a canonically padded original). */
static long dd_rewrite_counted(const uint8_t *raw, size_t len, int frame_number, int has_mask,
                               uint32_t mask, int dt_count, int parse_dt_count, int chain_count,
                               uint8_t *out, size_t cap) {
    if (len < 3 || cap < 3 || dt_count < 1 || dt_count > DD_MAX_TARGETS) return -1;
    int attached = 0, active = 0, custom_dtis = 0, custom_fdiffs = 0, custom_chains = 0;
    size_t structure_end = 29, fields_from = 29, fields_end = 29;
    if (len > 3) {
        dd_bits r = {raw, 8 * len, 24, 0};
        attached = (int)dd_f(&r, 1);
        active = (int)dd_f(&r, 1);
        custom_dtis = (int)dd_f(&r, 1);
        custom_fdiffs = (int)dd_f(&r, 1);
        custom_chains = (int)dd_f(&r, 1);
        if (attached) {
            dd_shape shape;
            if (dd_read_structure(&r, NULL, &shape) < 0) return -1;
            parse_dt_count = shape.dt_count;
            chain_count = shape.chain_count;
            structure_end = r.pos;
        }
        if (parse_dt_count < 1 || parse_dt_count > DD_MAX_TARGETS) return -1;
        if (active) dd_f(&r, parse_dt_count);
        fields_from = r.pos;
        if (custom_dtis) dd_f(&r, 2 * parse_dt_count);
        if (custom_fdiffs) {
            int k = 0;
            for (uint32_t size = dd_f(&r, 2); size; size = dd_f(&r, 2)) {
                if (++k > DD_MAX_FDIFFS) return -1;
                dd_f(&r, 4 * (int)size);
            }
        }
        if (r.err) return -1;
        if (custom_chains) {
            if (chain_count < 0) r.pos += (r.bits - r.pos) / 8 * 8;
            else if (chain_count > DD_MAX_CHAINS) return -1;
            else dd_f(&r, 8 * chain_count);
        }
        if (r.err) return -1;
        fields_end = r.pos;
    }
    /* serialize: the full mask is implied by an attached structure. */
    if (has_mask && attached && mask == dd_width_mask(dt_count))
        has_mask = 0;
    out[0] = raw[0];
    out[1] = (uint8_t)(frame_number >> 8);
    out[2] = (uint8_t)frame_number;
    if (!(attached || has_mask || custom_dtis || custom_fdiffs || custom_chains)) return 3;
    dd_writer w = {out, cap, 24, 0};
    dd_put(&w, 1, (uint32_t)attached);
    dd_put(&w, 1, (uint32_t)has_mask);
    dd_put(&w, 1, (uint32_t)custom_dtis);
    dd_put(&w, 1, (uint32_t)custom_fdiffs);
    dd_put(&w, 1, (uint32_t)custom_chains);
    dd_copy_bits(&w, raw, 29, structure_end);
    if (has_mask) dd_put(&w, dt_count, mask);
    dd_copy_bits(&w, raw, fields_from, fields_end);
    if (w.err) return -1;
    return (long)((w.bits + 7) / 8);
}

/* The raw descriptor `raw` with frame_number replaced and the active_decode_targets_bitmask set
 * (has_mask, mask, dt_count bits wide) or removed, as serialize would write it (an attached
 * structure with mask == all targets: no mask; nothing extended left: the 3 mandatory bytes
 * only). A bit-level splice of the original: the structure, custom DTIs, fdiffs and chains are
 * copied as they were (serialize writes them anew: the same bits for a canonical original,
 * e.g. one written by serialize or libwebrtc; a non-minimal fdiff size or trailing bytes stay
 * here). dt_count is also the width of the mask the original may carry (unless it attaches a
 * structure). Its length, or -1 (malformed / no room: DD_MAX_BYTES is always enough for a
 * descriptor of up to 255 bytes). */
static long dd_rewrite(const uint8_t *raw, size_t len, int frame_number, int has_mask,
                       uint32_t mask, int dt_count, uint8_t *out, size_t cap) {
    return dd_rewrite_counted(raw, len, frame_number, has_mask, mask, dt_count, dt_count, -1, out,
                              cap);
}

/* -- reader (av1.py DdReader) ---------------------------------------------------------------- */

typedef struct { /* DdReader */
    dd_structure structure;
    int has_structure;
    int64_t structure_frame, highest;
    uint32_t mask;
    uint64_t errors;
    dd_structure incoming; /* a packet's attached structure, adopted on a frame's start */
} dd_reader;

typedef struct { /* DdPacket (no per-packet caches: the rewrite is cheap) */
    int valid;
    dd_descriptor d;
    int64_t frame; /* extended frame number */
    const dd_structure *structure; /* the one the frame refers to: the reader's */
    int64_t structure_frame;
    uint32_t publisher_mask;
    const uint8_t *raw;
    size_t raw_len;
} dd_packet;

static void dd_reader_init(dd_reader *r) {
    r->has_structure = 0;
    r->structure_frame = -1;
    r->highest = -1;
    r->mask = 0;
    r->errors = 0;
}

static int64_t dd_extend(dd_reader *r, int number) {
    if (r->highest < 0) {
        r->highest = number;
        return number;
    }
    int64_t delta = (int64_t)(((uint64_t)number - (uint64_t)r->highest) & 0xFFFF);
    if (delta >= 0x8000) delta -= 0x10000;
    int64_t frame = r->highest + delta;
    if (frame > r->highest) r->highest = frame;
    return frame;
}

/* DdReader.read: 1 and `out` filled (out->structure points at r->structure), or 0. */
static int dd_read(dd_reader *r, const uint8_t *raw, size_t len, dd_packet *out) {
    out->valid = 0;
    if (dd_parse(raw, len, r->has_structure ? &r->structure : NULL, &r->incoming, &out->d) < 0) {
        r->errors++;
        return 0;
    }
    int64_t frame = dd_extend(r, out->d.frame_number);
    if (out->d.attached && out->d.start_of_frame) {
        memcpy(&r->structure, &r->incoming, sizeof r->structure);
        r->has_structure = 1;
        r->structure_frame = frame;
        r->mask = r->structure.all_targets;
    }
    if (!r->has_structure || frame < r->structure_frame) return 0;
    if (out->d.has_mask) r->mask = out->d.mask;
    out->raw = raw;
    out->raw_len = len;
    out->frame = frame;
    out->structure = &r->structure;
    out->structure_frame = r->structure_frame;
    out->publisher_mask = r->mask;
    out->valid = 1;
    return 1;
}

/* -- selector (av1.py DdSelector) ------------------------------------------------------------ */

#define DD_UNKNOWN 0 /* per-frame decisions, as av1.py's _UNKNOWN, _DROPPED, _FORWARDED */
#define DD_DROPPED 1
#define DD_FORWARDED 2

typedef struct {
    int target_spatial, target_temporal;
    int limit_spatial, limit_temporal; /* the target as of the current temporal unit's start */
    int64_t unit;                      /* RTP timestamp of the current temporal unit, -1 */
    uint8_t decisions[DD_HISTORY];
    int64_t tags[DD_HISTORY];
    int frame_offset;   /* added to frame numbers so they continue across restarts */
    int last_frame_out; /* last frame number sent (ours), -1 before any */
    /* From here on: what reset() starts over. */
    int64_t structure_frame;
    int has_structure; /* Python's `structure is not None`; then the adopted structure's: */
    int dt_count, chain_count;
    uint32_t all_targets;
    uint8_t protected_by[DD_MAX_TARGETS], dt_spatial[DD_MAX_TARGETS],
        dt_temporal[DD_MAX_TARGETS], high_first[DD_MAX_TARGETS];
    uint32_t publisher_mask;
    int nchain_intact; /* len(chain_intact) */
    uint8_t chain_intact[DD_MAX_CHAINS];
    int has_current, current_spatial, current_temporal; /* layer of the target forwarded */
    int64_t decision_frame;                              /* the frame the last decision was for */
    int decision_forwarded, decision_spatial, decision_temporal; /* its decode target */
    int mask_sent; /* a bitmask narrower than the structure's was sent */
} dd_selector;

/* What a decision reads of a structure: the packet's (the reader's) or the adopted copy. */
typedef struct {
    int dt_count, chain_count;
    const uint8_t *protected_by, *dt_spatial, *dt_temporal, *high_first;
} dd_view;

static dd_view dd_view_of(const dd_structure *s) {
    dd_view v = {s->dt_count, s->chain_count, s->protected_by, s->dt_spatial, s->dt_temporal,
                 s->high_first};
    return v;
}

static void dd_selector_reset(dd_selector *s) {
    s->structure_frame = -1;
    s->has_structure = 0;
    s->dt_count = s->chain_count = 0;
    s->all_targets = 0;
    s->publisher_mask = 0;
    s->nchain_intact = 0;
    s->has_current = 0;
    s->decision_frame = -1;
    s->decision_forwarded = 0;
    s->mask_sent = 0;
}

static void dd_selector_init(dd_selector *s) {
    s->target_spatial = 0;
    s->target_temporal = DD_MAX_TEMPORAL;
    s->limit_spatial = 0;
    s->limit_temporal = DD_MAX_TEMPORAL;
    s->unit = -1;
    memset(s->decisions, DD_UNKNOWN, sizeof s->decisions);
    for (int i = 0; i < DD_HISTORY; i++) s->tags[i] = -1;
    s->frame_offset = 0;
    s->last_frame_out = -1;
    dd_selector_reset(s);
}

static void dd_selector_set_target(dd_selector *s, int spatial, int temporal) {
    s->target_spatial = spatial;
    s->target_temporal = temporal;
}

static int dd_selector_started(const dd_selector *s) { return s->has_current; }

static int dd_chain_ok(const dd_selector *s, dd_view v, int target) {
    if (!v.chain_count) return 1; /* no chains: nothing says the target is broken */
    int chain = v.protected_by[target];
    return chain < s->nchain_intact && s->chain_intact[chain];
}

/* _decode_target: the highest decode target within (top_spatial, top_temporal) that the
 * publisher sends (and whose chain is intact, with `chains`); -1 if none. */
static int dd_decode_target(const dd_selector *s, dd_view v, uint32_t publisher_mask,
                            int chains, int top_spatial, int top_temporal) {
    for (int i = 0; i < v.dt_count; i++) {
        int target = v.high_first[i];
        if (v.dt_spatial[target] > top_spatial || v.dt_temporal[target] > top_temporal) continue;
        if (!(publisher_mask >> target & 1)) continue;
        if (chains && !dd_chain_ok(s, v, target)) continue;
        return target;
    }
    return -1;
}

static int dd_selector_needs_keyframe(const dd_selector *s) {
    if (!s->has_current || !s->has_structure) return 1;
    dd_view v = {s->dt_count, s->chain_count, s->protected_by, s->dt_spatial, s->dt_temporal,
                 s->high_first};
    int wanted = dd_decode_target(s, v, s->publisher_mask, 0, s->target_spatial,
                                  s->target_temporal);
    return wanted >= 0 && !dd_chain_ok(s, v, wanted);
}

static int dd_decision(const dd_selector *s, int64_t frame) {
    size_t slot = (size_t)((uint64_t)frame & (DD_HISTORY - 1));
    return s->tags[slot] == frame ? s->decisions[slot] : DD_UNKNOWN;
}

static void dd_remember(dd_selector *s, int64_t frame, int forwarded, int spatial, int temporal) {
    size_t slot = (size_t)((uint64_t)frame & (DD_HISTORY - 1));
    s->tags[slot] = frame;
    s->decisions[slot] =
        forwarded ? (uint8_t)(DD_FORWARDED + (spatial << 3 | temporal)) : DD_DROPPED;
}

/* _adopt: a keyframe with its structure: chains restart, frame numbers continue from ours. */
static void dd_adopt(dd_selector *s, const dd_packet *p) {
    const dd_structure *st = p->structure;
    s->structure_frame = p->structure_frame;
    s->has_structure = 1;
    s->dt_count = st->dt_count;
    s->chain_count = st->chain_count;
    s->all_targets = st->all_targets;
    memcpy(s->protected_by, st->protected_by, sizeof s->protected_by);
    memcpy(s->dt_spatial, st->dt_spatial, sizeof s->dt_spatial);
    memcpy(s->dt_temporal, st->dt_temporal, sizeof s->dt_temporal);
    memcpy(s->high_first, st->high_first, sizeof s->high_first);
    s->nchain_intact = st->chain_count;
    memset(s->chain_intact, 0, sizeof s->chain_intact);
    if (s->last_frame_out >= 0)
        s->frame_offset = (s->last_frame_out + 1 - p->d.frame_number) & 0xFFFF;
}

/* _decide: 1 and the decode target's layer when the frame is forwarded, 0 when dropped. The
 * frame is decided with the packet's structure (Python's p.structure), chains as adopted. */
static int dd_decide(dd_selector *s, const dd_packet *p, int *spatial, int *temporal) {
    const dd_descriptor *d = &p->d;
    dd_view v = dd_view_of(p->structure);
    s->publisher_mask = p->publisher_mask;
    if (p->structure_frame != s->structure_frame) {
        if (p->frame != p->structure_frame) return 0; /* a keyframe we did not see begin */
        dd_adopt(s, p);
    }
    for (int chain = 0; chain < d->nchains; chain++) {
        if (chain >= s->nchain_intact) break;
        if (d->chain_diffs[chain] == 0) s->chain_intact[chain] = 1;
        else if (s->chain_intact[chain] &&
                 dd_decision(s, p->frame - d->chain_diffs[chain]) == DD_DROPPED)
            s->chain_intact[chain] = 0;
    }
    int target = dd_decode_target(s, v, p->publisher_mask, 1, s->limit_spatial,
                                  s->limit_temporal);
    if (target < 0 && s->has_current) /* no new target before a keyframe: keep the one sent */
        target = dd_decode_target(s, v, p->publisher_mask, 1, s->current_spatial,
                                  s->current_temporal);
    /* A target beyond the frame's own DTIs (a structure attached off a frame's start, which
     * the reader does not adopt) counts as not present; Python raises IndexError there. */
    if (target < 0 || target >= d->ndtis || d->dtis[target] == DD_NOT_PRESENT) return 0;
    for (int i = 0; i < d->nfdiffs; i++)
        if (dd_decision(s, p->frame - d->fdiffs[i]) == DD_DROPPED) return 0;
    *spatial = v.dt_spatial[target];
    *temporal = v.dt_temporal[target];
    return 1;
}

/* DdSelector.select: -1 (drop), or the marker byte to send (0x80, or `marker` as given). A new
 * target takes effect at the next temporal unit (RTP timestamp), so that every unit sent ends
 * with exactly one marker. */
static int dd_select(dd_selector *s, const dd_packet *p, int marker, uint32_t timestamp) {
    if (!p->valid) return -1;
    if ((int64_t)timestamp != s->unit) {
        s->unit = timestamp;
        s->limit_spatial = s->target_spatial;
        s->limit_temporal = s->target_temporal;
    }
    if (p->frame != s->decision_frame) {
        s->decision_frame = p->frame;
        int known = dd_decision(s, p->frame);
        if (known == DD_UNKNOWN) { /* the frame's first packet: decide for the whole frame */
            int sp = 0, tp = 0;
            s->decision_forwarded = dd_decide(s, p, &sp, &tp);
            s->decision_spatial = sp;
            s->decision_temporal = tp;
            dd_remember(s, p->frame, s->decision_forwarded, sp, tp);
        } else { /* a late packet of a frame decided before */
            s->decision_forwarded = known != DD_DROPPED;
            s->decision_spatial = (known - DD_FORWARDED) >> 3;
            s->decision_temporal = (known - DD_FORWARDED) & 0x07;
        }
    }
    if (!s->decision_forwarded) return -1;
    s->has_current = 1;
    s->current_spatial = s->decision_spatial;
    s->current_temporal = s->decision_temporal;
    if (p->d.end_of_frame && p->d.spatial == s->decision_spatial)
        return 0x80; /* the end of the highest spatial layer this subscriber gets */
    return marker;
}

/* DdSelector.descriptor_bytes, after a forwarded packet: the descriptor for this subscriber
 * (frame number shifted; the decode targets it receives announced whenever they are fewer than
 * the structure's) into out, its length or -1 (no packet forwarded yet, or no room: cap
 * DD_MAX_BYTES is always enough). *frame_number_out, *has_mask_out, *mask_out: what it wrote,
 * for retransmissions. Python re-serializes the descriptor; this splices the original
 * (dd_rewrite_counted): the same bytes for a canonical original (serialize's, libwebrtc's).
 * Unlike Python, an original that attaches a structure off a frame's start keeps it (Python
 * writes the reader's structure in its place). */
static long dd_selector_descriptor(dd_selector *s, const dd_packet *p, uint8_t *out, size_t cap,
                                   int *frame_number_out, int *has_mask_out,
                                   uint32_t *mask_out) {
    if (!p->valid || !s->has_current) return -1;
    const dd_descriptor *d = &p->d;
    const dd_structure *st = p->structure;
    uint32_t mask = 0;
    for (int dt = 0; dt < st->dt_count; dt++) /* mask_up_to(current) */
        if (st->dt_spatial[dt] <= s->current_spatial && st->dt_temporal[dt] <= s->current_temporal)
            mask |= 1u << dt;
    mask &= p->publisher_mask;
    int has_mask = 1;
    if (d->attached) s->mask_sent = 0;
    if (mask == st->all_targets && !s->mask_sent) has_mask = 0; /* what the decoder assumes */
    else if (mask != st->all_targets) s->mask_sent = 1;
    int number = (d->frame_number + s->frame_offset) & 0xFFFF;
    if (s->last_frame_out < 0 || ((number - s->last_frame_out) & 0xFFFF) < 0x8000)
        s->last_frame_out = number; /* the newest (a late packet is not) */
    *frame_number_out = number;
    *has_mask_out = has_mask;
    *mask_out = has_mask ? mask : 0;
    if (!has_mask && number == d->frame_number && !d->has_mask) {
        if (p->raw_len > cap) return -1;
        memcpy(out, p->raw, p->raw_len);
        return (long)p->raw_len;
    }
    return dd_rewrite_counted(p->raw, p->raw_len, number, has_mask, mask, st->dt_count, d->ndtis,
                              d->nchains, out, cap);
}

#endif
