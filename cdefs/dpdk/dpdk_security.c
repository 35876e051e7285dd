/* rte_security sessions for the inline-crypto, inline-protocol (ethdev port) and
 * lookaside-protocol (cryptodev) rungs (prototypes in dpdk.h).
 *
 * What happens here is what DPDK 22.11 asks of an application: take the device's security
 * context, ask it for an IPsec/ESP capability of the SA's action, mode and direction, check
 * the capability's own crypto list and options against the SA, build the session conf
 * (IPsec xform: SPI, salt, tunnel header, ESN/UDP options, replay window; plus the crypto
 * xform) and create the session from a pool sized by the context.  Every refusal carries the
 * device's name and DPDK's answer, because the caller records it as the placement's reason
 * for falling back (on the virtual devices here: no security context at all).
 *
 * Sessions are made in the fastpath process only (rte_security has no multi-process
 * support); keys copied for the xform are wiped right after creation, and destroying a
 * session hands it back to the PMD, which clears its private data.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <rte_common.h>
#include <rte_cryptodev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>
#include <rte_mempool.h>
#include <rte_security.h>
#include <rte_security_driver.h> /* sizeof(struct rte_security_session), for the pool */

#include "esp/esp.h"
#include "dpdk.h"
#include "dpdk_xform.h"

#define SEC_POOL_SIZE 1024

/* One session pool per security context, made on first use (element size is the context's). */
struct sec_pool {
    void *ctx;
    struct rte_mempool *mp;
};
static struct sec_pool pools[RTE_MAX_ETHPORTS + RTE_CRYPTO_MAX_DEVS];
static int live;

struct ipsg_sec_sess {
    void *ctx;               /* struct rte_security_ctx * */
    void *sess;
    uint8_t action;          /* IPSG_DPDK_ACT_* */
    uint8_t is_eth;
    uint16_t dev;
};

static struct rte_mempool *pool_for(void *ctx, char *err, size_t errlen, const char *dev)
{
    char name[RTE_MEMPOOL_NAMESIZE];
    size_t i;

    for (i = 0; i < RTE_DIM(pools); i++) {
        if (pools[i].ctx == ctx)
            return pools[i].mp;
        if (pools[i].ctx == NULL)
            break;
    }
    if (i == RTE_DIM(pools)) {
        snprintf(err, errlen, "%s: too many security contexts", dev);
        return NULL;
    }
    snprintf(name, sizeof(name), "ipsg_sec%zu", i);
    /* The library's session header and the PMD's private data share one element; whether
     * get_size counts the header has varied between releases, so room for it is always added. */
    pools[i].mp = rte_mempool_create(name, SEC_POOL_SIZE,
                                     sizeof(struct rte_security_session) + rte_security_session_get_size(ctx), 0,
                                     0, NULL, NULL, NULL, NULL, SOCKET_ID_ANY, 0);
    if (pools[i].mp == NULL) {
        snprintf(err, errlen, "%s: security session pool: %s", dev, rte_strerror(rte_errno));
        return NULL;
    }
    pools[i].ctx = ctx;
    return pools[i].mp;
}

/* Whether the capability's crypto list has this transform with its key length. */
static int crypto_covered(const struct rte_security_capability *cap, const struct rte_crypto_sym_xform *x)
{
    const struct rte_cryptodev_capabilities *c;

    for (c = cap->crypto_capabilities; c && c->op != RTE_CRYPTO_OP_TYPE_UNDEFINED; c++) {
        const struct rte_cryptodev_symmetric_capability *s = &c->sym;
        const struct rte_crypto_param_range *k;
        uint16_t len;
        if (c->op != RTE_CRYPTO_OP_TYPE_SYMMETRIC || s->xform_type != x->type)
            continue;
        if (x->type == RTE_CRYPTO_SYM_XFORM_AEAD && s->aead.algo == x->aead.algo) {
            k = &s->aead.key_size;
            len = x->aead.key.length;
        } else if (x->type == RTE_CRYPTO_SYM_XFORM_AUTH && s->auth.algo == x->auth.algo) {
            k = &s->auth.key_size;
            len = x->auth.key.length;
        } else if (x->type == RTE_CRYPTO_SYM_XFORM_CIPHER && s->cipher.algo == x->cipher.algo) {
            k = &s->cipher.key_size;
            len = x->cipher.key.length;
        } else {
            continue;
        }
        if (len >= k->min && len <= k->max && (k->increment == 0 ? len == k->min : (len - k->min) % k->increment == 0))
            return 1;
    }
    return 0;
}

