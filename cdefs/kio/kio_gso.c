/* Offloads of the kernel I/O mode; see kio.h.
 *
 * The fastpath, both hosts and the kernel share a couple of cores, so the cost that matters is the
 * number of kernel crossings per packet, not the copies.  Here a TUN read returns a TCP super-segment
 * (TSO through IFF_VNET_HDR), cut into MSS-sized packets for the ESP engine; decrypted in-order TCP
 * segments of one flow go back into the TUN as one GSO write; ESP-in-UDP leaves in UDP_SEGMENT runs and
 * arrives in UDP_GRO bundles.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "kio.h"
#include "kio_util.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

/* struct virtio_net_hdr (legacy layout, host byte order on x86) */
#define VNET_F_NEEDS_CSUM 1
#define VNET_F_DATA_VALID 2
#define VNET_GSO_NONE 0
#define VNET_GSO_TCPV4 1
#define VNET_GSO_TCPV6 4
#define VNET_GSO_ECN 0x80

#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_CWR 0x80

#define RUN_MAX 64          /* segments per coalesced write or UDP_SEGMENT message */
#define CHUNK 256

static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline void wle16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = v >> 8; }

/* Sum of the TCP/UDP pseudo header for an IP packet p (v4 or v6), protocol proto, l4 length l4len. */
static uint64_t pseudo_sum(const uint8_t *p, uint8_t proto, uint32_t l4len) {
    uint8_t tail[8] = {0};
    uint64_t s;
    if (p[0] >> 4 == 4) {
        s = csum64(0, p + 12, 8);
        tail[0] = 0;
        tail[1] = proto;
        wr16(tail + 2, (uint16_t)l4len);
        return csum64(s, tail, 4);
    }
    s = csum64(0, p + 8, 32);
    wr32(tail, l4len);
    tail[7] = proto;
    return csum64(s, tail, 8);
}

static void ip4_csum(uint8_t *p) {
    uint32_t ihl = (p[0] & 15u) * 4;
    p[10] = p[11] = 0;
    wr16(p + 10, csum_fold(csum_add(0, p, ihl)));
}

/* Full TCP checksum of packet p (tot bytes, TCP at l4) written into the header. */
static void tcp_csum(uint8_t *p, uint32_t l4, uint32_t tot) {
    uint64_t s;
    p[l4 + 16] = p[l4 + 17] = 0;
    s = pseudo_sum(p, 6, tot - l4);
    s = csum64(s, p + l4, tot - l4);
    wr16(p + l4 + 16, (uint16_t)~csum64_fold(s));
}

/* ---- TUN read: segmentation ------------------------------------------------------------------- */

static void emit_slot(struct kio_batch *b, uint32_t i, uint32_t len) { slot_set(b, i, slot_data(b, i), len); }

