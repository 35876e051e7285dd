/* State and packet helpers shared by the ESP core (esp_core.c) and the AH core (ah_core.c).
 *
 * Everything here is static: each core compiles its own copy, so splitting AH off
 * left the ESP hot path's code as it was (nothing became an out-of-line call).
 * Not read by cffi.
 */
#ifndef IPSG_SA_STATE_H
#define IPSG_SA_STATE_H
#include "esp_core.h"

#include <stdlib.h>
#include <string.h>

#define NO_INDEX 0xFFFFFFFFu
#define NO_JOB 0xFFFFFFFFu
#define REPLAY_WORDS (IPSG_REPLAY_MAX / 64)
#define RAND_POOL 4096
#define ESP_HDR 8
#define UDP_HDR 8
#define NAT_T_PORT 4500

#define PROTO_HOPOPT 0
#define PROTO_IPIP 4
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_IPV6 41
#define PROTO_ROUTING 43
#define PROTO_ESP 50
#define PROTO_NONE 59
#define PROTO_DSTOPTS 60
#define PROTO_SCTP 132

#if defined(__GNUC__)
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#else
#define likely(x) (x)
#define unlikely(x) (x)
#endif

struct sa {
    uint8_t used;
    uint8_t iv_len;
    uint8_t icv_len;
    uint8_t block;
    uint8_t salt[4];
    uint16_t ip_id;          /* outer IPv4 ID counter */
    uint8_t alt;             /* crypto on the engine's alternative back end (esp_core.h) */
    uint32_t hnext;          /* next index in the SPI hash chain */
    struct ipsg_sa_params p; /* key fields zeroed once the back end has its copy */
    struct ipsg_sa_stats st;
    void *cs;                /* back-end state: expanded keys */
    uint64_t top;            /* inbound: highest sequence number accepted */
    uint64_t spec_top;       /* inbound ESN: highest number a pending job of round spec_round may accept */
    uint64_t spec_round;
    uint64_t win[REPLAY_WORDS]; /* bit (seq mod 4096) set = seq seen */
};

/* Parsed outer packet: where ESP starts and ends, and what rewriting needs. */
struct outer {
    uint32_t end;     /* end of the IP packet (total length) */
    uint32_t l4;      /* offset of the ESP or UDP header */
    uint32_t esp;     /* offset of the ESP header */
    uint32_t nh_off;  /* offset of the field naming the ESP/UDP protocol */
    uint8_t fam;
    uint8_t ecn;
    const uint8_t *dst;
};

/* What phase (c) needs of one packet of the round. */
struct pkt_ctx {
    struct sa *s;
    uint32_t index;   /* SA index (inbound) */
    uint32_t rel;     /* packet offset in its slot */
    uint32_t len;
    uint32_t job;     /* index in jobs[], or NO_JOB */
    uint8_t st;       /* verdict of phase (a) */
    uint64_t seq;
    uint32_t ct_len;
    uint32_t udp6;    /* outbound: offset of a UDP header whose IPv6 checksum is due after crypto, or 0 */
    struct outer o;
};

struct ipsg_engine {
    uint32_t capacity;
    uint32_t hbits;
    uint32_t *heads;         /* inbound ESP SAs by SPI */
    struct sa *sas;
    void *be;
    const struct ipsg_alt_ops *alt_ops; /* per-SA second back end, or NULL */
    void *alt_be;
    uint64_t round;
    uint64_t drops[IPSG_ST_MAX];
    struct ipsg_job jobs[IPSG_JOBS];
    struct pkt_ctx ctx[IPSG_JOBS];
    struct ipsg_job alt_tmp[IPSG_JOBS]; /* a mixed round's alternative jobs while they are sorted */
    uint32_t rnd_pos;
    uint8_t rnd[RAND_POOL];  /* CBC IVs, drawn in bulk */
    /* AH (ah_core.c), at the end so that the ESP fields keep the offsets (and cache lines) they had */
    uint32_t *ah_heads;      /* inbound AH SAs by SPI */
    uint8_t *ah_buf;         /* the ICV inputs of a round, zeroed copies of its packets (with the first AH SA) */
};

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void wr16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)(v >> 32));
    wr32(p + 4, (uint32_t)v);
}

