/*
 * SRTP protect for the AEAD AES-GCM profiles (RFC 7714) with OpenSSL's EVP: the send side of
 * the native plane, where the fan-out multiplies the work. Debian's libsrtp2 runs AES-GCM
 * through NSS's PKCS #11 layer, which costs more than the cipher itself; receive stays with
 * libsrtp2 (one packet in per many out), and so do the other profiles.
 *
 * Session keys come from the master key and salt by the SRTP KDF (RFC 3711 §4.3.1, AES-CM
 * PRF, key derivation rate 0; the 96-bit GCM master salt is zero-padded to 112 bits at its
 * end, as libsrtp2 does). Per SSRC the sender keeps the rollover counter (RFC 3711 §3.3.1)
 * with the index estimate of RFC 3711 Appendix A, as libsrtp2 does for a sender, so
 * retransmissions of older packets get their original index.
 */
#ifndef ROOMCAST_NATIVE_SRTP_GCM_H
#define ROOMCAST_NATIVE_SRTP_GCM_H

#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>

#define GCM_TAG 16
#define GCM_SALT 12
#define GCM_MAX_STREAMS 64 /* SSRCs sent on one transport; more: the oldest slot is reused */

typedef struct {
    uint32_t ssrc;
    uint64_t index; /* highest packet index sent (ROC << 16 | SEQ); 0 before the first */
    int used;
} gcm_stream;

typedef struct {
    EVP_CIPHER_CTX *ctx; /* NULL: not active (libsrtp2 protects) */
    uint8_t salt[GCM_SALT];
    gcm_stream streams[GCM_MAX_STREAMS];
    int next_slot;
} gcm_tx;

/* RFC 3711 §4.3.1 / §4.3.3: `out_len` bytes of the session key with `label`. */
static int srtp_kdf(const EVP_CIPHER *ecb, const uint8_t *master_key, const uint8_t *salt,
                    int salt_len, uint8_t label, uint8_t *out, int out_len) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) return -1;
    int ok = EVP_EncryptInit_ex(ctx, ecb, NULL, master_key, NULL) == 1;
    EVP_CIPHER_CTX_set_padding(ctx, 0);
    uint8_t block[16], stream[16];
    for (int produced = 0, counter = 0; ok && produced < out_len; counter++) {
        memset(block, 0, sizeof block);
        memcpy(block, salt, (size_t)salt_len); /* x = key_id XOR master_salt, then x * 2^16 */
        block[7] ^= label;
        block[14] = (uint8_t)(counter >> 8);
        block[15] = (uint8_t)counter;
        int n = 0;
        ok = EVP_EncryptUpdate(ctx, stream, &n, block, 16) == 1 && n == 16;
        int take = out_len - produced < 16 ? out_len - produced : 16;
        memcpy(out + produced, stream, (size_t)take);
        produced += take;
    }
    EVP_CIPHER_CTX_free(ctx);
    return ok ? 0 : -1;
}

static void gcm_free(gcm_tx *g) {
    if (g->ctx) EVP_CIPHER_CTX_free(g->ctx);
    memset(g, 0, sizeof *g);
}

/* Key from the master key || master salt of a GCM profile (16 or 32 + 12 bytes); -1 if the
 * length fits neither. */
static int gcm_init(gcm_tx *g, const uint8_t *master, size_t len) {
    gcm_free(g);
    int key_len = len == 16 + GCM_SALT ? 16 : len == 32 + GCM_SALT ? 32 : 0;
    if (!key_len) return -1;
    const EVP_CIPHER *ecb = key_len == 16 ? EVP_aes_128_ecb() : EVP_aes_256_ecb();
    const EVP_CIPHER *gcm = key_len == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm();
    uint8_t session_key[32];
    if (srtp_kdf(ecb, master, master + key_len, GCM_SALT, 0x00, session_key, key_len) ||
        srtp_kdf(ecb, master, master + key_len, GCM_SALT, 0x02, g->salt, GCM_SALT))
        return -1;
    g->ctx = EVP_CIPHER_CTX_new();
    if (!g->ctx || EVP_EncryptInit_ex(g->ctx, gcm, NULL, session_key, NULL) != 1) {
        gcm_free(g);
        return -1;
    }
    memset(session_key, 0, sizeof session_key);
    return 0;
}

static gcm_stream *gcm_stream_of(gcm_tx *g, uint32_t ssrc) {
    for (int i = 0; i < GCM_MAX_STREAMS; i++)
        if (g->streams[i].used && g->streams[i].ssrc == ssrc) return &g->streams[i];
    gcm_stream *s = &g->streams[g->next_slot];
    g->next_slot = (g->next_slot + 1) % GCM_MAX_STREAMS;
    *s = (gcm_stream){ssrc, 0, 1};
    return s;
}

/* RFC 3711 Appendix A, as libsrtp2 estimates a sender's index: the rollover counter of
 * `seq`; the stream moves on when the packet is the newest. While the highest index is at
 * most 2^15 the counter is 0 (no guess of 0xFFFFFFFF before the first wrap). */
static uint32_t gcm_roc(gcm_stream *s, uint16_t seq) {
    uint32_t roc = (uint32_t)(s->index >> 16), guess = roc;
    int32_t local = (int32_t)(s->index & 0xFFFF), delta;
    if (s->index <= 32768) {
        guess = 0;
        delta = (int32_t)seq - local;
    } else if (local < 32768) {
        if ((int32_t)seq - local > 32768) {
            guess = roc - 1;
            delta = (int32_t)seq - local - 65536;
        } else {
            delta = (int32_t)seq - local;
        }
    } else if (local - 32768 > (int32_t)seq) {
        guess = roc + 1;
        delta = (int32_t)seq - local + 65536;
    } else {
        delta = (int32_t)seq - local;
    }
    if (delta > 0) s->index = (uint64_t)guess << 16 | seq;
    return guess;
}

/* RFC 7714 §8: encrypt the payload of the RTP packet in `buf` (`*len` bytes, header of
 * `header_len`) in place and append the tag; room for GCM_TAG more bytes is the caller's. */
static int gcm_protect(gcm_tx *g, uint8_t *buf, int *len, size_t header_len) {
    uint32_t ssrc = rd32(buf + 8);
    uint16_t seq = rd16(buf + 2);
    uint32_t roc = gcm_roc(gcm_stream_of(g, ssrc), seq);
    uint8_t iv[GCM_SALT] = {0};
    wr32(iv + 2, ssrc);
    wr32(iv + 6, roc);
    wr16(iv + 10, seq);
    for (int i = 0; i < GCM_SALT; i++) iv[i] ^= g->salt[i];
    int n = 0, payload = *len - (int)header_len;
    if (EVP_EncryptInit_ex(g->ctx, NULL, NULL, NULL, iv) != 1 ||
        EVP_EncryptUpdate(g->ctx, NULL, &n, buf, (int)header_len) != 1 ||
        EVP_EncryptUpdate(g->ctx, buf + header_len, &n, buf + header_len, payload) != 1 ||
        EVP_EncryptFinal_ex(g->ctx, buf + header_len + n, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG, buf + *len) != 1)
        return -1;
    *len += GCM_TAG;
    return 0;
}

#endif
