/*
 * NACKs towards publishers for offloaded tracks: the C twin of media/nack.py (NackGenerator),
 * same constants and the same schedule (first request after MIN_INTERVAL, then a round trip
 * backed off by BACKOFF per try, at most MAX_TRIES, given up after MAX_AGE). The engine asks
 * `nack_due` as packets of the layer arrive; Python sends the RTCP (SRTCP is its session).
 */
#ifndef ROOMCAST_NATIVE_NACK_H
#define ROOMCAST_NATIVE_NACK_H

#include <math.h>
#include <stdint.h>

#define NACK_MIN_INTERVAL 0.02
#define NACK_MAX_INTERVAL 0.4
#define NACK_DEFAULT_RTT 0.07
#define NACK_BACKOFF 1.25
#define NACK_MAX_TRIES 5
#define NACK_MAX_AGE 1.5
#define NACK_MAX_MISSING 256
#define NACK_MAX_PER_NACK 64

typedef struct {
    uint16_t seq;
    uint8_t tries;
    double first, due;
} nack_entry;

typedef struct {
    int enabled;
    nack_entry missing[NACK_MAX_MISSING]; /* oldest first */
    int count;
    double next_due;
    uint64_t requested, recovered, given_up;
} nack_state;

static void nack_drop(nack_state *s, int i) {
    memmove(&s->missing[i], &s->missing[i + 1], sizeof(nack_entry) * (size_t)(s->count - i - 1));
    s->count--;
}

/* NackGenerator.on_gap */
static void nack_on_gap(nack_state *s, uint16_t first, int count, double now) {
    if (count > NACK_MAX_MISSING) return;
    double due = now + NACK_MIN_INTERVAL;
    for (int k = 0; k < count; k++) {
        uint16_t seq = (uint16_t)(first + k);
        int found = -1;
        for (int i = 0; i < s->count; i++)
            if (s->missing[i].seq == seq) found = i;
        if (found >= 0) nack_drop(s, found); /* re-inserted last, as a dict assignment keeps */
        if (s->count == NACK_MAX_MISSING) {
            nack_drop(s, 0);
            s->given_up++;
        }
        s->missing[s->count++] = (nack_entry){seq, 0, now, due};
    }
    if (due < s->next_due) s->next_due = due;
}

/* NackGenerator.on_late */
static void nack_on_late(nack_state *s, uint16_t seq) {
    for (int i = 0; i < s->count; i++)
        if (s->missing[i].seq == seq) {
            nack_drop(s, i);
            s->recovered++;
            if (!s->count) s->next_due = INFINITY;
            return;
        }
}

/* NackGenerator.due: the sequence numbers to request now (into `out`, NACK_MAX_PER_NACK). */
static int nack_due(nack_state *s, double now, uint16_t *out) {
    int n = 0;
    double next_due = INFINITY;
    for (int i = 0; i < s->count;) {
        nack_entry *e = &s->missing[i];
        if (e->tries >= NACK_MAX_TRIES || now - e->first > NACK_MAX_AGE) {
            nack_drop(s, i);
            s->given_up++;
            continue;
        }
        if (e->due <= now && n < NACK_MAX_PER_NACK) {
            out[n++] = e->seq;
            double wait = NACK_DEFAULT_RTT * pow(NACK_BACKOFF, e->tries);
            if (wait < NACK_MIN_INTERVAL) wait = NACK_MIN_INTERVAL;
            if (wait > NACK_MAX_INTERVAL) wait = NACK_MAX_INTERVAL;
            e->tries++;
            e->due = now + wait;
        }
        if (e->due < next_due) next_due = e->due;
        i++;
    }
    s->next_due = next_due;
    s->requested += (uint64_t)n;
    return n;
}

#endif
