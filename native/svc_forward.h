/*
 * Scalable video in one stream (VP9 SVC, AV1 with its Dependency Descriptor) in the engine: the
 * C twin of svc_layers.py `SvcLayers.parse` on the receive side and of svc_downtrack.py
 * `SvcDownTrack` (forward, skip, _start_svc_epoch, retransmit) on the send side. Each subscriber
 * gets the spatial and temporal layers its selector (native/svc.h, native/dd.h) keeps: dropped
 * packets leave no hole in its sequence numbers (the munger), the marker moves to the end of its
 * highest spatial layer, and AV1's descriptor is rewritten for it. Python still chooses the
 * layers (`Engine.svc_control`) from what the receive side counts (`Engine.svc_stats`).
 * Included by forward.h, whose helpers it uses; the same locks apply.
 */
#ifndef ROOMCAST_NATIVE_SVC_FORWARD_H
#define ROOMCAST_NATIVE_SVC_FORWARD_H

/* SvcLayers.parse: the packet's layers into `info`, the stream's counters; whether it starts a
 * keyframe. A packet whose descriptor cannot be read is no keyframe (and AV1's is invalid). */
static int svc_parse(svc_up *sv, svc_info *info, const packet_info *pi, double now) {
    int spatial, temporal, starts, keyframe;
    if (sv->codec == PT_VP9) {
        if (!vp9_parse(pi->data, pi->h.payload_offset, pi->h.payload_end, &info->vp9)) return 0;
        spatial = info->vp9.spatial_id;
        temporal = info->vp9.temporal_id;
        starts = info->vp9.begin;
        keyframe = info->vp9.keyframe;
    } else {
        size_t len = 0;
        long at = rtp_find_extension(pi->data, &pi->h, sv->dd_ext, &len);
        if (at < 0 || !dd_read(&sv->reader, pi->data + at, len, &info->dd)) {
            info->dd.valid = 0;
            return 0;
        }
        spatial = info->dd.d.spatial;
        temporal = info->dd.d.temporal;
        starts = info->dd.d.start_of_frame;
        keyframe = info->dd.d.attached && starts;
    }
    if (!sv->has_started) {
        sv->has_started = 1;
        sv->started = now;
    }
    spatial &= SVC_LAYERS - 1;
    temporal &= SVC_LAYERS - 1;
    sv->spatial_seen[spatial] = now;
    sv->spatial_bytes[spatial] += pi->len;
    if (starts && spatial == 0) sv->frames[temporal]++;
    return keyframe;
}

/* SvcDownTrack._start_svc_epoch: a keyframe (re)starts the stream; sequence numbers and
 * timestamps continue from the last ones sent, the selector starts over. */
static void start_svc_epoch(downtrack *dt, svc_down *sv, const packet_info *pi) {
    uint16_t seq;
    uint32_t ts;
    if (!dt->started) { /* RFC 3550 §5.1: random initial sequence number and timestamp */
        dt->started = 1;
        seq = (uint16_t)random32();
        ts = random32();
    } else {
        seq = (uint16_t)(dt->last_seq + 1);
        double elapsed = pi->now - dt->last_time;
        if (elapsed < 0) elapsed = 0;
        long step = lround(elapsed * pi->clock_rate);
        ts = dt->last_ts + (uint32_t)(step > 1 ? step : 1);
    }
    dt->ts_offset = ts - pi->h.timestamp;
    dt->last_seq = (uint16_t)(seq - 1);
    munger_start(&sv->munger, pi->h.sequence, seq);
    if (sv->codec == PT_AV1)
        dd_selector_reset(&sv->dd);
    else
        vp9_selector_reset(&sv->vp9);
    dt->current = dt->epoch_layer = pi->layer;
}

/* Room for a rewritten packet after its fixed header: a descriptor may make it longer than the
 * publisher's, and the buffer keeps room for SRTP's trailer and an RTX header. */
#define SVC_ROOM (BUF_SIZE - RTP_HEADER_SIZE - 64)

