/* Batch ESP kernel on OpenSSL 3 libcrypto (EVP).
 *
 * Behaviour contract: docs/esp.md.  One call processes a whole batch; every
 * packet gets a status and nothing is read or written outside its slot, so
 * arbitrary bytes in the buffer are safe.  Key schedules are built once per
 * SA at ipsg_sa_add; per packet only the IV (and the HMAC inner state, which
 * OpenSSL copies from its keyed context) is set.
 */
/* HMAC uses the one-shot SHA-2 structs: their state copies by assignment, so
 * per packet HMAC needs no allocation (EVP_MD_CTX/EVP_MAC copies malloc in
 * OpenSSL 3.0).  Their declarations are deprecated but present in 3.x. */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include "esp.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define NO_INDEX 0xFFFFFFFFu
#define REPLAY_WORDS (IPSG_REPLAY_MAX / 64)
#define RAND_POOL 4096
#define ESP_HDR 8
#define UDP_HDR 8
#define NAT_T_PORT 4500

#define PROTO_HOPOPT 0
#define PROTO_IPIP 4
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_IPV6 41
#define PROTO_ROUTING 43
#define PROTO_ESP 50
#define PROTO_NONE 59
#define PROTO_DSTOPTS 60
#define PROTO_SCTP 132

struct sa {
    uint8_t used;
    uint8_t iv_len;
    uint8_t icv_len;
    uint8_t block;
    uint8_t salt[4];
    uint16_t ip_id;          /* outer IPv4 ID counter */
    uint32_t hnext;          /* next index in the SPI hash chain */
    struct ipsg_sa_params p; /* key fields zeroed once the session is built */
    struct ipsg_sa_stats st;
    EVP_CIPHER_CTX *cctx;    /* keyed once; per packet only the IV is set */
    struct hmac_key *mac;    /* HMAC with precomputed inner/outer states */
    uint64_t top;            /* inbound: highest sequence number accepted */
    uint64_t win[REPLAY_WORDS]; /* bit (seq mod 4096) set = seq seen */
};

struct ipsg_engine {
    uint32_t capacity;
    uint32_t hbits;
    uint32_t *heads;
    struct sa *sas;
    uint64_t drops[IPSG_ST_MAX];
    uint32_t rnd_pos;
    uint8_t rnd[RAND_POOL];  /* CBC IVs, drawn in bulk from RAND_bytes */
};

/* ---------------------------------------------------------------- helpers */

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void wr16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)(v >> 32));
    wr32(p + 4, (uint32_t)v);
}

static uint64_t csum_add(uint64_t sum, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)((p[i] << 8) | p[i + 1]);
    if (n & 1)
        sum += (uint32_t)p[n - 1] << 8;
    return sum;
}

