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

/* ---- Lookaside cryptodev, first execution path: outbound AES-GCM, IPv4 tunnel mode.
 *
 * A minimal slice of the future burst loop: ESP framing per docs/esp.md
 * (outer IPv4 with copied DSCP/ECN and DF, ID counter from 0, sequential
 * padding, IV = 64-bit sequence number), the AEAD done by the cryptodev
 * through rte_cryptodev_enqueue_burst/dequeue_burst.  Packets are copied
 * between our batch slots and mbufs; the real loop will work on mbufs. */
#include <rte_crypto.h>
#include <rte_mbuf.h>
#include <rte_malloc.h>
#include <rte_mempool.h>

#define LA_BURST 64
#define LA_IV_OFFSET (sizeof(struct rte_crypto_op) + sizeof(struct rte_crypto_sym_op))
#define LA_AAD_OFFSET (LA_IV_OFFSET + 16)
#define LA_IDX_OFFSET (LA_AAD_OFFSET + 8)   /* the packet's batch index */

struct ipsg_dpdk_la {
    uint8_t dev;
    uint8_t started;
    struct rte_mempool *mbufs, *ops, *sessions;
    void *session;
    uint8_t salt[4];
    uint16_t ip_id;
};

void ipsg_dpdk_la_free(struct ipsg_dpdk_la *la)
{
    if (!la)
        return;
    if (la->session)
        rte_cryptodev_sym_session_free(la->dev, la->session);
    if (la->started)
        rte_cryptodev_stop(la->dev);
    rte_mempool_free(la->sessions);
    rte_mempool_free(la->ops);
    rte_mempool_free(la->mbufs);
    memset(la->salt, 0, sizeof(la->salt));
    rte_free(la);
}

struct ipsg_dpdk_la *ipsg_dpdk_la_gcm_new(uint8_t dev, const uint8_t *key, uint32_t key_len,
                                          char *err, size_t errlen)
{
    struct rte_cryptodev_config conf = {.socket_id = rte_cryptodev_socket_id(dev), .nb_queue_pairs = 1};
    struct rte_crypto_sym_xform xf;
    struct ipsg_dpdk_la *la;
    char name[RTE_MEMPOOL_NAMESIZE];
    int rc, socket = rte_cryptodev_socket_id(dev);
    uint8_t cipher_key[32];

    if (key_len != 20 && key_len != 28 && key_len != 36) {
        snprintf(err, errlen, "AES-GCM key must be 16/24/32 bytes plus a 4-byte salt");
        return NULL;
    }
    if (socket < 0)
        socket = 0;
    la = rte_zmalloc("ipsg_la", sizeof(*la), 0);
    if (!la) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    la->dev = dev;
    snprintf(name, sizeof(name), "ipsg_la_m%u", dev);
    la->mbufs = rte_pktmbuf_pool_create(name, 2048, 64, 0, RTE_MBUF_DEFAULT_BUF_SIZE, socket);
    snprintf(name, sizeof(name), "ipsg_la_o%u", dev);
    la->ops = rte_crypto_op_pool_create(name, RTE_CRYPTO_OP_TYPE_SYMMETRIC, 2048, 64, 32, socket);
    snprintf(name, sizeof(name), "ipsg_la_s%u", dev);
    la->sessions = rte_cryptodev_sym_session_pool_create(name, 16,
                       rte_cryptodev_sym_get_private_session_size(dev), 0, 0, socket);
    if (!la->mbufs || !la->ops || !la->sessions) {
        set_err(err, errlen, "mempool create", rte_errno);
        goto fail;
    }
    rc = rte_cryptodev_configure(dev, &conf);
    if (rc == 0) {
        struct rte_cryptodev_qp_conf qp = {.nb_descriptors = 2048, .mp_session = la->sessions};
        rc = rte_cryptodev_queue_pair_setup(dev, 0, &qp, socket);
    }
    if (rc == 0)
        rc = rte_cryptodev_start(dev);
    if (rc != 0) {
        set_err(err, errlen, "cryptodev configure/start", rc);
        goto fail;
    }
    la->started = 1;

    memcpy(cipher_key, key, key_len - 4);
    memcpy(la->salt, key + key_len - 4, 4);
    memset(&xf, 0, sizeof(xf));
    xf.type = RTE_CRYPTO_SYM_XFORM_AEAD;
    xf.aead.op = RTE_CRYPTO_AEAD_OP_ENCRYPT;
    xf.aead.algo = RTE_CRYPTO_AEAD_AES_GCM;
    xf.aead.key.data = cipher_key;
    xf.aead.key.length = (uint16_t)(key_len - 4);
    xf.aead.iv.offset = LA_IV_OFFSET;
    xf.aead.iv.length = 12;
    xf.aead.digest_length = 16;
    xf.aead.aad_length = 8;
    la->session = rte_cryptodev_sym_session_create(dev, &xf, la->sessions);
    memset(cipher_key, 0, sizeof(cipher_key));
    if (!la->session) {
        set_err(err, errlen, "rte_cryptodev_sym_session_create", rte_errno);
        goto fail;
    }
    return la;
fail:
    ipsg_dpdk_la_free(la);
    return NULL;
}

