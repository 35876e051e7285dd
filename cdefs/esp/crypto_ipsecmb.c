/* Crypto back end on intel-ipsec-mb for the ESP core (esp_core.h).
 *
 * One IMB_MGR per engine, set up once for the best instruction set of the CPU.
 * Per SA the expanded AES keys, GHASH tables and HMAC inner/outer states are
 * computed at add and zeroed at delete; per packet nothing is allocated.
 *
 * AES-CBC+HMAC, NULL+HMAC and ChaCha20-Poly1305 go through the job API, whose
 * managers run many packets in parallel lanes: a whole round is submitted
 * before anything is flushed.  AES-GCM and GMAC use the direct single-buffer
 * functions: in this library version GCM jobs run synchronously on submission
 * anyway, so the job API only adds its bookkeeping (measured: slower).
 */
#include "esp_core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <intel-ipsec-mb.h>

struct sa_crypto {
    struct gcm_key_data gk;       /* AES-GCM/GMAC: round keys and GHASH tables (64-byte aligned) */
    uint8_t enc_keys[16 * 15] __attribute__((aligned(16)));
    uint8_t dec_keys[16 * 15] __attribute__((aligned(16)));
    uint8_t ipad[64] __attribute__((aligned(16))); /* SHA-2 state after key ^ ipad */
    uint8_t opad[64] __attribute__((aligned(16)));
    uint8_t chacha_key[32] __attribute__((aligned(16)));
    uint8_t enc;
    uint8_t aes_len;              /* AES key bytes: 16, 24, 32 */
    IMB_HASH_ALG hash;
};

void crypto_cleanse(void *p, size_t n) { explicit_bzero(p, n); }

