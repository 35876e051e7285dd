/* Kernel packet I/O and the outbound classifier; see kio.h.
 *
 * Everything here works on whole batches so the Python loop above it costs a
 * few calls per batch, never a call per packet.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kio.h"
#include "kio_util.h"
#include "shm.h"

_Static_assert(sizeof(struct kio_spd_result) == sizeof(struct ipsg_spd_result), "spd result layout");
_Static_assert(offsetof(struct kio_spd_result, sa) == offsetof(struct ipsg_spd_result, sa), "spd result layout");

typedef int (*spd_lookup_fn)(void *, uint8_t, const uint8_t *, const uint8_t *, uint8_t, uint16_t, uint16_t,
                             struct kio_spd_result *);
typedef int (*acquire_fn)(void *, uint32_t, uint8_t, const uint8_t *, const uint8_t *, uint8_t, uint16_t, uint16_t,
                          uint64_t);

#define CHUNK 256

/* How many messages one recvmmsg asks for: the free slots, at most max and CHUNK. */
static inline uint32_t recv_want(uint32_t free_slots, uint32_t max) {
    if (free_slots > max)
        free_slots = max;
    return free_slots > CHUNK ? CHUNK : free_slots;
}

/* ---- TUN --------------------------------------------------------------------------------- */

int kio_tun_read(int fd, struct kio_batch *b, uint32_t start, uint32_t max) {
    uint32_t i, got = 0;
    for (i = start; i < b->capacity && got < max; i++) {
        ssize_t r = read(fd, slot_data(b, i), room(b));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || got)
                break;
            return -errno;
        }
        slot_set(b, i, slot_data(b, i), (uint32_t)r);
        got++;
    }
    return (int)got;
}

int kio_tun_write(int fd, const struct kio_batch *b, uint32_t n, const uint8_t *sel, uint8_t want) {
    uint32_t i;
    int done = 0;
    for (i = 0; i < n; i++) {
        if (sel[i] != want)
            continue;
        /* A full TUN queue (EAGAIN) drops the packet: the kernel's own behaviour for a busy device. */
        if (write(fd, b->buf + b->off[i], b->len[i]) == (ssize_t)b->len[i])
            done++;
    }
    return done;
}

/* ---- sockets ----------------------------------------------------------------------------- */

/* kio_recv_udp4/6: recvmmsg payloads into slots, then the outer header (28 or 48 bytes) in front. */
static int recv_udp(int fd, struct kio_batch *b, uint32_t start, uint32_t max, int v6, const uint8_t *local_addr,
                    uint16_t local_port, uint64_t *ike, uint64_t *probe) {
    struct mmsghdr m[CHUNK];
    struct iovec iov[CHUNK];
    union kio_addr from[CHUNK];
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl[CHUNK];
    uint32_t i, j, hl = udp_outer_len(v6), want = b->capacity - start;
    int r;

    if (b->headroom < hl)
        return -EINVAL;
    want = recv_want(want, max);
    if (want == 0)
        return 0;
    memset(m, 0, sizeof(m[0]) * want);
    for (i = 0; i < want; i++) {
        iov[i].iov_base = slot_data(b, start + i);
        iov[i].iov_len = room(b) - hl;
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
        m[i].msg_hdr.msg_name = &from[i];
        m[i].msg_hdr.msg_namelen = sizeof(from[i]);
        if (v6) {
            m[i].msg_hdr.msg_control = ctl[i].buf;
            m[i].msg_hdr.msg_controllen = sizeof(ctl[i].buf);
        }
    }
    r = recv_msgs(fd, m, want);
    if (r <= 0)
        return r;
    for (i = 0, j = start; i < (uint32_t)r; i++) {
        uint8_t *pay = slot_data(b, start + i), *dst, *h;
        uint32_t plen = m[i].msg_len;
        if (!udp_payload_kind(pay, plen, ike, probe))
            continue;
        dst = slot_data(b, j);
        if (j != start + i)
            memmove(dst, pay, plen);           /* close the gap an IKE datagram left */
        h = dst - hl;
        udp_outer(h, v6, &from[i], local_addr, local_port, plen, v6 ? cmsg_tclass(&m[i].msg_hdr) : 0);
        slot_set(b, j, h, plen + hl);
        j++;
    }
    return (int)(j - start);
}

