/*
 * State of the native forwarding plane (media/native_plane.py is its Python face).
 *
 * The worker thread owns the UDP socket's receive side: recvmmsg batches, SRTP unprotect for
 * keyed transports, RTP parse, SSRC routing to uptracks, rewrite per downtrack, SRTP protect,
 * sendmmsg. Everything it does not handle becomes an event for Python (`events`), which reads
 * them when `event_fd` (an eventfd) becomes readable.
 *
 * Threads. With one sender (`rtc.forwarding_threads` 1) the receive thread also rewrites,
 * protects and sends, as it always did. With N > 1 the fan-out is split over N sender threads:
 * each transport is owned by one sender (the least loaded when it is created), and so are the
 * downtracks on it; a transport's SRTP send context, transport-wide counter and send records,
 * probe, and its downtracks' rewrite, RTX and NACK state are only touched under its sender's
 * lock, which its sender thread holds while it works. The receive thread (recvmmsg, unprotect,
 * parse, the uptrack's bookkeeping, routing) copies each packet once into a refcounted
 * `shared_packet` and pushes a `job` onto the single-producer/single-consumer ring of every
 * sender owning one of the uptrack's downtracks (a full ring drops and counts: it never waits).
 * Under light load (a small batch) it forwards for a sender with nothing queued itself, under
 * that sender's lock: waking a thread for every packet costs more than forwarding it.
 *
 * Locks, always taken in this order: `lock` (tables, routes, uptracks, the receive side), then
 * sender locks by index, then `events_lock` (the event list, a leaf). Python calls take `lock`
 * plus the owner's sender lock for a transport's or downtrack's state (so retransmit, pad and
 * send_rtp run synchronously on the owner's send batch, and return what they did), and `lock`
 * plus every sender lock to add or remove anything: a sender thread holding its own lock may
 * therefore read the tables, and never sees an object Python freed.
 */
#ifndef ROOMCAST_NATIVE_PLANE_H
#define ROOMCAST_NATIVE_PLANE_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include <srtp2/srtp.h>

#include "dd.h"
#include "nack.h"
#include "rtp.h"
#include "srtp_gcm.h"
#include "svc.h"

#define BUF_SIZE 2048        /* > any datagram we accept + SRTP trailer */
#define MAX_PACKET 1500      /* RTP we forward or cache (larger ones: dropped) */
#define IN_BATCH 64
#define OUT_BATCH 1024
#define MAX_LAYERS 4
#define MAX_ROUTES 32        /* SSRCs bound per publisher transport */
#define MAX_EVENTS 16384     /* queued for Python; beyond: dropped and counted */
#define NACK_RATE 400.0      /* downtrack.py NACK_RATE / NACK_BURST */
#define NACK_BURST 200.0
#define TW_HISTORY 8192      /* twcc.py HISTORY: send records kept per transport */
#define MAX_ARRIVALS 4096    /* publisher arrivals kept per transport between two pulls */
#define MAX_LEVELS 256       /* audio levels kept per uptrack between two pulls (~5 s) */
#define PADDING_SIZE 255     /* downtrack.py PADDING_SIZE */
#define MAX_SKIPS 64         /* downtrack.py MAX_SKIPS: publisher padding left out, per epoch */
#define MAX_PADDING_BURST 16 /* downlink.py MAX_PADDING_BURST */
#define FEEDBACK_INTERVAL 0.1 /* twcc.py TwccRecorder.interval */
#define MAX_SENDERS 8        /* rtc.forwarding_threads */
#define JOB_RING 4096        /* jobs queued per sender; beyond: dropped and counted */
#define MAX_BACKLOG 16384    /* packets a sender's queued jobs make (~40 ms of work); beyond:
                                the job is dropped, as a full socket would drop it: late media
                                is worse than lost media */
#define JOBS_PER_LOCK 32     /* a sender releases its lock at least this often */
#define INLINE_BATCH 2       /* a receive batch this small: the receive thread keeps up alone,
                                and forwards itself for an idle sender (under its lock) rather
                                than wake it: a hand-off per packet costs more than it saves */

/* What the engine reads of a payload type's packets: which decide where a subscriber may start
 * (codecs.py is_keyframe_start). PT_OTHER: a video codec without keyframe detection, every
 * packet a start (codecs.py OTHER_VIDEO). */
enum pt_kind {
    PT_NONE = 0,
    PT_AUDIO = 1,
    PT_VP8 = 2,
    PT_OTHER = 3,
    PT_H264 = 4,
    PT_VP9 = 5,
    PT_AV1 = 6,
    PT_H265 = 7,
};

enum event_kind {
    EV_DATAGRAM = 0,      /* (addr, bytes): not for a keyed transport, or not SRTP */
    EV_RTP = 1,           /* (transport, plain RTP): SSRC not routed here */
    EV_RTCP = 2,          /* (transport, plain RTCP) */
    EV_LAYER_STARTED = 3, /* (uptrack, layer) */
    EV_SEND = 4,          /* (downtrack, plain RTP): its transport is not keyed here */
    EV_NACK = 5,          /* (uptrack, layer, big-endian sequence numbers to request) */
    EV_ARRIVALS = 6,      /* (transport): arrivals kept for FEEDBACK_INTERVAL, feedback due */
};