int crypto_random(uint8_t *out, size_t n)
{
    while (n) {
        ssize_t r = getrandom(out, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        out += r;
        n -= (size_t)r;
    }
    return 0;
}

static IMB_MGR *mgr_new(IMB_ARCH *arch)
{
    IMB_MGR *m = alloc_mb_mgr(0);
    IMB_ARCH a = IMB_ARCH_NONE;
    if (m == NULL)
        return NULL;
    init_mb_mgr_auto(m, &a);
    if (a == IMB_ARCH_NONE || imb_get_errno(m) != 0) {
        free_mb_mgr(m);
        return NULL;
    }
    if (arch != NULL)
        *arch = a;
    return m;
}

void *crypto_engine_new(void) { return mgr_new(NULL); }

void crypto_engine_free(void *be)
{
    if (be != NULL)
        free_mb_mgr(be);
}

/* HMAC-SHA1 is for AH only (esp_core.c check_params keeps it out of ESP). */
static int hmac_known(uint8_t integ)
{
    return integ == IPSG_INTEG_HMAC_SHA1_96 ||
           (integ >= IPSG_INTEG_HMAC_SHA256_128 && integ <= IPSG_INTEG_HMAC_SHA512_256);
}

static int block_size(uint8_t integ)
{
    return integ == IPSG_INTEG_HMAC_SHA256_128 || integ == IPSG_INTEG_HMAC_SHA1_96 ? 64 : 128;
}

static int full_len(uint8_t integ)
{
    return integ == IPSG_INTEG_HMAC_SHA1_96       ? 20
           : integ == IPSG_INTEG_HMAC_SHA256_128 ? 32
           : integ == IPSG_INTEG_HMAC_SHA384_192 ? 48
                                                 : 64;
}

static IMB_HASH_ALG hash_alg(uint8_t integ)
{
    return integ == IPSG_INTEG_HMAC_SHA1_96      ? IMB_AUTH_HMAC_SHA_1
           : integ == IPSG_INTEG_HMAC_SHA256_128 ? IMB_AUTH_HMAC_SHA_256
           : integ == IPSG_INTEG_HMAC_SHA384_192 ? IMB_AUTH_HMAC_SHA_384
                                                 : IMB_AUTH_HMAC_SHA_512;
}

/* RFC 2104: the hash states after one block of (key ^ ipad) and (key ^ opad). */
static int hmac_pads(IMB_MGR *m, uint8_t integ, const uint8_t *key, size_t key_len, uint8_t *ipad, uint8_t *opad)
{
    uint8_t k0[128], pad[128];
    size_t bs, i;
    if (!hmac_known(integ))
        return -1;
    bs = (size_t)block_size(integ);
    memset(k0, 0, sizeof(k0));
    if (key_len > bs) { /* long keys are hashed first */
        if (integ == IPSG_INTEG_HMAC_SHA1_96)
            IMB_SHA1(m, key, key_len, k0);
        else if (integ == IPSG_INTEG_HMAC_SHA256_128)
            IMB_SHA256(m, key, key_len, k0);
        else if (integ == IPSG_INTEG_HMAC_SHA384_192)
            IMB_SHA384(m, key, key_len, k0);
        else
            IMB_SHA512(m, key, key_len, k0);
    } else if (key_len) {
        memcpy(k0, key, key_len);
    }
    for (i = 0; i < bs; i++)
        pad[i] = k0[i] ^ 0x36;
    if (integ == IPSG_INTEG_HMAC_SHA1_96)
        IMB_SHA1_ONE_BLOCK(m, pad, ipad);
    else if (integ == IPSG_INTEG_HMAC_SHA256_128)
        IMB_SHA256_ONE_BLOCK(m, pad, ipad);
    else if (integ == IPSG_INTEG_HMAC_SHA384_192)
        IMB_SHA384_ONE_BLOCK(m, pad, ipad);
    else
        IMB_SHA512_ONE_BLOCK(m, pad, ipad);
    for (i = 0; i < bs; i++)
        pad[i] = k0[i] ^ 0x5c;
    if (integ == IPSG_INTEG_HMAC_SHA1_96)
        IMB_SHA1_ONE_BLOCK(m, pad, opad);
    else if (integ == IPSG_INTEG_HMAC_SHA256_128)
        IMB_SHA256_ONE_BLOCK(m, pad, opad);
    else if (integ == IPSG_INTEG_HMAC_SHA384_192)
        IMB_SHA384_ONE_BLOCK(m, pad, opad);
    else
        IMB_SHA512_ONE_BLOCK(m, pad, opad);
    explicit_bzero(k0, sizeof(k0));
    explicit_bzero(pad, sizeof(pad));
    return 0;
}

static void gcm_pre(IMB_MGR *m, const uint8_t *key, uint32_t len, struct gcm_key_data *gk)
{
    if (len == 16)
        IMB_AES128_GCM_PRE(m, key, gk);
    else if (len == 24)
        IMB_AES192_GCM_PRE(m, key, gk);
    else
        IMB_AES256_GCM_PRE(m, key, gk);
}

static struct sa_crypto *sa_alloc(void)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, sizeof(struct sa_crypto)) != 0)
        return NULL;
    memset(p, 0, sizeof(struct sa_crypto));
    return p;
}

void crypto_sa_free(void *cs)
{
    if (cs == NULL)
        return;
    explicit_bzero(cs, sizeof(struct sa_crypto));
    free(cs);
}

void *crypto_sa_new(void *be, const struct ipsg_sa_params *p, const char **why)
{
    IMB_MGR *m = be;
    struct sa_crypto *c = sa_alloc();
    if (c == NULL) {
        *why = "out of memory";
        return NULL;
    }
    c->enc = p->enc;
    switch (p->enc) {
    case IPSG_ENC_AES_GCM:
    case IPSG_ENC_AES_GMAC:
        c->aes_len = (uint8_t)(p->enc_key_len - 4u);
        gcm_pre(m, p->enc_key, c->aes_len, &c->gk);
        break;
    case IPSG_ENC_CHACHA20_POLY1305:
        memcpy(c->chacha_key, p->enc_key, 32);
        break;
    case IPSG_ENC_AES_CBC:
        c->aes_len = p->enc_key_len;
        if (c->aes_len == 16)
            IMB_AES_KEYEXP_128(m, p->enc_key, c->enc_keys, c->dec_keys);
        else if (c->aes_len == 24)
            IMB_AES_KEYEXP_192(m, p->enc_key, c->enc_keys, c->dec_keys);
        else
            IMB_AES_KEYEXP_256(m, p->enc_key, c->enc_keys, c->dec_keys);
        /* fall through - CBC and NULL share the HMAC */
    case IPSG_ENC_NULL:
        c->hash = hash_alg(p->integ);
        if (hmac_pads(m, p->integ, p->integ_key, p->integ_key_len, c->ipad, c->opad) != 0) {
            *why = "HMAC setup failed";
            crypto_sa_free(c);
            return NULL;
        }
        break;
    default:
        *why = "algorithm not served by intel-ipsec-mb";
        crypto_sa_free(c);
        return NULL;
    }
    return c;
}

