/* Raw IPv6 AH receive; see kio.h (kio_recv_ah6).
 *
 * AH's ICV covers the IPv6 header and every extension header in front of AH (RFC 4302 3.3.3.1.2), but a
 * raw AF_INET6 socket hands over the packet from AH on.  Linux gives the rest back as control messages
 * (IPV6_PKTINFO, IPV6_TCLASS, and IPV6_HOPOPTS / IPV6_DSTOPTS / IPV6_RTHDR in the order the headers
 * came, hop-by-hop first), so the packet can be put together again in front of AH.  What cannot be
 * recovered (flow label, hop limit) is mutable and zeroed for the ICV anyway.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "kio.h"
#include "kio_util.h"

/* Fewer messages per call than ESP's receive: each carries a control buffer large enough for the
 * extension headers, and AH is the rare protocol. */
#define AH6_CHUNK 32
#define AH6_CTL 2048
#define NH_HOPOPTS 0
#define NH_ROUTING 43
#define NH_DSTOPTS 60

struct ext {
    const uint8_t *p;
    uint32_t len;
    uint8_t type;
};

/* The extension headers of one message in packet order, their total length into *total; -1 when the
 * control data was cut short or does not hold together (a header whose length byte disagrees with
 * what the kernel gave). */
static int ext_headers(struct msghdr *h, struct ext *ex, int max, uint32_t *total, uint8_t *dst,
                       uint8_t *tclass) {
    struct cmsghdr *c;
    int n = 0;

    *total = 0;
    if (h->msg_flags & MSG_CTRUNC)
        return -1;
    for (c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        uint32_t len = (uint32_t)(c->cmsg_len - CMSG_LEN(0));
        uint8_t type;
        if (c->cmsg_level != IPPROTO_IPV6)
            continue;
        if (c->cmsg_type == IPV6_PKTINFO && len >= sizeof(struct in6_pktinfo)) {
            struct in6_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof(pi));
            memcpy(dst, &pi.ipi6_addr, 16);
            continue;
        }
        if (c->cmsg_type == IPV6_TCLASS && len >= sizeof(int)) {
            int t;
            memcpy(&t, CMSG_DATA(c), sizeof(t));
            *tclass = (uint8_t)t;
            continue;
        }
        if (c->cmsg_type == IPV6_HOPOPTS)
            type = NH_HOPOPTS;
        else if (c->cmsg_type == IPV6_DSTOPTS)
            type = NH_DSTOPTS;
        else if (c->cmsg_type == IPV6_RTHDR)
            type = NH_ROUTING;
        else
            continue;
        if (n == max || len < 8 || len != ((uint32_t)CMSG_DATA(c)[1] + 1) * 8 || (type == NH_HOPOPTS && n))
            return -1;
        ex[n].p = CMSG_DATA(c);
        ex[n].len = len;
        ex[n].type = type;
        *total += len;
        n++;
    }
    return n;
}

int kio_recv_ah6(int fd, struct kio_batch *b, uint32_t start, uint32_t max, uint64_t *unrebuilt) {
    struct mmsghdr m[AH6_CHUNK];
    struct iovec iov[AH6_CHUNK];
    struct sockaddr_in6 from[AH6_CHUNK];
    union {
        char buf[AH6_CTL];
        struct cmsghdr align;
    } ctl[AH6_CHUNK];
    uint32_t i, j = start, want = b->capacity - start;
    int r;

    if (b->headroom < 40)
        return -EINVAL;
    if (want > max)
        want = max;
    if (want > AH6_CHUNK)
        want = AH6_CHUNK;
    if (want == 0)
        return 0;
    for (i = 0; i < want; i++)
        msg_from(&m[i], &iov[i], slot_data(b, start + i), room(b), &from[i], sizeof(from[i]), ctl[i].buf,
                 sizeof(ctl[i].buf));
    r = recv_msgs(fd, m, want);
    if (r <= 0)
        return r;
    for (i = 0; i < (uint32_t)r; i++) {
        struct ext ex[8];
        uint8_t dst[16] = {0}, tclass = 0, *pay = slot_data(b, start + i), *base, *h, *q;
        uint32_t plen = m[i].msg_len, ext_len;
        int k, n = ext_headers(&m[i].msg_hdr, ex, 8, &ext_len, dst, &tclass);
        /* the slot of message i is the first place packet j may go (j <= start + i) */
        base = b->buf + (uint64_t)j * b->slot_size;
        if (n < 0 || 40 + ext_len + plen > b->slot_size - b->tailroom || ext_len + plen > 0xffff) {
            (*unrebuilt)++;
            continue;
        }
        h = 40 + ext_len <= b->headroom ? slot_data(b, j) - 40 - ext_len : base;
        memmove(h + 40 + ext_len, pay, plen);
        wr32(h, 6u << 28 | (uint32_t)tclass << 20);
        wr16(h + 4, (uint16_t)(ext_len + plen));
        h[6] = n ? ex[0].type : IPPROTO_AH;
        h[7] = 64;
        memcpy(h + 8, &from[i].sin6_addr, 16);
        memcpy(h + 24, dst, 16);
        for (q = h + 40, k = 0; k < n; k++) {
            memcpy(q, ex[k].p, ex[k].len);
            q += ex[k].len;
        }
        slot_set(b, j, h, 40 + ext_len + plen);
        j++;
    }
    return (int)(j - start);
}