static uint16_t csum16(const uint8_t *p, int len)
{
    uint32_t s = 0;
    for (int i = 0; i + 1 < len; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

/* Frames one inner IPv4/IPv6 packet into an mbuf; returns the op or NULL (status set). */
static struct rte_crypto_op *la_frame(struct ipsg_dpdk_la *la, uint32_t spi, uint64_t seq, const uint8_t *src,
                                      const uint8_t *dst, uint8_t ttl, const uint8_t *in, uint32_t len,
                                      uint8_t *status)
{
    uint32_t pad, clen, total;
    uint8_t *p, *iv, *aad, tos = 0, df = 0x40, nh;
    struct rte_mbuf *m;
    struct rte_crypto_op *op;

    if (len < 20 || ((in[0] >> 4) != 4 && (in[0] >> 4) != 6)) {
        *status = 5;   /* MALFORMED */
        return NULL;
    }
    nh = (in[0] >> 4) == 4 ? 4 : 41;
    if (nh == 4) {
        tos = in[1];
        df = in[6] & 0x40;
    } else {
        tos = (uint8_t)((in[0] << 4) | (in[1] >> 4));
    }
    pad = (4 - (len + 2) % 4) % 4;
    clen = len + pad + 2;
    total = 20 + 8 + 8 + clen + 16;
    if (total > 0xffff || total > RTE_MBUF_DEFAULT_DATAROOM) {
        *status = 10;  /* TOO_BIG */
        return NULL;
    }
    m = rte_pktmbuf_alloc(la->mbufs);
    op = m ? rte_crypto_op_alloc(la->ops, RTE_CRYPTO_OP_TYPE_SYMMETRIC) : NULL;
    p = op ? (uint8_t *)rte_pktmbuf_append(m, (uint16_t)total) : NULL;
    if (!p) {
        if (op)
            rte_crypto_op_free(op);
        rte_pktmbuf_free(m);
        *status = 14;  /* INTERNAL */
        return NULL;
    }
    /* Outer IPv4: DSCP and ECN copied (normal ECN mode), DF copied, ID counter. */
    memset(p, 0, 20);
    p[0] = 0x45;
    p[1] = tos;
    p[2] = total >> 8; p[3] = total & 0xff;
    p[4] = la->ip_id >> 8; p[5] = la->ip_id & 0xff;
    la->ip_id++;
    p[6] = df;
    p[8] = ttl;
    p[9] = 50;
    memcpy(p + 12, src, 4);
    memcpy(p + 16, dst, 4);
    uint16_t c = csum16(p, 20);
    p[10] = c >> 8; p[11] = c & 0xff;
    /* ESP header, IV = the 64-bit sequence number. */
    put32(p + 20, spi);
    put32(p + 24, (uint32_t)seq);
    put32(p + 28, (uint32_t)(seq >> 32));
    put32(p + 32, (uint32_t)seq);
    memcpy(p + 36, in, len);
    for (uint32_t k = 0; k < pad; k++)
        p[36 + len + k] = (uint8_t)(k + 1);
    p[36 + len + pad] = (uint8_t)pad;
    p[36 + len + pad + 1] = nh;

    iv = rte_crypto_op_ctod_offset(op, uint8_t *, LA_IV_OFFSET);
    memcpy(iv, la->salt, 4);
    memcpy(iv + 4, p + 28, 8);
    aad = rte_crypto_op_ctod_offset(op, uint8_t *, LA_AAD_OFFSET);
    memcpy(aad, p + 20, 8);
    rte_crypto_op_attach_sym_session(op, la->session);
    op->sym->m_src = m;
    op->sym->aead.data.offset = 36;
    op->sym->aead.data.length = clen;
    op->sym->aead.digest.data = p + 36 + clen;
    op->sym->aead.digest.phys_addr = rte_pktmbuf_iova_offset(m, 36 + clen);
    op->sym->aead.aad.data = aad;
    op->sym->aead.aad.phys_addr = rte_crypto_op_ctophys_offset(op, LA_AAD_OFFSET);
    return op;
}

int ipsg_dpdk_la_gcm_encrypt(struct ipsg_dpdk_la *la, uint32_t spi, uint64_t *seq, const uint8_t *src,
                             const uint8_t *dst, uint8_t ttl, uint8_t *buf, uint32_t slot_size, uint32_t n,
                             uint32_t *off, uint32_t *len, uint8_t *status)
{
    struct rte_crypto_op *ops[LA_BURST], *done[LA_BURST];
    int ok = 0;

    for (uint32_t base = 0; base < n; base += LA_BURST) {
        uint32_t count = 0, lim = n - base < LA_BURST ? n - base : LA_BURST;
        uint16_t sent = 0, got = 0;
        for (uint32_t i = base; i < base + lim; i++) {
            struct rte_crypto_op *op;
            if (*seq > 0xffffffffULL) {
                status[i] = 8;   /* SEQ_EXHAUSTED (no ESN on this path) */
                continue;
            }
            op = la_frame(la, spi, *seq, src, dst, ttl, buf + off[i], len[i], &status[i]);
            if (!op)
                continue;
            (*seq)++;
            *rte_crypto_op_ctod_offset(op, uint32_t *, LA_IDX_OFFSET) = i;
            ops[count++] = op;
        }
        while (sent < count)
            sent += rte_cryptodev_enqueue_burst(la->dev, 0, ops + sent, (uint16_t)(count - sent));
        while (got < count) {
            uint16_t k = rte_cryptodev_dequeue_burst(la->dev, 0, done, (uint16_t)(count - got));
            for (uint16_t j = 0; j < k; j++) {
                struct rte_mbuf *m = done[j]->sym->m_src;
                uint32_t i = *rte_crypto_op_ctod_offset(done[j], uint32_t *, LA_IDX_OFFSET), plen = rte_pktmbuf_pkt_len(m);
                if (done[j]->status == RTE_CRYPTO_OP_STATUS_SUCCESS && plen <= slot_size) {
                    off[i] = i * slot_size;
                    len[i] = plen;
                    memcpy(buf + off[i], rte_pktmbuf_mtod(m, uint8_t *), plen);
                    status[i] = 0;
                    ok++;
                } else {
                    status[i] = plen > slot_size ? 10 : 14;
                }
                rte_pktmbuf_free(m);
                rte_crypto_op_free(done[j]);
            }
            got += k;
        }
    }
    return ok;
}
