/*
 * c_relay: the physical-limit baseline for bench/compare.py. A one-thread UDP SRTP relay:
 * one publisher in, N subscribers out, with pre-shared SRTP keys (no ICE, no DTLS).
 *
 * Per incoming datagram (read in batches with recvmmsg): SRTP unprotect with the publisher's
 * key, then per subscriber rewrite SSRC, sequence number and timestamp as an SFU does
 * (RFC 3550 §5.1: each subscriber gets its own SSRC and random seq/ts offsets), SRTP protect
 * with that subscriber's key, and queue it; the queue goes out in batches with sendmmsg.
 * RTCP from the publisher is counted and dropped.
 *
 * Usage: c_relay LISTEN_IP LISTEN_PORT PROFILE IN_KEY DEST...
 *   PROFILE  gcm (AEAD_AES_128_GCM, 28-byte key+salt) or cm (AES128_CM_SHA1_80, 30 bytes)
 *   IN_KEY   the publisher's master key + salt, hex
 *   DEST     ip:port:ssrc:key_hex   one per subscriber (ssrc decimal)
 * Prints "ready <port>" on stdout once listening (port 0 picks one). On SIGTERM/SIGINT it
 * prints its counters on stdout and exits.
 *
 * Build: gcc -O2 -o c_relay c_relay.c -lsrtp2   (Debian: libsrtp2-dev)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <srtp2/srtp.h>

#define IN_BATCH 64     /* datagrams per recvmmsg */
#define OUT_BATCH 1024  /* datagrams per sendmmsg (UIO_MAXIOV) */
#define BUF_SIZE 2048   /* > MTU + SRTP_MAX_TRAILER_LEN */

struct subscriber {
    struct sockaddr_in addr;
    srtp_t session;
    uint32_t ssrc;
    uint16_t seq_offset;
    uint32_t ts_offset;
};

static volatile sig_atomic_t stopping = 0;

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static int hex_to_bytes(const char *hex, unsigned char *out, size_t max) {
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > max) return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned int byte;
        if (sscanf(hex + 2 * i, "%2x", &byte) != 1) return -1;
        out[i] = (unsigned char)byte;
    }
    return (int)(n / 2);
}

static int set_profile(srtp_policy_t *policy, const char *profile) {
    if (strcmp(profile, "gcm") == 0) {
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy->rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy->rtcp);
        return 28;
    }
    if (strcmp(profile, "cm") == 0) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy->rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&policy->rtcp);
        return 30;
    }
    return -1;
}

static srtp_t new_session(const char *profile, const char *key_hex, int inbound) {
    srtp_policy_t policy;
    unsigned char key[64];
    srtp_t session = NULL;
    memset(&policy, 0, sizeof policy);
    int key_len = set_profile(&policy, profile);
    if (key_len < 0 || hex_to_bytes(key_hex, key, sizeof key) != key_len) {
        fprintf(stderr, "bad profile or key length: %s %s\n", profile, key_hex);
        exit(2);
    }
    policy.ssrc.type = inbound ? ssrc_any_inbound : ssrc_any_outbound;
    policy.key = key;
    policy.window_size = 1024;
    policy.next = NULL;
    srtp_err_status_t status = srtp_create(&session, &policy);
    if (status != srtp_err_status_ok) {
        fprintf(stderr, "srtp_create failed: %d\n", (int)status);
        exit(2);
    }
    return session;
}

static void parse_dest(const char *arg, const char *profile, struct subscriber *sub) {
    char copy[256], *fields[4], *save = NULL;
    if (strlen(arg) >= sizeof copy) goto bad;
    strcpy(copy, arg);
    for (int i = 0; i < 4; i++) {
        fields[i] = strtok_r(i ? NULL : copy, ":", &save);
        if (!fields[i]) goto bad;
    }
    memset(&sub->addr, 0, sizeof sub->addr);
    sub->addr.sin_family = AF_INET;
    sub->addr.sin_port = htons((uint16_t)atoi(fields[1]));
    if (inet_pton(AF_INET, fields[0], &sub->addr.sin_addr) != 1) goto bad;
    sub->ssrc = (uint32_t)strtoul(fields[2], NULL, 10);
    sub->session = new_session(profile, fields[3], 0);
    sub->seq_offset = (uint16_t)rand();
    sub->ts_offset = (uint32_t)rand() ^ ((uint32_t)rand() << 16);
    return;
bad:
    fprintf(stderr, "bad destination (want ip:port:ssrc:keyhex): %s\n", arg);
    exit(2);
}

static inline uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t get32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put16(unsigned char *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static inline void put32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24; p[1] = (v >> 16) & 0xff; p[2] = (v >> 8) & 0xff; p[3] = v & 0xff;
}

