/*
 * roomcast.media._native: the native forwarding plane (media/native_plane.py drives it).
 *
 * `Engine(fd, threads=1)` takes a bound, non-blocking UDP socket. `start()` runs the receive
 * thread, which reads the socket with recvmmsg and handles SRTP/RTP of keyed transports without
 * the GIL, and with threads > 1 that many sender threads that share the fan-out (plane.h);
 * everything else is queued as an event that Python collects with `events()` when `event_fd`
 * is readable. Ids (transports, uptracks, downtracks) are small integers handed out here.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "senders.h"
#include "dd_binding.h"
#include "svc_binding.h"

/* -- events (any thread; events_lock is a leaf) ----------------------------------------------- */

int queue_event(plane *p, int kind, int id, int arg, const uint8_t *data, size_t len,
                const struct sockaddr_storage *addr, socklen_t addrlen) {
    event *e = malloc(sizeof(event) + len);
    pthread_mutex_lock(&p->events_lock);
    if (!e || p->nevents >= MAX_EVENTS) {
        p->events_dropped++;
        pthread_mutex_unlock(&p->events_lock);
        free(e);
        return -1;
    }
    e->next = NULL;
    e->kind = kind;
    e->id = id;
    e->arg = arg;
    e->len = len;
    e->addrlen = addr ? addrlen : 0;
    if (addr) memcpy(&e->addr, addr, addrlen);
    if (len) memcpy(e->data, data, len);
    if (p->events_tail)
        p->events_tail->next = e;
    else
        p->events_head = e;
    p->events_tail = e;
    if (p->nevents++ == 0) {
        uint64_t one = 1;
        ssize_t w = write(p->event_fd, &one, sizeof one);
        (void)w;
    }
    pthread_mutex_unlock(&p->events_lock);
    return 0;
}

void send_nacks(plane *p, int uid, int layer, double now) {
    uint16_t seqs[NACK_MAX_PER_NACK];
    uint8_t wire[2 * NACK_MAX_PER_NACK];
    int n = nack_due(&p->uptracks[uid]->layers[layer].nack, now, seqs);
    for (int i = 0; i < n; i++) wr16(wire + 2 * i, seqs[i]);
    if (n) queue_event(p, EV_NACK, uid, layer, wire, (size_t)(2 * n), NULL, 0);
}

static int same_addr(const struct sockaddr_storage *a, socklen_t alen,
                     const struct sockaddr_storage *b, socklen_t blen) {
    if (a->ss_family != b->ss_family) return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return alen == blen && memcmp(a, b, alen) == 0;
}

/* -- the worker ------------------------------------------------------------------------------ */

/* `now`: when the batch was read; `send_now`: when the receive thread holds the locks and
 * sends (with one sender), the time its send records get. */
static void handle_datagram(plane *p, uint8_t *data, size_t len, struct sockaddr_storage *addr,
                            socklen_t addrlen, double now, double send_now) {
    p->c.datagrams_in++;
    if (len == 0) return;
    /* RFC 7983 §7: 128..191 is RTP/RTCP; everything else (STUN, DTLS) goes to Python. */
    int tid = -1;
    if (data[0] >= 128 && data[0] <= 191 && len >= RTP_HEADER_SIZE) {
        for (int i = 0; i < p->ntransports; i++) {
            transport *t = p->transports[i];
            if (t && t->keyed && same_addr(&t->addr, t->addrlen, addr, addrlen)) {
                tid = i;
                break;
            }
        }
    }
    if (tid < 0) {
        queue_event(p, EV_DATAGRAM, -1, 0, data, len, addr, addrlen);
        return;
    }
    transport *t = p->transports[tid];
    int n = (int)len;
    int pt = data[1] & 0x7F;
    if (pt > 63 && pt < 96) { /* RFC 5761 §4: RTCP */
        if (srtp_unprotect_rtcp(t->rx, data, &n) != srtp_err_status_ok) {
            p->c.unprotect_failed++;
            return;
        }
        p->c.rtcp_in++;
        queue_event(p, EV_RTCP, tid, 0, data, (size_t)n, NULL, 0);
        return;
    }
    if (srtp_unprotect(t->rx, data, &n) != srtp_err_status_ok) {
        p->c.unprotect_failed++;
        return;
    }
    p->c.rtp_in++;
    if (n < RTP_HEADER_SIZE) return;
    if (t->rx_tw_id) record_arrival(p, tid, t, data, (size_t)n, now);
    uint32_t ssrc = rd32(data + 8);
    for (int i = 0; i < t->nroutes; i++) {
        route *r = &t->routes[i];
        if (r->ssrc == ssrc && r->uptrack >= 0 && r->uptrack < p->nuptracks &&
            p->uptracks[r->uptrack]) {
            uptrack_receive(p, r->uptrack, r->layer, data, (size_t)n, now, send_now);
            return;
        }
    }
    queue_event(p, EV_RTP, tid, 0, data, (size_t)n, NULL, 0);
}

static void *worker(void *arg) {
    plane *p = arg;
    pthread_setname_np(pthread_self(), "roomcast-recv");
    static __thread uint8_t bufs[IN_BATCH][BUF_SIZE];
    struct mmsghdr msgs[IN_BATCH];
    struct iovec iov[IN_BATCH];
    struct sockaddr_storage addrs[IN_BATCH];
    struct pollfd fds[2] = {{p->fd, POLLIN, 0}, {p->wake_fd, POLLIN, 0}};
    for (;;) {
        if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
        if (fds[1].revents) break; /* stop() */
        for (;;) {
            for (int i = 0; i < IN_BATCH; i++) {
                iov[i].iov_base = bufs[i];
                iov[i].iov_len = BUF_SIZE - SRTP_MAX_TRAILER_LEN;
                memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
                msgs[i].msg_hdr.msg_name = &addrs[i];
                msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
                msgs[i].msg_hdr.msg_iov = &iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            int n = recvmmsg(p->fd, msgs, IN_BATCH, MSG_DONTWAIT, NULL);
            if (n <= 0) break;
            double now = monotonic_now(); /* the arrival stamps: before any wait for a lock */
            pthread_mutex_lock(&p->lock);
            if (!p->threaded) pthread_mutex_lock(&p->senders[0].lock); /* it sends too */
            /* Sends stamped once the locks are ours: Python's own sends, numbered while we
               waited, were stamped then, and the records must not go back in time. */
            double send_now = p->threaded ? now : monotonic_now();
            p->c.batches_in++;
            p->light = n <= INLINE_BATCH;
            for (int i = 0; i < n; i++) {
                if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                    p->c.oversize++;
                    continue;
                }
                handle_datagram(p, bufs[i], msgs[i].msg_len, &addrs[i],
                                msgs[i].msg_hdr.msg_namelen, now, send_now);
            }
            if (p->threaded) {
                wake_senders(p);
            } else {
                flush_sends(p, &p->senders[0]);
                pthread_mutex_unlock(&p->senders[0].lock);
            }
            pthread_mutex_unlock(&p->lock);
            if (n < IN_BATCH) break;
        }
    }
    return NULL;
}

/* -- the Python type ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD plane p;
} Engine;

static int grow(void ***table, int *count, size_t item) {
    for (int i = 0; i < *count; i++)
        if (!(*table)[i]) {
            (*table)[i] = calloc(1, item);
            return (*table)[i] ? i : -1;
        }
    void **bigger = realloc(*table, sizeof(void *) * (size_t)(*count + 1));
    if (!bigger) return -1;
    *table = bigger;
    bigger[*count] = calloc(1, item);
    if (!bigger[*count]) return -1;
    return (*count)++;
}

#define LOCK(self) pthread_mutex_lock(&(self)->p.lock)
#define UNLOCK(self) pthread_mutex_unlock(&(self)->p.lock)
#define LOCK_ALL(self) lock_all(&(self)->p)
#define UNLOCK_ALL(self) unlock_all(&(self)->p)
/* The plane's lock, then the owner's of a transport / downtrack looked up under it (owners
   never change; the object cannot go away while the plane's lock is held). */
#define LOCK_OWNER(self, w) pthread_mutex_lock(&(self)->p.senders[w].lock)
#define UNLOCK_OWNER(self, w) pthread_mutex_unlock(&(self)->p.senders[w].lock)

static transport *get_transport(Engine *self, int id) {
    if (id < 0 || id >= self->p.ntransports || !self->p.transports[id]) {
        PyErr_Format(PyExc_KeyError, "no native transport %d", id);
        return NULL;
    }
    return self->p.transports[id];
}