/* ------------------------------------------------------------ per batch */

static void gcm_job(IMB_MGR *m, struct ipsg_job *j, int out)
{
    struct sa_crypto *c = j->cs;
    struct gcm_context_data ctx;
    uint8_t *tag = out ? j->icv : j->scratch;
    switch (c->aes_len) {
    case 16:
        if (out)
            IMB_AES128_GCM_ENC(m, &c->gk, &ctx, j->data, j->data, j->len, j->nonce, j->aad, j->aad_len, tag, 16);
        else
            IMB_AES128_GCM_DEC(m, &c->gk, &ctx, j->data, j->data, j->len, j->nonce, j->aad, j->aad_len, tag, 16);
        break;
    case 24:
        if (out)
            IMB_AES192_GCM_ENC(m, &c->gk, &ctx, j->data, j->data, j->len, j->nonce, j->aad, j->aad_len, tag, 16);
        else
            IMB_AES192_GCM_DEC(m, &c->gk, &ctx, j->data, j->data, j->len, j->nonce, j->aad, j->aad_len, tag, 16);
        break;
    default:
        if (out)
            IMB_AES256_GCM_ENC(m, &c->gk, &ctx, j->data, j->data, j->len, j->nonce, j->aad, j->aad_len, tag, 16);
        else
            IMB_AES256_GCM_DEC(m, &c->gk, &ctx, j->data, j->data, j->len, j->nonce, j->aad, j->aad_len, tag, 16);
    }
    j->st = out || !ipsg_ct_diff(j->scratch, j->icv, 16) ? IPSG_ST_OK : IPSG_ST_AUTH_FAILED;
}

/* GMAC over data that is not contiguous: GHASH needs whole blocks before the
 * last update, so the AAD head (SPI, [seq_hi,] seq_lo, IV) is completed to 16
 * or 32 bytes with the payload's first bytes in a scratch buffer. */
static void gmac_run(IMB_MGR *m, const struct sa_crypto *c, const uint8_t *nonce, const uint8_t *head,
                     uint32_t head_len, const uint8_t *rest, uint64_t rest_len, uint8_t *tag)
{
    struct gcm_context_data ctx;
    const struct gcm_key_data *k = &c->gk;
#define GMAC(bits)                                                    \
    do {                                                              \
        IMB_AES##bits##_GMAC_INIT(m, k, &ctx, nonce, 12);             \
        IMB_AES##bits##_GMAC_UPDATE(m, k, &ctx, head, head_len);      \
        if (rest_len)                                                 \
            IMB_AES##bits##_GMAC_UPDATE(m, k, &ctx, rest, rest_len);  \
        IMB_AES##bits##_GMAC_FINALIZE(m, k, &ctx, tag, 16);           \
    } while (0)
    if (c->aes_len == 16)
        GMAC(128);
    else if (c->aes_len == 24)
        GMAC(192);
    else
        GMAC(256);
#undef GMAC
}

static void gmac_job(IMB_MGR *m, struct ipsg_job *j, int out)
{
    uint8_t head[48], tag[16];
    uint32_t hl = j->aad_len, take;
    memcpy(head, j->aad, hl);
    memcpy(head + hl, j->esp + 8, 8); /* RFC 4543 3.1: the IV is authenticated too */
    hl += 8;
    take = (32 - hl) % 16; /* 0 without ESN (16-byte head), 12 with */
    if (take > j->len)
        take = j->len;
    memcpy(head + hl, j->data, take);
    gmac_run(m, j->cs, j->nonce, head, hl + take, j->data + take, j->len - take, out ? j->icv : tag);
    j->st = out || !ipsg_ct_diff(tag, j->icv, 16) ? IPSG_ST_OK : IPSG_ST_AUTH_FAILED;
}

