/*
 * The per-packet path of the native plane, the C twin of uptrack.py (UpTrack.receive,
 * ReceiveLayer.on_packet, the NACK cache) and downtrack.py (DownTrack.forward, _start_epoch,
 * retransmit). The receive side (uptrack_receive) runs under the plane's lock; the send side
 * (forward_one, retransmit, send_padding, probe_pad: anything given a `sender`) under the lock of
 * the sender that owns the downtrack's transport (plane.h says who takes which).
 */
#ifndef ROOMCAST_NATIVE_FORWARD_H
#define ROOMCAST_NATIVE_FORWARD_H

#define EPOCH_SPAN 0x4000 /* downtrack.py EPOCH_SPAN */

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "codecs.h"
#include "plane.h"

static double monotonic_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* RFC 3550 §5.1 wants unpredictable initial values: from the kernel's generator. */
static uint32_t random32(void) {
    uint32_t v;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v)
        v = (uint32_t)rand() ^ ((uint32_t)rand() << 16);
    return v;
}

int queue_event(plane *p, int kind, int id, int arg, const uint8_t *data, size_t len,
                const struct sockaddr_storage *addr, socklen_t addrlen);

/* Queue the protected datagram built in the next send slot; flushes a full batch. */
void commit_send(sender *s, const transport *t, int len);
void flush_sends(plane *p, sender *s);

/* The uptrack's packet to its downtracks: inline (one sender) or queued to their senders. */
void fan_out(plane *p, int uid, uptrack *u, const packet_info *pi);

/* ReceiveLayer.on_packet: RFC 3550 A.3 sequence tracking and A.8 jitter. A padding-only
 * packet (a sender's bandwidth probe) or a late one says nothing of the layer's media or its
 * timing: it is counted, and no more (a paused layer a publisher pads stays paused). */
static void layer_on_packet(layer_state *l, int seq, uint32_t timestamp, double now, size_t size,
                            int rate, int padding) {
    int late = 0;
    if (l->packets == 0) {
        l->base_seq = l->max_seq = seq;
    } else {
        int delta = (seq - l->max_seq) & 0xFFFF;
        if (delta > 0 && delta < 0x8000) {
            if (seq < l->max_seq) l->cycles += 0x10000;
            if (delta > 1 && l->nack.enabled)
                nack_on_gap(&l->nack, (uint16_t)(l->max_seq + 1), delta - 1, now);
            l->max_seq = seq;
        } else if (delta) {
            late = 1; /* a retransmission, or reordered */
            if (l->nack.enabled) nack_on_late(&l->nack, (uint16_t)seq);
        }
    }
    l->packets++;
    l->bytes += size;
    if (padding || late) return;
    int64_t transit = (int64_t)(now * rate) - (int64_t)timestamp;
    if (l->has_transit) {
        int64_t d = llabs(transit - l->last_transit);
        if (d < 0x80000000LL) l->jitter += ((double)d - l->jitter) / 16;
    }
    l->last_transit = transit;
    l->has_transit = 1;
    l->last_arrival = now;
}

static void cache_put(layer_state *l, const uint8_t *data, size_t len, uint16_t seq) {
    if (!l->cache || len > MAX_PACKET) return;
    cache_slot *slot = &l->cache[seq & l->cache_mask];
    if (!slot->buf && !(slot->buf = malloc(MAX_PACKET))) return;
    memcpy(slot->buf, data, len);
    slot->len = (uint16_t)len;
}

static const cache_slot *cache_get(const layer_state *l, uint16_t seq) {
    if (!l->cache) return NULL;
    const cache_slot *slot = &l->cache[seq & l->cache_mask];
    if (!slot->buf || slot->len < RTP_HEADER_SIZE || rd16(slot->buf + 2) != seq) return NULL;
    return slot;
}

