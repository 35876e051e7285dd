/* C glue between DPDK 22.11 and Python: EAL start-up with an error string,
 * and capability discovery flattened into the plain structs of dpdk.h.
 *
 * DPDK's capability structs are unions tagged by enums, end with sentinel
 * entries and hang off pointers owned by the drivers; copying them into
 * fixed arrays here keeps Python free of DPDK's layout and enum numbering.
 */
#include <stdio.h>
#include <string.h>

#include <rte_common.h>
#include <rte_cryptodev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_security.h>
#include <rte_version.h>

#include "dpdk.h"

static void set_err(char *err, size_t errlen, const char *what, int code)
{
    if (err && errlen)
        snprintf(err, errlen, "%s: %s", what, rte_strerror(code < 0 ? -code : code));
}

static void copy_name(char *dst, size_t len, const char *src)
{
    snprintf(dst, len, "%s", src ? src : "");
}

int ipsg_dpdk_eal_init(int argc, char **argv, char *err, size_t errlen)
{
    int n = rte_eal_init(argc, argv);
    if (n < 0)
        set_err(err, errlen, "rte_eal_init", rte_errno);
    return n;
}

int ipsg_dpdk_eth_ports(uint16_t *out, int max)
{
    int n = 0;
    uint16_t port;
    RTE_ETH_FOREACH_DEV(port) {
        if (n < max)
            out[n] = port;
        n++;
    }
    return n < max ? n : max;
}

int ipsg_dpdk_cdev_ids(uint8_t *out, int max)
{
    int n = 0;
    for (unsigned id = 0; id < RTE_CRYPTO_MAX_DEVS && n < max; id++)
        if (rte_cryptodev_is_valid_dev((uint8_t)id))
            out[n++] = (uint8_t)id;
    return n;
}

int ipsg_dpdk_eth_info(uint16_t port, struct ipsg_dpdk_eth_info *out, char *err, size_t errlen)
{
    struct rte_eth_dev_info info;
    char name[RTE_ETH_NAME_MAX_LEN];
    int rc;

    memset(out, 0, sizeof(*out));
    rc = rte_eth_dev_info_get(port, &info);
    if (rc != 0) {
        set_err(err, errlen, "rte_eth_dev_info_get", rc);
        return -1;
    }
    if (rte_eth_dev_get_name_by_port(port, name) == 0)
        copy_name(out->name, sizeof(out->name), name);
    copy_name(out->driver, sizeof(out->driver), info.driver_name);
    out->rx_offload_capa = info.rx_offload_capa;
    out->tx_offload_capa = info.tx_offload_capa;
    out->max_rx_queues = info.max_rx_queues;
    out->max_tx_queues = info.max_tx_queues;
    out->socket_id = rte_eth_dev_socket_id(port);
    out->has_security = rte_eth_dev_get_sec_ctx(port) != NULL;
    return 0;
}

int ipsg_dpdk_cdev_info(uint8_t dev, struct ipsg_dpdk_cdev_info *out, char *err, size_t errlen)
{
    struct rte_cryptodev_info info;

    memset(out, 0, sizeof(*out));
    if (!rte_cryptodev_is_valid_dev(dev)) {
        set_err(err, errlen, "rte_cryptodev_info_get", ENODEV);
        return -1;
    }
    rte_cryptodev_info_get(dev, &info);
    copy_name(out->name, sizeof(out->name), rte_cryptodev_name_get(dev));
    copy_name(out->driver, sizeof(out->driver), info.driver_name);
    out->feature_flags = info.feature_flags;
    out->max_queue_pairs = info.max_nb_queue_pairs;
    out->max_sessions = info.sym.max_nb_sessions;
    out->min_headroom = info.min_mbuf_headroom_req;
    out->min_tailroom = info.min_mbuf_tailroom_req;
    out->socket_id = rte_cryptodev_socket_id(dev);
    out->has_security = rte_cryptodev_get_sec_ctx(dev) != NULL;
    return 0;
}

static struct ipsg_dpdk_range range(const struct rte_crypto_param_range *r)
{
    struct ipsg_dpdk_range o = {r->min, r->max, r->increment};
    return o;
}

/* Looks an enum value up in one of DPDK's name tables without reading past it:
 * the tables have no length, so callers pass the last value they know about. */
static const char *algo_name(const char **table, int algo, int last)
{
    if (algo <= 0 || algo > last || !table[algo])
        return "unknown";
    return table[algo];
}