/* Fill an ipsec-mb job for a CBC/NULL+HMAC or ChaCha20-Poly1305 ESP job. */
static void fill_job(IMB_JOB *jb, struct ipsg_job *j, int out)
{
    struct sa_crypto *c = j->cs;
    jb->user_data = j;
    jb->cipher_direction = out ? IMB_DIR_ENCRYPT : IMB_DIR_DECRYPT;
    jb->chain_order = out ? IMB_ORDER_CIPHER_HASH : IMB_ORDER_HASH_CIPHER;
    if (c->enc == IPSG_ENC_CHACHA20_POLY1305) {
        jb->cipher_mode = IMB_CIPHER_CHACHA20_POLY1305;
        jb->hash_alg = IMB_AUTH_CHACHA20_POLY1305;
        jb->enc_keys = jb->dec_keys = c->chacha_key;
        jb->key_len_in_bytes = 32;
        jb->src = j->data;
        jb->dst = j->data;
        jb->cipher_start_src_offset_in_bytes = 0;
        jb->msg_len_to_cipher_in_bytes = j->len;
        jb->hash_start_src_offset_in_bytes = 0;
        jb->msg_len_to_hash_in_bytes = j->len;
        jb->iv = j->nonce;
        jb->iv_len_in_bytes = 12;
        jb->u.CHACHA20_POLY1305.aad = j->aad;
        jb->u.CHACHA20_POLY1305.aad_len_in_bytes = j->aad_len;
        jb->auth_tag_output = out ? j->icv : j->scratch;
        jb->auth_tag_output_len_in_bytes = 16;
        return;
    }
    /* HMAC over SPI || seq_lo || IV || ciphertext [|| seq_hi] */
    jb->src = j->esp;
    jb->dst = j->data;
    jb->cipher_start_src_offset_in_bytes = 8u + j->iv_len;
    jb->msg_len_to_cipher_in_bytes = j->len;
    jb->hash_start_src_offset_in_bytes = 0;
    jb->msg_len_to_hash_in_bytes = 8u + j->iv_len + j->len;
    jb->hash_alg = c->hash;
    jb->u.HMAC._hashed_auth_key_xor_ipad = c->ipad;
    jb->u.HMAC._hashed_auth_key_xor_opad = c->opad;
    jb->auth_tag_output_len_in_bytes = j->icv_len;
    jb->auth_tag_output = out ? j->icv : j->scratch;
    if (j->esn) {
        /* RFC 4303 3.3.2.1: seq_hi is hashed right after the ciphertext but not
         * sent.  The ICV's place holds it while hashing (the received ICV is
         * saved first); the tag goes to scratch. */
        if (!out)
            memcpy(j->scratch + 32, j->icv, j->icv_len);
        memcpy(j->icv, j->seq_hi, 4);
        jb->msg_len_to_hash_in_bytes += 4;
        jb->auth_tag_output = j->scratch;
    }
    if (c->enc == IPSG_ENC_AES_CBC) {
        jb->cipher_mode = IMB_CIPHER_CBC;
        jb->enc_keys = c->enc_keys;
        jb->dec_keys = c->dec_keys;
        jb->key_len_in_bytes = c->aes_len;
        jb->iv = j->esp + 8;
        jb->iv_len_in_bytes = 16;
    } else {
        jb->cipher_mode = IMB_CIPHER_NULL;
        jb->key_len_in_bytes = 0;
        jb->iv = NULL;
        jb->iv_len_in_bytes = 0;
    }
}

static void job_done(const IMB_JOB *jb, int out)
{
    struct ipsg_job *j = jb->user_data;
    const uint8_t *want;
    if (jb->status != IMB_STATUS_COMPLETED) {
        j->st = IPSG_ST_INTERNAL;
        return;
    }
    if (out) {
        if (j->esn && j->enc != IPSG_ENC_CHACHA20_POLY1305)
            memcpy(j->icv, j->scratch, j->icv_len);
        j->st = IPSG_ST_OK;
        return;
    }
    want = j->esn && j->enc != IPSG_ENC_CHACHA20_POLY1305 ? j->scratch + 32 : j->icv;
    j->st = ipsg_ct_diff(j->scratch, want, j->icv_len) ? IPSG_ST_AUTH_FAILED : IPSG_ST_OK;
}