/* UpTrack._parse_into for the codecs the native plane takes (VP8, audio): 0 = not forwarded. */
static int parse_info(uptrack *u, packet_info *pi, const uint8_t *data, size_t len, int layer,
                      double now) {
    if (rtp_parse(data, len, &pi->h) < 0) {
        u->malformed++;
        return 0;
    }
    int kind = u->pt_kind[pi->h.payload_type];
    if (kind == PT_NONE) return 0;
    pi->data = data;
    pi->len = len;
    pi->svc = NULL;
    pi->layer = layer;
    pi->now = pi->send_now = now;
    pi->clock_rate = u->clock_rate[pi->h.payload_type];
    size_t start = pi->h.payload_offset, end = pi->h.payload_end;
    if (kind == PT_VP8) {
        vp8_parse(data, start, end, &pi->vp8);
        pi->keyframe = pi->vp8.keyframe;
        return 1;
    }
    memset(&pi->vp8, 0, sizeof pi->vp8);
    pi->vp8.tl0picidx = -1;
    if (end == start) { /* padding only: no payload to read */
        pi->keyframe = 0;
        return 1;
    }
    switch (kind) {
    case PT_H264: pi->keyframe = h264_keyframe(data, start, end); break;
    case PT_H265: pi->keyframe = h265_keyframe(data, start, end); break;
    case PT_VP9: pi->keyframe = vp9_keyframe(data, start, end); break;
    case PT_AV1: pi->keyframe = av1_keyframe(data, start, end); break;
    default: pi->keyframe = 1; /* audio, and video we cannot read: every packet a start */
    }
    return 1;
}

/* UpTrack._observe_level's input: an audio packet's RFC 6464 level (the speaker detector,
 * uptrack.py AudioLevel, runs in Python on what `Engine.levels` hands it). */
static void record_level(uptrack *u, const packet_info *pi, double now) {
    size_t len = 0;
    long at = rtp_find_extension(pi->data, &pi->h, u->level_ext, &len);
    if (at < 0 || len < 1) return;
    uint32_t slot = (u->levels_head + u->levels_count) & (MAX_LEVELS - 1);
    u->levels[slot] = (level_record){now, pi->h.timestamp, (uint32_t)pi->clock_rate,
                                     (uint8_t)(pi->data[at] & 0x7F), {0}};
    if (u->levels_count < MAX_LEVELS)
        u->levels_count++;
    else
        u->levels_head = (u->levels_head + 1) & (MAX_LEVELS - 1); /* oldest lost */
}

/* DownTrack._start_epoch. */
static void start_epoch(downtrack *dt, const packet_info *pi) {
    uint16_t seq;
    uint32_t ts;
    const vp8_descriptor *v = &pi->vp8;
    if (!dt->started) {
        dt->started = 1;
        seq = (uint16_t)random32();
        ts = random32();
        dt->picture_id_offset = dt->tl0_offset = 0;
    } else {
        seq = (uint16_t)(dt->last_seq + 1);
        double elapsed = pi->now - dt->last_time;
        if (elapsed < 0) elapsed = 0;
        long step = lround(elapsed * pi->clock_rate);
        ts = dt->last_ts + (uint32_t)(step > 1 ? step : 1);
        if (v->picture_id_size && dt->last_picture_id >= 0)
            dt->picture_id_offset = (dt->last_picture_id + 1 - v->picture_id) & 0x7FFF;
        if (v->tl0picidx >= 0 && dt->last_tl0 >= 0)
            dt->tl0_offset = (dt->last_tl0 + 1 - v->tl0picidx) & 0xFF;
    }
    dt->seq_offset = (uint16_t)(seq - pi->h.sequence);
    dt->nskips = 0;
    dt->ts_offset = ts - pi->h.timestamp;
    dt->epoch_seq = dt->max_seq = pi->h.sequence;
    dt->current = dt->epoch_layer = pi->layer;
}

/* The rewritten packet for this downtrack into `out` (BUF_SIZE): its length, or -1;
 * `*tw_offset` where its transport-wide sequence number goes (-1: none). */