/* SvcDownTrack._tail and the fixed header: the packet as this subscriber gets it, into `out`;
 * its length or -1. The trailer goes at this subscriber's frame end (its marker), and AV1's
 * descriptor is this subscriber's (`descriptor`, element `dt->svc->dd_ext`). */
static int rewrite_svc(const downtrack *dt, const uint8_t *data, size_t len, const rtp_header *h,
                       int pt, int marker, uint16_t seq, uint32_t ts, const uint8_t *descriptor,
                       size_t descriptor_len, uint8_t *out, size_t *payload_offset,
                       long *tw_offset) {
    if (dt->strip_trailer && marker && !h->padding)
        len -= trailer_length(data, h->payload_offset, h->payload_end);
    uint8_t first;
    long tail = rtp_rewrite_tail_with(data, len, h, dt->ids, dt->maps, dt->tw_id,
                                      descriptor ? dt->svc->dd_ext : 0, descriptor,
                                      descriptor_len, out + RTP_HEADER_SIZE, SVC_ROOM,
                                      &first, payload_offset, tw_offset);
    if (tail < 0) return -1;
    out[0] = first;
    out[1] = (uint8_t)(marker | pt);
    wr16(out + 2, seq);
    wr32(out + 4, ts);
    wr32(out + 8, dt->ssrc);
    return (int)(RTP_HEADER_SIZE + tail);
}

/* SvcDownTrack.forward (and .skip for a padding-only packet). */
static void forward_svc(plane *p, sender *s, int did, downtrack *dt, const packet_info *pi) {
    svc_down *sv = dt->svc;
    if (pi->h.payload_end == pi->h.payload_offset) { /* padding only: its number not used */
        if (dt->current >= 0) munger_number(&sv->munger, pi->h.sequence, 0);
        return;
    }
    if (!pi->svc) return;
    if (dt->current < 0) {
        if (dt->target < 0 || dt->muted || !pi->keyframe) return;
        start_svc_epoch(dt, sv, pi);
    }
    int pt = dt->pt_map[pi->h.payload_type];
    if (pt < 0) return;
    int marker_in = pi->h.marker ? 0x80 : 0;
    int marker = sv->codec == PT_AV1 ? dd_select(&sv->dd, &pi->svc->dd, marker_in, pi->h.timestamp)
                                     : vp9_select(&sv->vp9, &pi->svc->vp9, marker_in);
    int seq = munger_number(&sv->munger, pi->h.sequence, marker >= 0);
    if (seq < 0) {
        sv->dropped++;
        return;
    }
    uint8_t descriptor[DD_MAX_BYTES];
    long descriptor_len = -1;
    int frame = -1, has_mask = 0;
    uint32_t mask = 0;
    const dd_packet *dd = &pi->svc->dd;
    if (sv->codec == PT_AV1 && sv->dd_ext)
        descriptor_len = dd_selector_descriptor(&sv->dd, dd, descriptor, sizeof descriptor,
                                                &frame, &has_mask, &mask);
    if (descriptor_len < 0) frame = -1;
    uint32_t ts = pi->h.timestamp + dt->ts_offset;
    transport *t = downtrack_transport(p, dt);
    uint8_t *buf = packet_buffer(p, s, t);
    size_t payload_offset;
    long tw_offset;
    int len = rewrite_svc(dt, pi->data, pi->len, &pi->h, pt, marker, (uint16_t)seq, ts,
                          descriptor_len >= 0 ? descriptor : NULL,
                          descriptor_len >= 0 ? (size_t)descriptor_len : 0, buf, &payload_offset,
                          &tw_offset);
    if (len < 0) {
        s->c.oversize++;
        return;
    }
    int slot = seq & (SVC_SENT - 1); /* what a NACK needs to send it again */
    sv->sent_seq[slot] = seq;
    sv->sent_from[slot] = pi->h.sequence;
    sv->sent_ts[slot] = ts;
    sv->sent_marker[slot] = (uint8_t)marker;
    sv->sent_frame[slot] = frame;
    sv->sent_has_mask[slot] = (uint8_t)has_mask;
    sv->sent_mask[slot] = mask;
    if (frame >= 0) { /* what rewrites the publisher's descriptor into this one again */
        sv->sent_dt_count[slot] = (uint8_t)(dd->structure ? dd->structure->dt_count : 0);
        sv->sent_counts[slot][0] = (uint8_t)dd->d.ndtis;
        sv->sent_counts[slot][1] = (uint8_t)dd->d.nchains;
        sv->sent_raw[slot] = (size_t)descriptor_len == dd->raw_len &&
                             !memcmp(descriptor, dd->raw, dd->raw_len);
    }
    dt->packets_sent++;
    dt->bytes_sent += (uint64_t)len;
    dt->payload_octets += (uint64_t)(len - (int)payload_offset - pi->h.padding);
    if (((seq - dt->last_seq) & 0xFFFF) < 0x8000) { /* the newest so far */
        dt->last_seq = (uint16_t)seq;
        dt->last_ts = ts;
        dt->last_time = pi->now;
    }
    if (deliver(p, s, did, t, buf, len, tw_offset, pi->send_now)) s->c.forwarded++;
    if (t && t->probe_down >= 0) probe_pad(p, s, t, pi->send_now);
}

