/* DPDK crypto sessions as a per-SA back end of the ESP core (crypto_cryptodev.c).
 *
 * Read by the C compiler and by cffi through cdefs.cdef_text(), after esp.h; same subset
 * rules as esp.h.  An SA installed with ipsg_cdev_sa_add runs its crypto on a DPDK session
 * created here, in the fastpath process: lookaside (ops enqueued and dequeued in bursts on a
 * queue pair of the cryptodev, pointing at the batch slots through external-buffer mbufs) or
 * CPU crypto (rte_cryptodev_sym_cpu_crypto_process over the slots).  Every other SA of the
 * same engine keeps the module's intel-ipsec-mb back end.
 */
#ifndef IPSG_CRYPTO_CRYPTODEV_H
#define IPSG_CRYPTO_CRYPTODEV_H
#include <stdint.h>
#include <stddef.h>
#include "esp/esp.h"

#define IPSG_CDEV_LOOKASIDE 0
#define IPSG_CDEV_CPU 1

/* Counters of the engine's cryptodev back end (all SAs, both directions). */
struct ipsg_cdev_stats {
    uint64_t enqueued;       /* lookaside ops accepted by a queue pair */
    uint64_t dequeued;
    uint64_t enqueue_retries;/* enqueue calls that took fewer ops than offered (queue full) */
    uint64_t cpu_calls;      /* rte_cryptodev_sym_cpu_crypto_process calls */
    uint64_t cpu_ops;
    uint64_t auth_failed;
    uint64_t errors;         /* ops that came back neither successful nor with an auth failure */
    uint64_t sessions;       /* sessions alive */
};

/* Installs the SA at index of engine e with its crypto on cryptodev dev (by id), through
 * mode IPSG_CDEV_*.  Sets the device up on first use (one queue pair per engine, a session
 * pool per device) and the back end on the engine.  0, or -1 with the reason in err (the
 * engine is left as it was, an SA already at index included). */
int ipsg_cdev_sa_add(struct ipsg_engine *e, uint32_t index, const struct ipsg_sa_params *p, uint8_t dev,
                     uint8_t mode, char *err, size_t errlen);
/* 1 when the SA at index runs on a DPDK session, 0 on the module's ipsec-mb, -1 if no SA. */
int ipsg_cdev_sa_on_session(struct ipsg_engine *e, uint32_t index);
/* The engine's back-end counters; -1 when it has none. */
int ipsg_cdev_stats(struct ipsg_engine *e, struct ipsg_cdev_stats *out);
/* Device id of a cryptodev by name (e.g. "crypto_aesni_gcm0"); -1 if none. */
int ipsg_cdev_by_name(const char *name);

#endif
