/* Helpers shared by cdefs/kio/kio.c and cdefs/kio/kio_gso.c (not read by cffi). */
#ifndef IPSG_KIO_UTIL_H
#define IPSG_KIO_UTIL_H
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "ip/ip_bytes.h"
#include "kio.h"

static inline uint8_t *slot_data(const struct kio_batch *b, uint32_t i) {
    return b->buf + (uint64_t)i * b->slot_size + b->headroom;
}

static inline uint32_t room(const struct kio_batch *b) { return b->slot_size - b->headroom - b->tailroom; }

/* Hand slot i over as a fresh packet of len bytes at p (not yet bound to an SA). */
static inline void slot_set(struct kio_batch *b, uint32_t i, const uint8_t *p, uint32_t len) {
    b->off[i] = (uint32_t)(p - b->buf);
    b->len[i] = len;
    b->sa[i] = KIO_NO_SA;
    b->status[i] = 0;
}

/* Room for either socket address family. */
union kio_addr {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
};

/* One sendmmsg entry: len bytes at base to the IPv4 (alen 4) or IPv6 (alen 16) address daddr, UDP port
 * dport (2 bytes, network order) or none (NULL, a raw socket). */
static inline void msg_to(struct mmsghdr *m, struct iovec *iov, union kio_addr *a, const uint8_t *daddr,
                          uint32_t alen, const uint8_t *dport, void *base, size_t len) {
    memset(m, 0, sizeof(*m));
    memset(a, 0, sizeof(*a));
    if (alen == 16) {
        a->v6.sin6_family = AF_INET6;
        memcpy(&a->v6.sin6_addr, daddr, 16);
        if (dport)
            memcpy(&a->v6.sin6_port, dport, 2);
        m->msg_hdr.msg_namelen = sizeof(a->v6);
    } else {
        a->v4.sin_family = AF_INET;
        memcpy(&a->v4.sin_addr, daddr, 4);
        if (dport)
            memcpy(&a->v4.sin_port, dport, 2);
        m->msg_hdr.msg_namelen = sizeof(a->v4);
    }
    iov->iov_base = base;
    iov->iov_len = len;
    m->msg_hdr.msg_iov = iov;
    m->msg_hdr.msg_iovlen = 1;
    m->msg_hdr.msg_name = a;
}

/* One recvmmsg entry: into len bytes at base, the sender's address into name (NULL: not wanted) and
 * control messages into ctl (NULL: none). */
static inline void msg_from(struct mmsghdr *m, struct iovec *iov, void *base, size_t len, void *name,
                            socklen_t namelen, void *ctl, size_t ctllen) {
    memset(m, 0, sizeof(*m));
    iov->iov_base = base;
    iov->iov_len = len;
    m->msg_hdr.msg_iov = iov;
    m->msg_hdr.msg_iovlen = 1;
    if (name) {
        m->msg_hdr.msg_name = name;
        m->msg_hdr.msg_namelen = namelen;
    }
    if (ctl) {
        m->msg_hdr.msg_control = ctl;
        m->msg_hdr.msg_controllen = ctllen;
    }
}

/* Does the open message m (built by msg_to) go to the same address and port as daddr/dport? */
static inline int same_dest(const struct mmsghdr *m, const uint8_t *daddr, uint32_t alen, const uint8_t *dport) {
    const union kio_addr *a = m->msg_hdr.msg_name;
    if (alen == 16)
        return a->v6.sin6_family == AF_INET6 && memcmp(&a->v6.sin6_addr, daddr, 16) == 0 &&
               memcmp(&a->v6.sin6_port, dport, 2) == 0;
    return a->v4.sin_family == AF_INET && memcmp(&a->v4.sin_addr, daddr, 4) == 0 &&
           memcmp(&a->v4.sin_port, dport, 2) == 0;
}

/* Where kio_send* hand one outgoing packet: the sockets of one outer family, and that family's
 * header length. */