static int flatten_sym(const struct rte_cryptodev_capabilities *caps,
                       struct ipsg_dpdk_sym_cap *out, int max)
{
    int n = 0;
    if (!caps)
        return 0;
    for (; caps->op != RTE_CRYPTO_OP_TYPE_UNDEFINED; caps++) {
        const struct rte_cryptodev_symmetric_capability *s = &caps->sym;
        struct ipsg_dpdk_sym_cap *o;
        if (caps->op != RTE_CRYPTO_OP_TYPE_SYMMETRIC)
            continue;
        if (n >= max)
            break;
        o = &out[n];
        memset(o, 0, sizeof(*o));
        switch (s->xform_type) {
        case RTE_CRYPTO_SYM_XFORM_AUTH:
            o->xform = IPSG_DPDK_XF_AUTH;
            o->algo = s->auth.algo;
            o->block_size = s->auth.block_size;
            copy_name(o->name, sizeof(o->name),
                      algo_name(rte_crypto_auth_algorithm_strings, s->auth.algo, RTE_CRYPTO_AUTH_SM3));
            o->key = range(&s->auth.key_size);
            o->digest = range(&s->auth.digest_size);
            o->aad = range(&s->auth.aad_size);
            o->iv = range(&s->auth.iv_size);
            break;
        case RTE_CRYPTO_SYM_XFORM_CIPHER:
            o->xform = IPSG_DPDK_XF_CIPHER;
            o->algo = s->cipher.algo;
            o->block_size = s->cipher.block_size;
            copy_name(o->name, sizeof(o->name),
                      algo_name(rte_crypto_cipher_algorithm_strings, s->cipher.algo,
                                RTE_CRYPTO_CIPHER_SM4_CTR));
            o->key = range(&s->cipher.key_size);
            o->iv = range(&s->cipher.iv_size);
            break;
        case RTE_CRYPTO_SYM_XFORM_AEAD:
            o->xform = IPSG_DPDK_XF_AEAD;
            o->algo = s->aead.algo;
            o->block_size = s->aead.block_size;
            copy_name(o->name, sizeof(o->name),
                      algo_name(rte_crypto_aead_algorithm_strings, s->aead.algo,
                                RTE_CRYPTO_AEAD_CHACHA20_POLY1305));
            o->key = range(&s->aead.key_size);
            o->digest = range(&s->aead.digest_size);
            o->aad = range(&s->aead.aad_size);
            o->iv = range(&s->aead.iv_size);
            break;
        default:
            continue;
        }
        n++;
    }
    return n;
}

int ipsg_dpdk_cdev_sym_caps(uint8_t dev, struct ipsg_dpdk_sym_cap *out, int max)
{
    struct rte_cryptodev_info info;
    if (!rte_cryptodev_is_valid_dev(dev))
        return -1;
    rte_cryptodev_info_get(dev, &info);
    return flatten_sym(info.capabilities, out, max);
}

static uint8_t action_of(enum rte_security_session_action_type a)
{
    switch (a) {
    case RTE_SECURITY_ACTION_TYPE_NONE: return IPSG_DPDK_ACT_NONE;
    case RTE_SECURITY_ACTION_TYPE_INLINE_CRYPTO: return IPSG_DPDK_ACT_INLINE_CRYPTO;
    case RTE_SECURITY_ACTION_TYPE_INLINE_PROTOCOL: return IPSG_DPDK_ACT_INLINE_PROTOCOL;
    case RTE_SECURITY_ACTION_TYPE_LOOKASIDE_PROTOCOL: return IPSG_DPDK_ACT_LOOKASIDE_PROTOCOL;
    case RTE_SECURITY_ACTION_TYPE_CPU_CRYPTO: return IPSG_DPDK_ACT_CPU_CRYPTO;
    }
    return IPSG_DPDK_ACT_OTHER;
}

static uint8_t protocol_of(enum rte_security_session_protocol p)
{
    switch (p) {
    case RTE_SECURITY_PROTOCOL_IPSEC: return IPSG_DPDK_PROTO_IPSEC;
    case RTE_SECURITY_PROTOCOL_MACSEC: return IPSG_DPDK_PROTO_MACSEC;
    case RTE_SECURITY_PROTOCOL_PDCP: return IPSG_DPDK_PROTO_PDCP;
    case RTE_SECURITY_PROTOCOL_DOCSIS: return IPSG_DPDK_PROTO_DOCSIS;
    }
    return IPSG_DPDK_PROTO_OTHER;
}

