/*
 * The send side of the native plane: per-sender batches (sendmmsg), and with more than one
 * sender the hand-off of parsed packets from the receive thread to the sender threads through
 * one single-producer/single-consumer ring each (plane.h says who owns what, and the locks).
 */
#ifndef ROOMCAST_NATIVE_SENDERS_H
#define ROOMCAST_NATIVE_SENDERS_H

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <unistd.h>

#include "forward.h"

/* -- batches (the sender's lock held) --------------------------------------------------------- */

void flush_sends(plane *p, sender *s) {
    int done = 0;
    while (done < s->nout) {
        int n = sendmmsg(p->fd, s->out_msgs + done, (unsigned)(s->nout - done), 0);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            /* EAGAIN (socket buffer full) or an error for one destination: skip that one. */
            s->c.send_failed++;
            done++;
            continue;
        }
        done += n;
    }
    if (s->nout) s->c.batches_out++;
    s->nout = 0;
}

void commit_send(sender *s, const transport *t, int len) {
    int i = s->nout++;
    s->out_iov[i].iov_base = s->out_bufs[i];
    s->out_iov[i].iov_len = (size_t)len;
    struct msghdr *h = &s->out_msgs[i].msg_hdr;
    memset(h, 0, sizeof *h);
    h->msg_name = (void *)&t->addr; /* t lives while its sender's lock is held */
    h->msg_namelen = t->addrlen;
    h->msg_iov = &s->out_iov[i];
    h->msg_iovlen = 1;
}

/* -- the hand-off ----------------------------------------------------------------------------- */

static void release_packet(shared_packet *packet) {
    if (atomic_fetch_sub_explicit(&packet->refs, 1, memory_order_acq_rel) == 1) free(packet);
}

/* A scalable stream's packet is queued with its layers (svc_info) after its bytes, and for AV1
 * a copy of the descriptor structure it was read with: the receive thread replaces the
 * reader's at the next keyframe, while a sender may still be deciding earlier frames. */
static size_t svc_offset(size_t len) { return (len + 15) & ~(size_t)15; }

static svc_info *shared_svc(shared_packet *packet, size_t len) {
    return (svc_info *)(packet->data + svc_offset(len));
}

static size_t shared_size(const packet_info *pi) {
    if (!pi->svc) return sizeof(shared_packet) + pi->len;
    return sizeof(shared_packet) + svc_offset(pi->len) + sizeof(svc_info) + sizeof(dd_structure);
}

/* Copy the packet (and its layers) into `packet`, pointers into the copy. */
static void share(shared_packet *packet, const packet_info *pi) {
    memcpy(packet->data, pi->data, pi->len);
    if (!pi->svc) return;
    svc_info *svc = shared_svc(packet, pi->len);
    *svc = *pi->svc;
    if (svc->dd.raw) svc->dd.raw = packet->data + (svc->dd.raw - pi->data);
    if (svc->dd.structure) {
        dd_structure *structure = (dd_structure *)(svc + 1);
        *structure = *svc->dd.structure;
        svc->dd.structure = structure;
    }
}

/* Producer side: the plane's lock held (the receive thread, or Python's receive()). */
static int ring_push(sender *s, shared_packet *packet, const packet_info *pi, int uid,
                     uint64_t serial, int fanout) {
    uint32_t tail = atomic_load_explicit(&s->tail, memory_order_relaxed);
    uint32_t head = atomic_load_explicit(&s->head, memory_order_acquire);
    if (tail - head >= JOB_RING) return 0;
    int backlog = atomic_load_explicit(&s->backlog, memory_order_relaxed);
    if (backlog > 0 && backlog + fanout > MAX_BACKLOG) return 0;
    atomic_fetch_add_explicit(&s->backlog, fanout, memory_order_relaxed);
    job *j = &s->ring[tail & (JOB_RING - 1)];
    j->packet = packet;
    j->pi = *pi;
    j->pi.data = packet->data;
    if (pi->svc) j->pi.svc = shared_svc(packet, pi->len);
    j->uptrack = uid;
    j->serial = serial;
    j->fanout = fanout;
    atomic_store_explicit(&s->tail, tail + 1, memory_order_release);
    return 1;
}

/* Light load (p->light) and nothing queued for sender `s`: the receive thread forwards to its
 * downtracks itself, under its lock (the sender may be finishing the job it took last; nothing
 * of ours can come after it). Whether it did. */
static int forward_here(plane *p, sender *s, uptrack *u, const packet_info *pi) {
    if (!p->light || atomic_load_explicit(&s->head, memory_order_acquire) !=
                         atomic_load_explicit(&s->tail, memory_order_relaxed))
        return 0;
    pthread_mutex_lock(&s->lock);
    packet_info here = *pi;
    here.send_now = monotonic_now(); /* under the lock: send records in number order */
    for (int i = 0; i < u->ndowns[s->index]; i++) {
        int did = u->downs[s->index][i];
        forward_one(p, s, did, p->downtracks[did], &here);
    }
    flush_sends(p, s);
    pthread_mutex_unlock(&s->lock);
    s->inlined++;
    return 1;
}

