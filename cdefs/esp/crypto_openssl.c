/* Crypto back end on OpenSSL 3 libcrypto (EVP) for the ESP core (esp_core.h).
 *
 * Key schedules are built once per SA; per packet only the IV is set (and the
 * HMAC inner/outer states, precomputed per SA, are copied).  Jobs run one
 * after another: EVP has no multi-buffer interface.
 */
/* HMAC uses the one-shot SHA-2 structs: their state copies by assignment, so
 * per packet HMAC needs no allocation (EVP_MD_CTX/EVP_MAC copies malloc in
 * OpenSSL 3.0).  Their declarations are deprecated but present in 3.x. */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include "esp_core.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

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
    case IPSG_INTEG_HMAC_SHA1_96: /* AH only (esp_core.c check_params keeps it out of ESP) */
        *icv_len = 12;
        return "SHA1";
    default:
        return NULL;
    }
}


/* HMAC (RFC 2104) on SHA-256/384/512 (and SHA-1, for AH) with the keyed inner
 * and outer states computed once per SA. */
union sha2_ctx {
    SHA_CTX s1;
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
    if (integ == IPSG_INTEG_HMAC_SHA1_96)
        SHA1_Init(&c->s1);
    else if (integ == IPSG_INTEG_HMAC_SHA256_128)
        SHA256_Init(&c->s256);
    else if (integ == IPSG_INTEG_HMAC_SHA384_192)
        SHA384_Init(&c->s512);
    else
        SHA512_Init(&c->s512);
}

static void sha2_update(uint8_t integ, union sha2_ctx *c, const uint8_t *p, size_t n)
{
    if (integ == IPSG_INTEG_HMAC_SHA1_96)
        SHA1_Update(&c->s1, p, n);
    else if (integ == IPSG_INTEG_HMAC_SHA256_128)
        SHA256_Update(&c->s256, p, n);
    else
        SHA512_Update(&c->s512, p, n);
}

static void sha2_final(uint8_t integ, union sha2_ctx *c, uint8_t *out)
{
    if (integ == IPSG_INTEG_HMAC_SHA1_96)
        SHA1_Final(out, &c->s1);
    else if (integ == IPSG_INTEG_HMAC_SHA256_128)
        SHA256_Final(out, &c->s256);
    else if (integ == IPSG_INTEG_HMAC_SHA384_192)
        SHA384_Final(out, &c->s512);
    else
        SHA512_Final(out, &c->s512);
}

static struct hmac_key *hmac_new(uint8_t integ, const uint8_t *key, size_t key_len)
{
    uint8_t k0[128], pad[128];
    size_t bs = integ == IPSG_INTEG_HMAC_SHA256_128 || integ == IPSG_INTEG_HMAC_SHA1_96 ? 64 : 128, i;
    struct hmac_key *h;
    uint32_t icv;
    if (digest_name(integ, &icv) == NULL || (h = OPENSSL_zalloc(sizeof(*h))) == NULL)
        return NULL;
    h->integ = integ;
    h->out_len = integ == IPSG_INTEG_HMAC_SHA1_96       ? 20
                 : integ == IPSG_INTEG_HMAC_SHA256_128 ? 32
                 : integ == IPSG_INTEG_HMAC_SHA384_192 ? 48
                                                       : 64;
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

/* ------------------------------------------------------------ back end */

struct sa_crypto {
    EVP_CIPHER_CTX *cctx;    /* keyed once; per packet only the IV is set */
    struct hmac_key *mac;    /* HMAC with precomputed inner/outer states */
};

void *crypto_engine_new(void)
{
    static int dummy;
    return &dummy; /* nothing per engine: EVP contexts are per SA */
}

void crypto_engine_free(void *be) { (void)be; }

void crypto_cleanse(void *p, size_t n) { OPENSSL_cleanse(p, n); }

int crypto_random(uint8_t *out, size_t n) { return RAND_bytes(out, (int)n) == 1 ? 0 : -1; }

void crypto_sa_free(void *cs)
{
    struct sa_crypto *c = cs;
    if (c == NULL)
        return;
    EVP_CIPHER_CTX_free(c->cctx); /* cleanses the key schedule */
    hmac_free(c->mac);
    OPENSSL_clear_free(c, sizeof(*c));
}

void *crypto_sa_new(void *be, const struct ipsg_sa_params *p, const char **why)
{
    struct sa_crypto *c = OPENSSL_zalloc(sizeof(*c));
    (void)be;
    if (c == NULL) {
        *why = "out of memory";
        return NULL;
    }
    if (p->enc != IPSG_ENC_NULL) {
        uint32_t klen = is_aead(p->enc) ? p->enc_key_len - 4u : p->enc_key_len;
        const char *name = cipher_name(p->enc, klen);
        EVP_CIPHER *ci = name ? EVP_CIPHER_fetch(NULL, name, NULL) : NULL;
        int enc = p->direction == IPSG_DIR_OUT;
        c->cctx = EVP_CIPHER_CTX_new();
        if (ci == NULL || c->cctx == NULL || !EVP_CipherInit_ex(c->cctx, ci, NULL, p->enc_key, NULL, enc)) {
            EVP_CIPHER_free(ci);
            *why = "cipher setup failed";
            crypto_sa_free(c);
            return NULL;
        }
        EVP_CIPHER_free(ci); /* the context keeps its own reference */
        if (p->enc == IPSG_ENC_AES_CBC)
            EVP_CIPHER_CTX_set_padding(c->cctx, 0);
    }
    if (!is_aead(p->enc)) {
        c->mac = hmac_new(p->integ, p->integ_key, p->integ_key_len);
        if (c->mac == NULL) {
            *why = "HMAC setup failed";
            crypto_sa_free(c);
            return NULL;
        }
    }
    return c;
}

static uint8_t aead_job(struct sa_crypto *c, struct ipsg_job *j, int out)
{
    EVP_CIPHER_CTX *x = c->cctx;
    uint8_t fin[16];
    int outl = 0;
    if (!EVP_CipherInit_ex(x, NULL, NULL, NULL, j->nonce, -1) || !EVP_CipherUpdate(x, NULL, &outl, j->aad, j->aad_len))
        return IPSG_ST_INTERNAL;
    if (j->enc == IPSG_ENC_AES_GMAC) {
        /* RFC 4543: IV and the whole payload are authenticated, not encrypted */
        if (!EVP_CipherUpdate(x, NULL, &outl, j->esp + 8, 8) || !EVP_CipherUpdate(x, NULL, &outl, j->data, (int)j->len))
            return IPSG_ST_INTERNAL;
    } else if (!EVP_CipherUpdate(x, j->data, &outl, j->data, (int)j->len) || (uint32_t)outl != j->len) {
        return IPSG_ST_INTERNAL;
    }
    if (out)
        return EVP_CipherFinal_ex(x, fin, &outl) > 0 &&
                       EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, 16, j->icv) == 1
                   ? IPSG_ST_OK
                   : IPSG_ST_INTERNAL;
    if (EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, 16, j->icv) != 1)
        return IPSG_ST_INTERNAL;
    /* the AEAD compares tags in constant time */
    return EVP_CipherFinal_ex(x, fin, &outl) > 0 ? IPSG_ST_OK : IPSG_ST_AUTH_FAILED;
}

