/* The ESP core's batch slots in the DPDK workers, dpdk_loop.c and dpdk_gw.c (not read by cffi).
 *
 * The core (esp_core.c) works on a struct ipsg_batch: packet i lives in slot i of one flat buffer.
 * Mbufs are scattered over a mempool, so a worker copies each packet's IP part into a reused slot
 * and the result back into the same mbuf, behind the Ethernet header it keeps (docs/dpdk.md has the
 * measured cost of those copies).  Include after the DPDK headers and esp.h.
 */
#ifndef IPSG_DPDK_SLOTS_H
#define IPSG_DPDK_SLOTS_H
#include <stdint.h>
#include <string.h>

#define ETH_HLEN 14
#define SLOT_HEADROOM 128   /* outer IPv6 + UDP + ESP + IV, as fastpath.batch */
#define SLOT_SIZE 2560      /* headroom + a 2048-byte mbuf's data + ESP trailer/ICV */
#define SLOT_MAX_IN (SLOT_SIZE - SLOT_HEADROOM - 320)

/* b over the flat slot buffer buf and the per-packet arrays (the worker owns all of them). */
static inline void slots_bind(struct ipsg_batch *b, uint8_t *buf, uint32_t *off, uint32_t *len, uint32_t *sa,
                              uint8_t *status)
{
    b->buf = buf;
    b->slot_size = SLOT_SIZE;
    b->off = off;
    b->len = len;
    b->sa = sa;
    b->status = status;
}

/* Packet k of the batch: iplen (at most SLOT_MAX_IN) bytes from ip into slot k, on SA slot sa. */
static inline void slot_load(struct ipsg_batch *b, uint32_t k, const uint8_t *ip, uint32_t iplen, uint32_t sa)
{
    uint32_t base = k * SLOT_SIZE;
    memcpy(b->buf + base + SLOT_HEADROOM, ip, iplen);
    b->off[k] = base + SLOT_HEADROOM;
    b->len[k] = iplen;
    b->sa[k] = sa;
}

/* The ESP status of packet k, TOO_BIG also when its result would not fit back into m. */
static inline uint8_t slot_status(const struct ipsg_batch *b, uint32_t k, const struct rte_mbuf *m)
{
    uint8_t st = b->status[k];
    if (st == IPSG_ST_OK && (uint32_t)m->data_off + ETH_HLEN + b->len[k] > m->buf_len)
        st = IPSG_ST_TOO_BIG;
    return st;
}

/* The frame in m ends after an IP packet of iplen bytes. */
static inline void frame_trim(struct rte_mbuf *m, uint32_t iplen)
{
    m->data_len = (uint16_t)(ETH_HLEN + iplen);
    m->pkt_len = ETH_HLEN + iplen;
}

/* Packet k's ESP result back into m, behind its Ethernet header. */
static inline void slot_store(const struct ipsg_batch *b, uint32_t k, struct rte_mbuf *m)
{
    memcpy(rte_pktmbuf_mtod(m, uint8_t *) + ETH_HLEN, b->buf + b->off[k], b->len[k]);
    frame_trim(m, b->len[k]);
}

#endif