static const char *act_name(uint8_t action)
{
    return action == IPSG_DPDK_ACT_INLINE_CRYPTO     ? "inline crypto"
           : action == IPSG_DPDK_ACT_INLINE_PROTOCOL ? "inline protocol"
                                                     : "lookaside protocol";
}

struct ipsg_sec_sess *ipsg_sec_session_new(const char *device, uint8_t action, const struct ipsg_sa_params *p,
                                           char *err, size_t errlen)
{
    struct rte_security_session_conf conf;
    struct rte_security_capability_idx idx;
    const struct rte_security_capability *cap;
    struct rte_crypto_sym_xform x[2], *xp;
    struct rte_security_ctx *ctx;
    struct rte_mempool *mp;
    struct ipsg_sec_sess *s;
    uint8_t key[36];
    uint16_t port = 0;
    int is_eth, id = -1;
    void *sess;

    if (action != IPSG_DPDK_ACT_INLINE_CRYPTO && action != IPSG_DPDK_ACT_INLINE_PROTOCOL &&
        action != IPSG_DPDK_ACT_LOOKASIDE_PROTOCOL) {
        snprintf(err, errlen, "action %u is not an rte_security session action", action);
        return NULL;
    }
    is_eth = action != IPSG_DPDK_ACT_LOOKASIDE_PROTOCOL;
    if (is_eth) {
        if (rte_eth_dev_get_port_by_name(device, &port) != 0) {
            snprintf(err, errlen, "no ethdev port named %s in this process", device);
            return NULL;
        }
        ctx = rte_eth_dev_get_sec_ctx(port);
    } else {
        id = rte_cryptodev_get_dev_id(device);
        if (id < 0) {
            snprintf(err, errlen, "no cryptodev named %s in this process", device);
            return NULL;
        }
        ctx = rte_cryptodev_get_sec_ctx((uint8_t)id);
    }
    if (ctx == NULL) {
        snprintf(err, errlen, "%s has no rte_security context (%s returned NULL)", device,
                 is_eth ? "rte_eth_dev_get_sec_ctx" : "rte_cryptodev_get_sec_ctx");
        return NULL;
    }

    memset(&idx, 0, sizeof(idx));
    idx.action = action == IPSG_DPDK_ACT_INLINE_CRYPTO     ? RTE_SECURITY_ACTION_TYPE_INLINE_CRYPTO
                 : action == IPSG_DPDK_ACT_INLINE_PROTOCOL ? RTE_SECURITY_ACTION_TYPE_INLINE_PROTOCOL
                                                           : RTE_SECURITY_ACTION_TYPE_LOOKASIDE_PROTOCOL;
    idx.protocol = RTE_SECURITY_PROTOCOL_IPSEC;
    idx.ipsec.proto = RTE_SECURITY_IPSEC_SA_PROTO_ESP;
    idx.ipsec.mode = p->mode == IPSG_MODE_TUNNEL ? RTE_SECURITY_IPSEC_SA_MODE_TUNNEL
                                                 : RTE_SECURITY_IPSEC_SA_MODE_TRANSPORT;
    idx.ipsec.direction = p->direction == IPSG_DIR_OUT ? RTE_SECURITY_IPSEC_SA_DIR_EGRESS
                                                       : RTE_SECURITY_IPSEC_SA_DIR_INGRESS;
    cap = rte_security_capability_get(ctx, &idx);
    if (cap == NULL) {
        snprintf(err, errlen, "%s: rte_security_capability_get found no IPsec ESP %s %s %s capability", device,
                 act_name(action), p->mode == IPSG_MODE_TUNNEL ? "tunnel" : "transport",
                 p->direction == IPSG_DIR_OUT ? "egress" : "ingress");
        return NULL;
    }
    if (p->esn && !cap->ipsec.options.esn) {
        snprintf(err, errlen, "%s: its IPsec capability has no ESN", device);
        return NULL;
    }
    if (p->udp_encap && !cap->ipsec.options.udp_encap) {
        snprintf(err, errlen, "%s: its IPsec capability has no UDP encapsulation", device);
        return NULL;
    }
    if (action != IPSG_DPDK_ACT_INLINE_CRYPTO && p->direction == IPSG_DIR_IN &&
        p->replay_window > cap->ipsec.replay_win_sz_max) {
        snprintf(err, errlen, "%s: replay window %u above the device's %u", device, p->replay_window,
                 cap->ipsec.replay_win_sz_max);
        return NULL;
    }

    ipsg_esp_xforms(p, x, key, 0);   /* the AEAD/GMAC salt goes in the IPsec xform below */
    for (xp = x; xp; xp = xp->next) {
        if (!crypto_covered(cap, xp)) {
            memset(key, 0, sizeof(key));
            snprintf(err, errlen, "%s: its IPsec capability's crypto list does not cover the SA's algorithms",
                     device);
            return NULL;
        }
    }

    memset(&conf, 0, sizeof(conf));
    conf.action_type = idx.action;
    conf.protocol = RTE_SECURITY_PROTOCOL_IPSEC;
    conf.ipsec.spi = p->spi;
    if (p->enc == IPSG_ENC_AES_GCM || p->enc == IPSG_ENC_CHACHA20_POLY1305 || p->enc == IPSG_ENC_AES_GMAC)
        memcpy(&conf.ipsec.salt, p->enc_key + p->enc_key_len - 4u, 4); /* wire order, as DPDK's PMDs read it */
    conf.ipsec.options.esn = p->esn ? 1 : 0;
    conf.ipsec.options.udp_encap = p->udp_encap ? 1 : 0;
    conf.ipsec.options.copy_dscp = p->dscp == IPSG_DSCP_COPY;
    conf.ipsec.options.copy_df = p->df == IPSG_DF_COPY;
    conf.ipsec.options.ecn = p->ecn == IPSG_ECN_NORMAL;
    conf.ipsec.direction = idx.ipsec.direction;
    conf.ipsec.proto = RTE_SECURITY_IPSEC_SA_PROTO_ESP;
    conf.ipsec.mode = idx.ipsec.mode;
    conf.ipsec.replay_win_sz = p->direction == IPSG_DIR_IN ? p->replay_window : 0;
    conf.ipsec.esn.value = p->seq;
    if (p->udp_encap) {
        conf.ipsec.udp.sport = p->sport;
        conf.ipsec.udp.dport = p->dport;
    }
    if (p->mode == IPSG_MODE_TUNNEL) {
        if (p->family == 4) {
            conf.ipsec.tunnel.type = RTE_SECURITY_IPSEC_TUNNEL_IPV4;
            memcpy(&conf.ipsec.tunnel.ipv4.src_ip, p->src, 4);
            memcpy(&conf.ipsec.tunnel.ipv4.dst_ip, p->dst, 4);
            conf.ipsec.tunnel.ipv4.dscp = p->dscp == IPSG_DSCP_COPY ? 0 : p->dscp;
            conf.ipsec.tunnel.ipv4.df = p->df == IPSG_DF_SET;
            conf.ipsec.tunnel.ipv4.ttl = p->ttl;
        } else {
            conf.ipsec.tunnel.type = RTE_SECURITY_IPSEC_TUNNEL_IPV6;
            memcpy(&conf.ipsec.tunnel.ipv6.src_addr, p->src, 16);
            memcpy(&conf.ipsec.tunnel.ipv6.dst_addr, p->dst, 16);
            conf.ipsec.tunnel.ipv6.dscp = p->dscp == IPSG_DSCP_COPY ? 0 : p->dscp;
            conf.ipsec.tunnel.ipv6.flabel = p->flowlabel;
            conf.ipsec.tunnel.ipv6.hlimit = p->ttl;
        }
    }
    conf.crypto_xform = x;

    mp = pool_for(ctx, err, errlen, device);
    if (mp == NULL) {
        memset(key, 0, sizeof(key));
        return NULL;
    }
    s = rte_zmalloc("ipsg_sec_sess", sizeof(*s), 0);
    if (s == NULL) {
        memset(key, 0, sizeof(key));
        snprintf(err, errlen, "out of DPDK memory");
        return NULL;
    }
    rte_errno = 0;
    sess = rte_security_session_create(ctx, &conf, mp);
    memset(key, 0, sizeof(key));
    memset(&conf, 0, sizeof(conf));
    if (sess == NULL) {
        snprintf(err, errlen, "rte_security_session_create on %s: %s", device,
                 rte_errno ? rte_strerror(rte_errno) : "refused");
        rte_free(s);
        return NULL;
    }
    s->ctx = ctx;
    s->sess = sess;
    s->action = action;
    s->is_eth = (uint8_t)is_eth;
    s->dev = is_eth ? port : (uint16_t)id;
    live++;
    return s;
}

int ipsg_sec_session_free(struct ipsg_sec_sess *s)
{
    int rc;

    if (s == NULL)
        return 0;
    rc = rte_security_session_destroy(s->ctx, s->sess);
    live--;
    memset(s, 0, sizeof(*s));
    rte_free(s);
    return rc;
}

int ipsg_sec_sessions_live(void)
{
    return live;
}
