/* An IP packet's flow as the SPD sees it (not read by cffi): family, addresses, protocol and ports.
 * The kernel-I/O classifier (kio.c) and the DPDK gateway worker (dpdk_gw.c) both parse with this.
 */
#ifndef IPSG_IP_FLOW_H
#define IPSG_IP_FLOW_H
#include <stdint.h>
#include <string.h>

#include "ip_bytes.h"

struct ip_flow {
    uint8_t family, proto;   /* proto: past IPv6 hop-by-hop, routing, fragment and destination options */
    uint8_t df;              /* IPv4 DF; always 1 for IPv6, which routers never fragment */
    uint16_t sport, dport;   /* TCP, UDP and SCTP of an unfragmented packet or a first fragment; else 0 */
    uint32_t iplen;          /* the IP packet's length: what follows it (Ethernet padding) is not part of it */
    uint32_t l4;             /* IP header bytes, extension headers included */
    const uint8_t *src, *dst;
};

static inline int ip_has_ports(uint8_t proto) { return proto == 6 || proto == 17 || proto == 132; }

/* The IP packet at p (len bytes, maybe more after it): 0 and f, or -1 if malformed. */
static inline int ip_parse_flow(const uint8_t *p, uint32_t len, struct ip_flow *f)
{
    uint32_t off;
    int first = 1;
    uint8_t nh;
    memset(f, 0, sizeof(*f));
    if (len < 20)
        return -1;
    if (p[0] >> 4 == 4) {
        uint32_t ihl = (p[0] & 15u) * 4, tot = rd16(p + 2);
        if (ihl < 20 || tot < ihl || tot > len)
            return -1;
        f->family = 4;
        f->iplen = tot;
        f->proto = p[9];
        f->df = (p[6] & 0x40) != 0;
        f->src = p + 12;
        f->dst = p + 16;
        f->l4 = ihl;
        first = (rd16(p + 6) & 0x1FFF) == 0;
        if (first && ip_has_ports(f->proto) && tot >= ihl + 4) {
            f->sport = rd16(p + ihl);
            f->dport = rd16(p + ihl + 2);
        }
        return 0;
    }
    if (p[0] >> 4 != 6 || len < 40 || 40u + rd16(p + 4) > len)
        return -1;
    f->family = 6;
    f->df = 1;
    f->iplen = 40u + rd16(p + 4);
    f->src = p + 8;
    f->dst = p + 24;
    nh = p[6];
    off = 40;
    while (nh == 0 || nh == 43 || nh == 60 || nh == 44) {
        if (off + 8 > f->iplen)
            return -1;
        if (nh == 44) {
            first = (rd16(p + off + 2) & 0xFFF8) == 0;
            nh = p[off];
            off += 8;
        } else {
            uint32_t el = (p[off + 1] + 1u) * 8;
            nh = p[off];
            off += el;
        }
    }
    if (off > f->iplen)
        return -1;
    f->proto = nh;
    f->l4 = off;
    if (first && ip_has_ports(nh) && f->iplen >= off + 4) {
        f->sport = rd16(p + off);
        f->dport = rd16(p + off + 2);
    }
    return 0;
}

#endif