struct send_path {
    int raw_fd, udp_fd;
    uint32_t hl;             /* outer IP header bytes (IPv4 IHL, or 40: the engine adds no IPv6 extension headers) */
    uint32_t daddr;          /* offset of the destination address */
    uint32_t alen;           /* 4 or 16 */
};

/* Which socket kio_send* hand one outgoing packet to: -1 none (not IP, or no socket for its family: counted
 * as failed), 1 the UDP socket of its family (UDP from udp_port, i.e. ESP-in-UDP; sent as its payload),
 * 0 the raw socket of its family (the whole packet).  Fills *sp. */
static inline int send_route(const struct kio_out *o, const uint8_t *p, uint32_t len, struct send_path *sp) {
    uint8_t proto;
    if (len >= 20 && p[0] >> 4 == 4) {
        sp->raw_fd = o->raw4;
        sp->udp_fd = o->udp4;
        sp->hl = (p[0] & 15u) * 4;
        sp->daddr = 16;
        sp->alen = 4;
        proto = p[9];
    } else if (len >= 40 && p[0] >> 4 == 6) {
        sp->raw_fd = o->raw6;
        sp->udp_fd = o->udp6;
        sp->hl = 40;
        sp->daddr = 24;
        sp->alen = 16;
        proto = p[6];
    } else {
        return -1;
    }
    if (sp->udp_fd >= 0 && proto == IPPROTO_UDP && len >= sp->hl + 8 && rd16(p + sp->hl) == o->udp_port)
        return 1;
    return sp->raw_fd >= 0 ? 0 : -1;
}

/* The largest inner packet whose ESP form on SA slot sa fits c->outer_mtu (0 when unknown or nothing fits):
 * what kio_classify checks against, and the size kio_fragment cuts to. */
static inline uint32_t kio_inner_mtu(const struct kio_cls *c, uint32_t sa) {
    uint32_t blk, fit;
    if (!c->outer_mtu || sa >= c->n_sa || !c->ovh[sa] || !c->blk[sa] || c->outer_mtu <= c->ovh[sa])
        return 0;
    blk = c->blk[sa];
    fit = (c->outer_mtu - c->ovh[sa]) / blk * blk;
    return fit >= 2 ? fit - 2 : 0;
}

/* Non-blocking recvmmsg of up to want messages: how many came, 0 when none is waiting, or -errno. */
static inline int recv_msgs(int fd, struct mmsghdr *m, uint32_t want) {
    int r;
    do
        r = recvmmsg(fd, m, want, MSG_DONTWAIT, NULL);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EAGAIN ? 0 : -errno;
    return r;
}

/* Bulk one's-complement sum, 8 bytes at a time in host order (the sum is byte-order independent up to a
 * final swap, RFC 1071 2(B)).  Regions must start at an even offset of the checksummed data. */
static inline uint64_t csum64(uint64_t sum, const uint8_t *p, uint32_t n) {
    uint64_t v;
    uint32_t w;
    uint16_t h;
    for (; n >= 8; n -= 8, p += 8) {
        memcpy(&v, p, 8);
        sum += v;
        sum += sum < v;
    }
    if (n >= 4) {
        memcpy(&w, p, 4);
        sum += w;
        sum += sum < w;
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        memcpy(&h, p, 2);
        sum += h;
        sum += sum < h;
        p += 2;
        n -= 2;
    }
    if (n) {
        uint8_t last[2] = {p[0], 0};
        memcpy(&h, last, 2);
        sum += h;
        sum += sum < h;
    }
    return sum;
}

/* The folded 16-bit sum of csum64, as a big-endian value (not complemented). */
static inline uint16_t csum64_fold(uint64_t s) {
    uint16_t h;
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    h = (uint16_t)s;
    return (uint16_t)(h >> 8 | h << 8);   /* host (little-endian) order -> network */
}