static uint32_t options_of(const struct rte_security_ipsec_sa_options *o)
{
    uint32_t b = 0;
    b |= o->esn ? IPSG_DPDK_OPT_ESN : 0;
    b |= o->udp_encap ? IPSG_DPDK_OPT_UDP_ENCAP : 0;
    b |= o->copy_dscp ? IPSG_DPDK_OPT_COPY_DSCP : 0;
    b |= o->copy_flabel ? IPSG_DPDK_OPT_COPY_FLABEL : 0;
    b |= o->copy_df ? IPSG_DPDK_OPT_COPY_DF : 0;
    b |= o->dec_ttl ? IPSG_DPDK_OPT_DEC_TTL : 0;
    b |= o->ecn ? IPSG_DPDK_OPT_ECN : 0;
    b |= o->stats ? IPSG_DPDK_OPT_STATS : 0;
    b |= o->iv_gen_disable ? IPSG_DPDK_OPT_IV_GEN_DISABLE : 0;
    b |= o->tunnel_hdr_verify ? IPSG_DPDK_OPT_TUNNEL_HDR_VERIFY : 0;
    b |= o->udp_ports_verify ? IPSG_DPDK_OPT_UDP_PORTS_VERIFY : 0;
    b |= o->ip_csum_enable ? IPSG_DPDK_OPT_IP_CSUM : 0;
    b |= o->l4_csum_enable ? IPSG_DPDK_OPT_L4_CSUM : 0;
    b |= o->ip_reassembly_en ? IPSG_DPDK_OPT_IP_REASSEMBLY : 0;
    return b;
}

static int flatten_sec(void *ctx, struct ipsg_dpdk_sec_cap *caps, int max_caps,
                       struct ipsg_dpdk_sym_cap *syms, int max_syms, int *n_syms)
{
    const struct rte_security_capability *c;
    int n = 0;

    *n_syms = 0;
    if (!ctx)
        return 0;
    c = rte_security_capabilities_get((struct rte_security_ctx *)ctx);
    if (!c)
        return 0;
    for (; c->action != RTE_SECURITY_ACTION_TYPE_NONE && n < max_caps; c++) {
        struct ipsg_dpdk_sec_cap *o = &caps[n++];
        memset(o, 0, sizeof(*o));
        o->action = action_of(c->action);
        o->protocol = protocol_of(c->protocol);
        o->ol_flags = c->ol_flags;
        if (c->protocol == RTE_SECURITY_PROTOCOL_IPSEC) {
            o->ipsec_proto = c->ipsec.proto == RTE_SECURITY_IPSEC_SA_PROTO_ESP ? IPSG_DPDK_IPSEC_ESP
                                                                                : IPSG_DPDK_IPSEC_AH;
            o->mode = c->ipsec.mode == RTE_SECURITY_IPSEC_SA_MODE_TUNNEL ? IPSG_DPDK_MODE_TUNNEL
                                                                         : IPSG_DPDK_MODE_TRANSPORT;
            o->direction = c->ipsec.direction == RTE_SECURITY_IPSEC_SA_DIR_EGRESS ? IPSG_DPDK_DIR_EGRESS
                                                                                  : IPSG_DPDK_DIR_INGRESS;
            o->options = options_of(&c->ipsec.options);
            o->replay_win_max = c->ipsec.replay_win_sz_max;
        }
        o->sym_first = (uint32_t)*n_syms;
        o->sym_count = (uint32_t)flatten_sym(c->crypto_capabilities, syms + *n_syms, max_syms - *n_syms);
        *n_syms += (int)o->sym_count;
    }
    return n;
}

int ipsg_dpdk_eth_sec_caps(uint16_t port, struct ipsg_dpdk_sec_cap *caps, int max_caps,
                           struct ipsg_dpdk_sym_cap *syms, int max_syms, int *n_syms)
{
    if (!rte_eth_dev_is_valid_port(port))
        return -1;
    return flatten_sec(rte_eth_dev_get_sec_ctx(port), caps, max_caps, syms, max_syms, n_syms);
}

int ipsg_dpdk_cdev_sec_caps(uint8_t dev, struct ipsg_dpdk_sec_cap *caps, int max_caps,
                            struct ipsg_dpdk_sym_cap *syms, int max_syms, int *n_syms)
{
    if (!rte_cryptodev_is_valid_dev(dev))
        return -1;
    return flatten_sec(rte_cryptodev_get_sec_ctx(dev), caps, max_caps, syms, max_syms, n_syms);
}
