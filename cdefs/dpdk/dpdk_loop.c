/* DPDK worker loop, CPU-crypto / software-batch rung: rx burst -> ESP core -> tx burst.
 *
 * The ESP core (esp_core.c) works on a struct ipsg_batch: packet i lives in slot i of one flat
 * buffer, and the core derives the slot from i (buf + i * slot_size).  Mbufs are scattered
 * over a mempool, so the slot model cannot point at them without changing the core; the loop
 * copies each packet's IP part into a reused batch slot and the result back into the same
 * mbuf (keeping its Ethernet header), with dpdk_slots.h.  docs/dpdk.md has the measured cost
 * of those copies.
 */
#include <stdio.h>
#include <string.h>

#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "dpdk_loop.h"
#include "dpdk_slots.h"

struct ipsg_dpdk_loop {
    struct ipsg_engine *e;
    uint16_t rx_port, tx_port;
    uint8_t dir;
    uint32_t out_sa, burst;
    volatile int stop;
    struct ipsg_dpdk_loop_stats st;
    struct ipsg_batch b;
    uint8_t *buf;
    uint32_t off[IPSG_DPDK_LOOP_MAX_BURST], len[IPSG_DPDK_LOOP_MAX_BURST], sa[IPSG_DPDK_LOOP_MAX_BURST];
    uint8_t status[IPSG_DPDK_LOOP_MAX_BURST];
    struct rte_mbuf *rx[IPSG_DPDK_LOOP_MAX_BURST], *held[IPSG_DPDK_LOOP_MAX_BURST], *tx[IPSG_DPDK_LOOP_MAX_BURST];
};

static void set_err(char *err, size_t errlen, const char *what, int code)
{
    if (err && errlen)
        snprintf(err, errlen, "%s: %s", what, rte_strerror(code < 0 ? -code : code));
}

void *ipsg_dpdk_pool_new(const char *name, uint32_t n, uint16_t data_room, char *err, size_t errlen)
{
    struct rte_mempool *mp = rte_pktmbuf_pool_create(name, n, 256, 0, data_room, (int)rte_socket_id());
    if (mp == NULL)
        set_err(err, errlen, "rte_pktmbuf_pool_create", rte_errno);
    return mp;
}

void ipsg_dpdk_pool_free(void *pool)
{
    rte_mempool_free(pool);
}

int ipsg_dpdk_port_by_name(const char *name)
{
    uint16_t port;
    return rte_eth_dev_get_port_by_name(name, &port) == 0 ? port : -1;
}

int ipsg_dpdk_port_start(uint16_t port, void *pool, uint16_t nb_desc, char *err, size_t errlen)
{
    struct rte_eth_conf conf;
    int rc, socket = rte_eth_dev_socket_id(port);

    memset(&conf, 0, sizeof(conf));
    if (socket < 0)
        socket = (int)rte_socket_id();
    if ((rc = rte_eth_dev_configure(port, 1, 1, &conf)) != 0) {
        set_err(err, errlen, "rte_eth_dev_configure", rc);
        return -1;
    }
    if ((rc = rte_eth_rx_queue_setup(port, 0, nb_desc, (unsigned)socket, NULL, pool)) != 0) {
        set_err(err, errlen, "rte_eth_rx_queue_setup", rc);
        return -1;
    }
    if ((rc = rte_eth_tx_queue_setup(port, 0, nb_desc, (unsigned)socket, NULL)) != 0) {
        set_err(err, errlen, "rte_eth_tx_queue_setup", rc);
        return -1;
    }
    if ((rc = rte_eth_dev_start(port)) != 0) {
        set_err(err, errlen, "rte_eth_dev_start", rc);
        return -1;
    }
    rte_eth_promiscuous_enable(port);   /* vdevs may refuse; not an error */
    return 0;
}

void ipsg_dpdk_port_close(uint16_t port)
{
    rte_eth_dev_stop(port);
    rte_eth_dev_close(port);
}

struct ipsg_dpdk_loop *ipsg_dpdk_loop_new(struct ipsg_engine *e, uint16_t rx_port, uint16_t tx_port, uint8_t dir,
                                          uint32_t out_sa, uint32_t burst, char *err, size_t errlen)
{
    struct ipsg_dpdk_loop *l;

    if (e == NULL || (dir != IPSG_DIR_OUT && dir != IPSG_DIR_IN) || burst == 0 || burst > IPSG_DPDK_LOOP_MAX_BURST) {
        snprintf(err, errlen, "bad loop arguments (burst 1..%d)", IPSG_DPDK_LOOP_MAX_BURST);
        return NULL;
    }
    l = rte_zmalloc("ipsg_loop", sizeof(*l), RTE_CACHE_LINE_SIZE);
    if (l)
        l->buf = rte_zmalloc("ipsg_loop_buf", (size_t)burst * SLOT_SIZE, RTE_CACHE_LINE_SIZE);
    if (l == NULL || l->buf == NULL) {
        rte_free(l);
        snprintf(err, errlen, "out of DPDK memory for the loop");
        return NULL;
    }
    l->e = e;
    l->rx_port = rx_port;
    l->tx_port = tx_port;
    l->dir = dir;
    l->out_sa = out_sa;
    l->burst = burst;
    slots_bind(&l->b, l->buf, l->off, l->len, l->sa, l->status);
    l->st.hz = rte_get_tsc_hz();
    return l;
}