/* The outer IP header of an inbound packet, ESP's and AH's alike: its family, end, ECN and destination
 * into *o, o->l4 and o->nh_off past IPv6 Hop-by-Hop, Routing and Destination Options headers; the
 * protocol found there into *proto and the IPv4 MF/offset bits into *frag (0 for IPv6).  OK or
 * MALFORMED. */
static inline __attribute__((always_inline)) uint8_t outer_ip(const uint8_t *pkt, uint32_t len, struct outer *o,
                                                              uint32_t *proto_out, uint32_t *frag_out)
{
    uint32_t frag = 0, proto;
    if (len < 1)
        return IPSG_ST_MALFORMED;
    if (likely((pkt[0] >> 4) == 4)) {
        uint32_t ihl;
        if (len < 20)
            return IPSG_ST_MALFORMED;
        ihl = (pkt[0] & 15u) * 4;
        o->end = rd16(pkt + 2);
        if (ihl < 20 || o->end < ihl || o->end > len)
            return IPSG_ST_MALFORMED;
        o->fam = 4;
        o->ecn = pkt[1] & 3;
        o->dst = pkt + 16;
        o->nh_off = 9;
        o->l4 = ihl;
        proto = pkt[9];
        frag = rd16(pkt + 6) & 0x3FFF; /* MF or offset */
    } else if ((pkt[0] >> 4) == 6) {
        if (len < 40)
            return IPSG_ST_MALFORMED;
        o->end = 40u + rd16(pkt + 4);
        if (o->end > len || (o->end == 40 && len > 40))
            return IPSG_ST_MALFORMED;
        o->fam = 6;
        o->ecn = (pkt[1] >> 4) & 3;
        o->dst = pkt + 24;
        o->nh_off = 6;
        o->l4 = 40;
        while (pkt[o->nh_off] == PROTO_HOPOPT || pkt[o->nh_off] == PROTO_ROUTING ||
               pkt[o->nh_off] == PROTO_DSTOPTS) {
            uint32_t el;
            if (o->l4 + 8 > o->end)
                return IPSG_ST_MALFORMED;
            el = (pkt[o->l4 + 1] + 1u) * 8;
            if (el > o->end - o->l4)
                return IPSG_ST_MALFORMED;
            o->nh_off = o->l4;
            o->l4 += el;
        }
        proto = pkt[o->nh_off];
    } else {
        return IPSG_ST_MALFORMED;
    }
    *proto_out = proto;
    *frag_out = frag;
    return IPSG_ST_OK;
}

static uint64_t csum_add(uint64_t sum, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)((p[i] << 8) | p[i + 1]);
    if (n & 1)
        sum += (uint32_t)p[n - 1] << 8;
    return sum;
}

static inline uint16_t csum_fold(uint64_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16);
    return (uint16_t)~sum;
}

static void ipv4_checksum(uint8_t *h, uint32_t ihl)
{
    h[10] = h[11] = 0;
    wr16(h + 10, csum_fold(csum_add(0, h, ihl)));
}

/* The common case, a 20-byte header, without the generic loop. */
static inline void ipv4_checksum20(uint8_t *h)
{
    uint64_t sum = 0;
    int i;
    h[10] = h[11] = 0;
    for (i = 0; i < 20; i += 2)
        sum += (uint32_t)((h[i] << 8) | h[i + 1]);
    wr16(h + 10, csum_fold(sum));
}

static uint32_t spi_hash(const struct ipsg_engine *e, uint32_t spi)
{
    return (uint32_t)(spi * 2654435761u) >> (32 - e->hbits);
}

static void account(struct sa *s, uint32_t bytes)
{
    const struct ipsg_sa_params *p = &s->p;
    s->st.packets++;
    s->st.bytes += bytes;
    if ((p->soft_packets && s->st.packets >= p->soft_packets) || (p->soft_bytes && s->st.bytes >= p->soft_bytes))
        s->st.flags |= IPSG_SAF_SOFT_EXPIRED;
}

static int hard_packets_reached(struct sa *s)
{
    if (s->p.hard_packets && s->st.packets >= s->p.hard_packets) {
        s->st.flags |= IPSG_SAF_HARD_EXPIRED;
        return 1;
    }
    return 0;
}

