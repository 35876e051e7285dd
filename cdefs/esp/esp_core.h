/* Private interface between the ESP core (esp_core.c) and a crypto back end
 * (crypto_openssl.c, crypto_ipsecmb.c).  Not read by cffi: Python sees only esp.h.
 *
 * The core frames and parses packets and owns every piece of SA state; a back
 * end owns keys and does nothing but crypto.  Per batch the core fills an
 * array of jobs (one per packet that needs crypto), the back end runs them all
 * in one call (so it may run many packets in parallel lanes), and the core
 * finishes each packet from the job's status.
 */
#ifndef IPSG_ESP_CORE_H
#define IPSG_ESP_CORE_H
#include "esp.h"

/* Jobs per back-end call: a batch larger than this runs in several rounds. */
#define IPSG_JOBS 256

struct ipsg_job {
    void *cs;               /* the SA's back-end state (crypto_sa_new) */
    uint8_t *esp;           /* ESP header: SPI, seq_lo, then the IV */
    uint8_t *data;          /* payload || trailer, encrypted/decrypted in place */
    uint8_t *icv;           /* outbound: where the ICV goes; inbound: the received ICV */
    uint32_t len;           /* bytes at data */
    uint8_t enc, integ, esn;
    uint8_t icv_len;        /* truncated ICV length (16/24/32) */
    uint8_t iv_len;         /* 0, 8 or 16; the IV sits at esp + 8 */
    uint8_t aad_len;        /* AEAD AAD: 8, or 12 with ESN */
    uint8_t st;             /* set by the back end: IPSG_ST_OK, _AUTH_FAILED or _INTERNAL */
    uint8_t alt;            /* 1: the SA runs on the engine's alternative back end (ipsg_engine_set_alt) */
    uint8_t aad[12];        /* SPI || [seq_hi ||] seq_lo */
    uint8_t nonce[12];      /* AEAD: 4-byte salt || 8-byte IV */
    uint8_t seq_hi[4];      /* ESN high half, appended to the HMAC input (never sent) */
    uint8_t scratch[64];    /* back-end scratch (a computed or saved ICV...) */
};

/* Per-engine back-end state (a crypto manager...); NULL means failure. */
void *crypto_engine_new(void);
void crypto_engine_free(void *be);
/* Per-SA state with expanded keys; NULL with *why set on failure.  The core has
 * validated algorithms and key lengths (see esp_core.c check_params). */
void *crypto_sa_new(void *be, const struct ipsg_sa_params *p, const char **why);
/* Zeroes the keys and frees. */
void crypto_sa_free(void *cs);
/* Run n jobs of one direction; every job gets its st.  Outbound: encrypt and
 * write the ICV.  Inbound: verify the ICV in constant time and decrypt (the
 * plaintext of a job whose st is not OK must not be used). */
void crypto_run(void *be, struct ipsg_job *jobs, uint32_t n, int dir);
/* One-shot AEAD (GCM, GMAC, ChaCha20-Poly1305; 16-byte tag) behind the
 * ipsg_aead_seal/open known-answer entry points; 0 or -1 (open: ICV mismatch,
 * with the output wiped). */
int crypto_aead_run(int seal, uint8_t enc, const uint8_t *key, uint32_t key_len, const uint8_t *nonce,
                    uint32_t nonce_len, const uint8_t *aad, uint32_t aad_len, const uint8_t *in, uint32_t in_len,
                    uint8_t *out, uint8_t *tag16);
/* Cryptographically secure random bytes (CBC IVs, drawn in bulk); 0 or -1. */
int crypto_random(uint8_t *out, size_t n);
/* Secure zeroing that the compiler may not drop. */
void crypto_cleanse(void *p, size_t n);

/* A second back end chosen per SA (the DPDK module's cryptodev sessions), beside the
 * module's own.  Reached through pointers so that modules without it (the software
 * engines) link and run exactly as before: their SAs never set alt. */
struct ipsg_alt_ops {
    /* Per-SA state for p; arg says where to run it (back-end specific).  NULL with *why set. */
    void *(*sa_new)(void *be, const struct ipsg_sa_params *p, const void *arg, const char **why);
    void (*sa_free)(void *cs);                     /* frees the session, zeroing its keys */
    void (*run)(void *be, struct ipsg_job *jobs, uint32_t n, int dir); /* as crypto_run */
    void (*be_free)(void *be);                     /* after every SA on it is gone */
};
/* The engine takes be (freed with ops->be_free in ipsg_engine_free); 0, or -1 if one is set. */
int ipsg_engine_set_alt(struct ipsg_engine *e, const struct ipsg_alt_ops *ops, void *be);
void *ipsg_engine_alt(struct ipsg_engine *e);
/* ipsg_sa_add with the crypto session made by the alternative back end (ops->sa_new(be, p, arg)). */
int ipsg_sa_add_alt(struct ipsg_engine *e, uint32_t index, const struct ipsg_sa_params *p, const void *arg,
                    char *err, size_t errlen);
/* 1 when the SA at index runs on the alternative back end, 0 when on the module's own, -1 if none. */
int ipsg_sa_is_alt(struct ipsg_engine *e, uint32_t index);

/* Constant-time comparison: 0 when equal. */
static inline int ipsg_ct_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    size_t i;
    for (i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d != 0;
}

#endif