static uint16_t csum_fold(uint64_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

static void ipv4_checksum(uint8_t *h, uint32_t ihl)
{
    h[10] = h[11] = 0;
    wr16(h + 10, csum_fold(csum_add(0, h, ihl)));
}

/* UDP over IPv6 must carry a checksum (RFC 8200 8.1); zero is sent as 0xffff. */
static void udp6_checksum(const uint8_t *ip6, uint8_t *udp, uint32_t udp_len)
{
    uint64_t sum = csum_add(0, ip6 + 8, 32);
    uint16_t c;
    sum += udp_len;
    sum += PROTO_UDP;
    udp[6] = udp[7] = 0;
    sum = csum_add(sum, udp, udp_len);
    c = csum_fold(sum);
    wr16(udp + 6, c ? c : 0xFFFF);
}

static inline int is_aead(uint8_t enc)
{
    return enc == IPSG_ENC_AES_GCM || enc == IPSG_ENC_AES_GMAC || enc == IPSG_ENC_CHACHA20_POLY1305;
}

static const char *cipher_name(uint8_t enc, uint32_t key_len)
{
    switch (enc) {
    case IPSG_ENC_AES_GCM:
    case IPSG_ENC_AES_GMAC:
        return key_len == 16 ? "AES-128-GCM" : key_len == 24 ? "AES-192-GCM" : key_len == 32 ? "AES-256-GCM" : NULL;
    case IPSG_ENC_AES_CBC:
        return key_len == 16 ? "AES-128-CBC" : key_len == 24 ? "AES-192-CBC" : key_len == 32 ? "AES-256-CBC" : NULL;
    case IPSG_ENC_CHACHA20_POLY1305:
        return key_len == 32 ? "ChaCha20-Poly1305" : NULL;
    default:
        return NULL;
    }
}

static const char *digest_name(uint8_t integ, uint32_t *icv_len)
{
    switch (integ) {
    case IPSG_INTEG_HMAC_SHA256_128:
        *icv_len = 16;
        return "SHA256";
    case IPSG_INTEG_HMAC_SHA384_192:
        *icv_len = 24;
        return "SHA384";
    case IPSG_INTEG_HMAC_SHA512_256:
        *icv_len = 32;
        return "SHA512";
    default:
        return NULL;
    }
}


/* HMAC (RFC 2104) on SHA-256/384/512 with the keyed inner and outer states
 * computed once per SA. */
union sha2_ctx {
    SHA256_CTX s256;
    SHA512_CTX s512;         /* SHA-384 uses the SHA-512 state */
};

struct hmac_key {
    uint8_t integ;
    uint8_t out_len;         /* full digest length */
    union sha2_ctx inner, outer;
};

static void sha2_init(uint8_t integ, union sha2_ctx *c)
{
    if (integ == IPSG_INTEG_HMAC_SHA256_128)
        SHA256_Init(&c->s256);
    else if (integ == IPSG_INTEG_HMAC_SHA384_192)
        SHA384_Init(&c->s512);
    else
        SHA512_Init(&c->s512);
}

static void sha2_update(uint8_t integ, union sha2_ctx *c, const uint8_t *p, size_t n)
{
    if (integ == IPSG_INTEG_HMAC_SHA256_128)
        SHA256_Update(&c->s256, p, n);
    else
        SHA512_Update(&c->s512, p, n);
}

static void sha2_final(uint8_t integ, union sha2_ctx *c, uint8_t *out)
{
    if (integ == IPSG_INTEG_HMAC_SHA256_128)
        SHA256_Final(out, &c->s256);
    else if (integ == IPSG_INTEG_HMAC_SHA384_192)
        SHA384_Final(out, &c->s512);
    else
        SHA512_Final(out, &c->s512);
}

static struct hmac_key *hmac_new(uint8_t integ, const uint8_t *key, size_t key_len)
{
    uint8_t k0[128], pad[128];
    size_t bs = integ == IPSG_INTEG_HMAC_SHA256_128 ? 64 : 128, i;
    struct hmac_key *h;
    uint32_t icv;
    if (digest_name(integ, &icv) == NULL || (h = OPENSSL_zalloc(sizeof(*h))) == NULL)
        return NULL;
    h->integ = integ;
    h->out_len = integ == IPSG_INTEG_HMAC_SHA256_128 ? 32 : integ == IPSG_INTEG_HMAC_SHA384_192 ? 48 : 64;
    memset(k0, 0, sizeof(k0));
    if (key_len > bs) { /* long keys are hashed first */
        union sha2_ctx c;
        sha2_init(integ, &c);
        sha2_update(integ, &c, key, key_len);
        sha2_final(integ, &c, k0);
        OPENSSL_cleanse(&c, sizeof(c));
    } else if (key_len) {
        memcpy(k0, key, key_len);
    }
    for (i = 0; i < bs; i++)
        pad[i] = k0[i] ^ 0x36;
    sha2_init(integ, &h->inner);
    sha2_update(integ, &h->inner, pad, bs);
    for (i = 0; i < bs; i++)
        pad[i] = k0[i] ^ 0x5c;
    sha2_init(integ, &h->outer);
    sha2_update(integ, &h->outer, pad, bs);
    OPENSSL_cleanse(k0, sizeof(k0));
    OPENSSL_cleanse(pad, sizeof(pad));
    return h;
}

static void hmac_free(struct hmac_key *h)
{
    if (h != NULL)
        OPENSSL_clear_free(h, sizeof(*h));
}

/* Full HMAC of data || tail (tail may be empty) into out64; returns the length. */
static uint32_t hmac_calc(const struct hmac_key *h, const uint8_t *data, size_t len, const uint8_t *tail,
                          size_t tail_len, uint8_t *out64)
{
    union sha2_ctx c = h->inner;
    uint8_t ih[64];
    sha2_update(h->integ, &c, data, len);
    if (tail_len)
        sha2_update(h->integ, &c, tail, tail_len);
    sha2_final(h->integ, &c, ih);
    c = h->outer;
    sha2_update(h->integ, &c, ih, h->out_len);
    sha2_final(h->integ, &c, out64);
    OPENSSL_cleanse(&c, sizeof(c));
    return h->out_len;
}

/* ------------------------------------------------------- engine and SAs */

static uint32_t spi_hash(const struct ipsg_engine *e, uint32_t spi)
{
    return (uint32_t)(spi * 2654435761u) >> (32 - e->hbits);
}

struct ipsg_engine *ipsg_engine_new(uint32_t capacity)
{
    struct ipsg_engine *e;
    uint32_t bits = 4, i;
    if (capacity == 0 || capacity > (1u << 24))
        return NULL;
    while ((1u << bits) < 2 * capacity)
        bits++;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->capacity = capacity;
    e->hbits = bits;
    e->rnd_pos = RAND_POOL;
    e->heads = malloc(sizeof(uint32_t) << bits);
    e->sas = calloc(capacity, sizeof(struct sa));
    if (e->heads == NULL || e->sas == NULL) {
        ipsg_engine_free(e);
        return NULL;
    }
    for (i = 0; i < (1u << bits); i++)
        e->heads[i] = NO_INDEX;
    return e;
}

static void hash_unlink(struct ipsg_engine *e, uint32_t index)
{
    uint32_t *link = &e->heads[spi_hash(e, e->sas[index].p.spi)];
    while (*link != NO_INDEX) {
        if (*link == index) {
            *link = e->sas[index].hnext;
            return;
        }
        link = &e->sas[*link].hnext;
    }
}

static void sa_clear(struct ipsg_engine *e, uint32_t index)
{
    struct sa *s = &e->sas[index];
    if (!s->used)
        return;
    if (s->p.direction == IPSG_DIR_IN)
        hash_unlink(e, index);
    EVP_CIPHER_CTX_free(s->cctx); /* cleanses the key schedule */
    hmac_free(s->mac);
    OPENSSL_cleanse(s, sizeof(*s));
}

void ipsg_engine_free(struct ipsg_engine *e)
{
    uint32_t i;
    if (e == NULL)
        return;
    if (e->sas != NULL) {
        for (i = 0; i < e->capacity; i++)
            sa_clear(e, i);
        free(e->sas);
    }
    free(e->heads);
    OPENSSL_cleanse(e, sizeof(*e));
    free(e);
}

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen > 0) {
        strncpy(err, msg, errlen - 1);
        err[errlen - 1] = '\0';
    }
    return -1;
}

static const char *check_params(const struct ipsg_sa_params *p)
{
    uint32_t i;
    if (p->direction > IPSG_DIR_IN)
        return "direction must be in or out";
    if (p->mode > IPSG_MODE_TRANSPORT)
        return "mode must be tunnel or transport";
    if (p->family != 4 && p->family != 6)
        return "address family must be 4 or 6";
    if (p->df > IPSG_DF_CLEAR || p->ecn > IPSG_ECN_COMPAT || p->flowlabel > IPSG_FLOWLABEL_ZERO)
        return "bad df/ecn/flowlabel policy";
    if (p->dscp > 63 && p->dscp != IPSG_DSCP_COPY)
        return "dscp must be 0..63 or copy";
    if (p->ttl == 0)
        return "ttl must be 1..255";
    if (p->replay_window > IPSG_REPLAY_MAX)
        return "replay window larger than 4096";
    if (p->n_local_ts > IPSG_MAX_TS || p->n_remote_ts > IPSG_MAX_TS)
        return "at most 8 traffic selectors";
    for (i = 0; i < p->n_local_ts; i++)
        if (p->local_ts[i].family != 4 && p->local_ts[i].family != 6)
            return "traffic selector family must be 4 or 6";
    for (i = 0; i < p->n_remote_ts; i++)
        if (p->remote_ts[i].family != 4 && p->remote_ts[i].family != 6)
            return "traffic selector family must be 4 or 6";
    if (p->direction == IPSG_DIR_OUT && p->seq == 0 && !p->esn)
        return "outbound sequence number must start at 1 or more";
    if (p->enc_key_len > IPSG_MAX_KEY || p->integ_key_len > IPSG_MAX_INTEG_KEY)
        return "key too long";
    if (is_aead(p->enc)) {
        if (p->integ != IPSG_INTEG_NONE)
            return "AEAD algorithms take no integrity algorithm";
        if (p->enc_key_len < 4 || cipher_name(p->enc, p->enc_key_len - 4u) == NULL)
            return "bad AEAD key length (cipher key + 4-byte salt)";
    } else if (p->enc == IPSG_ENC_AES_CBC || p->enc == IPSG_ENC_NULL) {
        uint32_t icv;
        if (p->enc == IPSG_ENC_AES_CBC && cipher_name(p->enc, p->enc_key_len) == NULL)
            return "bad AES-CBC key length";
        if (digest_name(p->integ, &icv) == NULL)
            return "a non-AEAD cipher needs an HMAC integrity algorithm";
        if (p->integ_key_len == 0)
            return "empty integrity key";
    } else {
        return "unknown encryption algorithm";
    }
    return NULL;
}