static int rewrite(const downtrack *dt, const packet_info *pi, int pt, uint16_t seq,
                   uint8_t *out, size_t *payload_offset, long *tw_offset) {
    uint8_t first;
    size_t len = pi->len;
    if (dt->strip_trailer && pi->h.marker && !pi->h.padding) /* ExtensionRewriter.rewrite_split */
        len -= trailer_length(pi->data, pi->h.payload_offset, pi->h.payload_end);
    long tail = rtp_rewrite_tail(pi->data, len, &pi->h, dt->ids, dt->maps, dt->tw_id,
                                 out + RTP_HEADER_SIZE, MAX_PACKET + 64, &first, payload_offset,
                                 tw_offset);
    if (tail < 0) return -1;
    out[0] = first;
    out[1] = (uint8_t)((pi->h.marker << 7) | pt);
    wr16(out + 2, seq);
    wr32(out + 4, pi->h.timestamp + dt->ts_offset);
    wr32(out + 8, dt->ssrc);
    const vp8_descriptor *v = &pi->vp8;
    if ((dt->picture_id_offset || dt->tl0_offset) && v->header_size) {
        long shift = (long)*payload_offset - (long)pi->h.payload_offset;
        if (v->picture_id_size == 2) {
            wr16(out + v->picture_id_offset + shift,
                 (uint16_t)(0x8000 | ((v->picture_id + dt->picture_id_offset) & 0x7FFF)));
        } else if (v->picture_id_size == 1) {
            out[v->picture_id_offset + shift] = (v->picture_id + dt->picture_id_offset) & 0x7F;
        }
        if (v->tl0picidx >= 0)
            out[v->tl0picidx_offset + shift] = (uint8_t)((v->tl0picidx + dt->tl0_offset) & 0xFF);
    }
    return (int)(RTP_HEADER_SIZE + tail);
}

/* The downtrack's keyed transport, NULL when it is not keyed here, or not its owner's (it was
 * added before its transport: only its owner's sender may touch the SRTP context). */
static transport *downtrack_transport(plane *p, const downtrack *dt) {
    transport *t = (dt->transport >= 0 && dt->transport < p->ntransports)
                       ? p->transports[dt->transport]
                       : NULL;
    return t && t->keyed && t->owner == dt->owner ? t : NULL;
}

/* The buffer to build a packet for `t` in: the next send slot (no copy later), or scratch. */
static uint8_t *packet_buffer(plane *p, sender *s, const transport *t) {
    if (!t) return s->scratch;
    if (s->nout == OUT_BATCH) flush_sends(p, s);
    return s->out_bufs[s->nout];
}

/* The length of an RTP header (fixed part, CSRCs, extension), -1 when it overruns `len`. */
static long rtp_header_length(const uint8_t *buf, int len) {
    if (len < RTP_HEADER_SIZE) return -1;
    long n = RTP_HEADER_SIZE + 4 * (buf[0] & 0x0F);
    if (buf[0] & 0x10) {
        if (n + 4 > len) return -1;
        n += 4 + 4 * (long)rd16(buf + n + 2);
    }
    return n <= len ? n : -1;
}

/* SRTP protect for a keyed transport, in place (room for the trailer is the caller's). */
static int transport_protect(transport *t, uint8_t *buf, int *len) {
    if (t->gcm.ctx) {
        long header = rtp_header_length(buf, *len);
        return header < 0 ? -1 : gcm_protect(&t->gcm, buf, len, (size_t)header);
    }
    return srtp_protect(t->tx, buf, len) == srtp_err_status_ok ? 0 : -1;
}

/* TransportWide.take: number a packet about to be sent on `t` (its value at `offset`). */
static void tw_stamp(transport *t, uint8_t *buf, long offset, int len, double now) {
    if (offset < 0 || !t->tw_sent) return;
    int64_t n = t->tw_next++;
    wr16(buf + offset, (uint16_t)n);
    tw_record *r = &t->tw_sent[n & (TW_HISTORY - 1)];
    r->n = n;
    r->time = now;
    r->size = (uint32_t)len;
    t->tw_bytes += (uint64_t)len;
}

/* Number, protect and queue (keyed transport: `buf` is the next send slot), or hand to Python
 * unnumbered (EV_SEND: its transport is not keyed here; `Engine.number` numbers it there). */
static int deliver(plane *p, sender *s, int did, transport *t, uint8_t *buf, int len,
                   long tw_offset, double now) {
    if (t) {
        tw_stamp(t, buf, tw_offset, len, now);
        if (transport_protect(t, buf, &len) < 0) {
            s->c.protect_failed++;
            return 0;
        }
        commit_send(s, t, len);
        return 1;
    }
    queue_event(p, EV_SEND, did, 0, buf, (size_t)len, NULL, 0);
    return 1;
}

static void probe_pad(plane *p, sender *s, transport *t, double now);

/* DownTrack._out_seq: our number for publisher sequence `seq` of this epoch, -1 for a padding
 * packet left out (or a packet older than every skip remembered: its number is unknown). */