static uptrack *get_uptrack(Engine *self, int id) {
    if (id < 0 || id >= self->p.nuptracks || !self->p.uptracks[id]) {
        PyErr_Format(PyExc_KeyError, "no native uptrack %d", id);
        return NULL;
    }
    return self->p.uptracks[id];
}

/* An RTP header extension id given from Python: 0 (none) to 255. */
static int check_ext_id(int id) {
    if (id < 0 || id > 255) {
        PyErr_SetString(PyExc_ValueError, "extension id out of range");
        return 0;
    }
    return 1;
}

/* The records of a ring of `capacity` (a power of two) `record`-byte records, oldest first,
 * as bytes; the ring is emptied. */
static PyObject *drain_ring(const void *ring, size_t record, uint32_t capacity, uint32_t *head,
                            uint32_t *count) {
    Py_ssize_t n = ring ? (Py_ssize_t)*count : 0;
    PyObject *blob = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)record);
    if (!blob) return NULL;
    char *out = PyBytes_AS_STRING(blob);
    for (Py_ssize_t i = 0; i < n; i++)
        memcpy(out + (size_t)i * record,
               (const char *)ring + ((*head + (uint32_t)i) & (capacity - 1)) * record, record);
    *head = *count = 0;
    return blob;
}

static downtrack *get_downtrack(Engine *self, int id) {
    if (id < 0 || id >= self->p.ndowntracks || !self->p.downtracks[id]) {
        PyErr_Format(PyExc_KeyError, "no native downtrack %d", id);
        return NULL;
    }
    return self->p.downtracks[id];
}

static int parse_address(PyObject *host, int port, struct sockaddr_storage *out, socklen_t *len) {
    const char *text = PyUnicode_AsUTF8(host);
    if (!text) return -1;
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (void *)out;
    struct sockaddr_in6 *v6 = (void *)out;
    if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof *v4;
        return 0;
    }
    if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof *v6;
        return 0;
    }
    PyErr_Format(PyExc_ValueError, "not an IP address: %s", text);
    return -1;
}

static PyObject *address_tuple(const struct sockaddr_storage *a) {
    char text[INET6_ADDRSTRLEN];
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const void *)a;
        inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
        return Py_BuildValue("(si)", text, ntohs(v4->sin_port));
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const void *)a;
        inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
        return Py_BuildValue("(siii)", text, ntohs(v6->sin6_port), ntohl(v6->sin6_flowinfo),
                             v6->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

static void free_senders(plane *p) {
    for (int w = 0; w < p->nsenders; w++) {
        sender *s = &p->senders[w];
        discard_jobs(s);
        free(s->ring);
        free(s->out_bufs);
        if (s->wake_fd > 0) close(s->wake_fd);
        pthread_mutex_destroy(&s->lock);
    }
    free(p->senders);
    p->senders = NULL;
    p->nsenders = 0;
}

/* Engine(fd, threads=1): threads senders (1: the receive thread sends, as it always did). */
static int Engine_init(Engine *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"fd", "threads", NULL};
    int fd, threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|i", names, &fd, &threads)) return -1;
    if (threads < 1 || threads > MAX_SENDERS) {
        PyErr_Format(PyExc_ValueError, "threads: 1 to %d", MAX_SENDERS);
        return -1;
    }
    plane *p = &self->p;
    if (p->senders) return 0; /* __init__ twice: keep the first */
    memset(p, 0, sizeof *p);
    p->fd = fd;
    p->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    p->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->events_lock, NULL);
    p->senders = calloc((size_t)threads, sizeof(sender));
    if (p->event_fd < 0 || p->wake_fd < 0 || !p->senders) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    p->nsenders = threads;
    p->threaded = threads > 1;
    for (int w = 0; w < threads; w++) {
        sender *s = &p->senders[w];
        s->p = p;
        s->index = w;
        pthread_mutex_init(&s->lock, NULL);
        s->out_bufs = malloc(sizeof(*s->out_bufs) * OUT_BATCH);
        s->wake_fd = p->threaded ? eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) : -1;
        s->ring = p->threaded ? calloc(JOB_RING, sizeof(job)) : NULL;
        if (!s->out_bufs || (p->threaded && (s->wake_fd < 0 || !s->ring))) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    return 0;
}

static void free_transport(transport *t) {
    if (!t) return;
    if (t->keyed) {
        srtp_dealloc(t->rx);
        srtp_dealloc(t->tx);
    }
    gcm_free(&t->gcm);
    free(t->tw_sent);
    free(t->arrivals);
    free(t);
}

static void free_downtrack(downtrack *d) {
    if (!d) return;
    free(d->svc);
    free(d);
}

static void free_uptrack(uptrack *u) {
    if (!u) return;
    for (int l = 0; l < MAX_LAYERS; l++) {
        cache_slot *c = u->layers[l].cache;
        if (!c) continue;
        for (int i = 0; i <= u->layers[l].cache_mask; i++) free(c[i].buf);
        free(c);
    }
    for (int w = 0; w < MAX_SENDERS; w++) free(u->downs[w]);
    free(u->levels);
    free(u->svc);
    free(u);
}

static PyObject *Engine_stop(Engine *self, PyObject *unused) {
    plane *p = &self->p;
    if (p->running) {
        uint64_t one = 1;
        ssize_t written = write(p->wake_fd, &one, sizeof one);
        (void)written;
        Py_BEGIN_ALLOW_THREADS pthread_join(p->thread, NULL);
        for (int w = 0; w < p->nsenders; w++)
            if (p->senders[w].running) pthread_join(p->senders[w].thread, NULL);
        Py_END_ALLOW_THREADS p->running = 0;
        for (int w = 0; w < p->nsenders; w++) {
            p->senders[w].running = 0;
            discard_jobs(&p->senders[w]);
        }
        uint64_t value; /* re-armed: start() may run the threads again */
        ssize_t r = read(p->wake_fd, &value, sizeof value);
        (void)r;
    }
    Py_RETURN_NONE;
}