int ipsg_sa_add(struct ipsg_engine *e, uint32_t index, const struct ipsg_sa_params *p, char *err, size_t errlen)
{
    struct sa fresh;
    struct sa *s;
    const char *why;
    uint32_t icv = 0, h;

    if (e == NULL || p == NULL)
        return fail(err, errlen, "no engine or parameters");
    if (index >= e->capacity)
        return fail(err, errlen, "SA index out of range");
    if ((why = check_params(p)) != NULL)
        return fail(err, errlen, why);

    memset(&fresh, 0, sizeof(fresh));
    fresh.p = *p;
    if (p->enc != IPSG_ENC_NULL) {
        uint32_t klen = is_aead(p->enc) ? p->enc_key_len - 4u : p->enc_key_len;
        EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, cipher_name(p->enc, klen), NULL);
        int enc = p->direction == IPSG_DIR_OUT;
        fresh.cctx = EVP_CIPHER_CTX_new();
        if (c == NULL || fresh.cctx == NULL || !EVP_CipherInit_ex(fresh.cctx, c, NULL, p->enc_key, NULL, enc)) {
            EVP_CIPHER_free(c);
            why = "cipher setup failed";
            goto out;
        }
        EVP_CIPHER_free(c); /* the context keeps its own reference */
        if (p->enc == IPSG_ENC_AES_CBC)
            EVP_CIPHER_CTX_set_padding(fresh.cctx, 0);
        if (is_aead(p->enc))
            memcpy(fresh.salt, p->enc_key + klen, 4);
    }
    if (!is_aead(p->enc)) {
        digest_name(p->integ, &icv);
        fresh.mac = hmac_new(p->integ, p->integ_key, p->integ_key_len);
        if (fresh.mac == NULL) {
            why = "HMAC setup failed";
            goto out;
        }
    } else {
        icv = 16;
    }
    fresh.icv_len = (uint8_t)icv;
    fresh.iv_len = p->enc == IPSG_ENC_AES_CBC ? 16 : p->enc == IPSG_ENC_NULL ? 0 : 8;
    fresh.block = p->enc == IPSG_ENC_AES_CBC ? 16 : 4;
    OPENSSL_cleanse(fresh.p.enc_key, sizeof(fresh.p.enc_key));
    OPENSSL_cleanse(fresh.p.integ_key, sizeof(fresh.p.integ_key));

    if (p->direction == IPSG_DIR_OUT) {
        fresh.st.seq = p->seq;
        /* ESN: 0 stands for 2^64, the value after the last usable one */
        if ((!p->esn && p->seq > 0xFFFFFFFFull) || (p->esn && p->seq == 0))
            fresh.st.flags |= IPSG_SAF_SEQ_EXHAUSTED;
    } else {
        /* The window starts just below the first expected number. */
        fresh.top = p->seq ? p->seq - 1 : 0;
        fresh.st.seq = fresh.top;
    }
    fresh.used = 1;

    sa_clear(e, index); /* replacing an SA: drop the old session first */
    s = &e->sas[index];
    *s = fresh;
    OPENSSL_cleanse(&fresh, sizeof(fresh));
    s->hnext = NO_INDEX;
    if (s->p.direction == IPSG_DIR_IN) {
        h = spi_hash(e, s->p.spi);
        s->hnext = e->heads[h];
        e->heads[h] = index;
    }
    return 0;

out:
    EVP_CIPHER_CTX_free(fresh.cctx);
    hmac_free(fresh.mac);
    OPENSSL_cleanse(&fresh, sizeof(fresh));
    return fail(err, errlen, why);
}

int ipsg_sa_del(struct ipsg_engine *e, uint32_t index)
{
    if (e == NULL || index >= e->capacity || !e->sas[index].used)
        return -1;
    sa_clear(e, index);
    return 0;
}

int ipsg_sa_stats(struct ipsg_engine *e, uint32_t index, struct ipsg_sa_stats *out)
{
    if (e == NULL || out == NULL || index >= e->capacity || !e->sas[index].used)
        return -1;
    *out = e->sas[index].st;
    return 0;
}

void ipsg_engine_drops(struct ipsg_engine *e, uint64_t *out16)
{
    if (e != NULL && out16 != NULL)
        memcpy(out16, e->drops, sizeof(e->drops));
}

/* ----------------------------------------------------- shared per-packet */

static int take_random_iv(struct ipsg_engine *e, uint8_t *iv16)
{
    if (e->rnd_pos + 16 > RAND_POOL) {
        if (RAND_bytes(e->rnd, RAND_POOL) != 1)
            return -1;
        e->rnd_pos = 0;
    }
    memcpy(iv16, e->rnd + e->rnd_pos, 16);
    OPENSSL_cleanse(e->rnd + e->rnd_pos, 16); /* never hand out the same IV twice */
    e->rnd_pos += 16;
    return 0;
}

static void hmac_run(const struct sa *s, const uint8_t *data, size_t len, uint64_t seq, uint8_t *out64)
{
    uint8_t hi[4];
    wr32(hi, (uint32_t)(seq >> 32)); /* RFC 4303 3.3.2.1: ESN high half, not transmitted */
    hmac_calc(s->mac, data, len, hi, s->p.esn ? 4 : 0, out64);
}

static void account(struct sa *s, uint32_t bytes)
{
    const struct ipsg_sa_params *p = &s->p;
    s->st.packets++;
    s->st.bytes += bytes;
    if ((p->soft_packets && s->st.packets >= p->soft_packets) || (p->soft_bytes && s->st.bytes >= p->soft_bytes))
        s->st.flags |= IPSG_SAF_SOFT_EXPIRED;
}

static int hard_packets_reached(struct sa *s)
{
    if (s->p.hard_packets && s->st.packets >= s->p.hard_packets) {
        s->st.flags |= IPSG_SAF_HARD_EXPIRED;
        return 1;
    }
    return 0;
}

static int hard_bytes_exceeded(struct sa *s, uint32_t bytes)
{
    uint64_t hb = s->p.hard_bytes;
    if (hb && (s->st.bytes > hb || bytes > hb - s->st.bytes)) {
        s->st.flags |= IPSG_SAF_HARD_EXPIRED;
        return 1;
    }
    return 0;
}

/* Whether packet i's off/len lie inside slot i; gives its offset in the slot. */
static int slot_ok(const struct ipsg_batch *b, uint32_t i, uint32_t *rel)
{
    uint64_t base = (uint64_t)i * b->slot_size, off = b->off[i];
    if (off < base || off - base > b->slot_size || b->len[i] > b->slot_size - (off - base))
        return 0;
    *rel = (uint32_t)(off - base);
    return 1;
}

/* --------------------------------------------------------------- outbound */