void crypto_run(void *be, struct ipsg_job *jobs, uint32_t n, int dir)
{
    IMB_MGR *m = be;
    const int out = dir == IPSG_DIR_OUT;
    uint32_t i, queued = 0;
    IMB_JOB *jb;
    for (i = 0; i < n; i++) {
        struct ipsg_job *j = &jobs[i];
        if (i + 1 < n)
            __builtin_prefetch(jobs[i + 1].data);
        if (j->enc == IPSG_ENC_AES_GCM) {
            gcm_job(m, j, out);
            continue;
        }
        if (j->enc == IPSG_ENC_AES_GMAC) {
            gmac_job(m, j, out);
            continue;
        }
        jb = IMB_GET_NEXT_JOB(m);
        fill_job(jb, j, out);
        queued++;
        for (jb = IMB_SUBMIT_JOB(m); jb != NULL; jb = IMB_GET_COMPLETED_JOB(m)) {
            job_done(jb, out);
            queued--;
        }
    }
    while (queued && (jb = IMB_FLUSH_JOB(m)) != NULL) {
        job_done(jb, out);
        queued--;
    }
}

/* ------------------------------------------------- known-answer helpers */

int crypto_aead_run(int seal, uint8_t enc, const uint8_t *key, uint32_t key_len, const uint8_t *nonce,
                    uint32_t nonce_len, const uint8_t *aad, uint32_t aad_len, const uint8_t *in, uint32_t in_len,
                    uint8_t *out, uint8_t *tag16)
{
    IMB_MGR *m;
    struct sa_crypto *c = NULL;
    uint8_t tag[16], *buf = NULL;
    int ok = 0;

    if (key == NULL || nonce == NULL || nonce_len == 0 || nonce_len > 16 || tag16 == NULL ||
        (aad_len && aad == NULL) || (in_len && (in == NULL || out == NULL)))
        return -1;
    if (enc == IPSG_ENC_CHACHA20_POLY1305 ? (key_len != 32 || nonce_len != 12)
                                          : ((enc != IPSG_ENC_AES_GCM && enc != IPSG_ENC_AES_GMAC) ||
                                             (key_len != 16 && key_len != 24 && key_len != 32)))
        return -1;
    if ((m = mgr_new(NULL)) == NULL || (c = sa_alloc()) == NULL)
        goto done;

    if (enc == IPSG_ENC_CHACHA20_POLY1305) {
        struct chacha20_poly1305_context_data ctx;
        IMB_CHACHA20_POLY1305_INIT(m, key, &ctx, nonce, aad, aad_len);
        if (seal)
            IMB_CHACHA20_POLY1305_ENC_UPDATE(m, key, &ctx, out, in, in_len);
        else
            IMB_CHACHA20_POLY1305_DEC_UPDATE(m, key, &ctx, out, in, in_len);
        IMB_CHACHA20_POLY1305_ENC_FINALIZE(m, &ctx, tag, 16);
        explicit_bzero(&ctx, sizeof(ctx));
    } else {
        struct gcm_context_data ctx;
        c->aes_len = (uint8_t)key_len;
        gcm_pre(m, key, key_len, &c->gk);
        if (enc == IPSG_ENC_AES_GMAC) {
            /* GMAC: the input is authenticated after the AAD, copied unchanged */
            if ((buf = malloc((size_t)aad_len + in_len + 1)) == NULL)
                goto done;
            if (aad_len)
                memcpy(buf, aad, aad_len);
            if (in_len)
                memcpy(buf + aad_len, in, in_len);
            if (nonce_len != 12)
                goto done; /* the GMAC API takes a 12-byte IV */
            gmac_run(m, c, nonce, buf, aad_len + in_len, NULL, 0, tag);
            if (in_len)
                memmove(out, in, in_len);
        } else {
#define KAT_GCM(bits)                                                                                    \
    do {                                                                                             \
        IMB_AES##bits##_GCM_INIT_VAR_IV(m, &c->gk, &ctx, nonce, nonce_len, aad, aad_len);            \
        if (seal) {                                                                                  \
            IMB_AES##bits##_GCM_ENC_UPDATE(m, &c->gk, &ctx, out, in, in_len);                        \
            IMB_AES##bits##_GCM_ENC_FINALIZE(m, &c->gk, &ctx, tag, 16);                              \
        } else {                                                                                     \
            IMB_AES##bits##_GCM_DEC_UPDATE(m, &c->gk, &ctx, out, in, in_len);                        \
            IMB_AES##bits##_GCM_DEC_FINALIZE(m, &c->gk, &ctx, tag, 16);                              \
        }                                                                                            \
    } while (0)
            if (key_len == 16)
                KAT_GCM(128);
            else if (key_len == 24)
                KAT_GCM(192);
            else
                KAT_GCM(256);
#undef KAT_GCM
        }
        explicit_bzero(&ctx, sizeof(ctx));
    }
    if (seal) {
        memcpy(tag16, tag, 16);
        ok = 1;
    } else {
        ok = !ipsg_ct_diff(tag, tag16, 16);
    }
done:
    if (!ok && !seal && in_len && out != NULL)
        explicit_bzero(out, in_len); /* release no unauthenticated plaintext */
    free(buf);
    crypto_sa_free(c);
    if (m != NULL)
        free_mb_mgr(m);
    return ok ? 0 : -1;
}

