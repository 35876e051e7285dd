/* The ESP core's batch slots in the DPDK workers, dpdk_loop.c and dpdk_gw.c (not read by cffi).
 *
 * The core (esp_core.c) works on a struct ipsg_batch.  dpdk_loop.c uses its flat layout: packet i in
 * slot i of one buffer, each packet's IP part copied into a reused slot and the result back into the
 * same mbuf, behind the Ethernet header it keeps.  The gateway worker (dpdk_gw.c) gives the core the
 * mbufs themselves (batch.slots: slot k is mbuf k's buffer, the packet where it was received, the
 * outer header written into the headroom and the trailer into the tailroom, as librte_ipsec does) and
 * copies only a packet whose mbuf it cannot write in place (docs/dpdk.md).  Include after the DPDK
 * headers and esp.h.
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

/* The slot size of a batch over mbufs: a 2048-byte data room behind the default headroom, what the
 * workers' pools hold (fastpath/dpdk/gw.py); smaller mbufs are copied. */
#define SLOT_MBUF_SIZE (2048 + RTE_PKTMBUF_HEADROOM)

/* Packet k of the batch: iplen (at most SLOT_MAX_IN) bytes from ip copied into slot k, on SA slot sa
 * (with batch.slots: slot k of buf, which holds MAXB slots of SLOT_SIZE). */
static inline void slot_load(struct ipsg_batch *b, uint32_t k, const uint8_t *ip, uint32_t iplen, uint32_t sa)
{
    uint32_t base = k * SLOT_SIZE;
    memcpy(b->buf + base + SLOT_HEADROOM, ip, iplen);
    if (b->slots) {
        b->slots[k] = b->buf + base;
        b->off[k] = SLOT_HEADROOM;
    } else {
        b->off[k] = base + SLOT_HEADROOM;
    }
    b->len[k] = iplen;
    b->sa[k] = sa;
}

/* Packet k of a batch over mbufs (batch.slots): the IP packet of m (iplen bytes behind its Ethernet
 * header) where it is, when m is a single direct mbuf nobody else holds and has the batch's slot
 * size (1); else a copy into slot k (slot_load; 0). */
static inline int slot_take(struct ipsg_batch *b, uint32_t k, struct rte_mbuf *m, uint32_t iplen, uint32_t sa)
{
    if (RTE_MBUF_DIRECT(m) && rte_mbuf_refcnt_read(m) == 1 && m->buf_len >= b->slot_size) {
        b->slots[k] = m->buf_addr;
        b->off[k] = (uint32_t)m->data_off + ETH_HLEN;
        b->len[k] = iplen;
        b->sa[k] = sa;
        return 1;
    }
    slot_load(b, k, rte_pktmbuf_mtod(m, uint8_t *) + ETH_HLEN, iplen, sa);
    return 0;
}

/* Packet k's bytes as the core left them. */
static inline const uint8_t *slot_data(const struct ipsg_batch *b, uint32_t k)
{
    return (b->slots ? b->slots[k] : b->buf) + b->off[k];
}

static inline int slot_in_place(const struct ipsg_batch *b, uint32_t k, const struct rte_mbuf *m)
{
    return b->slots != NULL && b->slots[k] == (uint8_t *)m->buf_addr;
}

/* The ESP status of packet k, TOO_BIG also when its result would not fit back into m (a copy), or
 * leaves no room for the Ethernet header in front of it (in place). */
static inline uint8_t slot_status(const struct ipsg_batch *b, uint32_t k, const struct rte_mbuf *m)
{
    uint8_t st = b->status[k];
    if (st != IPSG_ST_OK)
        return st;
    if (slot_in_place(b, k, m))
        return b->off[k] < ETH_HLEN ? IPSG_ST_TOO_BIG : st;
    if ((uint32_t)m->data_off + ETH_HLEN + b->len[k] > m->buf_len)
        return IPSG_ST_TOO_BIG;
    return st;
}

/* The frame in m ends after an IP packet of iplen bytes. */
static inline void frame_trim(struct rte_mbuf *m, uint32_t iplen)
{
    m->data_len = (uint16_t)(ETH_HLEN + iplen);
    m->pkt_len = ETH_HLEN + iplen;
}

/* Packet k's ESP result as m's frame: in place, m's data now starts ETH_HLEN before it (the caller
 * writes the Ethernet header there); a copy goes back behind m's Ethernet header. */
static inline void slot_store(const struct ipsg_batch *b, uint32_t k, struct rte_mbuf *m)
{
    if (slot_in_place(b, k, m))
        m->data_off = (uint16_t)(b->off[k] - ETH_HLEN);
    else
        memcpy(rte_pktmbuf_mtod(m, uint8_t *) + ETH_HLEN, slot_data(b, k), b->len[k]);
    frame_trim(m, b->len[k]);
}

#endif