static uint8_t out_one(struct ipsg_engine *e, struct sa *s, uint8_t *slot, uint32_t slot_size, uint32_t *rel_io,
                       uint32_t *len_io)
{
    const struct ipsg_sa_params *p = &s->p;
    const int tunnel = p->mode == IPSG_MODE_TUNNEL;
    uint32_t rel = *rel_io, plen = *len_io;
    uint8_t *pkt = slot + rel;
    uint32_t ver, ip_len, hl, nh_off = 0, pay_off, pay_len, pad, body, prefix, total, outer, udp, k;
    uint32_t out_fam, inner_fl = 0;
    uint8_t next, tos, inner_df = 0;
    uint8_t *pay, *start, *esp, *ivp, *icvp;
    uint64_t seq = s->st.seq;
    uint8_t mac[64], nonce[12], aad[12];
    int outl = 0, aadl;

    if (s->st.flags & IPSG_SAF_HARD_EXPIRED)
        return IPSG_ST_HARD_EXPIRED;
    if (s->st.flags & IPSG_SAF_SEQ_EXHAUSTED)
        return IPSG_ST_SEQ_EXHAUSTED;
    if (hard_packets_reached(s))
        return IPSG_ST_HARD_EXPIRED;

    /* Parse the plaintext IP packet. */
    if (plen < 1)
        return IPSG_ST_MALFORMED;
    ver = pkt[0] >> 4;
    if (ver == 4) {
        if (plen < 20)
            return IPSG_ST_MALFORMED;
        hl = (pkt[0] & 15u) * 4;
        ip_len = rd16(pkt + 2);
        if (hl < 20 || ip_len < hl || ip_len > plen)
            return IPSG_ST_MALFORMED;
        nh_off = 9;
        tos = pkt[1];
        inner_df = (pkt[6] & 0x40) != 0;
    } else if (ver == 6) {
        if (plen < 40)
            return IPSG_ST_MALFORMED;
        ip_len = 40u + rd16(pkt + 4);
        if (ip_len > plen || (ip_len == 40 && plen > 40)) /* zero payload length: jumbogram */
            return IPSG_ST_MALFORMED;
        hl = 40;
        nh_off = 6;
        tos = (uint8_t)(rd32(pkt) >> 20);
        inner_fl = rd32(pkt) & 0xFFFFF;
        inner_df = 1;
        /* Walked in both modes so that a broken chain is MALFORMED either way. */
        while (pkt[nh_off] == PROTO_HOPOPT || pkt[nh_off] == PROTO_ROUTING) {
            uint32_t el;
            if (hl + 8 > ip_len)
                return IPSG_ST_MALFORMED;
            el = (pkt[hl + 1] + 1u) * 8;
            if (el > ip_len - hl)
                return IPSG_ST_MALFORMED;
            nh_off = hl;
            hl += el;
        }
    } else {
        return IPSG_ST_MALFORMED;
    }
    if (hard_bytes_exceeded(s, ip_len))
        return IPSG_ST_HARD_EXPIRED;

    pay_off = tunnel ? 0 : hl;
    pay_len = ip_len - pay_off;
    next = tunnel ? (ver == 4 ? PROTO_IPIP : PROTO_IPV6) : pkt[nh_off];
    pad = (s->block - (pay_len + 2) % s->block) % s->block;
    body = pay_len + pad + 2;
    udp = p->udp_encap ? UDP_HDR : 0;
    out_fam = tunnel ? p->family : ver;
    outer = tunnel ? (p->family == 4 ? 20 : 40) : hl;
    prefix = outer + udp + ESP_HDR + s->iv_len;
    total = prefix + body + s->icv_len; /* all terms bounded by slot_size + a few hundred */
    if (total > slot_size)
        return IPSG_ST_TOO_BIG;
    if ((out_fam == 4 && total > 0xFFFF) || (out_fam == 6 && total - 40 > 0xFFFF))
        return IPSG_ST_TOO_BIG;

    /* Make room around the payload inside the slot if its position leaves too little. */
    if (rel + pay_off < prefix || rel + pay_off + body + s->icv_len > slot_size) {
        uint32_t nrel = prefix - pay_off;
        memmove(slot + nrel, pkt, ip_len);
        rel = nrel;
        pkt = slot + rel;
    }
    pay = pkt + pay_off;
    start = pay - prefix;
    if (!tunnel)
        memmove(start, pkt, hl); /* the original header moves in front of UDP/ESP */
    esp = start + outer + udp;
    ivp = esp + ESP_HDR;
    icvp = pay + body;

    for (k = 0; k < pad; k++)
        pay[pay_len + k] = (uint8_t)(k + 1);
    pay[pay_len + pad] = (uint8_t)pad;
    pay[pay_len + pad + 1] = next;
    wr32(esp, p->spi);
    wr32(esp + 4, (uint32_t)seq);

    switch (p->enc) {
    case IPSG_ENC_AES_GCM:
    case IPSG_ENC_CHACHA20_POLY1305:
    case IPSG_ENC_AES_GMAC:
        wr64(ivp, seq);
        memcpy(nonce, s->salt, 4);
        memcpy(nonce + 4, ivp, 8);
        wr32(aad, p->spi);
        if (p->esn) {
            wr32(aad + 4, (uint32_t)(seq >> 32));
            wr32(aad + 8, (uint32_t)seq);
            aadl = 12;
        } else {
            wr32(aad + 4, (uint32_t)seq);
            aadl = 8;
        }
        if (!EVP_EncryptInit_ex(s->cctx, NULL, NULL, NULL, nonce) ||
            !EVP_EncryptUpdate(s->cctx, NULL, &outl, aad, aadl))
            return IPSG_ST_INTERNAL;
        if (p->enc == IPSG_ENC_AES_GMAC) {
            /* RFC 4543: IV and the whole payload are authenticated, not encrypted */
            if (!EVP_EncryptUpdate(s->cctx, NULL, &outl, ivp, 8) ||
                !EVP_EncryptUpdate(s->cctx, NULL, &outl, pay, (int)body))
                return IPSG_ST_INTERNAL;
        } else if (!EVP_EncryptUpdate(s->cctx, pay, &outl, pay, (int)body) || (uint32_t)outl != body) {
            return IPSG_ST_INTERNAL;
        }
        if (!EVP_EncryptFinal_ex(s->cctx, mac, &outl) ||
            EVP_CIPHER_CTX_ctrl(s->cctx, EVP_CTRL_AEAD_GET_TAG, 16, icvp) != 1)
            return IPSG_ST_INTERNAL;
        break;
    case IPSG_ENC_AES_CBC:
        if (take_random_iv(e, ivp) != 0 || !EVP_EncryptInit_ex(s->cctx, NULL, NULL, NULL, ivp) ||
            !EVP_EncryptUpdate(s->cctx, pay, &outl, pay, (int)body) || (uint32_t)outl != body)
            return IPSG_ST_INTERNAL;
        /* fall through - CBC and NULL share the HMAC */
    case IPSG_ENC_NULL:
        hmac_run(s, esp, ESP_HDR + s->iv_len + body, seq, mac);
        memcpy(icvp, mac, s->icv_len);
        break;
    default:
        return IPSG_ST_INTERNAL;
    }

    if (udp) {
        uint8_t *u = start + outer;
        wr16(u, p->sport);
        wr16(u + 2, p->dport);
        wr16(u + 4, total - outer);
        u[6] = u[7] = 0; /* RFC 3948: IPv4 senders may send zero */
    }
    if (tunnel) {
        uint8_t dscp = p->dscp == IPSG_DSCP_COPY ? (uint8_t)(tos >> 2) : p->dscp;
        uint8_t ecn = p->ecn == IPSG_ECN_NORMAL ? (tos & 3) : 0;
        uint8_t tc = (uint8_t)((dscp << 2) | ecn);
        if (p->family == 4) {
            int df = p->df == IPSG_DF_SET ? 1 : p->df == IPSG_DF_CLEAR ? 0 : inner_df;
            start[0] = 0x45;
            start[1] = tc;
            wr16(start + 2, total);
            wr16(start + 4, s->ip_id);
            start[6] = df ? 0x40 : 0;
            start[7] = 0;
            start[8] = p->ttl;
            start[9] = udp ? PROTO_UDP : PROTO_ESP;
            memcpy(start + 12, p->src, 4);
            memcpy(start + 16, p->dst, 4);
            ipv4_checksum(start, 20);
        } else {
            uint32_t fl = (p->flowlabel == IPSG_FLOWLABEL_COPY && ver == 6) ? inner_fl : 0;
            wr32(start, (6u << 28) | ((uint32_t)tc << 20) | fl);
            wr16(start + 4, total - 40);
            start[6] = udp ? PROTO_UDP : PROTO_ESP;
            start[7] = p->ttl;
            memcpy(start + 8, p->src, 16);
            memcpy(start + 24, p->dst, 16);
        }
    } else if (ver == 4) {
        start[9] = udp ? PROTO_UDP : PROTO_ESP;
        wr16(start + 2, total);
        ipv4_checksum(start, hl);
    } else {
        start[nh_off] = udp ? PROTO_UDP : PROTO_ESP;
        wr16(start + 4, total - 40);
    }
    if (udp && out_fam == 6)
        udp6_checksum(start, start + outer, total - outer);

    /* Commit SA state only for a packet that leaves. */
    if (tunnel && p->family == 4)
        s->ip_id++;
    if ((!p->esn && seq >= 0xFFFFFFFFull) || (p->esn && seq == UINT64_MAX))
        s->st.flags |= IPSG_SAF_SEQ_EXHAUSTED;
    s->st.seq = seq + 1; /* with ESN 2^64 wraps to 0, read with the flag */
    account(s, ip_len);
    *rel_io = (uint32_t)(start - slot);
    *len_io = total;
    return IPSG_ST_OK;
}

