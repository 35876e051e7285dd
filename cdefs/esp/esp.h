/* ESP batch engine: the C view of SAs, batches and statuses.
 *
 * This file is read twice: by the C compiler (the C sources in cdefs/ include it) and by
 * cffi's cdef() through cdefs.cdef_text(), which drops preprocessor lines
 * other than integer #defines.  Keep it in the subset cffi parses: fixed-width
 * types, plain structs, integer #defines, prototypes.  Python reads the
 * #define values with cdefs.defines(), so no constant is written twice.
 */
#ifndef IPSG_ESP_H
#define IPSG_ESP_H
#include <stdint.h>
#include <stddef.h>

/* Per-packet status written by the engines (also the index into drops[]). */
#define IPSG_ST_OK 0
#define IPSG_ST_NOT_ESP 1
#define IPSG_ST_NO_SA 2
#define IPSG_ST_AUTH_FAILED 3
#define IPSG_ST_REPLAY 4
#define IPSG_ST_MALFORMED 5
#define IPSG_ST_PADDING 6
#define IPSG_ST_SELECTOR 7
#define IPSG_ST_SEQ_EXHAUSTED 8
#define IPSG_ST_HARD_EXPIRED 9
#define IPSG_ST_TOO_BIG 10
#define IPSG_ST_DUMMY 11
#define IPSG_ST_ECN 12
#define IPSG_ST_FRAGMENT 13
#define IPSG_ST_INTERNAL 14
#define IPSG_ST_MAX 16

/* Encryption algorithms (ipsg_sa_params.enc). */
#define IPSG_ENC_NULL 0
#define IPSG_ENC_AES_CBC 1
#define IPSG_ENC_AES_GCM 2
#define IPSG_ENC_AES_GMAC 3
#define IPSG_ENC_CHACHA20_POLY1305 4

/* Integrity algorithms (ipsg_sa_params.integ); NONE for AEADs. */
#define IPSG_INTEG_NONE 0
#define IPSG_INTEG_HMAC_SHA256_128 1
#define IPSG_INTEG_HMAC_SHA384_192 2
#define IPSG_INTEG_HMAC_SHA512_256 3
/* AH only (cdefs/algorithms.py AH_INTEG_ALGS; cdefs/esp/ah_core.c). */
#define IPSG_INTEG_HMAC_SHA1_96 4
#define IPSG_INTEG_AES_GMAC 5

/* ipsg_sa_params.proto: which IPsec protocol the SA is (AH: enc NULL, integ only). */
#define IPSG_PROTO_ESP 0
#define IPSG_PROTO_AH 1

#define IPSG_DIR_OUT 0
#define IPSG_DIR_IN 1
#define IPSG_MODE_TUNNEL 0
#define IPSG_MODE_TRANSPORT 1

/* Tunnel outer-header policies. */
#define IPSG_DF_COPY 0
#define IPSG_DF_SET 1
#define IPSG_DF_CLEAR 2
#define IPSG_DSCP_COPY 255
#define IPSG_ECN_NORMAL 0
#define IPSG_ECN_COMPAT 1
#define IPSG_FLOWLABEL_COPY 0
#define IPSG_FLOWLABEL_ZERO 1

/* ipsg_sa_stats.flags */
#define IPSG_SAF_SOFT_EXPIRED 1
#define IPSG_SAF_HARD_EXPIRED 2
#define IPSG_SAF_SEQ_EXHAUSTED 4

#define IPSG_MAX_TS 8
#define IPSG_REPLAY_MAX 4096
#define IPSG_MAX_KEY 36
#define IPSG_MAX_INTEG_KEY 64

/* One traffic selector: inclusive address range, protocol (0 = any) and
 * inclusive port range.  Addresses in network order; IPv4 uses bytes 0..3. */
struct ipsg_ts {
    uint8_t family;
    uint8_t proto;
    uint16_t port_lo;
    uint16_t port_hi;
    uint8_t addr_lo[16];
    uint8_t addr_hi[16];
};