uint32_t kio_vnet_emit(struct kio_tun_rx *rx, struct kio_batch *b, uint32_t start, uint32_t max) {
    const uint8_t *vh = rx->buf, *p = rx->buf + KIO_VNET_HDR_LEN;
    uint32_t plen, end, i = start, k, l4, hl, pay, mss, nseg, seq0;
    uint16_t id0;
    uint8_t gt, fl0;

    if (rx->len <= KIO_VNET_HDR_LEN) {
        rx->len = rx->next = 0;
        return 0;
    }
    end = b->capacity - start < max ? b->capacity : start + max;
    if (start >= end)
        return 0;
    plen = rx->len - KIO_VNET_HDR_LEN;
    gt = vh[1] & (uint8_t)~VNET_GSO_ECN;
    if (gt == VNET_GSO_NONE) {
        uint8_t *d = slot_data(b, i);
        uint32_t cs = le16(vh + 6), co = le16(vh + 8);
        if (plen > room(b))
            goto bad;
        memcpy(d, p, plen);
        if (vh[0] & VNET_F_NEEDS_CSUM) {
            /* the field holds the pseudo-header sum: complete it over [csum_start, end) */
            if (cs + co + 2 > plen || cs >= plen)
                goto bad;
            wr16(d + cs + co, (uint16_t)~csum64_fold(csum64(0, d + cs, plen - cs)));
        }
        emit_slot(b, i, plen);
        rx->len = rx->next = 0;
        rx->segments++;
        return 1;
    }
    if (gt != VNET_GSO_TCPV4 && gt != VNET_GSO_TCPV6)
        goto bad;
    if (p[0] >> 4 == 4) {
        if (plen < 20 || p[9] != 6)
            goto bad;
        l4 = (p[0] & 15u) * 4;
    } else if (p[0] >> 4 == 6) {
        if (plen < 40 || p[6] != 6)
            goto bad;               /* the local stack's TSO6 packets carry no extension headers */
        l4 = 40;
    } else {
        goto bad;
    }
    if (l4 + 20 > plen)
        goto bad;
    hl = l4 + (p[l4 + 12] >> 4) * 4u;
    mss = le16(vh + 4);
    if (hl > plen || hl < l4 + 20 || mss == 0 || hl + mss > room(b))
        goto bad;
    pay = plen - hl;
    nseg = pay ? (pay + mss - 1) / mss : 1;
    seq0 = rd32(p + l4 + 4);
    id0 = rd16(p + 4);
    fl0 = p[l4 + 13];
    for (k = rx->next; k < nseg && i < end; k++, i++) {
        uint8_t *d = slot_data(b, i), fl = fl0;
        uint32_t off = k * mss, chunk = pay - off < mss ? pay - off : mss, tot = hl + chunk;
        memcpy(d, p, hl);
        memcpy(d + hl, p + hl + off, chunk);
        if (d[0] >> 4 == 4) {
            wr16(d + 2, (uint16_t)tot);
            wr16(d + 4, (uint16_t)(id0 + k));      /* what the kernel's own TSO does (no fixed-ID) */
            ip4_csum(d);
        } else {
            wr16(d + 4, (uint16_t)(tot - 40));
        }
        wr32(d + l4 + 4, seq0 + off);
        if (k + 1 != nseg)
            fl &= (uint8_t)~(TCP_FIN | TCP_PSH);
        if (k != 0)
            fl &= (uint8_t)~TCP_CWR;
        d[l4 + 13] = fl;
        tcp_csum(d, l4, tot);
        emit_slot(b, i, tot);
    }
    rx->segments += i - start;
    if (k >= nseg)
        rx->len = rx->next = 0;
    else
        rx->next = k;
    return i - start;
bad:
    rx->bad++;
    rx->len = rx->next = 0;
    return 0;
}

int kio_tun_read_vnet(int fd, struct kio_batch *b, uint32_t start, uint32_t max, struct kio_tun_rx *rx) {
    uint32_t end = b->capacity - start < max ? b->capacity : start + max, i = start;

    if (start >= end)
        return 0;
    i += kio_vnet_emit(rx, b, i, end - i);
    while (i < end && rx->len == 0) {
        ssize_t r = read(fd, rx->buf, KIO_VNET_HDR_LEN + KIO_GSO_MAX);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || i > start)
                break;
            return -errno;
        }
        if (r <= KIO_VNET_HDR_LEN) {
            rx->bad++;
            continue;
        }
        rx->len = (uint32_t)r;
        rx->next = 0;
        rx->reads++;
        if ((rx->buf[1] & (uint8_t)~VNET_GSO_ECN) != VNET_GSO_NONE)
            rx->gso_reads++;
        i += kio_vnet_emit(rx, b, i, end - i);
    }
    return (int)(i - start);
}

/* ---- TUN write: coalescing ------------------------------------------------------------------- */

/* IP total length of a packet tcp_seg accepted. */
static inline uint32_t ip_tot(const uint8_t *q) { return q[0] >> 4 == 4 ? rd16(q + 2) : 40u + rd16(q + 4); }

struct tcpseg {
    uint32_t l4, hl, tot, pay, seq;
    uint8_t flags;
};

/* An IP packet carrying a whole (unfragmented) TCP segment with a correct checksum. */
static int tcp_seg(const uint8_t *p, uint32_t len, struct tcpseg *t) {
    uint64_t s;
    if (len < 20)
        return 0;
    if (p[0] >> 4 == 4) {
        t->l4 = (p[0] & 15u) * 4;
        t->tot = rd16(p + 2);
        if (t->l4 < 20 || p[9] != 6 || (rd16(p + 6) & 0x3fff) != 0)
            return 0;
    } else if (p[0] >> 4 == 6) {
        if (len < 40 || p[6] != 6)
            return 0;
        t->l4 = 40;
        t->tot = 40 + rd16(p + 4);
    } else {
        return 0;
    }
    if (t->tot > len || t->l4 + 20 > t->tot)
        return 0;
    t->hl = t->l4 + (p[t->l4 + 12] >> 4) * 4u;
    if (t->hl < t->l4 + 20 || t->hl > t->tot)
        return 0;
    t->pay = t->tot - t->hl;
    t->seq = rd32(p + t->l4 + 4);
    t->flags = p[t->l4 + 13];
    s = pseudo_sum(p, 6, t->tot - t->l4);
    s = csum64(s, p + t->l4, t->tot - t->l4);
    return csum64_fold(s) == 0xffff;
}

