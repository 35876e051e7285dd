/* Private interface between the SA table (esp_core.c) and the AH core (ah_core.c).
 * Not read by cffi: Python sees the AH entry points in esp.h.
 */
#ifndef IPSG_AH_CORE_H
#define IPSG_AH_CORE_H
#include "sa_state.h"

/* Next header, payload length, reserved, SPI, sequence number (RFC 4302 2). */
#define AH_FIXED 12
/* The ICV input buffer: the largest IP packet (IPv6: 40 + 65535) and the ESN high half. */
#define AH_BUF_SIZE (40u + 65535u + 4u)

/* check_params for an AH SA once the checks common to ESP have passed; NULL when fine. */
const char *ah_check_params(const struct ipsg_sa_params *p);
/* The SA's integrity key, kept for the back end's one-shot primitives; NULL with *why set. */
void *ah_keys_new(const struct ipsg_sa_params *p, const char **why);
/* Zeroes and frees. */
void ah_keys_free(void *keys);
/* The AH lengths of a freshly added SA (icv_len: the ICV field without padding, iv_len: GMAC's IV). */
void ah_sa_init(struct sa *s);

#endif