int ipsg_hmac(uint8_t integ, const uint8_t *key, uint32_t key_len, const uint8_t *data, uint32_t data_len,
              uint8_t *out64)
{
    IMB_MGR *m;
    struct sa_crypto *c;
    IMB_JOB *jb;
    int n = -1, full;
    if (out64 == NULL || (key_len && key == NULL) || (data_len && data == NULL) || !hmac_known(integ))
        return -1;
    full = full_len(integ);
    if ((m = mgr_new(NULL)) == NULL)
        return -1;
    if ((c = sa_alloc()) != NULL && hmac_pads(m, integ, key, key_len, c->ipad, c->opad) == 0) {
        jb = IMB_GET_NEXT_JOB(m);
        jb->cipher_mode = IMB_CIPHER_NULL;
        jb->cipher_direction = IMB_DIR_ENCRYPT;
        jb->chain_order = IMB_ORDER_HASH_CIPHER;
        jb->hash_alg = hash_alg(integ);
        jb->src = data;
        jb->dst = out64; /* NULL cipher: nothing is written there */
        jb->cipher_start_src_offset_in_bytes = 0;
        jb->msg_len_to_cipher_in_bytes = 0;
        jb->hash_start_src_offset_in_bytes = 0;
        jb->msg_len_to_hash_in_bytes = data_len;
        jb->iv = NULL;
        jb->iv_len_in_bytes = 0;
        jb->key_len_in_bytes = 0;
        jb->u.HMAC._hashed_auth_key_xor_ipad = c->ipad;
        jb->u.HMAC._hashed_auth_key_xor_opad = c->opad;
        jb->auth_tag_output = out64;
        jb->auth_tag_output_len_in_bytes = (uint64_t)full;
        jb = IMB_SUBMIT_JOB(m);
        if (jb == NULL)
            jb = IMB_FLUSH_JOB(m);
        if (jb != NULL && jb->status == IMB_STATUS_COMPLETED)
            n = full;
    }
    crypto_sa_free(c);
    free_mb_mgr(m);
    return n;
}

const char *ipsg_backend_version(void)
{
    static char text[160];
    static const char *const arch_names[] = {"none", "no-AESNI", "SSE", "AVX", "AVX2", "AVX-512"};
    IMB_ARCH arch = IMB_ARCH_NONE;
    IMB_MGR *m;
    uint64_t f;
    if (text[0])
        return text;
    if ((m = mgr_new(&arch)) == NULL) {
        snprintf(text, sizeof(text), "intel-ipsec-mb %s (no usable instruction set)", imb_get_version_str());
        return text;
    }
    f = m->features;
    snprintf(text, sizeof(text), "intel-ipsec-mb %s (%s%s%s%s%s)", imb_get_version_str(),
             arch < IMB_ARCH_NUM ? arch_names[arch] : "?", (f & IMB_FEATURE_VAES) ? ", VAES" : "",
             (f & IMB_FEATURE_VPCLMULQDQ) ? ", VPCLMULQDQ" : "", (f & IMB_FEATURE_SHANI) ? ", SHA-NI" : "",
             (f & IMB_FEATURE_GFNI) ? ", GFNI" : "");
    free_mb_mgr(m);
    return text;
}