/* Whether q continues p's flow exactly: the same IP header (but length, ID, checksum), the same TCP
 * header (but sequence number, checksum, and PSH) -- what Linux GRO asks too. */
static int same_flow(const uint8_t *p, const struct tcpseg *a, const uint8_t *q, const struct tcpseg *c) {
    if (a->l4 != c->l4 || a->hl != c->hl || (p[0] ^ q[0]) != 0)
        return 0;
    if (p[0] >> 4 == 4) {
        if (p[1] != q[1] || memcmp(p + 6, q + 6, 4) != 0 || memcmp(p + 12, q + 12, a->l4 - 12) != 0)
            return 0;
    } else if (memcmp(p, q, 4) != 0 || memcmp(p + 6, q + 6, 34) != 0) {
        return 0;
    }
    p += a->l4;
    q += a->l4;
    return memcmp(p, q, 4) == 0 && memcmp(p + 8, q + 8, 5) == 0 && memcmp(p + 14, q + 14, 2) == 0 &&
           memcmp(p + 18, q + 18, a->hl - a->l4 - 18) == 0;
}

/* Selected packets from i that join i's run (idx[0] = i); 1 when i goes alone.  *valid: i is a TCP
 * segment with a verified checksum. */
static uint32_t find_run(const struct kio_batch *b, uint32_t n, const uint8_t *sel, uint8_t want, uint32_t i,
                         uint32_t *idx, struct tcpseg *first, int *valid) {
    const uint8_t *p = b->buf + b->off[i];
    struct tcpseg t;
    uint32_t j, cnt = 1, total, seq;

    idx[0] = i;
    *valid = tcp_seg(p, b->len[i], first);
    if (!*valid || first->pay == 0 || (first->flags & ~TCP_PSH) != TCP_ACK || (first->flags & TCP_PSH))
        return 1;
    total = first->tot;
    seq = first->seq + first->pay;
    for (j = i + 1; j < n && cnt < RUN_MAX; j++) {
        const uint8_t *q;
        if (sel[j] != want)
            continue;
        q = b->buf + b->off[j];
        if (!tcp_seg(q, b->len[j], &t) || !same_flow(p, first, q, &t) || t.seq != seq || t.pay == 0 ||
            t.pay > first->pay || (t.flags & ~TCP_PSH) != TCP_ACK || total + t.pay > KIO_GSO_MAX)
            break;
        idx[cnt++] = j;
        total += t.pay;
        seq += t.pay;
        if (t.pay < first->pay || (t.flags & TCP_PSH))
            break;              /* a short or pushed segment ends the run, as in GRO */
    }
    return cnt;
}

/* Rewrite the first packet of a run of cnt into the super-segment's headers; fill the vnet header. */
static void make_super(struct kio_batch *b, const uint32_t *idx, uint32_t cnt, const struct tcpseg *first,
                       uint8_t *hdr) {
    uint8_t *p = b->buf + b->off[idx[0]];
    const uint8_t *last = b->buf + b->off[idx[cnt - 1]];
    uint32_t total = first->tot, k;

    for (k = 1; k < cnt; k++)
        total += ip_tot(b->buf + b->off[idx[k]]) - first->hl;
    if (p[0] >> 4 == 4) {
        wr16(p + 2, (uint16_t)total);
        ip4_csum(p);
    } else {
        wr16(p + 4, (uint16_t)(total - 40));
    }
    p[first->l4 + 13] |= last[first->l4 + 13] & TCP_PSH;
    /* CHECKSUM_PARTIAL: the field holds the pseudo-header sum, the kernel (or the next hop's GSO) does the rest */
    wr16(p + first->l4 + 16, csum64_fold(pseudo_sum(p, 6, total - first->l4)));
    hdr[0] = VNET_F_NEEDS_CSUM;
    hdr[1] = p[0] >> 4 == 4 ? VNET_GSO_TCPV4 : VNET_GSO_TCPV6;
    wle16(hdr + 2, (uint16_t)first->hl);
    wle16(hdr + 4, (uint16_t)first->pay);
    wle16(hdr + 6, (uint16_t)first->l4);
    wle16(hdr + 8, 16);
}