static int out_seq(const downtrack *dt, uint16_t seq) {
    int later = 0;
    for (int i = 0; i < dt->nskips; i++) {
        uint16_t delta = (uint16_t)(dt->skips[i] - seq);
        if (delta == 0) return -1;
        if (delta < 0x8000) later++;
    }
    if (later == MAX_SKIPS) return -1;
    return (uint16_t)(seq + dt->seq_offset + later);
}

/* DownTrack._in_seq: the publisher sequence number we sent as `out` this epoch, -1: none. */
static int in_seq(const downtrack *dt, uint16_t out) {
    uint16_t base = (uint16_t)(out - dt->seq_offset);
    for (int later = 0; later <= dt->nskips; later++) {
        uint16_t seq = (uint16_t)(base - later);
        if (out_seq(dt, seq) == out) return seq;
    }
    return -1;
}

/* DownTrack.skip: a padding-only packet of the publisher (its bandwidth probe) on the layer
 * we forward is not sent on, and its number is not used. Only in-order ones matter (a late
 * one is left out too: out_seq gives it no number). */
static void skip_padding(downtrack *dt, uint16_t seq) {
    uint16_t delta = (uint16_t)(seq - dt->max_seq);
    if (delta == 0 || delta >= 0x8000) return;
    dt->seq_offset--;
    dt->max_seq = seq;
    if (dt->nskips == MAX_SKIPS) {
        memmove(dt->skips, dt->skips + 1, (MAX_SKIPS - 1) * sizeof dt->skips[0]);
        dt->nskips--;
    }
    dt->skips[dt->nskips++] = seq;
}

/* DownTrack.send_repair: a retransmission built in `buf` (`len` bytes, payload at
 * `payload_offset`) goes in an RTX packet when the subscriber negotiated RTX for its payload
 * type (RFC 4588 §4: our RTX SSRC and sequence, the original sequence number before the
 * payload), else as it is, and is counted against the downtrack's NACK tokens; 1 if it was
 * sent. `buf` has room for the two more bytes. */
static int send_repair(plane *p, sender *s, int did, transport *t, uint8_t *buf, int len,
                       size_t payload_offset, long tw_offset, int pt, double now) {
    downtrack *dt = p->downtracks[did];
    int rtx_pt = dt->rtx_ssrc ? dt->rtx_pt[pt] : -1;
    if (rtx_pt >= 0) {
        memmove(buf + payload_offset + 2, buf + payload_offset, (size_t)len - payload_offset);
        memcpy(buf + payload_offset, buf + 2, 2);
        buf[1] = (uint8_t)((buf[1] & 0x80) | rtx_pt);
        wr16(buf + 2, ++dt->rtx_seq);
        wr32(buf + 8, dt->rtx_ssrc);
        len += 2;
    }
    dt->nack_tokens -= 1;
    dt->retransmits++;
    return deliver(p, s, did, t, buf, len, tw_offset, now) ? 1 : 0;
}

#include "svc_forward.h"

/* DownTrack.forward. */
static void forward_one(plane *p, sender *s, int did, downtrack *dt, const packet_info *pi) {
    if (dt->svc) {
        forward_svc(p, s, did, dt, pi);
        return;
    }
    if (pi->layer != dt->current) {
        if (pi->layer != dt->target || !pi->keyframe || dt->muted) return;
        start_epoch(dt, pi);
    } else if (((pi->h.sequence - dt->epoch_seq) & 0xFFFF) >= 0x8000) {
        return;
    }
    if (pi->h.payload_end == pi->h.payload_offset) { /* padding only (RFC 3550 §5.1 P bit) */
        skip_padding(dt, pi->h.sequence);
        return;
    }
    int pt = dt->pt_map[pi->h.payload_type];
    if (pt < 0) return;
    int seq_out;
    if (dt->nskips && ((pi->h.sequence - dt->skips[dt->nskips - 1]) & 0xFFFF) >= 0x8000) {
        seq_out = out_seq(dt, pi->h.sequence); /* late, from before a padding packet left out */
        if (seq_out < 0) return;
    } else {
        seq_out = (uint16_t)(pi->h.sequence + dt->seq_offset);
    }
    transport *t = downtrack_transport(p, dt);
    uint8_t *buf = packet_buffer(p, s, t);
    size_t payload_offset;
    long tw_offset;
    int len = rewrite(dt, pi, pt, (uint16_t)seq_out, buf, &payload_offset, &tw_offset);
    if (len < 0) {
        s->c.oversize++;
        return;
    }
    uint16_t seq = rd16(buf + 2);
    uint32_t ts = rd32(buf + 4);
    dt->packets_sent++;
    dt->bytes_sent += (uint64_t)len;
    dt->payload_octets += (uint64_t)(len - (int)payload_offset - pi->h.padding);
    if (((pi->h.sequence - dt->max_seq) & 0xFFFF) < 0x8000) {
        dt->max_seq = pi->h.sequence;
        /* The epoch's start slides along EPOCH_SPAN behind the newest packet: left where it
           began, every packet after 32,768 would count as older than the epoch. */
        if (((pi->h.sequence - dt->epoch_seq) & 0xFFFF) > EPOCH_SPAN)
            dt->epoch_seq = (uint16_t)(pi->h.sequence - EPOCH_SPAN);
        dt->last_seq = seq;
        dt->last_ts = ts;
        dt->last_time = pi->now;
        if (pi->vp8.picture_id_size)
            dt->last_picture_id = (pi->vp8.picture_id + dt->picture_id_offset) & 0x7FFF;
        if (pi->vp8.tl0picidx >= 0)
            dt->last_tl0 = (pi->vp8.tl0picidx + dt->tl0_offset) & 0xFF;
    }
    if (deliver(p, s, did, t, buf, len, tw_offset, pi->send_now)) s->c.forwarded++;
    if (t && t->probe_down >= 0) probe_pad(p, s, t, pi->send_now);
}