/* Everything an engine needs to build a session for one SA. */
struct ipsg_sa_params {
    uint32_t spi;
    uint8_t direction;
    uint8_t mode;
    uint8_t family;          /* outer address family: 4 or 6 */
    uint8_t esn;
    uint8_t enc;
    uint8_t integ;
    uint8_t enc_key_len;     /* including the 4-byte salt for AEADs */
    uint8_t integ_key_len;
    uint8_t enc_key[36];
    uint8_t integ_key[64];
    uint8_t src[16];
    uint8_t dst[16];
    uint8_t udp_encap;
    uint8_t ttl;
    uint8_t df;
    uint8_t dscp;            /* IPSG_DSCP_COPY or a 6-bit value */
    uint8_t ecn;
    uint8_t flowlabel;
    uint16_t sport;
    uint16_t dport;
    uint8_t proto;           /* IPSG_PROTO_*; in what was padding, so no other field moved */
    uint8_t reserved_;
    uint32_t replay_window;  /* 0 disables anti-replay */
    uint64_t seq;            /* next outbound sequence number */
    uint64_t soft_bytes;     /* 0 = no limit */
    uint64_t hard_bytes;
    uint64_t soft_packets;
    uint64_t hard_packets;
    uint32_t n_local_ts;     /* 0 = any */
    uint32_t n_remote_ts;
    struct ipsg_ts local_ts[8];
    struct ipsg_ts remote_ts[8];
};

/* Counters and state, written only by the engine. */
struct ipsg_sa_stats {
    uint64_t packets;
    uint64_t bytes;          /* inner (plaintext) IP packet bytes */
    uint64_t drops[16];      /* indexed by IPSG_ST_* */
    uint64_t seq;            /* outbound: next sequence number; inbound: highest seen */
    uint32_t flags;
    uint32_t pad_;
};

/* A batch: n packets in a contiguous buffer of slot_size-byte slots.
 * Packet i starts at buf + off[i] inside slot i and is len[i] bytes long;
 * the engine may move it within its slot (headroom/tailroom).  sa[i] is the
 * SA index: input on outbound, output on inbound.
 * slots, when not NULL, gives each packet a slot of its own instead (at least
 * slot_size bytes at slots[i], e.g. a DPDK mbuf's buffer, so the worker hands
 * packets over without copying them); off[i] is then relative to slots[i] and
 * buf is not used. */
struct ipsg_batch {
    uint8_t *buf;
    uint32_t slot_size;
    uint32_t n;
    uint32_t *off;
    uint32_t *len;
    uint32_t *sa;
    uint8_t *status;
    uint8_t **slots;
};

struct ipsg_engine;

struct ipsg_engine *ipsg_engine_new(uint32_t capacity);
void ipsg_engine_free(struct ipsg_engine *e);
/* Returns 0, or -1 with a message in err. */
int ipsg_sa_add(struct ipsg_engine *e, uint32_t index, const struct ipsg_sa_params *p,
                char *err, size_t errlen);
/* Zeroes the SA's keys and frees its session. */
int ipsg_sa_del(struct ipsg_engine *e, uint32_t index);
int ipsg_sa_stats(struct ipsg_engine *e, uint32_t index, struct ipsg_sa_stats *out);
/* Engine-wide drops for packets no SA could be charged with (no SA, not ESP...). */
void ipsg_engine_drops(struct ipsg_engine *e, uint64_t *out16);

void ipsg_esp_outbound(struct ipsg_engine *e, struct ipsg_batch *b);
void ipsg_esp_inbound(struct ipsg_engine *e, struct ipsg_batch *b);

/* AH (RFC 4302, docs/ah.md) on the same engine and SA table: ah_* take a batch of AH SAs' packets
 * (outbound: a packet of an ESP SA is no-sa; inbound: a non-AH packet is not-esp); ipsec_* take a
 * batch mixing ESP and AH, each packet going through the core of its protocol. */
void ipsg_ah_outbound(struct ipsg_engine *e, struct ipsg_batch *b);
void ipsg_ah_inbound(struct ipsg_engine *e, struct ipsg_batch *b);
void ipsg_ipsec_outbound(struct ipsg_engine *e, struct ipsg_batch *b);
void ipsg_ipsec_inbound(struct ipsg_engine *e, struct ipsg_batch *b);

/* Crypto primitives the batch path uses, exposed for known-answer tests.
 * Return 0 on success, -1 on failure (including an ICV mismatch on open). */
int ipsg_aead_seal(uint8_t enc, const uint8_t *key, uint32_t key_len,
                   const uint8_t *nonce, uint32_t nonce_len,
                   const uint8_t *aad, uint32_t aad_len,
                   const uint8_t *in, uint32_t in_len, uint8_t *out, uint8_t *tag16);
int ipsg_aead_open(uint8_t enc, const uint8_t *key, uint32_t key_len,
                   const uint8_t *nonce, uint32_t nonce_len,
                   const uint8_t *aad, uint32_t aad_len,
                   const uint8_t *in, uint32_t in_len, uint8_t *out, const uint8_t *tag16);
/* Full (untruncated) HMAC into out64; returns its length, or -1. */
int ipsg_hmac(uint8_t integ, const uint8_t *key, uint32_t key_len,
              const uint8_t *data, uint32_t data_len, uint8_t *out64);
const char *ipsg_backend_version(void);

#endif