void ipsg_esp_outbound(struct ipsg_engine *e, struct ipsg_batch *b)
{
    uint32_t i, rel, len;
    if (e == NULL || b == NULL || b->status == NULL)
        return;
    for (i = 0; i < b->n; i++) {
        uint8_t st;
        uint32_t idx;
        struct sa *s;
        if (b->buf == NULL || b->off == NULL || b->len == NULL || b->sa == NULL) {
            b->status[i] = IPSG_ST_INTERNAL;
            continue;
        }
        idx = b->sa[i];
        s = idx < e->capacity ? &e->sas[idx] : NULL;
        if (s == NULL || !s->used || s->p.direction != IPSG_DIR_OUT) {
            e->drops[IPSG_ST_NO_SA]++;
            b->status[i] = IPSG_ST_NO_SA;
            continue;
        }
        if (!slot_ok(b, i, &rel)) {
            st = IPSG_ST_MALFORMED;
        } else {
            uint8_t *slot = b->buf + (uint64_t)i * b->slot_size;
            len = b->len[i];
            st = out_one(e, s, slot, b->slot_size, &rel, &len);
            if (st == IPSG_ST_OK) {
                b->off[i] = (uint32_t)((uint64_t)i * b->slot_size + rel);
                b->len[i] = len;
            }
        }
        if (st != IPSG_ST_OK)
            s->st.drops[st]++;
        b->status[i] = st;
    }
}

/* ---------------------------------------------------------------- inbound */

/* Addresses, upper-layer protocol and ports of a well-formed (already length-checked) IP packet. */
struct flow {
    uint8_t fam;
    uint8_t proto;
    uint8_t has_ports;
    uint16_t sport, dport;
    const uint8_t *src, *dst;
};

static void flow_of(const uint8_t *pkt, uint32_t len, struct flow *f)
{
    uint32_t l4, end;
    f->has_ports = 0;
    if ((pkt[0] >> 4) == 4) {
        f->fam = 4;
        f->src = pkt + 12;
        f->dst = pkt + 16;
        f->proto = pkt[9];
        l4 = (pkt[0] & 15u) * 4;
        end = len;
        if (rd16(pkt + 6) & 0x1FFF)
            return; /* a later fragment carries no ports */
    } else {
        f->fam = 6;
        f->src = pkt + 8;
        f->dst = pkt + 24;
        f->proto = pkt[6];
        l4 = 40;
        end = len;
        while (f->proto == PROTO_HOPOPT || f->proto == PROTO_ROUTING || f->proto == PROTO_DSTOPTS) {
            uint32_t el;
            if (l4 + 8 > end)
                return;
            el = (pkt[l4 + 1] + 1u) * 8;
            if (el > end - l4)
                return;
            f->proto = pkt[l4];
            l4 += el;
        }
    }
    if ((f->proto == PROTO_TCP || f->proto == PROTO_UDP || f->proto == PROTO_SCTP) && l4 + 4 <= end) {
        f->has_ports = 1;
        f->sport = rd16(pkt + l4);
        f->dport = rd16(pkt + l4 + 2);
    }
}

static int ts_match(const struct ipsg_ts *ts, uint32_t n, const struct flow *f, const uint8_t *addr, uint16_t port)
{
    uint32_t i, alen = f->fam == 4 ? 4 : 16;
    if (n == 0)
        return 1;
    for (i = 0; i < n; i++, ts++) {
        if (ts->family != f->fam)
            continue;
        if (memcmp(addr, ts->addr_lo, alen) < 0 || memcmp(addr, ts->addr_hi, alen) > 0)
            continue;
        if (ts->proto && ts->proto != f->proto)
            continue;
        if (f->has_ports ? (port < ts->port_lo || port > ts->port_hi) : (ts->port_lo != 0 || ts->port_hi != 0xFFFF))
            continue;
        return 1;
    }
    return 0;
}