/* DownTrack.send_padding: one padding-only packet on the RTX stream (what libwebrtc probes
 * with), numbered on the transport; its size, 0 when the downtrack cannot pad. */
static int send_padding(plane *p, sender *s, int did, double now) {
    downtrack *dt = p->downtracks[did];
    if (dt->padding_pt < 0 || dt->tw_id < 1 || dt->tw_id > 14 || !dt->rtx_ssrc) return 0;
    transport *t = downtrack_transport(p, dt);
    uint8_t *buf = packet_buffer(p, s, t);
    int len = RTP_HEADER_SIZE + 8 + PADDING_SIZE;
    dt->rtx_seq++;
    buf[0] = 0xB0; /* V=2, P, X */
    buf[1] = (uint8_t)dt->padding_pt;
    wr16(buf + 2, dt->rtx_seq);
    wr32(buf + 4, dt->last_ts);
    wr32(buf + 8, dt->rtx_ssrc);
    wr16(buf + 12, EXT_PROFILE_ONE_BYTE);
    wr16(buf + 14, 1);
    buf[16] = (uint8_t)(dt->tw_id << 4 | 1);
    buf[17] = buf[18] = buf[19] = 0;
    memset(buf + 20, 0, PADDING_SIZE - 1);
    buf[len - 1] = PADDING_SIZE;
    if (!deliver(p, s, did, t, buf, len, 17, now)) return 0;
    dt->padding_sent += (uint64_t)len;
    s->c.padding++;
    return len;
}

/* Downlink.pad for a probe the engine runs: the padding owed on `t` since the probe began. */
static void probe_pad(plane *p, sender *s, transport *t, double now) {
    if (t->probe_down < 0) return;
    if (now >= t->probe_end || t->probe_down >= p->ndowntracks || !p->downtracks[t->probe_down]) {
        t->probe_down = -1;
        return;
    }
    double owed = t->probe_rate * (now - t->probe_start) - (double)(t->tw_bytes - t->probe_base);
    for (int burst = 0; owed >= RTP_HEADER_SIZE + 8 + PADDING_SIZE && burst < MAX_PADDING_BURST;
         burst++) {
        int size = send_padding(p, s, t->probe_down, now);
        if (!size) {
            t->probe_down = -1;
            return;
        }
        owed -= size;
    }
}

/* TwccRecorder.record's input: the transport-wide number and arrival of a publisher packet
 * (plain RTP read on transport `tid`). */