uint32_t kio_coalesce(struct kio_batch *b, uint32_t n, const uint8_t *sel, uint8_t want, uint32_t i, uint8_t *hdr) {
    uint32_t idx[RUN_MAX], cnt;
    struct tcpseg first;
    int valid;

    memset(hdr, 0, KIO_VNET_HDR_LEN);
    cnt = find_run(b, n, sel, want, i, idx, &first, &valid);
    if (cnt > 1)
        make_super(b, idx, cnt, &first, hdr);
    else if (valid)
        hdr[0] = VNET_F_DATA_VALID;
    return cnt;
}

int kio_tun_write_vnet(int fd, struct kio_batch *b, uint32_t n, const uint8_t *sel, uint8_t want,
                       struct kio_tun_tx *tx) {
    uint32_t i, k, idx[RUN_MAX], cnt;
    uint8_t hdr[KIO_VNET_HDR_LEN];
    struct iovec iov[RUN_MAX + 1];
    struct tcpseg first;
    int valid, done = 0;

    for (i = 0; i < n; i++) {
        ssize_t want_bytes, r;
        if (sel[i] != want)
            continue;
        memset(hdr, 0, sizeof(hdr));
        cnt = find_run(b, n, sel, want, i, idx, &first, &valid);
        iov[0].iov_base = hdr;
        iov[0].iov_len = sizeof(hdr);
        iov[1].iov_base = b->buf + b->off[i];
        if (cnt > 1) {
            make_super(b, idx, cnt, &first, hdr);
            iov[1].iov_len = first.tot;
            want_bytes = (ssize_t)(sizeof(hdr) + first.tot);
            for (k = 1; k < cnt; k++) {
                const uint8_t *q = b->buf + b->off[idx[k]];
                uint32_t qtot = ip_tot(q);
                iov[k + 1].iov_base = (uint8_t *)q + first.hl;
                iov[k + 1].iov_len = qtot - first.hl;
                want_bytes += (ssize_t)(qtot - first.hl);
            }
        } else {
            if (valid)
                hdr[0] = VNET_F_DATA_VALID;     /* checksum verified above: the kernel need not again */
            iov[1].iov_len = b->len[i];
            want_bytes = (ssize_t)(sizeof(hdr) + b->len[i]);
        }
        do
            r = writev(fd, iov, (int)cnt + 1);
        while (r < 0 && errno == EINTR);
        tx->writes++;
        if (r == want_bytes) {
            done += (int)cnt;
            tx->packets += cnt;
        } else {
            tx->failed += cnt;     /* a full TUN queue drops them, as the kernel does for a busy device */
        }
        i = idx[cnt - 1];
    }
    return done;
}

/* ---- UDP: UDP_SEGMENT sends, UDP_GRO receives ------------------------------------------------- */

struct gso_msg {
    uint32_t first_iov, segs;
    uint16_t seg_size;
};

static uint32_t send_msgs(int fd, struct mmsghdr *m, const uint32_t *segs, uint32_t count, uint64_t *failed) {
    uint32_t done = 0, sent = 0, k;
    while (done < count) {
        int r = sendmmsg(fd, m + done, count - done, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            *failed += segs[done];  /* the first remaining message failed (EMSGSIZE, EHOSTUNREACH...) */
            done++;
            continue;
        }
        for (k = 0; k < (uint32_t)r; k++)
            sent += segs[done + k];
        done += (uint32_t)r;
    }
    return sent;
}

/* The messages for one socket of a send: raw4, raw6, udp4 or udp6. */
enum { LANE_RAW4, LANE_RAW6, LANE_UDP4, LANE_UDP6, LANES };