static struct sa *lookup(struct ipsg_engine *e, uint32_t spi, uint32_t fam, const uint8_t *dst, uint32_t *index)
{
    uint32_t idx = e->heads[spi_hash(e, spi)], n = 0, first = NO_INDEX, match = NO_INDEX;
    while (idx != NO_INDEX) {
        struct sa *s = &e->sas[idx];
        if (s->p.spi == spi) {
            n++;
            if (first == NO_INDEX)
                first = idx;
            if (match == NO_INDEX && s->p.family == fam && memcmp(s->p.dst, dst, fam == 4 ? 4 : 16) == 0)
                match = idx;
        }
        idx = s->hnext;
    }
    idx = n == 1 ? first : match;
    *index = idx;
    return idx == NO_INDEX ? NULL : &e->sas[idx];
}

/* RFC 4303 Appendix A: the high half of a 64-bit ESN from its low half and the window. */
static uint64_t infer_esn(const struct sa *s, uint32_t seq_lo)
{
    uint32_t w = s->p.replay_window ? s->p.replay_window : 64;
    uint32_t tl = (uint32_t)s->top, th = (uint32_t)(s->top >> 32), hi;
    uint32_t bottom = tl - w + 1; /* mod 2^32 */
    if (tl >= w - 1)
        hi = seq_lo >= bottom ? th : th + 1;
    else
        hi = seq_lo >= bottom ? (th ? th - 1 : 0) : th; /* no subspace below 0 */
    return ((uint64_t)hi << 32) | seq_lo;
}

static inline int win_test(const struct sa *s, uint64_t seq)
{
    uint32_t pos = (uint32_t)seq & (IPSG_REPLAY_MAX - 1);
    return (s->win[pos >> 6] >> (pos & 63)) & 1;
}

static int replay_seen(const struct sa *s, uint64_t seq)
{
    if (!s->p.replay_window || seq > s->top)
        return 0;
    return s->top - seq >= s->p.replay_window || win_test(s, seq);
}

static void replay_accept(struct sa *s, uint64_t seq)
{
    uint32_t pos;
    if (seq > s->top) {
        if (s->p.replay_window) {
            uint64_t from = s->top + 1, n = seq - s->top;
            if (n >= IPSG_REPLAY_MAX) {
                memset(s->win, 0, sizeof(s->win));
            } else {
                while (n) { /* clear the bits the window slides over, a word at a time */
                    uint32_t p = (uint32_t)from & (IPSG_REPLAY_MAX - 1), bit = p & 63;
                    uint64_t take = 64 - bit, mask;
                    if (take > n)
                        take = n;
                    mask = take == 64 ? ~0ull : (((1ull << take) - 1) << bit);
                    s->win[p >> 6] &= ~mask;
                    from += take;
                    n -= take;
                }
            }
        }
        s->top = seq;
        s->st.seq = seq;
    }
    if (s->p.replay_window) {
        pos = (uint32_t)seq & (IPSG_REPLAY_MAX - 1);
        s->win[pos >> 6] |= 1ull << (pos & 63);
    }
}

/* Parsed outer packet: where ESP starts and ends, and what rewriting needs. */
struct outer {
    uint32_t end;     /* end of the IP packet (total length) */
    uint32_t l4;      /* offset of the ESP or UDP header */
    uint32_t esp;     /* offset of the ESP header */
    uint32_t nh_off;  /* offset of the field naming the ESP/UDP protocol */
    uint8_t fam;
    uint8_t ecn;
    const uint8_t *dst;
};

static uint8_t parse_outer(const uint8_t *pkt, uint32_t len, struct outer *o)
{
    uint32_t frag = 0, proto;
    if (len < 1)
        return IPSG_ST_MALFORMED;
    if ((pkt[0] >> 4) == 4) {
        uint32_t ihl;
        if (len < 20)
            return IPSG_ST_MALFORMED;
        ihl = (pkt[0] & 15u) * 4;
        o->end = rd16(pkt + 2);
        if (ihl < 20 || o->end < ihl || o->end > len)
            return IPSG_ST_MALFORMED;
        o->fam = 4;
        o->ecn = pkt[1] & 3;
        o->dst = pkt + 16;
        o->nh_off = 9;
        o->l4 = ihl;
        proto = pkt[9];
        frag = rd16(pkt + 6) & 0x3FFF; /* MF or offset */
    } else if ((pkt[0] >> 4) == 6) {
        if (len < 40)
            return IPSG_ST_MALFORMED;
        o->end = 40u + rd16(pkt + 4);
        if (o->end > len || (o->end == 40 && len > 40))
            return IPSG_ST_MALFORMED;
        o->fam = 6;
        o->ecn = (pkt[1] >> 4) & 3;
        o->dst = pkt + 24;
        o->nh_off = 6;
        o->l4 = 40;
        while (pkt[o->nh_off] == PROTO_HOPOPT || pkt[o->nh_off] == PROTO_ROUTING ||
               pkt[o->nh_off] == PROTO_DSTOPTS) {
            uint32_t el;
            if (o->l4 + 8 > o->end)
                return IPSG_ST_MALFORMED;
            el = (pkt[o->l4 + 1] + 1u) * 8;
            if (el > o->end - o->l4)
                return IPSG_ST_MALFORMED;
            o->nh_off = o->l4;
            o->l4 += el;
        }
        proto = pkt[o->nh_off];
    } else {
        return IPSG_ST_MALFORMED;
    }

    if (proto == PROTO_ESP) {
        if (frag)
            return IPSG_ST_FRAGMENT;
        o->esp = o->l4;
    } else if (proto == PROTO_UDP) {
        const uint8_t *u = pkt + o->l4;
        uint32_t avail, ulen;
        if (frag & 0x1FFF)
            return IPSG_ST_NOT_ESP; /* a later fragment: no ports to tell */
        if (o->l4 + UDP_HDR > o->end)
            return IPSG_ST_MALFORMED;
        if (rd16(u) != NAT_T_PORT && rd16(u + 2) != NAT_T_PORT)
            return IPSG_ST_NOT_ESP;
        avail = o->end - o->l4 - UDP_HDR;
        if (!frag) {
            ulen = rd16(u + 4);
            if (ulen < UDP_HDR || ulen > o->end - o->l4)
                return IPSG_ST_MALFORMED;
            avail = ulen - UDP_HDR;
            o->end = o->l4 + ulen;
        }
        if (avail == 1 && u[UDP_HDR] == 0xFF)
            return IPSG_ST_NOT_ESP; /* NAT keepalive, RFC 3948 2.3 */
        if (avail >= 4 && rd32(u + UDP_HDR) == 0)
            return IPSG_ST_NOT_ESP; /* non-ESP marker: IKE */
        if (frag)
            return IPSG_ST_FRAGMENT;
        o->esp = o->l4 + UDP_HDR;
    } else {
        return IPSG_ST_NOT_ESP;
    }
    if (o->end - o->esp < ESP_HDR)
        return IPSG_ST_MALFORMED;
    return IPSG_ST_OK;
}