void ipsg_dpdk_loop_free(struct ipsg_dpdk_loop *l)
{
    if (l == NULL)
        return;
    /* The slots held plaintext or keys-derived output: wipe before returning the memory. */
    memset(l->buf, 0, (size_t)l->burst * SLOT_SIZE);
    rte_free(l->buf);
    rte_free(l);
}

void ipsg_dpdk_loop_stop(struct ipsg_dpdk_loop *l)
{
    l->stop = 1;
}

void ipsg_dpdk_loop_get_stats(struct ipsg_dpdk_loop *l, struct ipsg_dpdk_loop_stats *out)
{
    *out = l->st;
}

/* One burst: mbufs -> slots, ESP, slots -> mbufs, tx.  Returns packets received. */
static inline uint16_t one_burst(struct ipsg_dpdk_loop *l)
{
    uint16_t nrx, i, k = 0, ntx = 0, sent;

    nrx = rte_eth_rx_burst(l->rx_port, 0, l->rx, (uint16_t)l->burst);
    l->st.polls++;
    if (nrx == 0)
        return 0;
    l->st.bursts++;
    l->st.rx += nrx;
    for (i = 0; i < nrx; i++) {
        struct rte_mbuf *m = l->rx[i];
        const uint8_t *p = rte_pktmbuf_mtod(m, const uint8_t *);
        uint32_t iplen = (uint32_t)m->data_len - ETH_HLEN;
        uint16_t type = (uint16_t)(p[12] << 8 | p[13]);
        if (m->nb_segs != 1 || m->data_len <= ETH_HLEN || iplen > SLOT_MAX_IN ||
            (type != 0x0800 && type != 0x86DD)) {
            l->st.not_ip++;
            rte_pktmbuf_free(m);
            continue;
        }
        if (i + 1 < nrx)   /* the next packet's header is what the core reads first */
            rte_prefetch0(rte_pktmbuf_mtod(l->rx[i + 1], void *));
        slot_load(&l->b, k, p + ETH_HLEN, iplen, l->out_sa);
        l->held[k++] = m;
    }
    if (k == 0)
        return nrx;
    l->b.n = k;
    if (l->dir == IPSG_DIR_OUT)
        ipsg_esp_outbound(l->e, &l->b);
    else
        ipsg_esp_inbound(l->e, &l->b);
    for (i = 0; i < k; i++) {
        struct rte_mbuf *m = l->held[i];
        uint8_t st = slot_status(&l->b, i, m);
        uint8_t *p;
        if (st != IPSG_ST_OK) {
            l->st.drops[st & 15]++;
            rte_pktmbuf_free(m);
            continue;
        }
        slot_store(&l->b, i, m);
        /* Decapsulation or encapsulation may change the IP version the frame carries. */
        p = rte_pktmbuf_mtod(m, uint8_t *);
        p[12] = (l->buf[l->off[i]] >> 4) == 6 ? 0x86 : 0x08;
        p[13] = (l->buf[l->off[i]] >> 4) == 6 ? 0xDD : 0x00;
        l->tx[ntx++] = m;
    }
    sent = ntx ? rte_eth_tx_burst(l->tx_port, 0, l->tx, ntx) : 0;
    l->st.tx += sent;
    if (sent < ntx) {
        l->st.tx_full += ntx - sent;
        rte_pktmbuf_free_bulk(&l->tx[sent], ntx - sent);
    }
    return nrx;
}

uint64_t ipsg_dpdk_loop_run(struct ipsg_dpdk_loop *l, uint64_t max_packets, double seconds)
{
    uint64_t start = rte_get_tsc_cycles(), got = 0, deadline = 0;
    unsigned polls = 0;

    l->stop = 0;
    if (seconds > 0)
        deadline = start + (uint64_t)(seconds * (double)l->st.hz);
    while (!l->stop && (max_packets == 0 || got < max_packets)) {
        got += one_burst(l);
        /* Reading the TSC costs little, but not nothing: check the clock every 16 polls. */
        if (deadline && (++polls & 15) == 0 && rte_get_tsc_cycles() >= deadline)
            break;
    }
    l->st.cycles = rte_get_tsc_cycles() - start;
    return got;
}