int kio_recv_udp4(int fd, struct kio_batch *b, uint32_t start, uint32_t max, const uint8_t *local_addr,
                  uint16_t local_port, uint64_t *ike, uint64_t *probe) {
    return recv_udp(fd, b, start, max, 0, local_addr, local_port, ike, probe);
}

int kio_recv_udp6(int fd, struct kio_batch *b, uint32_t start, uint32_t max, const uint8_t *local_addr,
                  uint16_t local_port, uint64_t *ike, uint64_t *probe) {
    return recv_udp(fd, b, start, max, 1, local_addr, local_port, ike, probe);
}

int kio_recv_raw4(int fd, struct kio_batch *b, uint32_t start, uint32_t max) {
    struct mmsghdr m[CHUNK];
    struct iovec iov[CHUNK];
    uint32_t i, want = b->capacity - start;
    int r;

    want = recv_want(want, max);
    if (want == 0)
        return 0;
    memset(m, 0, sizeof(m[0]) * want);
    for (i = 0; i < want; i++) {
        iov[i].iov_base = slot_data(b, start + i);
        iov[i].iov_len = room(b);
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
    }
    r = recv_msgs(fd, m, want);
    if (r <= 0)
        return r;
    for (i = 0; i < (uint32_t)r; i++) {
        slot_set(b, start + i, slot_data(b, start + i), m[i].msg_len);
    }
    return r;
}