/* Verify and decrypt one ESP packet of SA s in place; the plaintext lands at ct. */
static uint8_t in_crypto(struct sa *s, uint8_t *esp, uint32_t ct_len, uint64_t seq)
{
    const struct ipsg_sa_params *p = &s->p;
    uint8_t *ivp = esp + ESP_HDR, *ct = ivp + s->iv_len, *icvp = ct + ct_len;
    uint8_t nonce[12], aad[20], mac[64];
    int outl = 0, aadl;

    switch (p->enc) {
    case IPSG_ENC_AES_GCM:
    case IPSG_ENC_CHACHA20_POLY1305:
    case IPSG_ENC_AES_GMAC:
        memcpy(nonce, s->salt, 4);
        memcpy(nonce + 4, ivp, 8);
        memcpy(aad, esp, 4);
        if (p->esn) {
            wr32(aad + 4, (uint32_t)(seq >> 32));
            memcpy(aad + 8, esp + 4, 4);
            aadl = 12;
        } else {
            memcpy(aad + 4, esp + 4, 4);
            aadl = 8;
        }
        if (p->enc == IPSG_ENC_AES_GMAC) {
            memcpy(aad + aadl, ivp, 8);
            aadl += 8;
        }
        if (!EVP_DecryptInit_ex(s->cctx, NULL, NULL, NULL, nonce) ||
            !EVP_DecryptUpdate(s->cctx, NULL, &outl, aad, aadl))
            return IPSG_ST_INTERNAL;
        if (p->enc == IPSG_ENC_AES_GMAC) {
            if (!EVP_DecryptUpdate(s->cctx, NULL, &outl, ct, (int)ct_len))
                return IPSG_ST_INTERNAL;
        } else if (!EVP_DecryptUpdate(s->cctx, ct, &outl, ct, (int)ct_len) || (uint32_t)outl != ct_len) {
            return IPSG_ST_INTERNAL;
        }
        if (EVP_CIPHER_CTX_ctrl(s->cctx, EVP_CTRL_AEAD_SET_TAG, 16, icvp) != 1)
            return IPSG_ST_INTERNAL;
        /* the AEAD compares tags in constant time */
        return EVP_DecryptFinal_ex(s->cctx, mac, &outl) > 0 ? IPSG_ST_OK : IPSG_ST_AUTH_FAILED;
    case IPSG_ENC_AES_CBC:
    case IPSG_ENC_NULL:
        hmac_run(s, esp, ESP_HDR + s->iv_len + ct_len, seq, mac);
        return CRYPTO_memcmp(mac, icvp, s->icv_len) == 0 ? IPSG_ST_OK : IPSG_ST_AUTH_FAILED;
    default:
        return IPSG_ST_INTERNAL;
    }
}

static uint8_t cbc_decrypt(struct sa *s, uint8_t *esp, uint32_t ct_len)
{
    uint8_t *ivp = esp + ESP_HDR, *ct = ivp + 16;
    int outl = 0;
    if (!EVP_DecryptInit_ex(s->cctx, NULL, NULL, NULL, ivp) ||
        !EVP_DecryptUpdate(s->cctx, ct, &outl, ct, (int)ct_len) || (uint32_t)outl != ct_len)
        return IPSG_ST_INTERNAL;
    return IPSG_ST_OK;
}

/* RFC 6040 section 4.2 decapsulation of the ECN field into the inner header. */
static uint8_t ecn_decap(uint8_t outer, uint8_t *inner)
{
    int v4 = (inner[0] >> 4) == 4;
    uint8_t in = v4 ? (inner[1] & 3) : ((inner[1] >> 4) & 3), out = in;
    if (outer == 3) {
        if (in == 0)
            return IPSG_ST_ECN;
        out = 3;
    } else if (outer == 1 && in == 2) {
        out = 1;
    }
    if (out != in) {
        if (v4) {
            inner[1] = (uint8_t)((inner[1] & ~3u) | out);
            ipv4_checksum(inner, (inner[0] & 15u) * 4);
        } else {
            inner[1] = (uint8_t)((inner[1] & 0xCF) | (out << 4));
        }
    }
    return IPSG_ST_OK;
}

static uint8_t in_one(struct ipsg_engine *e, uint8_t *slot, uint32_t *rel_io, uint32_t *len_io, struct sa **sp,
                      uint32_t *index)
{
    uint8_t *pkt = slot + *rel_io, *esp, *pt, *res;
    struct outer o;
    struct sa *s;
    struct flow f;
    uint8_t st, padlen, nh;
    uint32_t esp_len, ct_len, pay_len, res_len, k;
    uint64_t seq;

    *sp = NULL;
    *index = NO_INDEX;
    if ((st = parse_outer(pkt, *len_io, &o)) != IPSG_ST_OK)
        return st;
    esp = pkt + o.esp;
    s = lookup(e, rd32(esp), o.fam, o.dst, index);
    if (s == NULL)
        return IPSG_ST_NO_SA;
    *sp = s;
    if (s->st.flags & IPSG_SAF_HARD_EXPIRED || hard_packets_reached(s))
        return IPSG_ST_HARD_EXPIRED;

    esp_len = o.end - o.esp;
    if (esp_len < ESP_HDR + s->iv_len + s->icv_len + 2u)
        return IPSG_ST_MALFORMED;
    ct_len = esp_len - ESP_HDR - s->iv_len - s->icv_len;
    if (s->p.enc == IPSG_ENC_AES_CBC && ct_len % 16)
        return IPSG_ST_MALFORMED;

    seq = s->p.esn ? infer_esn(s, rd32(esp + 4)) : rd32(esp + 4);
    if (seq == 0 || replay_seen(s, seq))
        return IPSG_ST_REPLAY;
    if ((st = in_crypto(s, esp, ct_len, seq)) != IPSG_ST_OK)
        return st;
    if (replay_seen(s, seq))
        return IPSG_ST_REPLAY;
    replay_accept(s, seq);
    if (s->p.enc == IPSG_ENC_AES_CBC && (st = cbc_decrypt(s, esp, ct_len)) != IPSG_ST_OK)
        return st;

    pt = esp + ESP_HDR + s->iv_len;
    padlen = pt[ct_len - 2];
    nh = pt[ct_len - 1];
    if (padlen > ct_len - 2)
        return IPSG_ST_PADDING;
    pay_len = ct_len - 2 - padlen;
    for (k = 0; k < padlen; k++)
        if (pt[pay_len + k] != (uint8_t)(k + 1))
            return IPSG_ST_PADDING;
    if (nh == PROTO_NONE)
        return IPSG_ST_DUMMY;

    if (s->p.mode == IPSG_MODE_TUNNEL) {
        if ((nh != PROTO_IPIP && nh != PROTO_IPV6) || pay_len < 1)
            return IPSG_ST_MALFORMED;
        if (nh == PROTO_IPIP) {
            uint32_t ihl;
            if ((pt[0] >> 4) != 4 || pay_len < 20)
                return IPSG_ST_MALFORMED;
            ihl = (pt[0] & 15u) * 4;
            res_len = rd16(pt + 2);
            if (ihl < 20 || res_len < ihl || res_len > pay_len)
                return IPSG_ST_MALFORMED;
        } else {
            if ((pt[0] >> 4) != 6 || pay_len < 40)
                return IPSG_ST_MALFORMED;
            res_len = 40u + rd16(pt + 4);
            if (res_len > pay_len || (res_len == 40 && pay_len > 40))
                return IPSG_ST_MALFORMED;
        }
        if ((st = ecn_decap(o.ecn, pt)) != IPSG_ST_OK)
            return st;
        res = pt; /* anything after res_len is TFC padding */
    } else {
        /* Transport: the outer header (and extension headers) goes back in front of the payload. */
        res = pt - o.l4;
        memmove(res, pkt, o.l4);
        res_len = o.l4 + pay_len;
        res[o.nh_off] = nh;
        if (o.fam == 4) {
            wr16(res + 2, res_len);
            ipv4_checksum(res, o.l4);
        } else {
            wr16(res + 4, res_len - 40);
        }
    }

    flow_of(res, res_len, &f);
    if (!ts_match(s->p.remote_ts, s->p.n_remote_ts, &f, f.src, f.sport) ||
        !ts_match(s->p.local_ts, s->p.n_local_ts, &f, f.dst, f.dport))
        return IPSG_ST_SELECTOR;
    if (hard_bytes_exceeded(s, res_len))
        return IPSG_ST_HARD_EXPIRED;
    account(s, res_len);
    *rel_io = (uint32_t)(res - slot);
    *len_io = res_len;
    return IPSG_ST_OK;
}