/* One packet sent with a transport-wide sequence number (twcc.py TransportWide.sent). */
typedef struct {
    int64_t n; /* unwrapped */
    double time;
    uint32_t size, unused;
} tw_record;

/* One publisher packet's transport-wide sequence number and arrival (twcc.py TwccRecorder). */
typedef struct {
    double time;
    uint32_t sequence, ssrc;
} arrival;

#define SVC_LAYERS 8   /* svc_layers.py MAX_LAYERS: spatial and temporal ids are 3 bits */
#define SVC_SENT 512   /* svc_downtrack.py SENT_HISTORY: packets kept per subscriber for NACKs */

/* What one packet of a scalable stream says of its layers (SvcLayers.parse into PacketInfo). */
typedef struct {
    vp9_descriptor vp9;
    dd_packet dd;
} svc_info;

/* The receive side of a scalable stream (svc_layers.py SvcLayers): its descriptors, and what
 * Python's layer choice reads (`Engine.svc_stats`). */
typedef struct {
    int codec;  /* PT_VP9 or PT_AV1 */
    int dd_ext; /* AV1: the publisher's Dependency Descriptor extension id */
    dd_reader reader;
    int has_started;
    double started;
    double spatial_seen[SVC_LAYERS];
    uint32_t frames[SVC_LAYERS];        /* since the last pull, per temporal layer */
    uint64_t spatial_bytes[SVC_LAYERS]; /* since the last pull, per spatial layer */
} svc_up;

/* A subscriber's layers of a scalable stream (svc_downtrack.py SvcDownTrack). */
typedef struct {
    int codec, dd_ext; /* dd_ext: the subscriber's Dependency Descriptor id (0: none sent) */
    vp9_selector vp9;
    dd_selector dd;
    seq_munger munger;
    uint64_t dropped;
    /* Per number sent (slot: number mod SVC_SENT): what a retransmission sends again. */
    int32_t sent_seq[SVC_SENT];
    uint16_t sent_from[SVC_SENT];
    uint32_t sent_ts[SVC_SENT];
    uint8_t sent_marker[SVC_SENT];
    int32_t sent_frame[SVC_SENT]; /* the descriptor's frame number, -1: none sent */
    uint8_t sent_has_mask[SVC_SENT], sent_dt_count[SVC_SENT];
    uint8_t sent_counts[SVC_SENT][2]; /* the frame's DTIs and chains as parsed */
    uint8_t sent_raw[SVC_SENT];       /* the publisher's descriptor went out as it came */
    uint32_t sent_mask[SVC_SENT];
} svc_down;

/* One audio packet's RFC 6464 level, for the speaker detector (uptrack.py AudioLevel). */
typedef struct {
    double time;
    uint32_t timestamp, clock_rate;
    uint8_t level, unused[7];
} level_record;

typedef struct event {
    struct event *next;
    int kind;
    int id;  /* transport, uptrack or downtrack */
    int arg; /* layer */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    size_t len;
    uint8_t data[];
} event;

typedef struct {
    uint32_t ssrc;
    int uptrack, layer;
} route;

typedef struct {
    int used, keyed;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    srtp_t rx, tx;
    gcm_tx gcm; /* the GCM profiles' sends (srtp_gcm.h); else `tx` */
    route routes[MAX_ROUTES];
    int nroutes;
    /* Transport-wide sequence numbers of what we send (draft-holmer-rmcat-transport-wide-cc-
       extensions-01 §2): the subscriber's extension id, the next number, the send records. */
    int tw_id;
    int64_t tw_next;
    uint64_t tw_bytes; /* bytes sent with a number, all told */
    tw_record *tw_sent;
    /* A probe (downlink.py): padding on `probe_down`'s RTX stream after media packets, so
       that what went out since `probe_start` reaches `probe_rate` bytes/s until `probe_end`. */
    int probe_down;
    double probe_rate, probe_start, probe_end;
    uint64_t probe_base;
    int owner; /* its sender */
    /* What a publisher sends us: the arrival of every RTP packet carrying its transport-cc
       extension (`rx_tw_id`, 0: none), whichever track it belongs to, stamped as it is read,
       for the feedback Python builds (twcc.py TwccRecorder). Recording them all here, before
       any packet is handed up to Python, means a feedback never misses a packet still
       queued for Python, nor stamps one late by Python's queueing. */
    int rx_tw_id;
    arrival *arrivals;
    uint32_t arrivals_head, arrivals_count;
    double arrivals_since; /* the oldest arrival not taken yet */
    int arrivals_told;     /* EV_ARRIVALS queued for them */
} transport;

typedef struct {
    uint8_t *buf; /* MAX_PACKET bytes, allocated on first use */
    uint16_t len;
} cache_slot;

typedef struct {
    uint64_t packets, bytes;
    int base_seq, max_seq;
    int64_t cycles;
    double jitter;
    int64_t last_transit;
    int has_transit;
    double last_arrival;
    cache_slot *cache;
    int cache_mask;
    nack_state nack;
} layer_state;