static uint8_t cbc_job(struct sa_crypto *c, struct ipsg_job *j)
{
    int outl = 0;
    if (!EVP_CipherInit_ex(c->cctx, NULL, NULL, NULL, j->esp + 8, -1) ||
        !EVP_CipherUpdate(c->cctx, j->data, &outl, j->data, (int)j->len) || (uint32_t)outl != j->len)
        return IPSG_ST_INTERNAL;
    return IPSG_ST_OK;
}

static uint8_t hmac_job(struct sa_crypto *c, struct ipsg_job *j, int out)
{
    /* RFC 4303 3.3.2.1: with ESN the high half is hashed after the ICV-covered data, not sent */
    hmac_calc(c->mac, j->esp, (size_t)(j->icv - j->esp), j->seq_hi, j->esn ? 4 : 0, j->scratch);
    if (out) {
        memcpy(j->icv, j->scratch, j->icv_len);
        return IPSG_ST_OK;
    }
    return CRYPTO_memcmp(j->scratch, j->icv, j->icv_len) == 0 ? IPSG_ST_OK : IPSG_ST_AUTH_FAILED;
}

void crypto_run(void *be, struct ipsg_job *jobs, uint32_t n, int dir)
{
    const int out = dir == IPSG_DIR_OUT;
    uint32_t i;
    (void)be;
    for (i = 0; i < n; i++) {
        struct ipsg_job *j = &jobs[i];
        struct sa_crypto *c = j->cs;
        uint8_t st;
        if (i + 1 < n)
            __builtin_prefetch(jobs[i + 1].data);
        switch (j->enc) {
        case IPSG_ENC_AES_GCM:
        case IPSG_ENC_AES_GMAC:
        case IPSG_ENC_CHACHA20_POLY1305:
            st = aead_job(c, j, out);
            break;
        case IPSG_ENC_AES_CBC:
            if (out) {
                st = cbc_job(c, j);
                if (st == IPSG_ST_OK)
                    st = hmac_job(c, j, 1);
            } else {
                st = hmac_job(c, j, 0);
                if (st == IPSG_ST_OK) /* decrypt only what authenticated */
                    st = cbc_job(c, j);
            }
            break;
        case IPSG_ENC_NULL:
            st = hmac_job(c, j, out);
            break;
        default:
            st = IPSG_ST_INTERNAL;
        }
        j->st = st;
    }
}

/* ------------------------------------------------- known-answer helpers */

int crypto_aead_run(int enc_dir, uint8_t enc, const uint8_t *key, uint32_t key_len, const uint8_t *nonce,
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