static void record_arrival(plane *p, int tid, transport *t, const uint8_t *data, size_t len,
                           double now) {
    long at = rtp_find_tw(data, len, t->rx_tw_id);
    if (at < 0 || !t->arrivals) return;
    if (!t->arrivals_count) {
        t->arrivals_since = now;
        t->arrivals_told = 0;
    } else if (!t->arrivals_told && now - t->arrivals_since >= FEEDBACK_INTERVAL) {
        t->arrivals_told = 1; /* Python pulls them and sends the feedback */
        queue_event(p, EV_ARRIVALS, tid, 0, NULL, 0, NULL, 0);
    }
    uint32_t slot = (t->arrivals_head + t->arrivals_count) & (MAX_ARRIVALS - 1);
    t->arrivals[slot] = (arrival){now, rd16(data + at), rd32(data + 8)};
    if (t->arrivals_count < MAX_ARRIVALS)
        t->arrivals_count++;
    else
        t->arrivals_head = (t->arrivals_head + 1) & (MAX_ARRIVALS - 1); /* oldest lost */
}

/* UpTrack._send_nacks: what the layer's NACK bookkeeping wants requested now, to Python. */
void send_nacks(plane *p, int uid, int layer, double now);

/* UpTrack.receive for a routed packet (plain RTP). */
static void uptrack_receive(plane *p, int uid, int layer, const uint8_t *data, size_t len,
                            double now, double send_now) {
    uptrack *u = p->uptracks[uid];
    if (layer < 0 || layer >= u->nlayers) return;
    packet_info pi;
    uint64_t malformed = u->malformed;
    if (!parse_info(u, &pi, data, len, layer, now)) {
        p->c.malformed += u->malformed - malformed;
        return;
    }
    pi.send_now = send_now;
    layer_state *l = &u->layers[layer];
    int first = l->packets == 0;
    int padding = pi.h.payload_end == pi.h.payload_offset;
    svc_info svc; /* a scalable stream's layers (UpTrack._parse_into) */
    pi.svc = NULL;
    if (u->svc && !padding) {
        memset(&svc, 0, sizeof svc); /* no pointer left dangling for the hand-off to copy */
        pi.keyframe = svc_parse(u->svc, &svc, &pi, now);
        pi.svc = &svc;
    }
    layer_on_packet(l, pi.h.sequence, pi.h.timestamp, now, len, pi.clock_rate, padding);
    cache_put(l, data, len, pi.h.sequence);
    if (l->nack.enabled && now >= l->nack.next_due) send_nacks(p, uid, layer, now);
    if (u->levels && !padding) record_level(u, &pi, now);
    if (first && !padding) queue_event(p, EV_LAYER_STARTED, uid, layer, NULL, 0, NULL, 0);
    if (u->muted) return;
    fan_out(p, uid, u, &pi);
}

/* DownTrack.retransmit: returns the packets resent. */
static int retransmit(plane *p, sender *s, int did, const uint16_t *seqs, int n, double now) {
    downtrack *dt = p->downtracks[did];
    if (dt->svc) return retransmit_svc(p, s, did, seqs, n, now);
    if (dt->current < 0) return 0;
    uptrack *u = p->uptracks[dt->uptrack];
    double tokens = dt->nack_tokens + (now - dt->nack_refill) * NACK_RATE;
    dt->nack_tokens = tokens < NACK_BURST ? tokens : NACK_BURST;
    dt->nack_refill = now;
    int sent = 0;
    for (int i = 0; i < n; i++) {
        if (dt->nack_tokens < 1) {
            dt->nacks_dropped++;
            continue;
        }
        int found = dt->nskips ? in_seq(dt, seqs[i]) : (uint16_t)(seqs[i] - dt->seq_offset);
        if (found < 0) continue;
        uint16_t seq = (uint16_t)found;
        if (((seq - dt->epoch_seq) & 0xFFFF) >= 0x8000 || ((dt->max_seq - seq) & 0xFFFF) >= 0x8000)
            continue;
        if (dt->current >= u->nlayers) continue;
        const cache_slot *slot = cache_get(&u->layers[dt->current], seq);
        if (!slot) continue;
        packet_info pi;
        if (!parse_info(u, &pi, slot->buf, slot->len, dt->current, now)) continue;
        int pt = dt->pt_map[pi.h.payload_type];
        if (pt < 0) continue;
        size_t payload_offset;
        long tw_offset;
        transport *t = downtrack_transport(p, dt);
        uint8_t *buf = packet_buffer(p, s, t);
        int len = rewrite(dt, &pi, pt, seqs[i], buf, &payload_offset, &tw_offset);
        if (len >= 0)
            sent += send_repair(p, s, did, t, buf, len, payload_offset, tw_offset, pt, now);
    }
    return sent;
}

#endif