static void Engine_dealloc(Engine *self) {
    plane *p = &self->p;
    Engine_stop(self, NULL);
    for (int i = 0; i < p->ntransports; i++) free_transport(p->transports[i]);
    for (int i = 0; i < p->nuptracks; i++) free_uptrack(p->uptracks[i]);
    for (int i = 0; i < p->ndowntracks; i++) free_downtrack(p->downtracks[i]);
    free(p->transports);
    free(p->uptracks);
    free(p->downtracks);
    for (event *e = p->events_head, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    free_senders(p);
    if (p->event_fd > 0) close(p->event_fd);
    if (p->wake_fd > 0) close(p->wake_fd);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Stops and joins the sender threads that run (the receive thread is not running). */
static void stop_senders(plane *p) {
    uint64_t one = 1, value;
    ssize_t r = write(p->wake_fd, &one, sizeof one);
    for (int w = 0; w < p->nsenders; w++)
        if (p->senders[w].running) {
            pthread_join(p->senders[w].thread, NULL);
            p->senders[w].running = 0;
        }
    r = read(p->wake_fd, &value, sizeof value);
    (void)r;
}

static PyObject *Engine_start(Engine *self, PyObject *unused) {
    plane *p = &self->p;
    if (!p->senders) {
        PyErr_SetString(PyExc_RuntimeError, "Engine not initialised");
        return NULL;
    }
    if (!p->running) {
        int failed = 0;
        for (int w = 0; !failed && p->threaded && w < p->nsenders; w++) {
            sender *s = &p->senders[w];
            failed = pthread_create(&s->thread, NULL, send_worker, s) != 0;
            s->running = !failed;
        }
        if (!failed) failed = pthread_create(&p->thread, NULL, worker, p) != 0;
        if (failed) {
            stop_senders(p);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        p->running = 1;
    }
    Py_RETURN_NONE;
}

static PyObject *Engine_event_fd(Engine *self, void *closure) {
    return PyLong_FromLong(self->p.event_fd);
}

/* events() -> [(kind, id, arg, bytes, addr or None)] */
static PyObject *Engine_events(Engine *self, PyObject *unused) {
    plane *p = &self->p;
    uint64_t value;
    ssize_t r = read(p->event_fd, &value, sizeof value);
    (void)r;
    pthread_mutex_lock(&p->events_lock);
    event *head = p->events_head;
    p->events_head = p->events_tail = NULL;
    p->nevents = 0;
    pthread_mutex_unlock(&p->events_lock);
    PyObject *list = PyList_New(0);
    for (event *e = head, *next; e; e = next) {
        next = e->next;
        if (list) {
            PyObject *addr = e->addrlen ? address_tuple(&e->addr) : (Py_INCREF(Py_None), Py_None);
            PyObject *item = Py_BuildValue("(iiiy#N)", e->kind, e->id, e->arg, (char *)e->data,
                                           (Py_ssize_t)e->len, addr);
            if (!item || PyList_Append(list, item) < 0) Py_CLEAR(list);
            Py_XDECREF(item);
        }
        free(e);
    }
    return list;
}

static PyObject *Engine_add_transport(Engine *self, PyObject *unused) {
    LOCK_ALL(self);
    int id = grow((void ***)&self->p.transports, &self->p.ntransports, sizeof(transport));
    if (id >= 0) {
        transport *t = self->p.transports[id];
        t->tw_next = 1; /* as TransportWide.next (libwebrtc's start too) */
        t->probe_down = -1;
        t->owner = least_loaded(&self->p);
        self->p.senders[t->owner].owned++;
    }
    UNLOCK_ALL(self);
    if (id < 0) return PyErr_NoMemory();
    return PyLong_FromLong(id);
}

static srtp_t new_session(int profile, const uint8_t *key, Py_ssize_t key_len, int inbound) {
    srtp_policy_t policy;
    memset(&policy, 0, sizeof policy);
    if (srtp_crypto_policy_set_from_profile_for_rtp(&policy.rtp, (srtp_profile_t)profile) ||
        srtp_crypto_policy_set_from_profile_for_rtcp(&policy.rtcp, (srtp_profile_t)profile))
        return NULL;
    size_t want = (size_t)srtp_profile_get_master_key_length((srtp_profile_t)profile) +
                  srtp_profile_get_master_salt_length((srtp_profile_t)profile);
    if ((size_t)key_len != want) return NULL;
    policy.ssrc.type = inbound ? ssrc_any_inbound : ssrc_any_outbound;
    policy.key = (unsigned char *)key;
    policy.window_size = 1024; /* as dtls.py's policy */
    policy.allow_repeat_tx = 1;
    srtp_t session = NULL;
    if (srtp_create(&session, &policy) != srtp_err_status_ok) return NULL;
    return session;
}

/* key_transport(id, host, port, profile, local_key, remote_key) */
static PyObject *Engine_key_transport(Engine *self, PyObject *args) {
    int id, port, profile;
    PyObject *host;
    Py_buffer local, remote;
    if (!PyArg_ParseTuple(args, "iUiiy*y*", &id, &host, &port, &profile, &local, &remote))
        return NULL;
    PyObject *result = NULL;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    srtp_t tx = NULL, rx = NULL;
    if (parse_address(host, port, &addr, &addrlen) < 0) goto done;
    tx = new_session(profile, local.buf, local.len, 0);
    rx = new_session(profile, remote.buf, remote.len, 1);
    if (!tx || !rx) {
        if (tx) srtp_dealloc(tx);
        if (rx) srtp_dealloc(rx);
        PyErr_SetString(PyExc_ValueError, "SRTP profile or key length not supported");
        goto done;
    }
    LOCK(self);
    transport *t = get_transport(self, id);
    int owner = t ? t->owner : 0;
    LOCK_OWNER(self, owner);
    if (t) {
        if (t->keyed) {
            srtp_dealloc(t->rx);
            srtp_dealloc(t->tx);
        }
        t->tx = tx;
        t->rx = rx;
        t->addr = addr;
        t->addrlen = addrlen;
        t->keyed = 1;
        gcm_free(&t->gcm);
        if (profile == srtp_profile_aead_aes_128_gcm || profile == srtp_profile_aead_aes_256_gcm)
            gcm_init(&t->gcm, local.buf, (size_t)local.len); /* fails: libsrtp2 sends */
    }
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    if (!t) {
        srtp_dealloc(tx);
        srtp_dealloc(rx);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&local);
    PyBuffer_Release(&remote);
    return result;
}

static PyObject *Engine_set_address(Engine *self, PyObject *args) {
    int id, port;
    PyObject *host;
    if (!PyArg_ParseTuple(args, "iUi", &id, &host, &port)) return NULL;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    if (parse_address(host, port, &addr, &addrlen) < 0) return NULL;
    LOCK(self);
    transport *t = get_transport(self, id);
    int owner = t ? t->owner : 0;
    LOCK_OWNER(self, owner);
    if (t) {
        t->addr = addr;
        t->addrlen = addrlen;
    }
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    if (!t) return NULL;
    Py_RETURN_NONE;
}

/* unkey_transport(id): SRTP off here (the transport failed, closed or moved to TCP). */
static PyObject *Engine_unkey_transport(Engine *self, PyObject *args) {
    int id;
    if (!PyArg_ParseTuple(args, "i", &id)) return NULL;
    LOCK(self);
    transport *t = get_transport(self, id);
    int owner = t ? t->owner : 0;
    LOCK_OWNER(self, owner);
    if (t && t->keyed) {
        srtp_dealloc(t->rx);
        srtp_dealloc(t->tx);
        gcm_free(&t->gcm);
        t->keyed = 0;
    }
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    if (!t) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_remove_transport(Engine *self, PyObject *args) {
    int id;
    if (!PyArg_ParseTuple(args, "i", &id)) return NULL;
    LOCK_ALL(self);
    transport *t = get_transport(self, id);
    if (t) {
        self->p.senders[t->owner].owned--;
        free_transport(t);
        self->p.transports[id] = NULL;
        for (int i = 0; i < self->p.ndowntracks; i++) {
            downtrack *d = self->p.downtracks[i];
            if (d && d->transport == id) d->transport = -1;
        }
    }
    UNLOCK_ALL(self);
    if (!t) return NULL;
    Py_RETURN_NONE;
}

/* bind_ssrc(transport, ssrc, uptrack, layer): RTP of `ssrc` on that transport feeds it. */
static PyObject *Engine_bind_ssrc(Engine *self, PyObject *args) {
    int id, uid, layer;
    unsigned long ssrc;
    if (!PyArg_ParseTuple(args, "ikii", &id, &ssrc, &uid, &layer)) return NULL;
    LOCK(self);
    transport *t = get_transport(self, id);
    uptrack *u = t ? get_uptrack(self, uid) : NULL;
    int ok = 0;
    if (u) {
        int slot = -1, free_slot = -1;
        for (int i = 0; i < t->nroutes; i++) {
            if (t->routes[i].ssrc == (uint32_t)ssrc) slot = i;
            else if (t->routes[i].uptrack < 0 && free_slot < 0) free_slot = i;
        }
        if (slot < 0) slot = free_slot;
        if (slot < 0 && t->nroutes < MAX_ROUTES) slot = t->nroutes++;
        if (slot >= 0) {
            t->routes[slot] = (route){(uint32_t)ssrc, uid, layer};
            ok = 1;
        } else {
            PyErr_SetString(PyExc_OverflowError, "too many SSRCs on one transport");
        }
    }
    UNLOCK(self);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static void unroute_uptrack(plane *p, int uid, int transport_only, uint32_t ssrc) {
    for (int i = 0; i < p->ntransports; i++) {
        transport *t = p->transports[i];
        if (!t) continue;
        for (int r = 0; r < t->nroutes; r++)
            if (t->routes[r].uptrack == uid && (!transport_only || t->routes[r].ssrc == ssrc))
                t->routes[r].uptrack = -1;
    }
}

/* add_uptrack(video, layers, pt_kinds: bytes[128], clock_rates: list[128], cache_size) */
static PyObject *Engine_add_uptrack(Engine *self, PyObject *args) {
    int video, nlayers, cache_size;
    Py_buffer kinds;
    PyObject *rates;
    if (!PyArg_ParseTuple(args, "iiy*Oi", &video, &nlayers, &kinds, &rates, &cache_size))
        return NULL;
    int rate_values[128];
    int bad = kinds.len != 128 || nlayers < 1 || nlayers > MAX_LAYERS || cache_size < 1 ||
              (cache_size & (cache_size - 1)) || !PyList_Check(rates) ||
              PyList_GET_SIZE(rates) != 128;
    for (int i = 0; !bad && i < 128; i++) {
        rate_values[i] = (int)PyLong_AsLong(PyList_GET_ITEM(rates, i));
        if (rate_values[i] < 0 || PyErr_Occurred()) bad = 1;
    }
    if (bad) {
        PyBuffer_Release(&kinds);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad uptrack description");
        return NULL;
    }
    LOCK_ALL(self);
    int id = grow((void ***)&self->p.uptracks, &self->p.nuptracks, sizeof(uptrack));
    if (id >= 0) {
        uptrack *u = self->p.uptracks[id];
        u->used = 1;
        u->serial = ++self->p.serials;
        u->video = video;
        u->nlayers = nlayers;
        memcpy(u->pt_kind, kinds.buf, 128);
        memcpy(u->clock_rate, rate_values, sizeof rate_values);
        for (int l = 0; l < nlayers; l++) {
            u->layers[l].cache = calloc((size_t)cache_size, sizeof(cache_slot));
            u->layers[l].cache_mask = cache_size - 1;
            u->layers[l].last_arrival = -INFINITY;
        }
    }
    UNLOCK_ALL(self);
    PyBuffer_Release(&kinds);
    if (id < 0) return PyErr_NoMemory();
    return PyLong_FromLong(id);
}

static PyObject *Engine_remove_uptrack(Engine *self, PyObject *args) {
    int uid;
    if (!PyArg_ParseTuple(args, "i", &uid)) return NULL;
    LOCK_ALL(self);
    uptrack *u = get_uptrack(self, uid);
    if (u) {
        unroute_uptrack(&self->p, uid, 0, 0);
        for (int w = 0; w < self->p.nsenders; w++)
            for (int i = 0; i < u->ndowns[w]; i++) {
                int did = u->downs[w][i];
                downtrack *d = self->p.downtracks[did];
                transport *t = d && d->transport >= 0 && d->transport < self->p.ntransports
                                   ? self->p.transports[d->transport]
                                   : NULL;
                if (t && t->probe_down == did) t->probe_down = -1;
                free_downtrack(d);
                self->p.downtracks[did] = NULL;
            }
        free_uptrack(u);
        self->p.uptracks[uid] = NULL;
    }
    UNLOCK_ALL(self);
    if (!u) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_set_uptrack_muted(Engine *self, PyObject *args) {
    int uid, muted;
    if (!PyArg_ParseTuple(args, "ip", &uid, &muted)) return NULL;
    LOCK(self);
    uptrack *u = get_uptrack(self, uid);
    if (u) u->muted = muted;
    UNLOCK(self);
    if (!u) return NULL;
    Py_RETURN_NONE;
}

/* receive(uptrack, layer, packet): a plain packet Python routed (its SSRC was just learnt). */
static PyObject *Engine_receive(Engine *self, PyObject *args) {
    int uid, layer;
    Py_buffer packet;
    if (!PyArg_ParseTuple(args, "iiy*", &uid, &layer, &packet)) return NULL;
    LOCK(self);
    plane *p = &self->p;
    uptrack *u = get_uptrack(self, uid);
    if (u && packet.len <= MAX_PACKET) {
        if (p->threaded) {
            double now = monotonic_now();
            uptrack_receive(p, uid, layer, packet.buf, (size_t)packet.len, now, now);
            wake_senders(p);
        } else {
            LOCK_OWNER(self, 0);
            double now = monotonic_now();
            uptrack_receive(p, uid, layer, packet.buf, (size_t)packet.len, now, now);
            flush_sends(p, &p->senders[0]);
            UNLOCK_OWNER(self, 0);
        }
    }
    UNLOCK(self);
    PyBuffer_Release(&packet);
    if (!u) return NULL;
    Py_RETURN_NONE;
}

/* send_rtp(transport, packet) -> bool: Python's own RTP for a keyed transport (tracks the
 * engine does not forward), protected and sent here so that every RTP packet to a transport
 * passes one place (one SRTP context; transport-wide sequence numbers later). */
static PyObject *Engine_send_rtp(Engine *self, PyObject *args) {
    int tid;
    Py_buffer packet;
    if (!PyArg_ParseTuple(args, "iy*", &tid, &packet)) return NULL;
    int sent = 0;
    LOCK(self);
    plane *p = &self->p;
    transport *t = (tid >= 0 && tid < p->ntransports) ? p->transports[tid] : NULL;
    int owner = t ? t->owner : 0;
    sender *s = &p->senders[owner];
    LOCK_OWNER(self, owner);
    if (t && t->keyed && packet.len >= RTP_HEADER_SIZE && packet.len <= MAX_PACKET + 64) {
        uint8_t *buf = packet_buffer(p, s, t);
        int len = (int)packet.len;
        double now = monotonic_now();
        memcpy(buf, packet.buf, (size_t)len);
        if (t->tw_id) tw_stamp(t, buf, rtp_find_tw(buf, (size_t)len, t->tw_id), len, now);
        if (transport_protect(t, buf, &len) == 0) {
            commit_send(s, t, len);
            sent = 1;
        } else {
            s->c.protect_failed++;
        }
        if (t->probe_down >= 0) probe_pad(p, s, t, now);
        flush_sends(p, s);
    }
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    PyBuffer_Release(&packet);
    return PyBool_FromLong(sent);
}

/* add_downtrack(uptrack, transport, ssrc, pt_map: bytes[128] (255 = none), ids: bytes[256],
 *  tw_id=0, rtx_ssrc=0, rtx_map: bytes[128] (subscriber PT -> RTX PT, 255 = none) = b"") */
static PyObject *Engine_add_downtrack(Engine *self, PyObject *args) {
    int uid, tid, tw_id = 0, strip_trailer = 0, dd_ext = 0;
    unsigned long ssrc, rtx_ssrc = 0;
    Py_buffer pt_map, ids, rtx_map = {0};
    if (!PyArg_ParseTuple(args, "iiky*y*|iky*pi", &uid, &tid, &ssrc, &pt_map, &ids, &tw_id,
                          &rtx_ssrc, &rtx_map, &strip_trailer, &dd_ext))
        return NULL;
    int id = -1;
    svc_down *svc = NULL;
    if (pt_map.len != 128 || ids.len != 256 || (rtx_map.buf && rtx_map.len != 128) ||
        tw_id < 0 || tw_id > 255 || dd_ext < 0 || dd_ext > 255) {
        PyErr_SetString(PyExc_ValueError,
                        "pt_map is 128 bytes, ids 256, rtx_map 128, tw_id and dd_ext < 256");
        goto done;
    }

    LOCK_ALL(self);
    uptrack *u = get_uptrack(self, uid);
    /* Its transport's sender owns it (a transport that is not there: sender 0, EV_SEND). */
    int w = tid >= 0 && tid < self->p.ntransports && self->p.transports[tid]
                ? self->p.transports[tid]->owner
                : 0;
    if (u && u->ndowns[w] == u->capdowns[w]) {
        int cap = u->capdowns[w] ? 2 * u->capdowns[w] : 8;
        int *bigger = realloc(u->downs[w], sizeof(int) * (size_t)cap);
        if (bigger) {
            u->downs[w] = bigger;
            u->capdowns[w] = cap;
        }
    }
    int room = u && (!u->svc || (svc = calloc(1, sizeof *svc)) != NULL); /* SvcDownTrack state */
    if (room && u->ndowns[w] < u->capdowns[w])
        id = grow((void ***)&self->p.downtracks, &self->p.ndowntracks, sizeof(downtrack));
    if (id >= 0) {
        downtrack *d = self->p.downtracks[id];
        d->used = 1;
        d->uptrack = uid;
        d->transport = tid;
        d->owner = w;
        d->ssrc = (uint32_t)ssrc;
        const uint8_t *m = pt_map.buf;
        for (int i = 0; i < 128; i++) d->pt_map[i] = m[i] < 128 ? m[i] : -1;
        memcpy(d->ids, ids.buf, 256);
        d->ids[0] = 0;
        for (int i = 1; i < 256; i++) d->maps |= d->ids[i] != 0;
        d->target = d->current = -1;
        d->last_picture_id = d->last_tl0 = -1;
        d->nack_tokens = NACK_BURST;
        d->tw_id = tw_id;
        d->strip_trailer = strip_trailer;
        d->rtx_ssrc = (uint32_t)rtx_ssrc;
        d->padding_pt = -1;
        for (int i = 0; i < 128; i++) {
            int rtx = rtx_map.buf ? ((uint8_t *)rtx_map.buf)[i] : 255;
            d->rtx_pt[i] = rtx < 128 && rtx_ssrc ? (int16_t)rtx : -1;
        }
        for (int i = 0; i < 128 && d->padding_pt < 0; i++) /* DownTrack.padding_pt */
            d->padding_pt = d->rtx_pt[i];
        d->rtx_seq = (uint16_t)random32();
        if (u->svc) { /* SvcDownTrack: its selector, munger and what it sent */
            svc->codec = u->svc->codec;
            svc->dd_ext = dd_ext;
            vp9_selector_init(&svc->vp9);
            dd_selector_init(&svc->dd);
            munger_init(&svc->munger);
            for (int i = 0; i < SVC_SENT; i++) svc->sent_seq[i] = svc->sent_frame[i] = -1;
            d->svc = svc;
            svc = NULL;
        }
        u->downs[w][u->ndowns[w]++] = id;
    }
    UNLOCK_ALL(self);
    if (id < 0 && !PyErr_Occurred()) PyErr_NoMemory();
done:
    free(svc);
    PyBuffer_Release(&pt_map);
    PyBuffer_Release(&ids);
    if (rtx_map.buf) PyBuffer_Release(&rtx_map);
    return id < 0 ? NULL : PyLong_FromLong(id);
}

static PyObject *Engine_remove_downtrack(Engine *self, PyObject *args) {
    int did;
    if (!PyArg_ParseTuple(args, "i", &did)) return NULL;
    LOCK_ALL(self);
    downtrack *d = get_downtrack(self, did);
    if (d) {
        uptrack *u = self->p.uptracks[d->uptrack];
        int w = d->owner;
        for (int i = 0; u && i < u->ndowns[w]; i++)
            if (u->downs[w][i] == did) {
                u->downs[w][i] = u->downs[w][--u->ndowns[w]];
                break;
            }
        if (d->transport >= 0 && d->transport < self->p.ntransports &&
            self->p.transports[d->transport] && self->p.transports[d->transport]->probe_down == did)
            self->p.transports[d->transport]->probe_down = -1;
        free_downtrack(d);
        self->p.downtracks[did] = NULL;
    }
    UNLOCK_ALL(self);
    if (!d) return NULL;
    Py_RETURN_NONE;
}

/* control(downtrack, target, current, muted): Python's layer decisions (DownTrack.set_target,
 * set_muted, restart); current is only ever cleared from here (-1), or left (-2). */
static PyObject *Engine_control(Engine *self, PyObject *args) {
    int did, target, current, muted;
    if (!PyArg_ParseTuple(args, "iiip", &did, &target, &current, &muted)) return NULL;
    LOCK(self);
    downtrack *d = get_downtrack(self, did);
    int owner = d ? d->owner : 0;
    LOCK_OWNER(self, owner);
    if (d) {
        d->target = target;
        if (current != -2) d->current = current;
        d->muted = muted;
    }
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    if (!d) return NULL;
    Py_RETURN_NONE;
}

/* downtrack_state(id) -> (current, packets_sent, bytes_sent, payload_octets, retransmits,
 *  nacks_dropped, last_ts, last_time, ts_offset, epoch_layer, seq_offset, started) */
static PyObject *Engine_downtrack_state(Engine *self, PyObject *args) {
    int did;
    if (!PyArg_ParseTuple(args, "i", &did)) return NULL;
    LOCK(self);
    downtrack *d = get_downtrack(self, did);
    int owner = d ? d->owner : 0;
    LOCK_OWNER(self, owner);
    downtrack copy;
    if (d) copy = *d;
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    if (!d) return NULL;
    return Py_BuildValue("(iKKKKKkdkiiiK)", copy.current, copy.packets_sent, copy.bytes_sent,
                         copy.payload_octets, copy.retransmits, copy.nacks_dropped,
                         (unsigned long)copy.last_ts, copy.last_time,
                         (unsigned long)copy.ts_offset, copy.epoch_layer, (int)copy.seq_offset,
                         copy.started, copy.padding_sent);
}

/* uptrack_state(id) -> (malformed, [(packets, bytes, base_seq, max_seq, cycles, jitter,
 *  last_arrival)] per layer) */
static PyObject *Engine_uptrack_state(Engine *self, PyObject *args) {
    int uid;
    if (!PyArg_ParseTuple(args, "i", &uid)) return NULL;
    LOCK(self);
    uptrack *u = get_uptrack(self, uid);
    layer_state layers[MAX_LAYERS];
    int n = 0;
    unsigned long long malformed = 0;
    if (u) {
        n = u->nlayers;
        memcpy(layers, u->layers, sizeof layers);
        malformed = u->malformed;
    }
    UNLOCK(self);
    if (!u) return NULL;
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int l = 0; l < n; l++) {
        layer_state *s = &layers[l];
        PyList_SET_ITEM(list, l,
                        Py_BuildValue("(KKiiLdd)", s->packets, s->bytes, s->base_seq, s->max_seq,
                                      (long long)s->cycles, s->jitter, s->last_arrival));
    }
    return Py_BuildValue("(KN)", malformed, list);
}

/* retransmit(downtrack, [subscriber seqs]) -> (resent, refused by the storm guard) */
static PyObject *Engine_retransmit(Engine *self, PyObject *args) {
    int did;
    PyObject *seqs;
    if (!PyArg_ParseTuple(args, "iO!", &did, &PyList_Type, &seqs)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(seqs);
    if (n > 4096) n = 4096; /* one NACK cannot ask for more than a few hundred */
    uint16_t values[4096];
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PyList_GET_ITEM(seqs, i));
        if (v == -1 && PyErr_Occurred()) return NULL;
        values[i] = (uint16_t)v;
    }
    LOCK(self);
    downtrack *d = get_downtrack(self, did);
    int owner = d ? d->owner : 0;
    LOCK_OWNER(self, owner);
    int sent = 0;
    unsigned long long dropped = 0;
    if (d) {
        sender *s = &self->p.senders[owner];
        unsigned long long before = d->nacks_dropped;
        sent = retransmit(&self->p, s, did, values, (int)n, monotonic_now());
        dropped = d->nacks_dropped - before;
        flush_sends(&self->p, s);
    }
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    if (!d) return NULL;
    return Py_BuildValue("(iK)", sent, dropped);
}

/* -- congestion control: transport-wide numbers, probes, publisher feedback ------------------ */

/* set_transport_cc(transport, ext_id): number every RTP packet sent on it that carries
 * extension `ext_id` (the subscriber's transport-cc id; 0: stop). */
static PyObject *Engine_set_transport_cc(Engine *self, PyObject *args) {
    int tid, ext;
    if (!PyArg_ParseTuple(args, "ii", &tid, &ext)) return NULL;
    if (!check_ext_id(ext)) return NULL;
    LOCK(self);
    transport *t = get_transport(self, tid);
    int owner = t ? t->owner : 0;
    LOCK_OWNER(self, owner);
    int ok = t != NULL;
    if (t && !t->tw_sent && !(t->tw_sent = calloc(TW_HISTORY, sizeof(tw_record)))) ok = 0;
    if (ok) t->tw_id = ext;
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    if (!ok) return t ? PyErr_NoMemory() : NULL;
    Py_RETURN_NONE;
}

/* number(transport, packet) -> bytes: `packet` numbered on the transport's counter (for a
 * packet Python sends itself while the transport is not keyed here: ICE-TCP). */
static PyObject *Engine_number(Engine *self, PyObject *args) {
    int tid;
    Py_buffer packet;
    if (!PyArg_ParseTuple(args, "iy*", &tid, &packet)) return NULL;
    PyObject *out = PyBytes_FromStringAndSize(packet.buf, packet.len);
    if (out) {
        uint8_t *buf = (uint8_t *)PyBytes_AS_STRING(out);
        LOCK(self);
        plane *p = &self->p;
        transport *t = (tid >= 0 && tid < p->ntransports) ? p->transports[tid] : NULL;
        int owner = t ? t->owner : 0;
        LOCK_OWNER(self, owner);
        if (t && t->tw_id)
            tw_stamp(t, buf, rtp_find_tw(buf, (size_t)packet.len, t->tw_id), (int)packet.len,
                     monotonic_now());
        UNLOCK_OWNER(self, owner);
        UNLOCK(self);
    }
    PyBuffer_Release(&packet);
    return out;
}

/* transport_sent(transport, since) -> (next, records): the send records of the numbers from
 * `since` on (at most the last TW_HISTORY), packed as native (int64 n, double time,
 * uint32 size, 4 bytes unused). */
static PyObject *Engine_transport_sent(Engine *self, PyObject *args) {
    int tid;
    long long since;
    if (!PyArg_ParseTuple(args, "iL", &tid, &since)) return NULL;
    LOCK(self);
    transport *t = get_transport(self, tid);
    int owner = t ? t->owner : 0;
    LOCK_OWNER(self, owner);
    PyObject *result = NULL;
    if (t) {
        int64_t next = t->tw_next;
        if (since < next - TW_HISTORY) since = next - TW_HISTORY;
        if (since > next || !t->tw_sent) since = next;
        Py_ssize_t count = (Py_ssize_t)(next - since);
        PyObject *blob = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(tw_record));
        if (blob) {
            tw_record *out = (tw_record *)PyBytes_AS_STRING(blob);
            for (Py_ssize_t i = 0; i < count; i++)
                out[i] = t->tw_sent[(since + i) & (TW_HISTORY - 1)];
            result = Py_BuildValue("(LN)", (long long)next, blob);
        }
    }
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    return result;
}

/* start_probe(transport, downtrack, bits_per_second, start, end): pad after media packets on
 * `downtrack`'s RTX stream (Downlink.pad's rule) until `end`; stop_probe(transport). */
static PyObject *Engine_start_probe(Engine *self, PyObject *args) {
    int tid, did;
    double bps, start, end;
    if (!PyArg_ParseTuple(args, "iiddd", &tid, &did, &bps, &start, &end)) return NULL;
    LOCK(self);
    transport *t = get_transport(self, tid);
    downtrack *d = t ? get_downtrack(self, did) : NULL;
    if (d && d->owner != t->owner) { /* its padding would touch another sender's state */
        PyErr_Format(PyExc_KeyError, "native downtrack %d is not on transport %d", did, tid);
        d = NULL;
    }
    int owner = t ? t->owner : 0;
    LOCK_OWNER(self, owner);
    if (d) {
        t->probe_down = did;
        t->probe_rate = bps / 8;
        t->probe_start = start;
        t->probe_end = end;
        t->probe_base = t->tw_bytes;
    }
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    if (!d) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Engine_stop_probe(Engine *self, PyObject *args) {
    int tid;
    if (!PyArg_ParseTuple(args, "i", &tid)) return NULL;
    LOCK(self);
    transport *t = get_transport(self, tid);
    int owner = t ? t->owner : 0;
    LOCK_OWNER(self, owner);
    if (t) t->probe_down = -1;
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    if (!t) return NULL;
    Py_RETURN_NONE;
}

/* pad(downtrack, count) -> bytes sent: padding-only packets on its RTX stream, now. */
static PyObject *Engine_pad(Engine *self, PyObject *args) {
    int did, count;
    if (!PyArg_ParseTuple(args, "ii", &did, &count)) return NULL;
    LOCK(self);
    downtrack *d = get_downtrack(self, did);
    int owner = d ? d->owner : 0;
    LOCK_OWNER(self, owner);
    sender *s = &self->p.senders[owner];
    long total = 0;
    double now = monotonic_now();
    for (int i = 0; d && i < count && i < 64; i++) {
        int size = send_padding(&self->p, s, did, now);
        if (!size) break;
        total += size;
    }
    if (d) flush_sends(&self->p, s);
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    if (!d) return NULL;
    return PyLong_FromLong(total);
}

/* -- scalable video in one stream (native/svc_forward.h) ------------------------------------ */

/* set_uptrack_svc(uptrack, pt_kind, dd_ext): the uptrack is a scalable stream of `pt_kind`
 * (PT_VP9, or PT_AV1 with its Dependency Descriptor in extension `dd_ext`); before any
 * downtrack is added. */
static PyObject *Engine_set_uptrack_svc(Engine *self, PyObject *args) {
    int uid, kind, dd_ext;
    if (!PyArg_ParseTuple(args, "iii", &uid, &kind, &dd_ext)) return NULL;
    if (!(kind == PT_VP9 || (kind == PT_AV1 && dd_ext > 0 && dd_ext < 256))) {
        PyErr_SetString(PyExc_ValueError, "a scalable stream is VP9, or AV1 with a descriptor id");
        return NULL;
    }
    svc_up *svc = calloc(1, sizeof *svc);
    if (!svc) return PyErr_NoMemory();
    svc->codec = kind;
    svc->dd_ext = dd_ext;
    dd_reader_init(&svc->reader);
    for (int i = 0; i < SVC_LAYERS; i++) svc->spatial_seen[i] = -INFINITY;
    LOCK_ALL(self);
    uptrack *u = get_uptrack(self, uid);
    int fresh = u && !u->svc && !u->ndowns[0];
    for (int w = 1; fresh && w < self->p.nsenders; w++) fresh = !u->ndowns[w];
    if (fresh) {
        u->svc = svc;
        svc = NULL;
    } else if (u) {
        PyErr_SetString(PyExc_ValueError, "the uptrack already has downtracks or layers");
    }
    UNLOCK_ALL(self);
    free(svc);
    if (!fresh) return NULL;
    Py_RETURN_NONE;
}

/* svc_stats(uptrack) -> (first arrival or None, [last arrival per spatial layer], [frames per
 * temporal layer], [bytes per spatial layer]); frames and bytes since the last call. */
static PyObject *Engine_svc_stats(Engine *self, PyObject *args) {
    int uid;
    if (!PyArg_ParseTuple(args, "i", &uid)) return NULL;
    LOCK(self);
    uptrack *u = get_uptrack(self, uid);
    double seen_at[SVC_LAYERS], started_at = 0;
    uint32_t frame_counts[SVC_LAYERS];
    uint64_t byte_counts[SVC_LAYERS];
    int found = u && u->svc, has_started = 0;
    if (found) {
        svc_up *sv = u->svc;
        has_started = sv->has_started;
        started_at = sv->started;
        memcpy(seen_at, sv->spatial_seen, sizeof seen_at);
        memcpy(frame_counts, sv->frames, sizeof frame_counts);
        memcpy(byte_counts, sv->spatial_bytes, sizeof byte_counts);
        memset(sv->frames, 0, sizeof sv->frames);
        memset(sv->spatial_bytes, 0, sizeof sv->spatial_bytes);
    }
    UNLOCK(self);
    if (!u) return NULL;
    if (!found) {
        PyErr_SetString(PyExc_ValueError, "not a scalable stream");
        return NULL;
    }
    PyObject *seen = PyList_New(SVC_LAYERS), *frames = PyList_New(SVC_LAYERS),
             *bytes = PyList_New(SVC_LAYERS);
    if (!seen || !frames || !bytes) {
        Py_XDECREF(seen);
        Py_XDECREF(frames);
        Py_XDECREF(bytes);
        return NULL;
    }
    for (int i = 0; i < SVC_LAYERS; i++) {
        PyList_SET_ITEM(seen, i, PyFloat_FromDouble(seen_at[i]));
        PyList_SET_ITEM(frames, i, PyLong_FromUnsignedLong(frame_counts[i]));
        PyList_SET_ITEM(bytes, i, PyLong_FromUnsignedLongLong(byte_counts[i]));
    }
    PyObject *started = has_started ? PyFloat_FromDouble(started_at) : Py_NewRef(Py_None);
    return Py_BuildValue("(NNNN)", started, seen, frames, bytes);
}

/* svc_control(downtrack, spatial, temporal, reset): the layers its selector aims for
 * (SvcDownTrack._update_selector), and a restart (the selector waits for a keyframe). */
static PyObject *Engine_svc_control(Engine *self, PyObject *args) {
    int did, spatial, temporal, reset;
    if (!PyArg_ParseTuple(args, "iiip", &did, &spatial, &temporal, &reset)) return NULL;
    if (spatial < 0 || spatial >= SVC_LAYERS || temporal < 0 || temporal >= SVC_LAYERS) {
        PyErr_SetString(PyExc_ValueError, "layer ids are 0 to 7");
        return NULL;
    }
    LOCK(self);
    downtrack *d = get_downtrack(self, did);
    int owner = d ? d->owner : 0;
    LOCK_OWNER(self, owner);
    int svc = d && d->svc;
    if (svc) {
        vp9_selector_set_target(&d->svc->vp9, spatial, temporal);
        dd_selector_set_target(&d->svc->dd, spatial, temporal);
        if (reset) {
            vp9_selector_reset(&d->svc->vp9);
            dd_selector_reset(&d->svc->dd);
        }
    }
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    if (!d) return NULL;
    if (!svc) {
        PyErr_SetString(PyExc_ValueError, "not a downtrack of a scalable stream");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* svc_state(downtrack) -> (selector started, needs a keyframe, packets dropped). */
static PyObject *Engine_svc_state(Engine *self, PyObject *args) {
    int did;
    if (!PyArg_ParseTuple(args, "i", &did)) return NULL;
    LOCK(self);
    downtrack *d = get_downtrack(self, did);
    int owner = d ? d->owner : 0;
    LOCK_OWNER(self, owner);
    int svc = d && d->svc, started = 0, needs = 0;
    unsigned long long dropped = 0;
    if (svc) {
        int av1 = d->svc->codec == PT_AV1;
        started = av1 ? dd_selector_started(&d->svc->dd) : vp9_selector_started(&d->svc->vp9);
        needs = av1 ? dd_selector_needs_keyframe(&d->svc->dd)
                    : vp9_selector_needs_keyframe(&d->svc->vp9);
        dropped = d->svc->dropped;
    }
    UNLOCK_OWNER(self, owner);
    UNLOCK(self);
    if (!d) return NULL;
    if (!svc) {
        PyErr_SetString(PyExc_ValueError, "not a downtrack of a scalable stream");
        return NULL;
    }
    return Py_BuildValue("(iiK)", started, needs, dropped);
}

/* set_uptrack_levels(uptrack, ext_id): keep the RFC 6464 audio level of every packet that
 * carries extension `ext_id` (0: stop), for `levels`. */
static PyObject *Engine_set_uptrack_levels(Engine *self, PyObject *args) {
    int uid, ext_id;
    if (!PyArg_ParseTuple(args, "ii", &uid, &ext_id)) return NULL;
    if (!check_ext_id(ext_id)) return NULL;
    LOCK(self);
    uptrack *u = get_uptrack(self, uid);
    int ok = u != NULL;
    if (u && ext_id && !u->levels && !(u->levels = calloc(MAX_LEVELS, sizeof(level_record))))
        ok = 0;
    if (ok) u->level_ext = ext_id;
    UNLOCK(self);
    if (!ok) return u ? PyErr_NoMemory() : NULL;
    Py_RETURN_NONE;
}

/* levels(uptrack) -> bytes: the (double arrival, uint32 RTP timestamp, uint32 clock rate,
 * uint8 level, 7 bytes unused) records since the last call, native byte order, oldest
 * first. */
static PyObject *Engine_levels(Engine *self, PyObject *args) {
    int uid;
    if (!PyArg_ParseTuple(args, "i", &uid)) return NULL;
    LOCK(self);
    uptrack *u = get_uptrack(self, uid);
    PyObject *blob = u ? drain_ring(u->levels, sizeof(level_record), MAX_LEVELS,
                                    &u->levels_head, &u->levels_count)
                       : NULL;
    UNLOCK(self);
    return blob;
}

/* set_uptrack_nack(uptrack, nack): keep NACK bookkeeping per layer (EV_NACK events). */
static PyObject *Engine_set_uptrack_nack(Engine *self, PyObject *args) {
    int uid, nack;
    if (!PyArg_ParseTuple(args, "ip", &uid, &nack)) return NULL;
    LOCK(self);
    uptrack *u = get_uptrack(self, uid);
    if (u) {
        for (int l = 0; l < u->nlayers; l++) {
            if (nack && !u->layers[l].nack.enabled) u->layers[l].nack.next_due = INFINITY;
            u->layers[l].nack.enabled = nack;
        }
    }
    UNLOCK(self);
    if (!u) return NULL;
    Py_RETURN_NONE;
}

/* set_transport_arrivals(transport, twcc_id): record the arrival of every RTP packet read on
 * the transport that carries a transport-wide number in extension `twcc_id` (0: stop), for
 * `arrivals`. */
static PyObject *Engine_set_transport_arrivals(Engine *self, PyObject *args) {
    int tid, twcc_id;
    if (!PyArg_ParseTuple(args, "ii", &tid, &twcc_id)) return NULL;
    if (!check_ext_id(twcc_id)) return NULL;
    LOCK(self);
    transport *t = get_transport(self, tid);
    int ok = t != NULL;
    if (t && twcc_id && !t->arrivals && !(t->arrivals = calloc(MAX_ARRIVALS, sizeof(arrival))))
        ok = 0;
    if (ok) t->rx_tw_id = twcc_id;
    UNLOCK(self);
    if (!ok) return t ? PyErr_NoMemory() : NULL;
    Py_RETURN_NONE;
}

/* arrivals(transport) -> bytes: the (double arrival, uint32 transport-wide number, uint32
 * SSRC) records since the last call, native byte order, oldest first. */
static PyObject *Engine_arrivals(Engine *self, PyObject *args) {
    int tid;
    if (!PyArg_ParseTuple(args, "i", &tid)) return NULL;
    LOCK(self);
    transport *t = get_transport(self, tid);
    PyObject *blob = t ? drain_ring(t->arrivals, sizeof(arrival), MAX_ARRIVALS,
                                    &t->arrivals_head, &t->arrivals_count)
                       : NULL;
    UNLOCK(self);
    return blob;
}

/* check_nacks(uptrack): NACKs due on any layer now (the media tick: a layer that stalled). */
static PyObject *Engine_check_nacks(Engine *self, PyObject *args) {
    int uid;
    if (!PyArg_ParseTuple(args, "i", &uid)) return NULL;
    LOCK(self);
    uptrack *u = get_uptrack(self, uid);
    double now = monotonic_now();
    for (int l = 0; u && l < u->nlayers; l++)
        if (u->layers[l].nack.enabled && now >= u->layers[l].nack.next_due)
            send_nacks(&self->p, uid, l, now);
    UNLOCK(self);
    if (!u) return NULL;
    Py_RETURN_NONE;
}

/* counters() -> {name: count}: the receive side's plus every sender's; `queued` and
 * `queue_dropped` count the jobs handed to sender threads (0 with one sender), `inlined` the
 * packets the receive thread forwarded for an idle sender under light load, `threads` the
 * senders. */
static PyObject *Engine_counters(Engine *self, PyObject *unused) {
    plane *p = &self->p;
    LOCK_ALL(self);
    counters c = p->c;
    unsigned long long queued = 0, queue_dropped = 0, inlined = 0;
    for (int w = 0; w < p->nsenders; w++) {
        const counters *s = &p->senders[w].c;
        c.forwarded += s->forwarded;
        c.protect_failed += s->protect_failed;
        c.send_failed += s->send_failed;
        c.batches_out += s->batches_out;
        c.oversize += s->oversize;
        c.padding += s->padding;
        queued += p->senders[w].queued;
        queue_dropped += p->senders[w].queue_dropped;
        inlined += p->senders[w].inlined;
    }
    UNLOCK_ALL(self);
    pthread_mutex_lock(&p->events_lock);
    c.events_dropped = p->events_dropped;
    pthread_mutex_unlock(&p->events_lock);
    return Py_BuildValue(
        "{sKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsi}", "padding", c.padding, "datagrams_in",
        c.datagrams_in, "rtp_in", c.rtp_in, "rtcp_in", c.rtcp_in, "unprotect_failed",
        c.unprotect_failed, "protect_failed", c.protect_failed, "malformed", c.malformed,
        "forwarded", c.forwarded, "send_failed", c.send_failed, "events_dropped",
        c.events_dropped, "batches_in", c.batches_in, "batches_out", c.batches_out, "oversize",
        c.oversize, "queued", queued, "queue_dropped", queue_dropped, "inlined", inlined,
        "threads", p->nsenders);
}

/* -- for tests: the parsers alone, on any bytes ---------------------------------------------- */

/* rewrite_packet(packet, ids: bytes[256]) -> (first_byte, tail, payload_offset) or None, as
 * ExtensionRewriter.rewrite; with the VP8 descriptor fields when `vp8` is true. */
static PyObject *mod_parse(PyObject *mod, PyObject *args) {
    Py_buffer data, ids;
    int vp8 = 0, tw_id = 0;
    if (!PyArg_ParseTuple(args, "y*y*|pi", &data, &ids, &vp8, &tw_id)) return NULL;
    PyObject *result = NULL;
    if (ids.len != 256) {
        PyErr_SetString(PyExc_ValueError, "ids is 256 bytes");
        goto done;
    }
    rtp_header h;
    if (rtp_parse(data.buf, (size_t)data.len, &h) < 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    uint8_t out[70000];
    uint8_t first;
    size_t payload_offset;
    int maps = 0;
    for (int i = 1; i < 256; i++) maps |= ((uint8_t *)ids.buf)[i] != 0;
    long tw_offset;
    long tail = rtp_rewrite_tail(data.buf, (size_t)data.len, &h, ids.buf, maps,
                                 tw_id > 0 && tw_id < 256 ? tw_id : 0, out, sizeof out, &first,
                                 &payload_offset, &tw_offset);
    vp8_descriptor v;
    int valid = vp8 ? vp8_parse(data.buf, h.payload_offset, h.payload_end, &v) : 0;
    PyObject *vp8_fields = vp8 ? Py_BuildValue("(iiiiiii)", valid, v.header_size, v.picture_id,
                                               v.picture_id_size, v.tl0picidx, v.keyframe,
                                               v.picture_id_offset)
                               : Py_NewRef(Py_None);
    if (tail < 0)
        result = Py_BuildValue("(iIIInnnN)", h.payload_type, (unsigned)h.sequence, h.timestamp,
                               h.ssrc, (Py_ssize_t)h.payload_offset, (Py_ssize_t)h.payload_end,
                               (Py_ssize_t)-1, vp8_fields);
    else
        result = Py_BuildValue("(iIIInn(iy#n)N)", h.payload_type, (unsigned)h.sequence,
                               h.timestamp, h.ssrc, (Py_ssize_t)h.payload_offset,
                               (Py_ssize_t)h.payload_end, (int)first, (char *)out,
                               (Py_ssize_t)tail, (Py_ssize_t)payload_offset, vp8_fields);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&ids);
    return result;
}

/* payload_facts(pt_kind, payload) -> (keyframe start, packet trailer length): codecs.h on
 * any bytes, as the engine reads a payload. */
static PyObject *mod_payload_facts(PyObject *mod, PyObject *args) {
    int kind;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "iy*", &kind, &data)) return NULL;
    const uint8_t *d = data.buf;
    size_t n = (size_t)data.len;
    int keyframe;
    switch (kind) {
    case PT_H264: keyframe = h264_keyframe(d, 0, n); break;
    case PT_H265: keyframe = h265_keyframe(d, 0, n); break;
    case PT_VP9: keyframe = vp9_keyframe(d, 0, n); break;
    case PT_AV1: keyframe = av1_keyframe(d, 0, n); break;
    default: keyframe = -1;
    }
    size_t trailer = trailer_length(d, 0, n);
    PyBuffer_Release(&data);
    return Py_BuildValue("(in)", keyframe, (Py_ssize_t)trailer);
}

/* protect_sequence(profile, master_key_and_salt, [packets]) -> [protected]: the send side's
 * SRTP on a fresh transport, for tests against another implementation. */
static PyObject *mod_protect_sequence(PyObject *mod, PyObject *args) {
    int profile;
    Py_buffer key;
    PyObject *packets;
    if (!PyArg_ParseTuple(args, "iy*O!", &profile, &key, &PyList_Type, &packets)) return NULL;
    transport t;
    memset(&t, 0, sizeof t);
    PyObject *out = NULL;
    t.tx = new_session(profile, key.buf, key.len, 0);
    if (!t.tx) {
        PyErr_SetString(PyExc_ValueError, "SRTP profile or key length not supported");
        goto done;
    }
    if (profile == srtp_profile_aead_aes_128_gcm || profile == srtp_profile_aead_aes_256_gcm)
        gcm_init(&t.gcm, key.buf, (size_t)key.len);
    out = PyList_New(0);
    for (Py_ssize_t i = 0; out && i < PyList_GET_SIZE(packets); i++) {
        char *data;
        Py_ssize_t n;
        if (PyBytes_AsStringAndSize(PyList_GET_ITEM(packets, i), &data, &n) < 0 ||
            n > MAX_PACKET) {
            Py_CLEAR(out);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "packet too long");
            break;
        }
        uint8_t buf[BUF_SIZE];
        int len = (int)n;
        memcpy(buf, data, (size_t)n);
        PyObject *item = transport_protect(&t, buf, &len) == 0
                             ? PyBytes_FromStringAndSize((char *)buf, len)
                             : Py_NewRef(Py_None);
        if (!item || PyList_Append(out, item) < 0) Py_CLEAR(out);
        Py_XDECREF(item);
    }
    srtp_dealloc(t.tx);
    gcm_free(&t.gcm);
done:
    PyBuffer_Release(&key);
    return out;
}

static PyMethodDef Engine_methods[] = {
    {"start", (PyCFunction)Engine_start, METH_NOARGS, "run the worker thread"},
    {"stop", (PyCFunction)Engine_stop, METH_NOARGS, "stop and join the worker thread"},
    {"events", (PyCFunction)Engine_events, METH_NOARGS, "take the queued events"},
    {"add_transport", (PyCFunction)Engine_add_transport, METH_NOARGS, NULL},
    {"key_transport", (PyCFunction)Engine_key_transport, METH_VARARGS, NULL},
    {"set_address", (PyCFunction)Engine_set_address, METH_VARARGS, NULL},
    {"unkey_transport", (PyCFunction)Engine_unkey_transport, METH_VARARGS, NULL},
    {"remove_transport", (PyCFunction)Engine_remove_transport, METH_VARARGS, NULL},
    {"bind_ssrc", (PyCFunction)Engine_bind_ssrc, METH_VARARGS, NULL},
    {"add_uptrack", (PyCFunction)Engine_add_uptrack, METH_VARARGS, NULL},
    {"remove_uptrack", (PyCFunction)Engine_remove_uptrack, METH_VARARGS, NULL},
    {"set_uptrack_muted", (PyCFunction)Engine_set_uptrack_muted, METH_VARARGS, NULL},
    {"receive", (PyCFunction)Engine_receive, METH_VARARGS, NULL},
    {"add_downtrack", (PyCFunction)Engine_add_downtrack, METH_VARARGS, NULL},
    {"send_rtp", (PyCFunction)Engine_send_rtp, METH_VARARGS, NULL},
    {"remove_downtrack", (PyCFunction)Engine_remove_downtrack, METH_VARARGS, NULL},
    {"control", (PyCFunction)Engine_control, METH_VARARGS, NULL},
    {"downtrack_state", (PyCFunction)Engine_downtrack_state, METH_VARARGS, NULL},
    {"uptrack_state", (PyCFunction)Engine_uptrack_state, METH_VARARGS, NULL},
    {"retransmit", (PyCFunction)Engine_retransmit, METH_VARARGS, NULL},
    {"counters", (PyCFunction)Engine_counters, METH_NOARGS, NULL},
    {"set_transport_cc", (PyCFunction)Engine_set_transport_cc, METH_VARARGS, NULL},
    {"number", (PyCFunction)Engine_number, METH_VARARGS, NULL},
    {"transport_sent", (PyCFunction)Engine_transport_sent, METH_VARARGS, NULL},
    {"start_probe", (PyCFunction)Engine_start_probe, METH_VARARGS, NULL},
    {"stop_probe", (PyCFunction)Engine_stop_probe, METH_VARARGS, NULL},
    {"pad", (PyCFunction)Engine_pad, METH_VARARGS, NULL},
    {"set_uptrack_nack", (PyCFunction)Engine_set_uptrack_nack, METH_VARARGS, NULL},
    {"set_uptrack_levels", (PyCFunction)Engine_set_uptrack_levels, METH_VARARGS, NULL},
    {"set_uptrack_svc", (PyCFunction)Engine_set_uptrack_svc, METH_VARARGS, NULL},
    {"svc_stats", (PyCFunction)Engine_svc_stats, METH_VARARGS, NULL},
    {"svc_control", (PyCFunction)Engine_svc_control, METH_VARARGS, NULL},
    {"svc_state", (PyCFunction)Engine_svc_state, METH_VARARGS, NULL},
    {"levels", (PyCFunction)Engine_levels, METH_VARARGS, NULL},
    {"set_transport_arrivals", (PyCFunction)Engine_set_transport_arrivals, METH_VARARGS, NULL},
    {"arrivals", (PyCFunction)Engine_arrivals, METH_VARARGS, NULL},
    {"check_nacks", (PyCFunction)Engine_check_nacks, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"event_fd", (getter)Engine_event_fd, NULL, "readable when events() has something", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "roomcast.media._native.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
};

static PyMethodDef module_methods[] = {
    {"parse", mod_parse, METH_VARARGS, "parse and rewrite one RTP packet (tests, fuzzing)"},
    {"protect_sequence", mod_protect_sequence, METH_VARARGS, "SRTP protect packets (tests)"},
    {"payload_facts", mod_payload_facts, METH_VARARGS, "keyframe start, trailer (tests)"},
    SVC_BINDING_METHODS
    DD_BINDING_METHODS
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "roomcast.media._native", "The native forwarding plane.", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (srtp_init() != srtp_err_status_ok) {
        PyErr_SetString(PyExc_ImportError, "srtp_init failed");
        return NULL;
    }
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "EV_DATAGRAM", EV_DATAGRAM);
    PyModule_AddIntConstant(m, "EV_RTP", EV_RTP);
    PyModule_AddIntConstant(m, "EV_RTCP", EV_RTCP);
    PyModule_AddIntConstant(m, "EV_LAYER_STARTED", EV_LAYER_STARTED);
    PyModule_AddIntConstant(m, "EV_SEND", EV_SEND);
    PyModule_AddIntConstant(m, "EV_NACK", EV_NACK);
    PyModule_AddIntConstant(m, "EV_ARRIVALS", EV_ARRIVALS);
    PyModule_AddIntConstant(m, "PT_AUDIO", PT_AUDIO);
    PyModule_AddIntConstant(m, "PT_VP8", PT_VP8);
    PyModule_AddIntConstant(m, "PT_OTHER", PT_OTHER);
    PyModule_AddIntConstant(m, "PT_H264", PT_H264);
    PyModule_AddIntConstant(m, "PT_VP9", PT_VP9);
    PyModule_AddIntConstant(m, "PT_AV1", PT_AV1);
    PyModule_AddIntConstant(m, "PT_H265", PT_H265);
    return m;
}
