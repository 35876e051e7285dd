/* AF_PACKET receive and transmit for the clear side; see kio_packet.h.
 *
 * Packets are never copied here: receive reads the Ethernet header into a scratch and the rest into the
 * TUN segmenter's buffer; transmit points iovecs at the slots (and, for a coalesced TCP run, at the
 * payloads of its members behind the first packet's rewritten headers).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <string.h>
#include <sys/socket.h>

#include "kio_packet.h"
#include "kio_util.h"

#define RUN_MAX_ 64          /* segments kio_coalesce puts in one run (RUN_MAX of kio_gso.c) */
#define ETH_HLEN_ 14
#define VNET_F_NEEDS_CSUM_ 1

/* One frame into rx->buf as vnet header + IP packet; 1 = read, 0 = nothing waiting, -errno. */
static int pkt_read_one(int fd, struct kio_tun_rx *rx) {
    uint8_t eth[ETH_HLEN_];
    struct iovec iov[3] = {{rx->buf, KIO_VNET_HDR_LEN}, {eth, ETH_HLEN_},
                           {rx->buf + KIO_VNET_HDR_LEN, KIO_GSO_MAX}};
    struct msghdr mh;
    uint8_t *vh = rx->buf, *p = rx->buf + KIO_VNET_HDR_LEN;
    uint32_t plen, tot;
    ssize_t r;

    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = iov;
    mh.msg_iovlen = 3;
    do
        r = recvmsg(fd, &mh, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EAGAIN ? 0 : -errno;
    if (r <= KIO_VNET_HDR_LEN + ETH_HLEN_ || (mh.msg_flags & MSG_TRUNC)) {
        rx->bad++;
        return 2;
    }
    plen = (uint32_t)r - KIO_VNET_HDR_LEN - ETH_HLEN_;
    if (vh[0] & VNET_F_NEEDS_CSUM_) {
        uint16_t cs = (uint16_t)(vh[6] | vh[7] << 8);      /* little-endian, from the Ethernet header */
        if (cs < ETH_HLEN_) {
            rx->bad++;
            return 2;
        }
        cs -= ETH_HLEN_;
        vh[6] = (uint8_t)cs;
        vh[7] = (uint8_t)(cs >> 8);
    }
    /* frames under 60 bytes arrive padded; the IP length says where the packet ends */
    if (plen >= 20 && p[0] >> 4 == 4) {
        tot = rd16(p + 2);
        if (tot >= 20 && tot < plen)
            plen = tot;
    } else if (plen >= 40 && p[0] >> 4 == 6) {
        tot = 40u + rd16(p + 4);
        if (rd16(p + 4) && tot < plen)
            plen = tot;
    }
    rx->len = KIO_VNET_HDR_LEN + plen;
    rx->next = 0;
    rx->reads++;
    if ((vh[1] & 0x7f) != 0)
        rx->gso_reads++;
    return 1;
}

int kio_pkt_read(int fd, struct kio_batch *b, uint32_t start, uint32_t max, struct kio_tun_rx *rx) {
    uint32_t end = b->capacity - start < max ? b->capacity : start + max, i = start;

    if (start >= end)
        return 0;
    i += kio_vnet_emit(rx, b, i, end - i);
    while (i < end && rx->len == 0) {
        int r = pkt_read_one(fd, rx);
        if (r == 0)
            break;
        if (r < 0) {
            if (i > start)
                break;
            return r;
        }
        if (r == 1)
            i += kio_vnet_emit(rx, b, i, end - i);
    }
    return (int)(i - start);
}

static uint32_t neigh_hash(const uint8_t *key) {
    uint32_t h = 2166136261u, i;            /* FNV-1a: a handful of entries, cheap and good enough */
    for (i = 0; i < KIO_NEIGH_KEY; i++)
        h = (h ^ key[i]) * 16777619u;
    return h;
}

static void neigh_key(uint8_t *key, uint8_t family, const uint8_t *addr) {
    memset(key, 0, KIO_NEIGH_KEY);
    key[0] = family;
    memcpy(key + 1, addr, family == 4 ? 4 : 16);
}

/* Index of key's entry, or of the empty entry where it would go (-1: full and absent). */
static int64_t neigh_find(const struct kio_neigh *t, const uint8_t *key) {
    uint32_t mask = t->cap - 1, i = neigh_hash(key) & mask, k;
    for (k = 0; k < t->cap; k++, i = (i + 1) & mask) {
        const uint8_t *e = t->key + (uint64_t)i * KIO_NEIGH_KEY;
        if (e[0] == 0 || memcmp(e, key, KIO_NEIGH_KEY) == 0)
            return i;
    }
    return -1;
}

int kio_neigh_put(struct kio_neigh *t, uint8_t family, const uint8_t *addr, const uint8_t *mac) {
    uint8_t key[KIO_NEIGH_KEY];
    int64_t i;
    neigh_key(key, family, addr);
    i = neigh_find(t, key);
    if (i < 0)
        return -1;
    if (t->key[i * KIO_NEIGH_KEY] == 0) {
        if ((t->n + 1) * 4 > t->cap * 3)
            return -1;
        memcpy(t->key + i * KIO_NEIGH_KEY, key, KIO_NEIGH_KEY);
        t->n++;
    }
    memcpy(t->mac + i * 6, mac, 6);
    return 0;
}

void kio_neigh_clear(struct kio_neigh *t) {
    memset(t->key, 0, (size_t)t->cap * KIO_NEIGH_KEY);
    memset(t->hit, 0, t->cap);
    t->n = 0;
}

int kio_neigh_get(const struct kio_neigh *t, uint8_t family, const uint8_t *addr, uint8_t *mac) {
    uint8_t key[KIO_NEIGH_KEY];
    int64_t i;
    neigh_key(key, family, addr);
    i = neigh_find(t, key);
    if (i < 0 || t->key[i * KIO_NEIGH_KEY] == 0)
        return 0;
    memcpy(mac, t->mac + i * 6, 6);
    return 1;
}

static void note_miss(struct kio_pkt_tx *tx, const uint8_t *key) {
    uint32_t j;
    for (j = 0; j < tx->n_miss; j++)
        if (memcmp(tx->miss_addr + (uint64_t)j * KIO_NEIGH_KEY, key, KIO_NEIGH_KEY) == 0)
            return;
    if (tx->n_miss < tx->miss_max)
        memcpy(tx->miss_addr + (uint64_t)tx->n_miss++ * KIO_NEIGH_KEY, key, KIO_NEIGH_KEY);
}

#define MSG_MAX 64           /* messages per sendmmsg */
#define IOV_POOL 1024        /* iovecs per sendmmsg (a coalesced run takes one per segment + 3) */

struct pkt_out {
    struct mmsghdr m[MSG_MAX];
    struct sockaddr_ll ll[MSG_MAX];
    uint8_t vh[MSG_MAX][KIO_VNET_HDR_LEN];
    uint8_t eth[MSG_MAX][ETH_HLEN_];
    uint32_t segs[MSG_MAX];
    struct iovec iov[IOV_POOL];
    uint32_t nm, niov;
};

static uint32_t pkt_flush(int fd, struct pkt_out *o, struct kio_pkt_tx *tx) {
    uint32_t done = 0, sent = 0, k;
    while (done < o->nm) {
        int r = sendmmsg(fd, o->m + done, o->nm - done, 0);
        tx->calls++;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            tx->failed += o->segs[done];       /* the first remaining one was refused: skip it */
            done++;
            continue;
        }
        for (k = 0; k < (uint32_t)r; k++)
            sent += o->segs[done + k];
        tx->frames += (uint32_t)r;
        done += (uint32_t)r;
    }
    o->nm = o->niov = 0;
    return sent;
}