void ipsg_esp_inbound(struct ipsg_engine *e, struct ipsg_batch *b)
{
    uint32_t i, rel, len, index;
    if (e == NULL || b == NULL || b->status == NULL)
        return;
    for (i = 0; i < b->n; i++) {
        uint8_t st;
        struct sa *s = NULL;
        if (b->buf == NULL || b->off == NULL || b->len == NULL || b->sa == NULL) {
            b->status[i] = IPSG_ST_INTERNAL;
            continue;
        }
        index = NO_INDEX;
        if (!slot_ok(b, i, &rel)) {
            st = IPSG_ST_MALFORMED;
        } else {
            uint8_t *slot = b->buf + (uint64_t)i * b->slot_size;
            len = b->len[i];
            st = in_one(e, slot, &rel, &len, &s, &index);
            if (st == IPSG_ST_OK) {
                b->off[i] = (uint32_t)((uint64_t)i * b->slot_size + rel);
                b->len[i] = len;
            }
        }
        if (st != IPSG_ST_OK) {
            if (s != NULL)
                s->st.drops[st]++;
            else
                e->drops[st]++;
        }
        b->sa[i] = index;
        b->status[i] = st;
    }
}

/* ------------------------------------------------- known-answer helpers */

static int aead_run(int enc_dir, uint8_t enc, const uint8_t *key, uint32_t key_len, const uint8_t *nonce,
                    uint32_t nonce_len, const uint8_t *aad, uint32_t aad_len, const uint8_t *in, uint32_t in_len,
                    uint8_t *out, uint8_t *tag16)
{
    const char *name = is_aead(enc) ? cipher_name(enc, key_len) : NULL;
    EVP_CIPHER *c = NULL;
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t fin[16];
    int outl = 0, ok = 0;

    if (name == NULL || key == NULL || nonce == NULL || nonce_len == 0 || nonce_len > 16 || tag16 == NULL ||
        aad_len > INT_MAX || in_len > INT_MAX || (aad_len && aad == NULL) || (in_len && (in == NULL || out == NULL)))
        return -1;
    c = EVP_CIPHER_fetch(NULL, name, NULL);
    ctx = EVP_CIPHER_CTX_new();
    if (c == NULL || ctx == NULL || !EVP_CipherInit_ex(ctx, c, NULL, NULL, NULL, enc_dir) ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, (int)nonce_len, NULL) != 1 ||
        !EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc_dir))
        goto done;
    if (aad_len && !EVP_CipherUpdate(ctx, NULL, &outl, aad, (int)aad_len))
        goto done;
    if (in_len) {
        if (enc == IPSG_ENC_AES_GMAC) { /* GMAC: the input is authenticated, copied unchanged */
            if (!EVP_CipherUpdate(ctx, NULL, &outl, in, (int)in_len))
                goto done;
            memmove(out, in, in_len);
        } else if (!EVP_CipherUpdate(ctx, out, &outl, in, (int)in_len) || (uint32_t)outl != in_len) {
            goto done;
        }
    }
    if (!enc_dir && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, tag16) != 1)
        goto done;
    if (EVP_CipherFinal_ex(ctx, fin, &outl) <= 0)
        goto done;
    if (enc_dir && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag16) != 1)
        goto done;
    ok = 1;
done:
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(c);
    if (!ok && !enc_dir && in_len && out != NULL)
        OPENSSL_cleanse(out, in_len); /* release no unauthenticated plaintext */
    return ok ? 0 : -1;
}

int ipsg_aead_seal(uint8_t enc, const uint8_t *key, uint32_t key_len, const uint8_t *nonce, uint32_t nonce_len,
                   const uint8_t *aad, uint32_t aad_len, const uint8_t *in, uint32_t in_len, uint8_t *out,
                   uint8_t *tag16)
{
    return aead_run(1, enc, key, key_len, nonce, nonce_len, aad, aad_len, in, in_len, out, tag16);
}

int ipsg_aead_open(uint8_t enc, const uint8_t *key, uint32_t key_len, const uint8_t *nonce, uint32_t nonce_len,
                   const uint8_t *aad, uint32_t aad_len, const uint8_t *in, uint32_t in_len, uint8_t *out,
                   const uint8_t *tag16)
{
    uint8_t tag[16];
    if (tag16 == NULL)
        return -1;
    memcpy(tag, tag16, 16);
    return aead_run(0, enc, key, key_len, nonce, nonce_len, aad, aad_len, in, in_len, out, tag);
}

int ipsg_hmac(uint8_t integ, const uint8_t *key, uint32_t key_len, const uint8_t *data, uint32_t data_len,
              uint8_t *out64)
{
    struct hmac_key *h;
    uint32_t n;
    if (out64 == NULL || (key_len && key == NULL) || (data_len && data == NULL))
        return -1;
    if ((h = hmac_new(integ, key, key_len)) == NULL)
        return -1;
    n = hmac_calc(h, data, data_len, NULL, 0, out64);
    hmac_free(h);
    return (int)n;
}

const char *ipsg_backend_version(void)
{
    return OpenSSL_version(OPENSSL_VERSION);
}