/* SvcDownTrack.retransmit: resend what we sent under those numbers; the packets resent. */
static int retransmit_svc(plane *p, sender *s, int did, const uint16_t *seqs, int n, double now) {
    downtrack *dt = p->downtracks[did];
    svc_down *sv = dt->svc;
    uptrack *u = p->uptracks[dt->uptrack];
    double tokens = dt->nack_tokens + (now - dt->nack_refill) * NACK_RATE;
    dt->nack_tokens = tokens < NACK_BURST ? tokens : NACK_BURST;
    dt->nack_refill = now;
    int sent = 0;
    for (int i = 0; i < n; i++) {
        int slot = seqs[i] & (SVC_SENT - 1);
        if (sv->sent_seq[slot] != seqs[i]) continue;
        const cache_slot *cached = cache_get(&u->layers[0], sv->sent_from[slot]);
        if (!cached) continue;
        if (dt->nack_tokens < 1) {
            dt->nacks_dropped++;
            continue;
        }
        rtp_header h;
        if (rtp_parse(cached->buf, cached->len, &h) < 0) continue;
        int pt = dt->pt_map[h.payload_type];
        if (pt < 0) continue;
        uint8_t descriptor[DD_MAX_BYTES];
        long descriptor_len = -1;
        if (sv->sent_frame[slot] >= 0 && u->svc) { /* the descriptor as first sent */
            size_t raw_len = 0;
            long at = rtp_find_extension(cached->buf, &h, u->svc->dd_ext, &raw_len);
            if (at >= 0 && sv->sent_raw[slot] && raw_len <= sizeof descriptor) {
                memcpy(descriptor, cached->buf + at, raw_len);
                descriptor_len = (long)raw_len;
            } else if (at >= 0) {
                descriptor_len = dd_rewrite_counted(
                    cached->buf + at, raw_len, sv->sent_frame[slot], sv->sent_has_mask[slot],
                    sv->sent_mask[slot], sv->sent_dt_count[slot], sv->sent_counts[slot][0],
                    sv->sent_counts[slot][1], descriptor, sizeof descriptor);
            }
        }
        transport *t = downtrack_transport(p, dt);
        uint8_t *buf = packet_buffer(p, s, t);
        size_t payload_offset;
        long tw_offset;
        int len = rewrite_svc(dt, cached->buf, cached->len, &h, pt, sv->sent_marker[slot],
                              seqs[i], sv->sent_ts[slot],
                              descriptor_len >= 0 ? descriptor : NULL,
                              descriptor_len >= 0 ? (size_t)descriptor_len : 0, buf,
                              &payload_offset, &tw_offset);
        if (len >= 0)
            sent += send_repair(p, s, did, t, buf, len, payload_offset, tw_offset, pt, now);
    }
    return sent;
}

#endif