static int hard_bytes_exceeded(struct sa *s, uint32_t bytes)
{
    uint64_t hb = s->p.hard_bytes;
    if (hb && (s->st.bytes > hb || bytes > hb - s->st.bytes)) {
        s->st.flags |= IPSG_SAF_HARD_EXPIRED;
        return 1;
    }
    return 0;
}

/* Slot i of a batch: its memory, and where it starts in off[]'s terms (struct ipsg_batch). */
static inline uint8_t *batch_slot(const struct ipsg_batch *b, uint32_t i)
{
    return b->slots ? b->slots[i] : b->buf + (uint64_t)i * b->slot_size;
}

static inline uint64_t batch_base(const struct ipsg_batch *b, uint32_t i)
{
    return b->slots ? 0 : (uint64_t)i * b->slot_size;
}

/* Whether packet i's off/len lie inside slot i; gives its offset in the slot. */
static inline int slot_ok(const struct ipsg_batch *b, uint32_t i, uint32_t *rel)
{
    uint64_t base = batch_base(b, i), off = b->off[i];
    if (off < base || off - base > b->slot_size || b->len[i] > b->slot_size - (off - base))
        return 0;
    *rel = (uint32_t)(off - base);
    return 1;
}

/* Under AddressSanitizer (make asan) the room in each slot past its packet is poisoned while inbound
 * parses and decrypts: a slot is a piece of one large buffer, so a read past a packet's end would
 * land in its own slot's spare bytes and pass unseen.  Outbound writes there (trailer, ICV), so only
 * inbound does this, and the whole batch is addressable again before it returns. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
static void poison_slot_tails(const struct ipsg_batch *b)
{
    uint32_t i, rel;
    for (i = 0; i < b->n; i++)
        if (slot_ok(b, i, &rel) && rel + b->len[i] < b->slot_size)
            ASAN_POISON_MEMORY_REGION(batch_slot(b, i) + rel + b->len[i], b->slot_size - rel - b->len[i]);
}
static void unpoison_slots(const struct ipsg_batch *b)
{
    uint32_t i;
    if (b->slots == NULL) {
        ASAN_UNPOISON_MEMORY_REGION(b->buf, (uint64_t)b->n * b->slot_size);
        return;
    }
    for (i = 0; i < b->n; i++)
        ASAN_UNPOISON_MEMORY_REGION(b->slots[i], b->slot_size);
}
#else
static inline void poison_slot_tails(const struct ipsg_batch *b) { (void)b; }
static inline void unpoison_slots(const struct ipsg_batch *b) { (void)b; }
#endif

/* A batch call can proceed; otherwise every packet it can mark is INTERNAL. */
static int batch_usable(const struct ipsg_engine *e, struct ipsg_batch *b)
{
    uint32_t i;
    if (e == NULL || b == NULL || b->status == NULL)
        return 0;
    if ((b->buf == NULL && b->slots == NULL) || b->off == NULL || b->len == NULL || b->sa == NULL) {
        for (i = 0; i < b->n; i++)
            b->status[i] = IPSG_ST_INTERNAL;
        return 0;
    }
    return 1;
}

/* Addresses, upper-layer protocol and ports of a well-formed (already length-checked) IP packet. */
struct flow {
    uint8_t fam;
    uint8_t proto;
    uint8_t has_ports;
    uint16_t sport, dport;
    const uint8_t *src, *dst;
};

static void flow_of(const uint8_t *pkt, uint32_t len, struct flow *f)
{
    uint32_t l4, end;
    f->has_ports = 0;
    f->sport = f->dport = 0;
    if ((pkt[0] >> 4) == 4) {
        f->fam = 4;
        f->src = pkt + 12;
        f->dst = pkt + 16;
        f->proto = pkt[9];
        l4 = (pkt[0] & 15u) * 4;
        end = len;
        if (rd16(pkt + 6) & 0x1FFF)
            return; /* a later fragment carries no ports */
    } else {
        f->fam = 6;
        f->src = pkt + 8;
        f->dst = pkt + 24;
        f->proto = pkt[6];
        l4 = 40;
        end = len;
        while (f->proto == PROTO_HOPOPT || f->proto == PROTO_ROUTING || f->proto == PROTO_DSTOPTS) {
            uint32_t el;
            if (l4 + 8 > end)
                return;
            el = (pkt[l4 + 1] + 1u) * 8;
            if (el > end - l4)
                return;
            f->proto = pkt[l4];
            l4 += el;
        }
    }
    if ((f->proto == PROTO_TCP || f->proto == PROTO_UDP || f->proto == PROTO_SCTP) && l4 + 4 <= end) {
        f->has_ports = 1;
        f->sport = rd16(pkt + l4);
        f->dport = rd16(pkt + l4 + 2);
    }
}

