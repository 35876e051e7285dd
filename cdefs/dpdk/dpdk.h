/* The DPDK subset ipsecgw uses, as cffi sees it, plus the prototypes of our C glue.
 *
 * Read twice, like esp.h: by the C compiler (dpdk_glue.c and the cffi module
 * source include it after DPDK's own headers) and by cffi's cdef() through
 * cdefs.cdef_text().  DPDK structs with unions, bitfields and static inline
 * functions are not declared here: the glue flattens them into the plain
 * ipsg_dpdk_* structs below, with our own constants, so Python never depends
 * on DPDK's enum numbering or struct layout.
 */
#ifndef IPSG_DPDK_H
#define IPSG_DPDK_H
#include <stdint.h>
#include <stddef.h>

/* Symmetric transform kinds (ipsg_dpdk_sym_cap.xform). */
#define IPSG_DPDK_XF_AUTH 1
#define IPSG_DPDK_XF_CIPHER 2
#define IPSG_DPDK_XF_AEAD 3

/* rte_security action types (ipsg_dpdk_sec_cap.action). */
#define IPSG_DPDK_ACT_NONE 0
#define IPSG_DPDK_ACT_INLINE_CRYPTO 1
#define IPSG_DPDK_ACT_INLINE_PROTOCOL 2
#define IPSG_DPDK_ACT_LOOKASIDE_PROTOCOL 3
#define IPSG_DPDK_ACT_CPU_CRYPTO 4
#define IPSG_DPDK_ACT_OTHER 15

/* rte_security protocols (ipsg_dpdk_sec_cap.protocol). */
#define IPSG_DPDK_PROTO_IPSEC 1
#define IPSG_DPDK_PROTO_MACSEC 2
#define IPSG_DPDK_PROTO_PDCP 3
#define IPSG_DPDK_PROTO_DOCSIS 4
#define IPSG_DPDK_PROTO_OTHER 15

/* IPsec fields of a security capability (meaningful when protocol is IPSEC). */
#define IPSG_DPDK_IPSEC_ESP 1
#define IPSG_DPDK_IPSEC_AH 2
#define IPSG_DPDK_MODE_TRANSPORT 1
#define IPSG_DPDK_MODE_TUNNEL 2
#define IPSG_DPDK_DIR_EGRESS 1
#define IPSG_DPDK_DIR_INGRESS 2

/* rte_security_ipsec_sa_options as bits (ipsg_dpdk_sec_cap.options). */
#define IPSG_DPDK_OPT_ESN 1
#define IPSG_DPDK_OPT_UDP_ENCAP 2
#define IPSG_DPDK_OPT_COPY_DSCP 4
#define IPSG_DPDK_OPT_COPY_FLABEL 8
#define IPSG_DPDK_OPT_COPY_DF 16
#define IPSG_DPDK_OPT_DEC_TTL 32
#define IPSG_DPDK_OPT_ECN 64
#define IPSG_DPDK_OPT_STATS 128
#define IPSG_DPDK_OPT_IV_GEN_DISABLE 256
#define IPSG_DPDK_OPT_TUNNEL_HDR_VERIFY 512
#define IPSG_DPDK_OPT_UDP_PORTS_VERIFY 1024
#define IPSG_DPDK_OPT_IP_CSUM 2048
#define IPSG_DPDK_OPT_L4_CSUM 4096
#define IPSG_DPDK_OPT_IP_REASSEMBLY 8192

/* Device-level bits copied from DPDK (ethdev offload and cryptodev feature flags). */
#define IPSG_DPDK_ETH_RX_OFFLOAD_SECURITY 32768
#define IPSG_DPDK_ETH_TX_OFFLOAD_SECURITY 131072

#define IPSG_DPDK_NAME_LEN 64

struct ipsg_dpdk_range {
    uint16_t min;
    uint16_t max;
    uint16_t inc;            /* 0: only min (== max) */
};

/* One rte_cryptodev_symmetric_capability. */
struct ipsg_dpdk_sym_cap {
    uint8_t xform;           /* IPSG_DPDK_XF_* */
    uint8_t pad_;
    uint16_t block_size;
    int32_t algo;            /* DPDK's enum value, for diagnostics only */
    char name[32];           /* DPDK's algorithm string, e.g. "aes-gcm", "sha256-hmac" */
    struct ipsg_dpdk_range key;
    struct ipsg_dpdk_range digest;
    struct ipsg_dpdk_range aad;
    struct ipsg_dpdk_range iv;
};