int kio_recv_raw6(int fd, struct kio_batch *b, uint32_t start, uint32_t max) {
    struct mmsghdr m[CHUNK];
    struct iovec iov[CHUNK];
    struct sockaddr_in6 from[CHUNK];
    union {
        char buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl[CHUNK];
    uint32_t i, want = b->capacity - start;
    int r;

    if (b->headroom < 40)
        return -EINVAL;
    want = recv_want(want, max);
    if (want == 0)
        return 0;
    memset(m, 0, sizeof(m[0]) * want);
    for (i = 0; i < want; i++) {
        iov[i].iov_base = slot_data(b, start + i);
        iov[i].iov_len = room(b) - 40;
        m[i].msg_hdr.msg_iov = &iov[i];
        m[i].msg_hdr.msg_iovlen = 1;
        m[i].msg_hdr.msg_name = &from[i];
        m[i].msg_hdr.msg_namelen = sizeof(from[i]);
        m[i].msg_hdr.msg_control = ctl[i].buf;
        m[i].msg_hdr.msg_controllen = sizeof(ctl[i].buf);
    }
    r = recv_msgs(fd, m, want);
    if (r <= 0)
        return r;
    for (i = 0; i < (uint32_t)r; i++) {
        uint8_t *h = slot_data(b, start + i) - 40;
        uint32_t plen = m[i].msg_len;
        uint8_t tclass = 0;
        struct cmsghdr *c;
        memset(h + 24, 0, 16);     /* no IPV6_PKTINFO: a zero destination (the SPI alone then finds the SA) */
        for (c = CMSG_FIRSTHDR(&m[i].msg_hdr); c; c = CMSG_NXTHDR(&m[i].msg_hdr, c)) {
            if (c->cmsg_level != IPPROTO_IPV6)
                continue;
            if (c->cmsg_type == IPV6_PKTINFO && c->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
                struct in6_pktinfo pi;
                memcpy(&pi, CMSG_DATA(c), sizeof(pi));
                memcpy(h + 24, &pi.ipi6_addr, 16);
            } else if (c->cmsg_type == IPV6_TCLASS && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
                int t;
                memcpy(&t, CMSG_DATA(c), sizeof(t));
                tclass = (uint8_t)t;
            }
        }
        wr32(h, 6u << 28 | (uint32_t)tclass << 20);
        wr16(h + 4, (uint16_t)plen);
        h[6] = IPPROTO_ESP;
        h[7] = 64;
        memcpy(h + 8, &from[i].sin6_addr, 16);
        slot_set(b, start + i, h, plen + 40);
    }
    return r;
}

int kio_send(int raw_fd, int udp_fd, uint16_t udp_port, const struct kio_batch *b, uint32_t n,
             const uint8_t *sel, uint8_t want, uint64_t *failed) {
    struct kio_out o = {.raw4 = raw_fd, .raw6 = -1, .udp4 = udp_fd, .udp6 = -1, .udp_port = udp_port, .gso = 0};
    return kio_send_out(&o, b, n, sel, want, failed);
}

/* ---- classifier -------------------------------------------------------------------------- */

struct flow {
    uint8_t family, proto;
    uint16_t sport, dport;
    const uint8_t *src, *dst;
    uint32_t hlen;           /* IP header bytes, extension headers included */
    int df;
};

static int has_ports(uint8_t proto) { return proto == 6 || proto == 17 || proto == 132; }

static int parse_flow(const uint8_t *p, uint32_t len, struct flow *f) {
    memset(f, 0, sizeof(*f));
    if (len < 1)
        return -1;
    if (p[0] >> 4 == 4) {
        uint32_t ihl = (p[0] & 15u) * 4, tot;
        if (len < 20 || ihl < 20 || ihl > len)
            return -1;
        tot = rd16(p + 2);
        if (tot < ihl || tot > len)
            return -1;
        f->family = 4;
        f->proto = p[9];
        f->src = p + 12;
        f->dst = p + 16;
        f->hlen = ihl;
        f->df = (p[6] & 0x40) != 0;
        if ((rd16(p + 6) & 0x1fff) == 0 && has_ports(f->proto) && tot >= ihl + 4) {
            f->sport = rd16(p + ihl);
            f->dport = rd16(p + ihl + 2);
        }
        return 0;
    }
    if (p[0] >> 4 == 6) {
        uint32_t off = 40, end;
        uint8_t nh;
        int first = 1;
        if (len < 40)
            return -1;
        end = 40 + rd16(p + 4);
        if (end > len)
            return -1;
        nh = p[6];
        while (nh == 0 || nh == 43 || nh == 60 || nh == 44) {
            if (off + 8 > end)
                return -1;
            if (nh == 44) {
                first = (rd16(p + off + 2) & 0xfff8) == 0;
                nh = p[off];
                off += 8;
            } else {
                uint32_t l = 8 + p[off + 1] * 8u;
                nh = p[off];
                off += l;
            }
        }
        if (off > end)
            return -1;
        f->family = 6;
        f->proto = nh;
        f->src = p + 8;
        f->dst = p + 24;
        f->hlen = off;
        f->df = 1;
        if (first && has_ports(nh) && end >= off + 4) {
            f->sport = rd16(p + off);
            f->dport = rd16(p + off + 2);
        }
        return 0;
    }
    return -1;
}

static int is_icmp_error(const uint8_t *p, const struct flow *f, uint32_t len) {
    if (f->family == 4 && f->proto == 1 && len >= f->hlen + 1)
        return p[f->hlen] != 0 && p[f->hlen] != 8;
    if (f->family == 6 && f->proto == 58 && len >= f->hlen + 1)
        return p[f->hlen] < 128;
    return 0;
}

/* Replace packet i by an ICMP "fragmentation needed" (IPv4) or "packet too big" (IPv6). */
static void make_icmp(const struct kio_cls *c, struct kio_batch *b, uint32_t i, const struct flow *f, uint32_t mtu) {
    uint8_t r[1280];
    const uint8_t *p = b->buf + b->off[i];
    uint32_t len = b->len[i], q, tot;
    uint8_t *out;
    static const uint8_t zero16[16];

    if (f->family == 4) {
        q = f->hlen + 8 < len ? f->hlen + 8 : len;
        tot = 28 + q;
        memset(r, 0, 28);
        r[0] = 0x45;
        wr16(r + 2, (uint16_t)tot);
        r[8] = 64;
        r[9] = 1;
        memcpy(r + 12, memcmp(c->icmp_src4, zero16, 4) ? c->icmp_src4 : f->dst, 4);
        memcpy(r + 16, f->src, 4);
        wr16(r + 10, csum_fold(csum_add(0, r, 20)));
        r[20] = 3;
        r[21] = 4;
        wr16(r + 26, (uint16_t)mtu);
        memcpy(r + 28, p, q);
        wr16(r + 22, csum_fold(csum_add(0, r + 20, 8 + q)));
    } else {
        uint32_t sum, plen;
        q = len < 1280 - 48 ? len : 1280 - 48;
        tot = 48 + q;
        plen = 8 + q;
        memset(r, 0, 48);
        r[0] = 0x60;
        wr16(r + 4, (uint16_t)plen);
        r[6] = 58;
        r[7] = 64;
        memcpy(r + 8, memcmp(c->icmp_src6, zero16, 16) ? c->icmp_src6 : f->dst, 16);
        memcpy(r + 24, f->src, 16);
        r[40] = 2;
        wr32(r + 44, mtu < 1280 ? 1280 : mtu);
        memcpy(r + 48, p, q);
        sum = csum_add(0, r + 8, 32);          /* pseudo header: addresses, length, next header */
        sum += plen;
        sum += 58;
        sum = csum_add(sum, r + 40, plen);
        wr16(r + 42, csum_fold(sum));
    }
    out = slot_data(b, i);
    memcpy(out, r, tot);
    b->off[i] = (uint32_t)(out - b->buf);
    b->len[i] = tot;
}

uint32_t kio_classify(struct kio_cls *c, struct kio_batch *b, uint32_t n, uint8_t *verdict) {
    spd_lookup_fn lookup = (spd_lookup_fn)c->spd_lookup;
    acquire_fn acquire = (acquire_fn)c->acquire;
    struct kio_spd_result res;
    struct flow f;
    uint32_t i, protect = 0;

    c->to_fragment = 0;
    for (i = 0; i < n; i++) {
        const uint8_t *p = b->buf + b->off[i];
        uint32_t len = b->len[i], sa;
        b->sa[i] = KIO_NO_SA;
        b->status[i] = 0;
        if (parse_flow(p, len, &f) != 0) {
            verdict[i] = KIO_V_MALFORMED;
            continue;
        }
        if (f.proto == 17 && (f.sport == 500 || f.dport == 500 || f.sport == 4500 || f.dport == 4500 ||
                              f.sport == c->ike_port || f.dport == c->ike_port || f.sport == c->natt_port ||
                              f.dport == c->natt_port)) {
            verdict[i] = KIO_V_BYPASS;        /* IKE is never tunnelled through its own SAs */
            continue;
        }
        if (lookup(c->shm, f.family, f.src, f.dst, f.proto, f.sport, f.dport, &res) < 0) {
            verdict[i] = KIO_V_NO_POLICY;
            continue;
        }
        if (res.action == IPSG_SPD_BYPASS) {
            verdict[i] = KIO_V_BYPASS;
            continue;
        }
        if (res.action != IPSG_SPD_PROTECT) {
            verdict[i] = KIO_V_DISCARD;
            continue;
        }
        if (res.n_sa == 0) {
            if (c->acquire_on &&
                acquire(c->shm, res.policy, f.family, f.src, f.dst, f.proto, f.sport, f.dport, c->now_ns) == 1)
                c->acquires++;
            verdict[i] = KIO_V_ACQUIRE;
            continue;
        }
        sa = res.sa[0];
        if (c->outer_mtu && sa < c->n_sa && c->ovh[sa] && c->blk[sa]) {
            uint32_t blk = c->blk[sa], need = c->ovh[sa] + (len + 2 + blk - 1) / blk * blk;
            if (need > c->outer_mtu) {
                uint32_t mtu = kio_inner_mtu(c, sa);
                if (f.df && !is_icmp_error(p, &f, len) && mtu >= 68) {
                    make_icmp(c, b, i, &f, mtu);
                    verdict[i] = KIO_V_ICMP;
                } else {
                    verdict[i] = KIO_V_TOO_BIG;
                    if (c->fragment && f.family == 4 && !f.df && mtu >= 68) {
                        b->sa[i] = sa;        /* for kio_fragment (cdefs/kio_frag.c) */
                        c->to_fragment++;
                    }
                }
                continue;
            }
        }
        b->sa[i] = sa;
        verdict[i] = KIO_V_PROTECT;
        protect++;
    }
    return protect;
}

uint32_t kio_move(const struct kio_batch *src, uint32_t n, const uint8_t *sel, uint8_t want,
                  struct kio_batch *dst, uint32_t dst_start) {
    uint32_t i, j = dst_start;
    for (i = 0; i < n && j < dst->capacity; i++) {
        uint8_t *to;
        if (sel[i] != want)
            continue;
        if (src->len[i] > room(dst))
            continue;
        to = slot_data(dst, j);
        if (src != dst || i != j)
            memmove(to, src->buf + src->off[i], src->len[i]);
        else
            to = src->buf + src->off[i];
        dst->off[j] = (uint32_t)(to - dst->buf);
        dst->len[j] = src->len[i];
        dst->sa[j] = src->sa[i];
        dst->status[j] = src->status[i];
        j++;
    }
    return j - dst_start;
}