/* Start a message to mac for a packet of family fam; returns its index. */
static uint32_t pkt_msg(struct pkt_out *o, int ifindex, uint8_t fam, const uint8_t *mac) {
    uint32_t k = o->nm++;
    struct sockaddr_ll *ll = &o->ll[k];
    memset(ll, 0, sizeof(*ll));
    ll->sll_family = AF_PACKET;
    ll->sll_protocol = htons(fam == 4 ? ETH_P_IP : ETH_P_IPV6);
    ll->sll_ifindex = ifindex;
    ll->sll_halen = 6;
    memcpy(ll->sll_addr, mac, 6);
    memset(&o->m[k], 0, sizeof(o->m[k]));
    o->m[k].msg_hdr.msg_name = ll;
    o->m[k].msg_hdr.msg_namelen = sizeof(*ll);
    o->m[k].msg_hdr.msg_iov = &o->iov[o->niov];
    return k;
}

static void pkt_iov(struct pkt_out *o, uint32_t k, void *base, size_t len) {
    o->iov[o->niov].iov_base = base;
    o->iov[o->niov].iov_len = len;
    o->niov++;
    o->m[k].msg_hdr.msg_iovlen++;
}

int kio_pkt_send(int fd, int ifindex, struct kio_batch *b, uint32_t n, const uint8_t *sel, uint8_t want,
                 struct kio_neigh *t, uint32_t mtu, uint8_t *miss, struct kio_pkt_tx *tx, int vnet,
                 const uint8_t *src_mac) {
    static __thread struct pkt_out o;     /* ~100 KiB: off the stack, one per thread */
    uint8_t key[KIO_NEIGH_KEY];
    uint32_t i, sent = 0;

    tx->n_miss = 0;
    o.nm = o.niov = 0;
    for (i = 0; i < n; i++)
        miss[i] = 0;
    for (i = 0; i < n; i++) {
        uint8_t *p = b->buf + b->off[i];
        uint32_t len = b->len[i], k, cnt = 1;
        uint8_t fam;
        int64_t e;
        if (sel[i] != want)
            continue;
        fam = len ? p[0] >> 4 : 0;
        if ((fam == 4 && len >= 20) || (fam == 6 && len >= 40)) {
            neigh_key(key, fam, p + (fam == 4 ? 16 : 24));
        } else {
            tx->failed++;
            continue;
        }
        e = neigh_find(t, key);
        if (e < 0 || t->key[e * KIO_NEIGH_KEY] == 0) {
            miss[i] = 1;
            tx->no_neigh++;
            note_miss(tx, key);
            continue;
        }
        t->hit[e] = 1;
        if (o.nm == MSG_MAX || o.niov + RUN_MAX_ + 3 > IOV_POOL)
            sent += pkt_flush(fd, &o, tx);
        if (!vnet) {
            if (len > mtu) {
                tx->too_big++;
                continue;
            }
            k = pkt_msg(&o, ifindex, fam, t->mac + e * 6);
            pkt_iov(&o, k, p, len);
            o.segs[k] = 1;
            continue;
        }
        /* vnet: a virtio_net_hdr, the Ethernet header, then the packet (or a TCP run's headers + payloads) */
        {
            uint8_t *vh, *eth;
            uint32_t hl, first, j, m;
            cnt = kio_coalesce(b, n, sel, want, i, o.vh[o.nm]);
            if (cnt == 1 && len > mtu) {
                tx->too_big++;
                continue;
            }
            k = pkt_msg(&o, ifindex, fam, t->mac + e * 6);
            vh = o.vh[k];
            eth = o.eth[k];
            memcpy(eth, t->mac + e * 6, 6);
            memcpy(eth + 6, src_mac, 6);
            wr16(eth + 12, fam == 4 ? ETH_P_IP : ETH_P_IPV6);
            pkt_iov(&o, k, vh, KIO_VNET_HDR_LEN);
            pkt_iov(&o, k, eth, ETH_HLEN_);
            o.segs[k] = cnt;
            if (cnt == 1) {
                pkt_iov(&o, k, p, len);
                continue;
            }
            /* offsets in the vnet header count from the frame's start, which now has the Ethernet header */
            hl = (uint32_t)(vh[2] | vh[3] << 8);
            first = hl + (uint32_t)(vh[4] | vh[5] << 8);
            vh[2] = (uint8_t)(hl + ETH_HLEN_);
            vh[3] = (uint8_t)((hl + ETH_HLEN_) >> 8);
            m = (uint32_t)(vh[6] | vh[7] << 8) + ETH_HLEN_;
            vh[6] = (uint8_t)m;
            vh[7] = (uint8_t)(m >> 8);
            pkt_iov(&o, k, p, first);
            /* the run is the next cnt - 1 selected packets (kio_coalesce stops at the first that does not fit) */
            for (j = i + 1, m = 1; j < n && m < cnt; j++) {
                const uint8_t *q;
                uint32_t qtot;
                if (sel[j] != want)
                    continue;
                q = b->buf + b->off[j];
                qtot = q[0] >> 4 == 4 ? rd16(q + 2) : 40u + rd16(q + 4);
                pkt_iov(&o, k, (uint8_t *)q + hl, qtot - hl);
                m++;
            }
            i = j - 1;
        }
    }
    if (o.nm)
        sent += pkt_flush(fd, &o, tx);
    tx->packets += sent;
    return (int)sent;
}
