/* Private interface between the SA table (esp_core.c) and the AH core (ah_core.c).
 * Not read by cffi: Python sees the AH entry points in esp.h.
 */
#ifndef IPSG_AH_CORE_H
#define IPSG_AH_CORE_H
#include "sa_state.h"

/* Next header, payload length, reserved, SPI, sequence number (RFC 4302 2). */
#define AH_FIXED 12
/* Packets per round: each gets a zeroed copy of itself in the engine's arena (e->ah_buf) for its ICV
 * job, and the back end runs a round's jobs in one call (ipsec-mb's multi-buffer lanes fill up). */
#define AH_ROUND 32
/* One arena slot: the largest IP packet (IPv6: 40 + 65535), the ESN high half, and room for the ICV
 * the back end writes or compares after them; a multiple of 64. */
#define AH_STRIDE ((40u + 65535u + 4u + 64u + 63u) & ~63u)
#define AH_ARENA ((size_t)AH_ROUND * AH_STRIDE)

/* check_params for an AH SA once the checks common to ESP have passed; NULL when fine. */
const char *ah_check_params(const struct ipsg_sa_params *p);
/* The parameters the back end's crypto_sa_new gets for an AH SA: HMAC as ESP's NULL cipher with that
 * HMAC, GMAC as ESP's AES-GMAC with the integrity key (AES key || salt) as its key.  Wipe out after use. */
void ah_crypto_params(const struct ipsg_sa_params *p, struct ipsg_sa_params *out);
/* The AH lengths and GMAC salt of a freshly added SA (icv_len: the ICV field without padding, iv_len:
 * GMAC's IV); p: the SA's parameters, keys still in them. */
void ah_sa_init(struct sa *s, const struct ipsg_sa_params *p);

#endif