/* One rte_security_capability; its crypto capabilities are syms[sym_first .. sym_first+sym_count). */
struct ipsg_dpdk_sec_cap {
    uint8_t action;          /* IPSG_DPDK_ACT_* */
    uint8_t protocol;        /* IPSG_DPDK_PROTO_* */
    uint8_t ipsec_proto;     /* IPSG_DPDK_IPSEC_* */
    uint8_t mode;            /* IPSG_DPDK_MODE_* */
    uint8_t direction;       /* IPSG_DPDK_DIR_* */
    uint8_t pad_[3];
    uint32_t options;        /* IPSG_DPDK_OPT_* bits */
    uint32_t replay_win_max; /* 0: no anti-replay in the device */
    uint32_t ol_flags;
    uint32_t sym_first;
    uint32_t sym_count;
};

struct ipsg_dpdk_cdev_info {
    char name[64];
    char driver[64];
    uint64_t feature_flags;  /* RTE_CRYPTODEV_FF_* */
    uint32_t max_queue_pairs;
    uint32_t max_sessions;   /* 0: no limit */
    uint16_t min_headroom;
    uint16_t min_tailroom;
    int32_t socket_id;
    uint8_t has_security;    /* rte_cryptodev_get_sec_ctx() gave a context */
    uint8_t pad_[7];
};

struct ipsg_dpdk_eth_info {
    char name[64];
    char driver[64];
    uint64_t rx_offload_capa;
    uint64_t tx_offload_capa;
    uint16_t max_rx_queues;
    uint16_t max_tx_queues;
    int32_t socket_id;
    uint8_t has_security;    /* rte_eth_dev_get_sec_ctx() gave a context */
    uint8_t pad_[7];
};

/* ---- DPDK functions called directly (same prototypes as DPDK 22.11's headers). */
const char *rte_version(void);
int rte_eal_cleanup(void);
uint8_t rte_cryptodev_count(void);
uint16_t rte_eth_dev_count_avail(void);
const char *rte_cryptodev_get_feature_name(uint64_t flag);

/* ---- Our glue (dpdk_glue.c).  Functions returning int give -1 and a message in err on failure. */

/* rte_eal_init with argv (argv[0] is the program name); returns the number of arguments parsed. */
int ipsg_dpdk_eal_init(int argc, char **argv, char *err, size_t errlen);

/* Valid port / device ids, up to max; returns how many. */
int ipsg_dpdk_eth_ports(uint16_t *out, int max);
int ipsg_dpdk_cdev_ids(uint8_t *out, int max);

int ipsg_dpdk_eth_info(uint16_t port, struct ipsg_dpdk_eth_info *out, char *err, size_t errlen);
int ipsg_dpdk_cdev_info(uint8_t dev, struct ipsg_dpdk_cdev_info *out, char *err, size_t errlen);

/* Symmetric capabilities of a cryptodev; returns how many were written (at most max), or -1. */
int ipsg_dpdk_cdev_sym_caps(uint8_t dev, struct ipsg_dpdk_sym_cap *out, int max);

/* rte_security capabilities of an ethdev port / a cryptodev.  Returns the number of
 * security capabilities written (0 when the device has no security context);
 * their crypto capabilities go to syms, *n_syms says how many. */
int ipsg_dpdk_eth_sec_caps(uint16_t port, struct ipsg_dpdk_sec_cap *caps, int max_caps,
                           struct ipsg_dpdk_sym_cap *syms, int max_syms, int *n_syms);
int ipsg_dpdk_cdev_sec_caps(uint8_t dev, struct ipsg_dpdk_sec_cap *caps, int max_caps,
                            struct ipsg_dpdk_sym_cap *syms, int max_syms, int *n_syms);

/* ---- rte_security sessions (dpdk_security.c) for the inline-crypto / inline-protocol rungs on an
 * ethdev port and the lookaside-protocol rung on a cryptodev, both named by device name.  action is
 * IPSG_DPDK_ACT_INLINE_CRYPTO, _INLINE_PROTOCOL or _LOOKASIDE_PROTOCOL.  NULL and the device's
 * answer in err when the device has no security context, no matching capability, or refuses.
 * Needs esp.h's struct ipsg_sa_params (declared before this header in the module). */
struct ipsg_sa_params;
struct ipsg_sec_sess;
struct ipsg_sec_sess *ipsg_sec_session_new(const char *device, uint8_t action, const struct ipsg_sa_params *p,
                                           char *err, size_t errlen);
/* rte_security_session_destroy's result (0 or a negative errno); NULL is a no-op. */
int ipsg_sec_session_free(struct ipsg_sec_sess *s);
int ipsg_sec_sessions_live(void);

/* ---- Gateway worker (dpdk_gw.c; the rest of its API is in dpdk_loop.h): the SA in slot has hard-expired
 * and left the engine; its packets are dropped as HARD_EXPIRED (not held for a sync) until
 * ipsg_dpdk_gw_set_sa reports a new SA in the slot. */
struct ipsg_dpdk_gw;
void ipsg_dpdk_gw_sa_dead(struct ipsg_dpdk_gw *g, uint32_t slot);

#endif