void fan_out(plane *p, int uid, uptrack *u, const packet_info *pi) {
    if (!p->threaded) { /* the caller holds sender 0's lock too */
        sender *s = &p->senders[0];
        for (int i = 0; i < u->ndowns[0]; i++) {
            int did = u->downs[0][i];
            forward_one(p, s, did, p->downtracks[did], pi);
        }
        return;
    }
    int queue[MAX_SENDERS], targets = 0;
    for (int w = 0; w < p->nsenders; w++)
        if (u->ndowns[w] && !forward_here(p, &p->senders[w], u, pi)) queue[targets++] = w;
    if (!targets) return;
    shared_packet *packet = malloc(shared_size(pi));
    if (!packet) {
        for (int i = 0; i < targets; i++) p->senders[queue[i]].queue_dropped++;
        return;
    }
    share(packet, pi);
    atomic_init(&packet->refs, targets);
    for (int i = 0; i < targets; i++) {
        sender *s = &p->senders[queue[i]];
        if (ring_push(s, packet, pi, uid, u->serial, u->ndowns[queue[i]])) {
            s->queued++;
            s->pending = 1;
        } else {
            s->queue_dropped++;
            release_packet(packet);
        }
    }
}

/* After a batch (the plane's lock held): tell the senders that have new jobs. */
static void wake_senders(plane *p) {
    for (int w = 0; p->threaded && w < p->nsenders; w++) {
        sender *s = &p->senders[w];
        if (!s->pending) continue;
        s->pending = 0;
        uint64_t one = 1;
        ssize_t r = write(s->wake_fd, &one, sizeof one);
        (void)r;
    }
}

/* One job, the sender's lock held: the packet to the uptrack's downtracks this sender owns. */
static void run_job(plane *p, sender *s, const job *j) {
    uptrack *u = j->uptrack < p->nuptracks ? p->uptracks[j->uptrack] : NULL;
    if (!u || u->serial != j->serial) return; /* removed (and maybe replaced) */
    for (int i = 0; i < u->ndowns[s->index]; i++) {
        int did = u->downs[s->index][i];
        downtrack *dt = did < p->ndowntracks ? p->downtracks[did] : NULL;
        if (dt) forward_one(p, s, did, dt, &j->pi);
    }
}

/* Drain the ring; the lock is let go (and the batch sent) every JOBS_PER_LOCK jobs or
 * OUT_BATCH / 4 packets, so that Python's calls, which wait for it, get in soon. */
static void drain(plane *p, sender *s) {
    for (;;) {
        uint32_t head = atomic_load_explicit(&s->head, memory_order_relaxed);
        uint32_t tail = atomic_load_explicit(&s->tail, memory_order_acquire);
        if (head == tail) return;
        pthread_mutex_lock(&s->lock);
        /* Sent now, not when read: a send record stamped with the read time would place the
           packet before Python's own sends numbered just ahead of it. */
        double now = monotonic_now();
        for (int done = 0; head != tail && done < JOBS_PER_LOCK && s->nout < OUT_BATCH / 4;
             done++) {
            job j = s->ring[head & (JOB_RING - 1)];
            j.pi.send_now = now;
            atomic_store_explicit(&s->head, ++head, memory_order_release);
            run_job(p, s, &j);
            release_packet(j.packet);
            atomic_fetch_sub_explicit(&s->backlog, j.fanout, memory_order_relaxed);
        }
        flush_sends(p, s); /* under the lock: the batch points at its transports */
        pthread_mutex_unlock(&s->lock);
    }
}

/* The jobs left when the threads stopped: dropped (their packets freed). */
static void discard_jobs(sender *s) {
    uint32_t head = atomic_load_explicit(&s->head, memory_order_relaxed);
    uint32_t tail = atomic_load_explicit(&s->tail, memory_order_acquire);
    for (; head != tail; head++) {
        release_packet(s->ring[head & (JOB_RING - 1)].packet);
        atomic_fetch_sub_explicit(&s->backlog, s->ring[head & (JOB_RING - 1)].fanout,
                                  memory_order_relaxed);
    }
    atomic_store_explicit(&s->head, head, memory_order_release);
}

static void *send_worker(void *arg) {
    sender *s = arg;
    plane *p = s->p;
    char name[16]; /* top -H, /proc/<pid>/task/<tid>/comm */
    snprintf(name, sizeof name, "roomcast-send%d", s->index);
    pthread_setname_np(pthread_self(), name);
    struct pollfd fds[2] = {{s->wake_fd, POLLIN, 0}, {p->wake_fd, POLLIN, 0}};
    for (;;) {
        if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
        if (fds[1].revents) break; /* stop() */
        uint64_t value;
        ssize_t r = read(s->wake_fd, &value, sizeof value);
        (void)r;
        drain(p, s);
    }
    return NULL;
}

/* -- locks (plane.h: the plane's, then senders by index, then events) ------------------------- */

static void lock_sender(plane *p, int w) {
    pthread_mutex_lock(&p->lock);
    pthread_mutex_lock(&p->senders[w].lock);
}

static void unlock_sender(plane *p, int w) {
    pthread_mutex_unlock(&p->senders[w].lock);
    pthread_mutex_unlock(&p->lock);
}

static void lock_all(plane *p) {
    pthread_mutex_lock(&p->lock);
    for (int w = 0; w < p->nsenders; w++) pthread_mutex_lock(&p->senders[w].lock);
}

static void unlock_all(plane *p) {
    for (int w = p->nsenders - 1; w >= 0; w--) pthread_mutex_unlock(&p->senders[w].lock);
    pthread_mutex_unlock(&p->lock);
}

/* The sender with the fewest transports (a new transport's owner). */
static int least_loaded(const plane *p) {
    int best = 0;
    for (int w = 1; w < p->nsenders; w++)
        if (p->senders[w].owned < p->senders[best].owned) best = w;
    return best;
}

#endif
