/* An ESP SA's algorithms as DPDK symmetric crypto transforms (not read by cffi).
 *
 * For the two places that hand an SA to DPDK: per-SA cryptodev / CPU-crypto sessions
 * (crypto_cryptodev.c) and rte_security sessions (dpdk_security.c).  The ESP layout decides the
 * shape: an AEAD (AES-GCM, ChaCha20-Poly1305) is one transform over payload || trailer with
 * SPI || [seq_hi ||] seq_lo as AAD; AES-GMAC one authentication transform; AES-CBC or NULL with an
 * HMAC a chain, encrypt-then-MAC outbound and verify-then-decrypt inbound.  The salt (last 4 bytes
 * of an AEAD/GMAC key) is not part of the transform: each caller puts it where its API wants it.
 * Include after <rte_crypto.h> and esp.h.
 */
#ifndef IPSG_DPDK_XFORM_H
#define IPSG_DPDK_XFORM_H
#include <stdint.h>
#include <string.h>

/* How an SA's transforms are made up. */
enum ipsg_xform_kind { IPSG_XF_AEAD, IPSG_XF_GMAC, IPSG_XF_CHAIN };

static inline enum ipsg_xform_kind ipsg_xform_kind(uint8_t enc)
{
    if (enc == IPSG_ENC_AES_GCM || enc == IPSG_ENC_CHACHA20_POLY1305)
        return IPSG_XF_AEAD;
    return enc == IPSG_ENC_AES_GMAC ? IPSG_XF_GMAC : IPSG_XF_CHAIN;
}

static inline enum rte_crypto_auth_algorithm ipsg_hmac_algo(uint8_t integ)
{
    return integ == IPSG_INTEG_HMAC_SHA256_128   ? RTE_CRYPTO_AUTH_SHA256_HMAC
           : integ == IPSG_INTEG_HMAC_SHA384_192 ? RTE_CRYPTO_AUTH_SHA384_HMAC
                                                 : RTE_CRYPTO_AUTH_SHA512_HMAC;
}

/* The truncated ICV length of an HMAC (RFC 4868). */
static inline uint16_t ipsg_hmac_icv(uint8_t integ)
{
    return integ == IPSG_INTEG_HMAC_SHA256_128 ? 16 : integ == IPSG_INTEG_HMAC_SHA384_192 ? 24 : 32;
}

/* SA p's transform(s) in x (x[0] first; a chain links x[0] to x[1]).  The cipher key is copied to
 * key, which the caller wipes once the session exists; the HMAC key is p's own.  iv_offset: where
 * the IV sits in a crypto op (0 where the API takes no ops). */
static inline void ipsg_esp_xforms(const struct ipsg_sa_params *p, struct rte_crypto_sym_xform x[2], uint8_t key[36],
                                   uint16_t iv_offset)
{
    const int out = p->direction == IPSG_DIR_OUT;

    memset(x, 0, 2 * sizeof(*x));
    switch (ipsg_xform_kind(p->enc)) {
    case IPSG_XF_AEAD:
        memcpy(key, p->enc_key, p->enc_key_len - 4u);
        x[0].type = RTE_CRYPTO_SYM_XFORM_AEAD;
        x[0].aead.op = out ? RTE_CRYPTO_AEAD_OP_ENCRYPT : RTE_CRYPTO_AEAD_OP_DECRYPT;
        x[0].aead.algo = p->enc == IPSG_ENC_AES_GCM ? RTE_CRYPTO_AEAD_AES_GCM : RTE_CRYPTO_AEAD_CHACHA20_POLY1305;
        x[0].aead.key.data = key;
        x[0].aead.key.length = (uint16_t)(p->enc_key_len - 4u);
        x[0].aead.iv.offset = iv_offset;
        x[0].aead.iv.length = 12;
        x[0].aead.digest_length = 16;
        x[0].aead.aad_length = p->esn ? 12 : 8;
        break;
    case IPSG_XF_GMAC:
        memcpy(key, p->enc_key, p->enc_key_len - 4u);
        x[0].type = RTE_CRYPTO_SYM_XFORM_AUTH;
        x[0].auth.op = out ? RTE_CRYPTO_AUTH_OP_GENERATE : RTE_CRYPTO_AUTH_OP_VERIFY;
        x[0].auth.algo = RTE_CRYPTO_AUTH_AES_GMAC;
        x[0].auth.key.data = key;
        x[0].auth.key.length = (uint16_t)(p->enc_key_len - 4u);
        x[0].auth.iv.offset = iv_offset;
        x[0].auth.iv.length = 12;
        x[0].auth.digest_length = 16;
        break;
    case IPSG_XF_CHAIN: {
        struct rte_crypto_sym_xform *cx = out ? &x[0] : &x[1], *ax = out ? &x[1] : &x[0];
        memcpy(key, p->enc_key, p->enc_key_len);
        cx->type = RTE_CRYPTO_SYM_XFORM_CIPHER;
        cx->cipher.op = out ? RTE_CRYPTO_CIPHER_OP_ENCRYPT : RTE_CRYPTO_CIPHER_OP_DECRYPT;
        cx->cipher.algo = p->enc == IPSG_ENC_AES_CBC ? RTE_CRYPTO_CIPHER_AES_CBC : RTE_CRYPTO_CIPHER_NULL;
        cx->cipher.key.data = key;
        cx->cipher.key.length = p->enc_key_len;
        cx->cipher.iv.offset = iv_offset;
        cx->cipher.iv.length = p->enc == IPSG_ENC_AES_CBC ? 16 : 0;
        ax->type = RTE_CRYPTO_SYM_XFORM_AUTH;
        ax->auth.op = out ? RTE_CRYPTO_AUTH_OP_GENERATE : RTE_CRYPTO_AUTH_OP_VERIFY;
        ax->auth.algo = ipsg_hmac_algo(p->integ);
        ax->auth.key.data = (uint8_t *)p->integ_key;
        ax->auth.key.length = p->integ_key_len;
        ax->auth.digest_length = ipsg_hmac_icv(p->integ);
        x[0].next = &x[1];
        break;
    }
    }
}

#endif
