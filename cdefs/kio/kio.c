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

#include "ip/icmp_too_big.h"
#include "ip/ip_flow.h"
#include "kio.h"
#include "kio_util.h"
#include "shm/shm.h"

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
    for (i = 0; i < want; i++)
        msg_from(&m[i], &iov[i], slot_data(b, start + i), room(b) - hl, &from[i], sizeof(from[i]),
                 v6 ? ctl[i].buf : NULL, sizeof(ctl[i].buf));
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
    for (i = 0; i < want; i++)
        msg_from(&m[i], &iov[i], slot_data(b, start + i), room(b), NULL, 0, NULL, 0);
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
    for (i = 0; i < want; i++)
        msg_from(&m[i], &iov[i], slot_data(b, start + i), room(b) - 40, &from[i], sizeof(from[i]), ctl[i].buf,
                 sizeof(ctl[i].buf));
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

/* Replace packet i by an ICMP "fragmentation needed" (IPv4: the header and 8 bytes quoted, RFC 792)
 * or "packet too big" (IPv6: as much as fits). */
static void make_icmp(const struct kio_cls *c, struct kio_batch *b, uint32_t i, const struct ip_flow *f, uint32_t mtu) {
    const uint8_t *p = b->buf + b->off[i];
    uint32_t len = b->len[i], quote = f->family == 4 && f->l4 + 8 < len ? f->l4 + 8 : len;
    uint8_t *out = slot_data(b, i);

    b->len[i] = icmp_too_big(out, p, quote, f->family == 4 ? c->icmp_src4 : c->icmp_src6, mtu, 0);
    b->off[i] = (uint32_t)(out - b->buf);
}

uint32_t kio_classify(struct kio_cls *c, struct kio_batch *b, uint32_t n, uint8_t *verdict) {
    spd_lookup_fn lookup = (spd_lookup_fn)c->spd_lookup;
    acquire_fn acquire = (acquire_fn)c->acquire;
    struct kio_spd_result res;
    struct ip_flow f;
    uint32_t i, protect = 0;

    c->to_fragment = 0;
    for (i = 0; i < n; i++) {
        const uint8_t *p = b->buf + b->off[i];
        uint32_t len = b->len[i], sa;
        b->sa[i] = KIO_NO_SA;
        b->status[i] = 0;
        if (ip_parse_flow(p, len, &f) != 0) {
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
                if (f.df && !icmp_is_error(p, f.family, f.proto, f.l4, len) && mtu >= 68) {
                    make_icmp(c, b, i, &f, mtu);
                    verdict[i] = KIO_V_ICMP;
                } else {
                    verdict[i] = KIO_V_TOO_BIG;
                    if (c->fragment && f.family == 4 && !f.df && mtu >= 68) {
                        b->sa[i] = sa;        /* for kio_fragment (cdefs/kio/kio_frag.c) */
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
