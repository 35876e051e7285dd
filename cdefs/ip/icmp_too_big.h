/* ICMP errors for packets too big for the tunnel (not read by cffi): IPv4 "fragmentation needed"
 * (RFC 792 type 3 code 4, with RFC 1191's next-hop MTU) and ICMPv6 "packet too big" (RFC 4443
 * 3.2), built on a byte buffer.  The kernel-I/O classifier (kio.c) and the DPDK gateway worker
 * (dpdk_gw.c) both answer with these; what they choose differently (how much of the packet an
 * IPv4 error quotes, its TOS) is an argument.
 */
#ifndef IPSG_ICMP_TOO_BIG_H
#define IPSG_ICMP_TOO_BIG_H
#include <stdint.h>
#include <string.h>

#include "ip_bytes.h"

/* The largest error built: IPv6's minimum MTU, which an ICMPv6 error must fit (RFC 4443 2.4(c)). */
#define ICMP_TOO_BIG_MAX 1280

/* Whether the transport part at l4 of a packet of len bytes (protocol proto) is an ICMP error
 * message, which is never answered with another error (RFC 1122 3.2.2, RFC 4443 2.4(e)):
 * ICMPv4 types 3, 4, 5, 11 and 12; ICMPv6 types below 128. */
static inline int icmp_is_error(const uint8_t *pkt, uint8_t family, uint8_t proto, uint32_t l4, uint32_t len)
{
    uint8_t type;
    if (len <= l4)
        return 0;
    type = pkt[l4];
    if (family == 4 && proto == 1)
        return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
    if (family == 6 && proto == 58)
        return type < 128;
    return 0;
}

/* Writes the error about the IP packet at pkt (its version says which) to out, which may overlap
 * pkt, and returns its length.  quote: how many of the packet's bytes it carries (cut to what fits
 * ICMP_TOO_BIG_MAX).  It goes to the packet's source, from `from` (4 or 16 bytes; all zero: the
 * packet's destination), and reports mtu (IPv6: at least 1280).  tos: the IPv4 header's TOS. */
static inline uint32_t icmp_too_big(uint8_t *out, const uint8_t *pkt, uint32_t quote, const uint8_t *from,
                                    uint32_t mtu, uint8_t tos)
{
    static const uint8_t zero16[16];
    uint8_t r[ICMP_TOO_BIG_MAX];
    uint32_t tot;

    if (pkt[0] >> 4 == 4) {
        if (quote > ICMP_TOO_BIG_MAX - 28)
            quote = ICMP_TOO_BIG_MAX - 28;
        tot = 28 + quote;
        memset(r, 0, 28);
        r[0] = 0x45;
        r[1] = tos;
        wr16(r + 2, (uint16_t)tot);
        r[8] = 64;
        r[9] = 1;
        memcpy(r + 12, memcmp(from, zero16, 4) ? from : pkt + 16, 4);
        memcpy(r + 16, pkt + 12, 4);
        wr16(r + 10, csum_fold(csum_add(0, r, 20)));
        r[20] = 3;
        r[21] = 4;
        wr16(r + 26, (uint16_t)mtu);
        memcpy(r + 28, pkt, quote);
        wr16(r + 22, csum_fold(csum_add(0, r + 20, 8 + quote)));
    } else {
        uint32_t sum, plen;
        if (quote > ICMP_TOO_BIG_MAX - 48)
            quote = ICMP_TOO_BIG_MAX - 48;
        tot = 48 + quote;
        plen = 8 + quote;
        memset(r, 0, 48);
        r[0] = 0x60;
        wr16(r + 4, (uint16_t)plen);
        r[6] = 58;
        r[7] = 64;
        memcpy(r + 8, memcmp(from, zero16, 16) ? from : pkt + 24, 16);
        memcpy(r + 24, pkt + 8, 16);
        r[40] = 2;
        wr32(r + 44, mtu < 1280 ? 1280 : mtu);
        memcpy(r + 48, pkt, quote);
        sum = csum_add(0, r + 8, 32) + plen + 58;     /* pseudo header: addresses, length, next header */
        sum = csum_add(sum, r + 40, plen);
        wr16(r + 42, csum_fold(sum));
    }
    memcpy(out, r, tot);
    return tot;
}

#endif