struct lane {
    int fd;
    uint32_t n, niov;            /* messages, iovecs used */
    uint32_t run_bytes;
    uint16_t run_size;           /* payload size of the open UDP_SEGMENT run's segments */
    struct mmsghdr m[CHUNK];
    struct iovec iov[CHUNK];
    union kio_addr a[CHUNK];
    uint32_t segs[CHUNK];
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } ctl[CHUNK];
};

/* Add one packet's (payload's) message to lane l, or join it to the open UDP_SEGMENT run when gso allows. */
static void lane_add(struct lane *l, int gso, const uint8_t *daddr, uint32_t alen, const uint8_t *dport,
                     uint8_t *base, uint32_t len) {
    if (gso && dport && l->n && l->segs[l->n - 1] < RUN_MAX && len <= l->run_size &&
        l->run_bytes + len <= 65000 && l->iov[l->niov - 1].iov_len == l->run_size &&
        same_dest(&l->m[l->n - 1], daddr, alen, dport)) {
        /* same destination, same size as the run's segments (a shorter one closes it) */
        l->iov[l->niov].iov_base = base;
        l->iov[l->niov].iov_len = len;
        l->niov++;
        l->m[l->n - 1].msg_hdr.msg_iovlen++;
        l->segs[l->n - 1]++;
        l->run_bytes += len;
        return;
    }
    msg_to(&l->m[l->n], &l->iov[l->niov], &l->a[l->n], daddr, alen, dport, base, len);
    l->segs[l->n] = 1;
    l->run_size = (uint16_t)len;
    l->run_bytes = len;
    l->niov++;
    l->n++;
}

/* Send lane l's messages, a UDP_SEGMENT control message on each run of two or more; packets sent. */
static uint32_t lane_flush(struct lane *l, uint64_t *failed) {
    uint32_t i, sent;
    for (i = 0; i < l->n; i++) {
        struct cmsghdr *c;
        uint16_t size;
        if (l->segs[i] < 2)
            continue;
        size = (uint16_t)l->m[i].msg_hdr.msg_iov[0].iov_len;
        l->m[i].msg_hdr.msg_control = l->ctl[i].buf;
        l->m[i].msg_hdr.msg_controllen = sizeof(l->ctl[i].buf);
        c = CMSG_FIRSTHDR(&l->m[i].msg_hdr);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        memcpy(CMSG_DATA(c), &size, sizeof(size));
    }
    sent = l->n ? send_msgs(l->fd, l->m, l->segs, l->n, failed) : 0;
    l->n = l->niov = 0;
    return sent;
}

int kio_send_out(const struct kio_out *o, const struct kio_batch *b, uint32_t n, const uint8_t *sel,
                 uint8_t want, uint64_t *failed) {
    /* too big for the stack of a thread that is not the main one: one set per thread */
    static __thread struct lane lanes[LANES];
    uint32_t i0, i, k, sent = 0;

    lanes[LANE_RAW4].fd = o->raw4;
    lanes[LANE_RAW6].fd = o->raw6;
    lanes[LANE_UDP4].fd = o->udp4;
    lanes[LANE_UDP6].fd = o->udp6;
    for (k = 0; k < LANES; k++)
        lanes[k].n = lanes[k].niov = 0;
    for (i0 = 0; i0 < n; i0 += CHUNK) {
        uint32_t end = n - i0 < CHUNK ? n : i0 + CHUNK;
        for (i = i0; i < end; i++) {
            uint8_t *p = b->buf + b->off[i];
            uint32_t len = b->len[i];
            struct send_path sp;
            int route;
            if (sel[i] != want)
                continue;
            route = send_route(o, p, len, &sp);
            if (route < 0) {
                (*failed)++;
                continue;
            }
            if (route)
                lane_add(&lanes[sp.alen == 16 ? LANE_UDP6 : LANE_UDP4], o->gso, p + sp.daddr, sp.alen,
                         p + sp.hl + 2, p + sp.hl + 8, len - sp.hl - 8);
            else
                lane_add(&lanes[sp.alen == 16 ? LANE_RAW6 : LANE_RAW4], 0, p + sp.daddr, sp.alen, NULL, p, len);
        }
        for (k = 0; k < LANES; k++)
            sent += lane_flush(&lanes[k], failed);
    }
    return (int)sent;
}