static int ts_match(const struct ipsg_ts *ts, uint32_t n, const struct flow *f, const uint8_t *addr, uint16_t port)
{
    uint32_t i, alen = f->fam == 4 ? 4 : 16;
    if (n == 0)
        return 1;
    for (i = 0; i < n; i++, ts++) {
        if (ts->family != f->fam)
            continue;
        if (memcmp(addr, ts->addr_lo, alen) < 0 || memcmp(addr, ts->addr_hi, alen) > 0)
            continue;
        if (ts->proto && ts->proto != f->proto)
            continue;
        if (f->has_ports ? (port < ts->port_lo || port > ts->port_hi) : (ts->port_lo != 0 || ts->port_hi != 0xFFFF))
            continue;
        return 1;
    }
    return 0;
}

/* heads: the ESP or the AH table, so that an ESP and an AH SA may share an SPI. */
static struct sa *lookup(struct ipsg_engine *e, const uint32_t *heads, uint32_t spi, uint32_t fam, const uint8_t *dst,
                         uint32_t *index)
{
    uint32_t idx = heads[spi_hash(e, spi)], n = 0, first = NO_INDEX, match = NO_INDEX;
    while (idx != NO_INDEX) {
        struct sa *s = &e->sas[idx];
        if (s->p.spi == spi) {
            n++;
            if (first == NO_INDEX)
                first = idx;
            if (match == NO_INDEX && s->p.family == fam && memcmp(s->p.dst, dst, fam == 4 ? 4 : 16) == 0)
                match = idx;
        }
        idx = s->hnext;
    }
    idx = n == 1 ? first : match;
    *index = idx;
    return idx == NO_INDEX ? NULL : &e->sas[idx];
}

/* RFC 4303 Appendix A: the high half of a 64-bit ESN from its low half and the window top. */
static uint64_t infer_esn(const struct sa *s, uint64_t top, uint32_t seq_lo)
{
    uint32_t w = s->p.replay_window ? s->p.replay_window : 64;
    uint32_t tl = (uint32_t)top, th = (uint32_t)(top >> 32), hi;
    uint32_t bottom = tl - w + 1; /* mod 2^32 */
    if (tl >= w - 1)
        hi = seq_lo >= bottom ? th : th + 1;
    else
        hi = seq_lo >= bottom ? (th ? th - 1 : 0) : th; /* no subspace below 0 */
    return ((uint64_t)hi << 32) | seq_lo;
}

static inline int win_test(const struct sa *s, uint64_t seq)
{
    uint32_t pos = (uint32_t)seq & (IPSG_REPLAY_MAX - 1);
    return (s->win[pos >> 6] >> (pos & 63)) & 1;
}

/* Once true for a number, stays true as the window advances: (a) may test early, (c) tests again. */
static inline int replay_seen(const struct sa *s, uint64_t seq)
{
    if (!s->p.replay_window || seq > s->top)
        return 0;
    return s->top - seq >= s->p.replay_window || win_test(s, seq);
}

static void replay_accept(struct sa *s, uint64_t seq)
{
    uint32_t pos;
    if (seq > s->top) {
        if (s->p.replay_window) {
            uint64_t from = s->top + 1, n = seq - s->top;
            if (n >= IPSG_REPLAY_MAX) {
                memset(s->win, 0, sizeof(s->win));
            } else {
                while (n) { /* clear the bits the window slides over, a word at a time */
                    uint32_t p = (uint32_t)from & (IPSG_REPLAY_MAX - 1), bit = p & 63;
                    uint64_t take = 64 - bit, mask;
                    if (take > n)
                        take = n;
                    mask = take == 64 ? ~0ull : (((1ull << take) - 1) << bit);
                    s->win[p >> 6] &= ~mask;
                    from += take;
                    n -= take;
                }
            }
        }
        s->top = seq;
        s->st.seq = seq;
    }
    if (s->p.replay_window) {
        pos = (uint32_t)seq & (IPSG_REPLAY_MAX - 1);
        s->win[pos >> 6] |= 1ull << (pos & 63);
    }
}