typedef struct {
    int used, muted, video, nlayers;
    uint8_t pt_kind[128];
    int clock_rate[128];
    layer_state layers[MAX_LAYERS];
    uint64_t malformed;
    svc_up *svc;   /* a scalable stream (VP9 SVC, AV1 with its descriptor), else NULL */
    int level_ext; /* RFC 6464 audio level extension id (0: none kept) */
    level_record *levels;
    uint32_t levels_head, levels_count;
    int *downs[MAX_SENDERS]; /* downtrack ids, per owning sender */
    int ndowns[MAX_SENDERS], capdowns[MAX_SENDERS];
    uint64_t serial; /* unique over the engine's life: a queued job finds it is still the one */
} uptrack;

typedef struct {
    int used, uptrack, transport, owner;
    uint32_t ssrc;
    int16_t pt_map[128];
    uint8_t ids[256];
    int maps;
    int target, current, muted; /* -1: none */
    int started;
    uint16_t seq_offset;
    /* Publisher sequence numbers of padding-only packets left out this epoch, oldest first
       (downtrack.py skips): their numbers are not used, so the subscriber sees no gap. */
    uint16_t skips[MAX_SKIPS];
    int nskips;
    uint32_t ts_offset;
    int picture_id_offset, tl0_offset;
    uint16_t epoch_seq, max_seq, last_seq;
    int epoch_layer;
    uint32_t last_ts;
    int last_picture_id, last_tl0;
    double last_time;
    uint64_t packets_sent, bytes_sent, payload_octets, retransmits, nacks_dropped;
    double nack_tokens, nack_refill;
    int tw_id;                /* the subscriber's transport-cc id (0: packets not numbered) */
    int strip_trailer;        /* cut LiveKit's packet trailer off frame ends (packet_trailer.py) */
    svc_down *svc;            /* the layers it gets of a scalable stream, else NULL */
    uint32_t rtx_ssrc;        /* RFC 4588 repair stream (0: none) */
    int16_t rtx_pt[128];      /* subscriber PT -> its RTX PT, -1: none */
    int padding_pt;           /* the RTX PT probes pad with, -1: none */
    uint16_t rtx_seq;
    uint64_t padding_sent;
} downtrack;


typedef struct {
    uint64_t datagrams_in, rtp_in, rtcp_in, unprotect_failed, protect_failed, malformed,
        forwarded, send_failed, events_dropped, batches_in, batches_out, oversize, padding;
} counters;

/* A parsed packet on its way to the downtracks (data: the plain RTP). */
typedef struct {
    const uint8_t *data;
    size_t len;
    rtp_header h;
    vp8_descriptor vp8;
    int layer, keyframe, clock_rate;
    const svc_info *svc; /* a scalable stream's packet with a payload: its layers */
    double now;      /* when it was read */
    double send_now; /* when it goes out, taken under the lock it is sent under (the
                        receive thread's with one sender, else its sender's): the send
                        records' times, in the order of their numbers */
} packet_info;

/* One copy of a packet shared by the senders that forward it; immutable once queued. */
typedef struct {
    atomic_int refs;
    _Alignas(16) uint8_t data[]; /* aligned: a scalable stream's layers follow the bytes */
} shared_packet;

typedef struct {
    shared_packet *packet;
    packet_info pi; /* pi.data points into packet */
    int uptrack, fanout; /* fanout: its downtracks on the sender when queued (backlog) */
    uint64_t serial;
} job;

struct plane;

typedef struct sender {
    struct plane *p;
    int index, owned; /* owned: transports */
    pthread_t thread;
    int running;
    pthread_mutex_t lock;
    int wake_fd; /* eventfd: jobs queued */
    job *ring;
    _Atomic uint32_t head, tail; /* consumer's, producer's */
    atomic_int backlog;           /* packets the queued jobs make (their downtracks here) */
    int pending;                  /* producer: jobs queued since the last wake */
    uint64_t queued, queue_dropped, inlined; /* producer's (plane lock) */
    counters c;                   /* its sends (its lock) */
    /* The send batch (its lock). */
    struct mmsghdr out_msgs[OUT_BATCH];
    struct iovec out_iov[OUT_BATCH];
    uint8_t (*out_bufs)[BUF_SIZE];
    int nout;
    uint8_t scratch[BUF_SIZE];
} sender;

typedef struct plane {
    int fd, event_fd, wake_fd;
    pthread_t thread;
    int running;
    pthread_mutex_t lock, events_lock;
    sender *senders;
    int nsenders, threaded; /* threaded: nsenders > 1, the senders run their own threads */
    int light;              /* the batch being handled is small (INLINE_BATCH): see fan_out */
    uint64_t serials;
    uint64_t events_dropped; /* events_lock */
    transport **transports;
    int ntransports;
    uptrack **uptracks;
    int nuptracks;
    downtrack **downtracks;
    int ndowntracks;
    event *events_head, *events_tail;
    int nevents;
    counters c; /* the receive side's */
} plane;

#endif