/* IPv4 + UDP header in the 28 bytes at h for a datagram of plen payload bytes from `from` to local. */
static inline void udp4_outer(uint8_t *h, const struct sockaddr_in *from, const uint8_t *local_addr,
                              uint16_t local_port, uint32_t plen) {
    h[0] = 0x45;
    h[1] = 0;
    wr16(h + 2, (uint16_t)(plen + 28));
    wr32(h + 4, 0);
    h[8] = 64;
    h[9] = IPPROTO_UDP;
    wr16(h + 10, 0);
    memcpy(h + 12, &from->sin_addr, 4);
    memcpy(h + 16, local_addr, 4);
    wr16(h + 10, csum_fold(csum_add(0, h, 20)));
    memcpy(h + 20, &from->sin_port, 2);
    wr16(h + 22, local_port);
    wr16(h + 24, (uint16_t)(plen + 8));
    wr16(h + 26, 0);
}

/* IPv6 + UDP header in the 48 bytes at h for a datagram of plen payload bytes from `from` to local
 * (16 bytes), traffic class tclass (the ECN bits matter to decapsulation, RFC 6040).  The UDP checksum
 * is left zero: the kernel verified it, and the engine does not look at it. */
static inline void udp6_outer(uint8_t *h, const struct sockaddr_in6 *from, const uint8_t *local_addr,
                              uint16_t local_port, uint32_t plen, uint8_t tclass) {
    wr32(h, 6u << 28 | (uint32_t)tclass << 20);
    wr16(h + 4, (uint16_t)(plen + 8));
    h[6] = IPPROTO_UDP;
    h[7] = 64;
    memcpy(h + 8, &from->sin6_addr, 16);
    memcpy(h + 24, local_addr, 16);
    memcpy(h + 40, &from->sin6_port, 2);
    wr16(h + 42, local_port);
    wr16(h + 44, (uint16_t)(plen + 8));
    wr16(h + 46, 0);
}

/* The outer header kio_recv_udp* put in front of a payload: 28 bytes (IPv4) or 48 (IPv6). */
static inline uint32_t udp_outer_len(int v6) { return v6 ? 48 : 28; }

static inline void udp_outer(uint8_t *h, int v6, const union kio_addr *from, const uint8_t *local_addr,
                             uint16_t local_port, uint32_t plen, uint8_t tclass) {
    if (v6)
        udp6_outer(h, &from->v6, local_addr, local_port, plen, tclass);
    else
        udp4_outer(h, &from->v4, local_addr, local_port, plen);
}

/* The traffic class of a received IPv6 datagram (IPV6_TCLASS control message; IPV6_RECVTCLASS set on
 * the socket), 0 without one. */
static inline uint8_t cmsg_tclass(struct msghdr *h) {
    struct cmsghdr *c;
    for (c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int t;
            memcpy(&t, CMSG_DATA(c), sizeof(t));
            return (uint8_t)t;
        }
    }
    return 0;
}

#define PROBE_MAGIC0 0x49505347u   /* "IPSG" */
#define PROBE_MAGIC1 0x50524f42u   /* "PROB" */

/* What kio_recv_udp4* do with one UDP payload: 1 = ESP to keep, 0 = consumed (IKE, probe, keepalive). */
static inline int udp_payload_kind(const uint8_t *pay, uint32_t plen, uint64_t *ike, uint64_t *probe) {
    if (plen >= 4 && rd32(pay) == 0) {
        (*ike)++;                          /* IKE reached the wrong socket: steering needs a look */
        return 0;
    }
    if (plen == 16 && rd32(pay) == PROBE_MAGIC0 && rd32(pay + 4) == PROBE_MAGIC1) {
        *probe = (uint64_t)rd32(pay + 8) << 32 | rd32(pay + 12);
        return 0;
    }
    if (plen == 1 && pay[0] == 0xff)
        return 0;                          /* NAT keepalive */
    return 1;
}

#endif
