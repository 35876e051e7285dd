/* Helpers shared by cdefs/kio.c and cdefs/kio_gso.c (not read by cffi). */
#ifndef IPSG_KIO_UTIL_H
#define IPSG_KIO_UTIL_H
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "kio.h"

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = (uint8_t)v; }

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

/* One sendmmsg entry: len bytes at base to IPv4 address daddr (4 bytes), UDP port dport (2 bytes,
 * network order) or none (NULL, a raw socket). */
static inline void msg_to4(struct mmsghdr *m, struct iovec *iov, struct sockaddr_in *a, const uint8_t *daddr,
                           const uint8_t *dport, void *base, size_t len) {
    memset(m, 0, sizeof(*m));
    memset(a, 0, sizeof(*a));
    a->sin_family = AF_INET;
    memcpy(&a->sin_addr, daddr, 4);
    if (dport)
        memcpy(&a->sin_port, dport, 2);
    iov->iov_base = base;
    iov->iov_len = len;
    m->msg_hdr.msg_iov = iov;
    m->msg_hdr.msg_iovlen = 1;
    m->msg_hdr.msg_name = a;
    m->msg_hdr.msg_namelen = sizeof(*a);
}

/* Which socket kio_send* hand one outgoing packet to: -1 none (not IPv4: counted as failed), 1 the UDP
 * socket (UDP from udp_port, i.e. ESP-in-UDP; sent as its payload), 0 the raw socket.  Sets *ihl. */
static inline int send_route(const uint8_t *p, uint32_t len, int udp_fd, uint16_t udp_port, uint32_t *ihl) {
    if (len < 20 || p[0] >> 4 != 4)
        return -1;
    *ihl = (p[0] & 15u) * 4;
    return udp_fd >= 0 && p[9] == IPPROTO_UDP && len >= *ihl + 8 && rd16(p + *ihl) == udp_port;
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

/* Byte-wise Internet checksum pieces (headers, ICMP errors: short and off the bulk path). */
static inline uint32_t csum_add(uint32_t sum, const uint8_t *p, uint32_t n) {
    for (; n > 1; n -= 2, p += 2)
        sum += rd16(p);
    if (n)
        sum += (uint32_t)p[0] << 8;
    return sum;
}

static inline uint16_t csum_fold(uint32_t sum) {
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
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