int kio_send_gso(int raw_fd, int udp_fd, uint16_t udp_port, const struct kio_batch *b, uint32_t n,
                 const uint8_t *sel, uint8_t want, uint64_t *failed) {
    struct kio_out o = {.raw4 = raw_fd, .raw6 = -1, .udp4 = udp_fd, .udp6 = -1, .udp_port = udp_port, .gso = 1};
    return kio_send_out(&o, b, n, sel, want, failed);
}

static int recv_udp_gro(int fd, struct kio_batch *b, uint32_t start, uint32_t max, int v6,
                        const uint8_t *local_addr, uint16_t local_port, uint64_t *ike, uint64_t *probe,
                        uint64_t *dropped, uint8_t *scratch, uint32_t max_msgs) {
    struct mmsghdr m[64];
    struct iovec iov[64];
    union kio_addr from[64];
    union {
        char buf[2 * CMSG_SPACE(sizeof(int))];      /* UDP_GRO, and IPV6_TCLASS on AF_INET6 */
        struct cmsghdr align;
    } ctl[64];
    uint32_t end = b->capacity - start < max ? b->capacity : start + max, j = start, want, i;
    uint32_t hl = udp_outer_len(v6);
    int r;

    if (b->headroom < hl)
        return -EINVAL;
    if (start >= end)
        return 0;
    /* a bundle holds up to 64 segments (UDP_GRO_CNT_MAX): ask for no more bundles than the free slots
     * surely take; the caller comes back with an emptier batch */
    want = (end - start) / 64;
    if (want == 0) {
        if (start > 0)
            return 0;
        want = 1;
    }
    if (want > max_msgs)
        want = max_msgs;
    if (want > 64)
        want = 64;
    for (i = 0; i < want; i++)
        msg_from(&m[i], &iov[i], scratch + (uint64_t)i * KIO_GSO_MAX, KIO_GSO_MAX, &from[i], sizeof(from[i]),
                 ctl[i].buf, sizeof(ctl[i].buf));
    r = recv_msgs(fd, m, want);
    if (r <= 0)
        return r;
    for (i = 0; i < (uint32_t)r; i++) {
        const uint8_t *d = iov[i].iov_base;
        uint32_t total = m[i].msg_len, seg = total, off;
        uint8_t tclass = v6 ? cmsg_tclass(&m[i].msg_hdr) : 0;
        struct cmsghdr *c;
        for (c = CMSG_FIRSTHDR(&m[i].msg_hdr); c; c = CMSG_NXTHDR(&m[i].msg_hdr, c)) {
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                uint16_t g16;
                int g;
                if (c->cmsg_len >= CMSG_LEN(sizeof(int))) {
                    memcpy(&g, CMSG_DATA(c), sizeof(int));
                } else {
                    memcpy(&g16, CMSG_DATA(c), sizeof(g16));
                    g = g16;
                }
                if (g > 0)
                    seg = (uint32_t)g;
            }
        }
        for (off = 0; off < total; off += seg) {
            uint32_t plen = total - off < seg ? total - off : seg;
            uint8_t *dst;
            if (!udp_payload_kind(d + off, plen, ike, probe))
                continue;
            if (j >= end || plen + hl > room(b)) {
                (*dropped)++;      /* no slot left (a batch under 64 slots), or larger than a slot */
                continue;
            }
            dst = slot_data(b, j);
            memcpy(dst, d + off, plen);
            udp_outer(dst - hl, v6, &from[i], local_addr, local_port, plen, tclass);
            slot_set(b, j, dst - hl, plen + hl);
            j++;
        }
    }
    return (int)(j - start);
}

int kio_recv_udp4_gro(int fd, struct kio_batch *b, uint32_t start, uint32_t max, const uint8_t *local_addr,
                      uint16_t local_port, uint64_t *ike, uint64_t *probe, uint64_t *dropped, uint8_t *scratch,
                      uint32_t max_msgs) {
    return recv_udp_gro(fd, b, start, max, 0, local_addr, local_port, ike, probe, dropped, scratch, max_msgs);
}

int kio_recv_udp6_gro(int fd, struct kio_batch *b, uint32_t start, uint32_t max, const uint8_t *local_addr,
                      uint16_t local_port, uint64_t *ike, uint64_t *probe, uint64_t *dropped, uint8_t *scratch,
                      uint32_t max_msgs) {
    return recv_udp_gro(fd, b, start, max, 1, local_addr, local_port, ike, probe, dropped, scratch, max_msgs);
}