/* RFC 6040 section 4.2 decapsulation of the ECN field into the inner header. */
static uint8_t ecn_decap(uint8_t outer, uint8_t *inner)
{
    int v4 = (inner[0] >> 4) == 4;
    uint8_t in = v4 ? (inner[1] & 3) : ((inner[1] >> 4) & 3), out = in;
    if (outer == 3) {
        if (in == 0)
            return IPSG_ST_ECN;
        out = 3;
    } else if (outer == 1 && in == 2) {
        out = 1;
    }
    if (out != in) {
        if (v4) {
            inner[1] = (uint8_t)((inner[1] & ~3u) | out);
            ipv4_checksum(inner, (inner[0] & 15u) * 4);
        } else {
            inner[1] = (uint8_t)((inner[1] & 0xCF) | (out << 4));
        }
    }
    return IPSG_ST_OK;
}

/* The tunnel-mode outer header the SA's policies give (TTL, DF, DSCP, ECN, flow label; docs/esp.md),
 * total bytes long and naming proto; tos, inner_df and inner_fl are the inner packet's. */
static inline void write_outer(struct sa *s, uint8_t *start, uint32_t total, uint8_t tos, int inner_df,
                               uint32_t inner_fl, uint32_t ver, uint8_t proto)
{
    const struct ipsg_sa_params *p = &s->p;
    uint8_t dscp = p->dscp == IPSG_DSCP_COPY ? (uint8_t)(tos >> 2) : p->dscp;
    uint8_t ecn = p->ecn == IPSG_ECN_NORMAL ? (tos & 3) : 0;
    uint8_t tc = (uint8_t)((dscp << 2) | ecn);
    if (p->family == 4) {
        int df = p->df == IPSG_DF_SET ? 1 : p->df == IPSG_DF_CLEAR ? 0 : inner_df;
        start[0] = 0x45;
        start[1] = tc;
        wr16(start + 2, total);
        wr16(start + 4, s->ip_id);
        start[6] = df ? 0x40 : 0;
        start[7] = 0;
        start[8] = p->ttl;
        start[9] = proto;
        memcpy(start + 12, p->src, 4);
        memcpy(start + 16, p->dst, 4);
        ipv4_checksum20(start);
    } else {
        uint32_t fl = (p->flowlabel == IPSG_FLOWLABEL_COPY && ver == 6) ? inner_fl : 0;
        wr32(start, (6u << 28) | ((uint32_t)tc << 20) | fl);
        wr16(start + 4, total - 40);
        start[6] = proto;
        start[7] = p->ttl;
        memcpy(start + 8, p->src, 16);
        memcpy(start + 24, p->dst, 16);
    }
}

/* Tunnel mode inbound: the inner packet of next header nh at pt (pay_len bytes available) is
 * well formed; its length in *res_len, the outer ECN folded in (RFC 6040). */
static inline uint8_t tunnel_inner(uint8_t nh, uint8_t *pt, uint32_t pay_len, uint8_t outer_ecn, uint32_t *res_len)
{
    if ((nh != PROTO_IPIP && nh != PROTO_IPV6) || pay_len < 1)
        return IPSG_ST_MALFORMED;
    if (nh == PROTO_IPIP) {
        uint32_t ihl;
        if ((pt[0] >> 4) != 4 || pay_len < 20)
            return IPSG_ST_MALFORMED;
        ihl = (pt[0] & 15u) * 4;
        *res_len = rd16(pt + 2);
        if (ihl < 20 || *res_len < ihl || *res_len > pay_len)
            return IPSG_ST_MALFORMED;
    } else {
        if ((pt[0] >> 4) != 6 || pay_len < 40)
            return IPSG_ST_MALFORMED;
        *res_len = 40u + rd16(pt + 4);
        if (*res_len > pay_len || (*res_len == 40 && pay_len > 40))
            return IPSG_ST_MALFORMED;
    }
    return ecn_decap(outer_ecn, pt);
}

#endif