static unsigned char in_bufs[IN_BATCH][BUF_SIZE];
static unsigned char out_bufs[OUT_BATCH][BUF_SIZE];
static struct mmsghdr in_msgs[IN_BATCH], out_msgs[OUT_BATCH];
static struct iovec in_iovs[IN_BATCH], out_iovs[OUT_BATCH];
static unsigned long long n_in, n_rtcp_in, n_unprotect_failed, n_out, n_protect_failed, n_send_errors;

static void flush(int fd, int count) {
    int sent = 0;
    while (sent < count) {
        int n = sendmmsg(fd, out_msgs + sent, (unsigned)(count - sent), 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            n_send_errors++; /* e.g. ECONNREFUSED from an ICMP of a departed sink: skip one */
            sent++;
            continue;
        }
        n_out += (unsigned long long)n;
        sent += n;
    }
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s LISTEN_IP LISTEN_PORT gcm|cm IN_KEY ip:port:ssrc:key...\n",
                argv[0]);
        return 2;
    }
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    if (srtp_init() != srtp_err_status_ok) {
        fprintf(stderr, "srtp_init failed\n");
        return 2;
    }
    const char *profile = argv[3];
    srtp_t inbound = new_session(profile, argv[4], 1);
    int n_subs = argc - 5;
    struct subscriber *subs = calloc((size_t)n_subs, sizeof *subs);
    for (int i = 0; i < n_subs; i++) parse_dest(argv[5 + i], profile, &subs[i]);

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int buffer = 4 * 1024 * 1024; /* as Roomcast's UdpMux: absorb keyframe bursts */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &local.sin_addr) != 1 ||
        bind(fd, (struct sockaddr *)&local, sizeof local) < 0) {
        perror("bind");
        return 2;
    }
    socklen_t local_len = sizeof local;
    getsockname(fd, (struct sockaddr *)&local, &local_len);

    struct sigaction action = {.sa_handler = on_signal}; /* no SA_RESTART: wake recvmmsg */
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);

    for (int i = 0; i < IN_BATCH; i++) {
        in_iovs[i].iov_base = in_bufs[i];
        in_iovs[i].iov_len = BUF_SIZE - SRTP_MAX_TRAILER_LEN;
        in_msgs[i].msg_hdr.msg_iov = &in_iovs[i];
        in_msgs[i].msg_hdr.msg_iovlen = 1;
    }
    for (int i = 0; i < OUT_BATCH; i++) {
        out_iovs[i].iov_base = out_bufs[i];
        out_msgs[i].msg_hdr.msg_iov = &out_iovs[i];
        out_msgs[i].msg_hdr.msg_iovlen = 1;
        out_msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
    }
    printf("ready %d\n", ntohs(local.sin_port));
    fflush(stdout);

    while (!stopping) {
        int n = recvmmsg(fd, in_msgs, IN_BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("recvmmsg");
            break;
        }
        int queued = 0;
        for (int i = 0; i < n; i++) {
            unsigned char *packet = in_bufs[i];
            int len = (int)in_msgs[i].msg_len;
            if (len < 12 || (packet[0] & 0xC0) != 0x80) continue;
            int pt = packet[1] & 0x7F;
            if (pt >= 64 && pt < 96) { /* RFC 5761 §4: RTCP on the muxed port */
                n_rtcp_in++;
                continue;
            }
            if (srtp_unprotect(inbound, packet, &len) != srtp_err_status_ok) {
                n_unprotect_failed++;
                continue;
            }
            n_in++;
            uint16_t seq = get16(packet + 2);
            uint32_t ts = get32(packet + 4);
            for (int s = 0; s < n_subs; s++) {
                if (queued == OUT_BATCH) {
                    flush(fd, queued);
                    queued = 0;
                }
                struct subscriber *sub = &subs[s];
                unsigned char *out = out_bufs[queued];
                memcpy(out, packet, (size_t)len);
                put16(out + 2, (uint16_t)(seq + sub->seq_offset));
                put32(out + 4, ts + sub->ts_offset);
                put32(out + 8, sub->ssrc);
                int out_len = len;
                if (srtp_protect(sub->session, out, &out_len) != srtp_err_status_ok) {
                    n_protect_failed++;
                    continue;
                }
                out_iovs[queued].iov_len = (size_t)out_len;
                out_msgs[queued].msg_hdr.msg_name = &sub->addr;
                queued++;
            }
        }
        if (queued) flush(fd, queued);
    }
    printf("in %llu rtcp_in %llu unprotect_failed %llu out %llu protect_failed %llu "
           "send_errors %llu\n",
           n_in, n_rtcp_in, n_unprotect_failed, n_out, n_protect_failed, n_send_errors);
    fflush(stdout);
    for (int i = 0; i < n_subs; i++) srtp_dealloc(subs[i].session);
    srtp_dealloc(inbound);
    free(subs);
    close(fd);
    return 0;
}
