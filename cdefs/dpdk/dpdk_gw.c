/* DPDK gateway worker: one worker polling a clear and a protected port (declarations and the
 * packet walk in dpdk_loop.h).
 *
 * Per-packet work is all here: frame checks, the SPD lookup and ACQUIRE through pointers into the
 * shared-memory region's C API (fastpath._shm, the same functions kio_classify calls), outbound
 * sequence reservation, the ESP core, Ethernet rewrite from a neighbour table, tx.  Python only runs
 * between slices (ipsg_dpdk_gw_run returns): it applies SA changes, fills the neighbour table and
 * publishes counters.
 *
 * Mbufs and the ESP core's slot model: as dpdk_loop.c, each packet's IP part is copied into a batch
 * slot and the result back into its mbuf (dpdk_slots.h; docs/dpdk.md has the cost).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include "dpdk_loop.h"
#include "dpdk_slots.h"
#include "ip/icmp_too_big.h"
#include "ip/ip_bytes.h"
#include "ip/ip_flow.h"
#include "shm/shm.h"

#define SEQ_CHUNK (1ULL << 16)  /* as fastpath.shm.SEQ_CHUNK: reserve this far ahead of use */
#define NAT_T_PORT 4500          /* the ESP core's ESP-in-UDP port */
#define CLEAR 0
#define PROT 1
#define MAXB (IPSG_DPDK_LOOP_MAX_BURST > IPSG_GW_HOLD_MAX ? IPSG_DPDK_LOOP_MAX_BURST : IPSG_GW_HOLD_MAX)

typedef int (*spd_lookup_fn)(struct ipsg_shm *, uint8_t, const uint8_t *, const uint8_t *, uint8_t, uint16_t,
                             uint16_t, struct ipsg_spd_result *);
typedef int (*acquire_fn)(struct ipsg_shm *, uint32_t, uint8_t, const uint8_t *, const uint8_t *, uint8_t, uint16_t,
                          uint16_t, uint64_t);
typedef void (*reserve_fn)(struct ipsg_shm *, uint32_t, uint64_t);
typedef int64_t (*spi_lookup_fn)(struct ipsg_shm *, uint32_t, uint8_t, const uint8_t *);
typedef uint64_t (*now_fn)(void);

struct neigh {
    uint8_t used, family, mac[6];
    uint8_t addr[16];
};

struct ipsg_dpdk_gw {
    struct ipsg_dpdk_gw_conf c;
    struct ipsg_shm *shm;
    spd_lookup_fn lookup;
    acquire_fn acquire;
    reserve_fn reserve;
    spi_lookup_fn spi_lookup;
    now_fn now;
    volatile int stop;
    int need_sync;
    struct ipsg_dpdk_gw_stats st;
    struct ipsg_batch b;
    uint8_t *buf;
    uint64_t *resv;         /* per slot: the reservation we last wrote */
    uint16_t *ovh;          /* per slot: ESP overhead (MTU check); 0 = unknown */
    uint8_t *blk;
    uint8_t *dead;          /* per slot: its SA hard-expired and left the engine; cleared by set_sa */
    struct neigh *neigh;
    uint32_t n_miss, n_local;
    uint8_t miss_fam[IPSG_GW_MISS_MAX], miss_addr[IPSG_GW_MISS_MAX][16];
    uint8_t local_fam[IPSG_GW_LOCAL_MAX], local_addr[IPSG_GW_LOCAL_MAX][16];
    uint32_t n_hold, n_late, n_nh;
    struct rte_mbuf *nh[IPSG_GW_HOLD_MAX];       /* waiting for a next-hop MAC */
    uint64_t nh_ts[IPSG_GW_HOLD_MAX];
    uint8_t nh_side[IPSG_GW_HOLD_MAX], nh_outcome[IPSG_GW_HOLD_MAX];
    struct rte_mbuf *hold[IPSG_GW_HOLD_MAX], *late[IPSG_GW_HOLD_MAX];
    uint64_t hold_ts[IPSG_GW_HOLD_MAX];
    uint32_t off[MAXB], len[MAXB], sa[MAXB];
    uint8_t status[MAXB];
    uint8_t *slot[MAXB];    /* the batch's slots: mbuf buffers, or copies in buf (dpdk_slots.h) */
    struct rte_mbuf *rx[MAXB], *inb[MAXB];
    uint32_t ntx[2];
    struct rte_mbuf *tx[2][2 * MAXB];
};

int ipsg_dpdk_port_mac(uint16_t port, uint8_t *out)
{
    struct rte_ether_addr a;
    if (rte_eth_macaddr_get(port, &a) != 0)
        return -1;
    memcpy(out, a.addr_bytes, 6);
    return 0;
}

struct ipsg_dpdk_gw *ipsg_dpdk_gw_new(const struct ipsg_dpdk_gw_conf *c, char *err, size_t errlen)
{
    struct ipsg_dpdk_gw *g;
    if (c->e == NULL || c->shm == NULL || c->spd_lookup == NULL || c->acquire == NULL || c->seq_reserve == NULL ||
        c->spi_lookup == NULL || c->now_ns == NULL || c->burst == 0 || c->burst > IPSG_DPDK_LOOP_MAX_BURST ||
        c->n_sa == 0) {
        snprintf(err, errlen, "bad gateway worker arguments (burst 1..%d, engine, region and its functions)",
                 IPSG_DPDK_LOOP_MAX_BURST);
        return NULL;
    }
    g = rte_zmalloc("ipsg_gw", sizeof(*g), RTE_CACHE_LINE_SIZE);
    if (g) {
        g->buf = rte_zmalloc("ipsg_gw_buf", (size_t)MAXB * SLOT_SIZE, RTE_CACHE_LINE_SIZE);
        g->resv = rte_zmalloc("ipsg_gw_resv", (size_t)c->n_sa * sizeof(uint64_t), 0);
        g->ovh = rte_zmalloc("ipsg_gw_ovh", (size_t)c->n_sa * sizeof(uint16_t), 0);
        g->blk = rte_zmalloc("ipsg_gw_blk", c->n_sa, 0);
        g->dead = rte_zmalloc("ipsg_gw_dead", c->n_sa, 0);
        g->neigh = rte_zmalloc("ipsg_gw_neigh", IPSG_GW_NEIGH_SIZE * sizeof(struct neigh), RTE_CACHE_LINE_SIZE);
    }
    if (g == NULL || !g->buf || !g->resv || !g->ovh || !g->blk || !g->dead || !g->neigh) {
        if (g) {
            rte_free(g->buf); rte_free(g->resv); rte_free(g->ovh); rte_free(g->blk); rte_free(g->dead);
            rte_free(g->neigh);
        }
        rte_free(g);
        snprintf(err, errlen, "out of DPDK memory for the gateway worker");
        return NULL;
    }
    g->c = *c;
    g->shm = c->shm;
    g->lookup = (spd_lookup_fn)c->spd_lookup;
    g->acquire = (acquire_fn)c->acquire;
    g->reserve = (reserve_fn)c->seq_reserve;
    g->spi_lookup = (spi_lookup_fn)c->spi_lookup;
    g->now = (now_fn)c->now_ns;
    slots_bind(&g->b, g->buf, g->off, g->len, g->sa, g->status);
    g->b.slots = g->slot;         /* zero copy: the core works in the mbufs */
    g->b.slot_size = SLOT_MBUF_SIZE;
    g->st.hz = rte_get_tsc_hz();
    return g;
}

void ipsg_dpdk_gw_free(struct ipsg_dpdk_gw *g)
{
    uint32_t i;
    if (g == NULL)
        return;
    for (i = 0; i < g->n_hold; i++)
        rte_pktmbuf_free(g->hold[i]);
    for (i = 0; i < g->n_late; i++)
        rte_pktmbuf_free(g->late[i]);
    for (i = 0; i < g->n_nh; i++)
        rte_pktmbuf_free(g->nh[i]);
    memset(g->buf, 0, (size_t)MAXB * SLOT_SIZE);   /* plaintext was here */
    rte_free(g->buf); rte_free(g->resv); rte_free(g->ovh); rte_free(g->blk); rte_free(g->dead);
    rte_free(g->neigh);
    rte_free(g);
}

void ipsg_dpdk_gw_stop(struct ipsg_dpdk_gw *g) { g->stop = 1; }
void ipsg_dpdk_gw_get_stats(struct ipsg_dpdk_gw *g, struct ipsg_dpdk_gw_stats *out) { *out = g->st; }

void ipsg_dpdk_gw_set_sa(struct ipsg_dpdk_gw *g, uint32_t slot, uint16_t ovh, uint8_t blk)
{
    if (slot >= g->c.n_sa)
        return;
    g->ovh[slot] = ovh;
    g->blk[slot] = blk;
    g->resv[slot] = 0;    /* a new SA in the slot: its reservation starts over in the region too */
    g->dead[slot] = 0;
}

void ipsg_dpdk_gw_sa_dead(struct ipsg_dpdk_gw *g, uint32_t slot)
{
    if (slot < g->c.n_sa)
        g->dead[slot] = 1;
}

int ipsg_dpdk_gw_local_add(struct ipsg_dpdk_gw *g, uint8_t family, const uint8_t *addr)
{
    if (g->n_local >= IPSG_GW_LOCAL_MAX || (family != 4 && family != 6))
        return -1;
    g->local_fam[g->n_local] = family;
    memset(g->local_addr[g->n_local], 0, 16);
    memcpy(g->local_addr[g->n_local], addr, family == 4 ? 4 : 16);
    g->n_local++;
    return 0;
}

static inline int is_local(const struct ipsg_dpdk_gw *g, uint8_t family, const uint8_t *a)
{
    uint32_t i;
    for (i = 0; i < g->n_local; i++)
        if (g->local_fam[i] == family && memcmp(g->local_addr[i], a, family == 4 ? 4 : 16) == 0)
            return 1;
    return 0;
}

/* -- neighbours ------------------------------------------------------------------------------ */

static inline uint32_t neigh_hash(uint8_t family, const uint8_t *a)
{
    uint32_t h = 2166136261u ^ family, i, n = family == 4 ? 4 : 16;
    for (i = 0; i < n; i++)
        h = (h ^ a[i]) * 16777619u;
    return h;
}

static inline struct neigh *neigh_slot(struct ipsg_dpdk_gw *g, uint8_t family, const uint8_t *a, int insert)
{
    uint32_t h = neigh_hash(family, a), i, n = family == 4 ? 4 : 16;
    for (i = 0; i < 16; i++) {
        struct neigh *e = &g->neigh[(h + i) & (IPSG_GW_NEIGH_SIZE - 1)];
        if (!e->used)
            return insert ? e : NULL;
        if (e->family == family && memcmp(e->addr, a, n) == 0)
            return e;
    }
    return NULL;
}

int ipsg_dpdk_gw_neigh_set(struct ipsg_dpdk_gw *g, uint8_t family, const uint8_t *addr, const uint8_t *mac)
{
    struct neigh *e;
    if (family != 4 && family != 6)
        return -1;
    e = neigh_slot(g, family, addr, 1);
    if (e == NULL)
        return -1;
    memset(e->addr, 0, 16);
    memcpy(e->addr, addr, family == 4 ? 4 : 16);
    memcpy(e->mac, mac, 6);
    e->family = family;
    e->used = 1;
    return 0;
}

void ipsg_dpdk_gw_neigh_clear(struct ipsg_dpdk_gw *g)
{
    memset(g->neigh, 0, IPSG_GW_NEIGH_SIZE * sizeof(struct neigh));
}

uint32_t ipsg_dpdk_gw_misses(struct ipsg_dpdk_gw *g, uint8_t *family, uint8_t *addr, uint32_t max)
{
    uint32_t i, n = g->n_miss < max ? g->n_miss : max;
    for (i = 0; i < n; i++) {
        family[i] = g->miss_fam[i];
        memcpy(addr + 16 * i, g->miss_addr[i], 16);
    }
    g->n_miss = 0;
    return n;
}

static void miss(struct ipsg_dpdk_gw *g, uint8_t family, const uint8_t *a)
{
    uint32_t i, n = family == 4 ? 4 : 16;
    for (i = 0; i < g->n_miss; i++)
        if (g->miss_fam[i] == family && memcmp(g->miss_addr[i], a, n) == 0)
            return;
    if (g->n_miss < IPSG_GW_MISS_MAX) {
        g->miss_fam[g->n_miss] = family;
        memset(g->miss_addr[g->n_miss], 0, 16);
        memcpy(g->miss_addr[g->n_miss], a, n);
        g->n_miss++;
    }
}

/* -- tx -------------------------------------------------------------------------------------- */

/* Frame m (IP at offset 14) out of side: Ethernet header from the neighbour table; counted as
 * outcome when queued. */
static void emit(struct ipsg_dpdk_gw *g, int side, struct rte_mbuf *m, int outcome)
{
    uint8_t *p = rte_pktmbuf_mtod(m, uint8_t *), *ip = p + ETH_HLEN;
    uint8_t fam = ip[0] >> 4;
    const uint8_t *dst = fam == 4 ? ip + 16 : ip + 24;
    struct neigh *e = neigh_slot(g, fam, dst, 0);
    if (e == NULL) {
        /* Python resolves it between slices; the packet waits meanwhile (as the kernel would hold it
         * during ARP), up to IPSG_GW_HOLD_MAX of them, and goes out on the retry after the answer. */
        miss(g, fam, dst);
        if (g->n_nh < IPSG_GW_HOLD_MAX) {
            g->nh_ts[g->n_nh] = g->now();
            g->nh_side[g->n_nh] = (uint8_t)side;
            g->nh_outcome[g->n_nh] = (uint8_t)outcome;
            g->nh[g->n_nh++] = m;
        } else {
            g->st.c[IPSG_GW_C_NO_NEIGH]++;
            rte_pktmbuf_free(m);
        }
        return;
    }
    memcpy(p, e->mac, 6);
    memcpy(p + 6, side == CLEAR ? g->c.clear_mac : g->c.prot_mac, 6);
    p[12] = fam == 6 ? 0x86 : 0x08;
    p[13] = fam == 6 ? 0xDD : 0x00;
    g->st.c[outcome]++;
    g->tx[side][g->ntx[side]++] = m;
}

static void flush(struct ipsg_dpdk_gw *g)
{
    int side;
    for (side = 0; side < 2; side++) {
        uint16_t n = (uint16_t)g->ntx[side], sent;
        if (n == 0)
            continue;
        sent = rte_eth_tx_burst(side == CLEAR ? g->c.clear_port : g->c.prot_port, 0, g->tx[side], n);
        if (side == CLEAR)
            g->st.tx_clear += sent;
        else
            g->st.tx_prot += sent;
        if (sent < n) {
            g->st.c[IPSG_GW_C_TX_FULL] += n - sent;
            rte_pktmbuf_free_bulk(&g->tx[side][sent], n - sent);
        }
        g->ntx[side] = 0;
    }
}

static inline void drop(struct ipsg_dpdk_gw *g, struct rte_mbuf *m, int outcome)
{
    g->st.c[outcome]++;
    rte_pktmbuf_free(m);
}

/* A packet ESP refused (st, an IPSG_ST_* verdict) or would have to. */
static inline void esp_drop(struct ipsg_dpdk_gw *g, struct rte_mbuf *m, uint8_t st)
{
    g->st.drops[st & 15]++;
    drop(g, m, IPSG_GW_C_ESP_DROP);
}

/* Packet i of the ESP batch, in mbuf m, with status st: its result out of side (counted as
 * outcome), or a counted drop. */
static void esp_done(struct ipsg_dpdk_gw *g, uint32_t i, struct rte_mbuf *m, uint8_t st, int side, int outcome)
{
    if (st != IPSG_ST_OK) {
        esp_drop(g, m, st);
        return;
    }
    slot_store(&g->b, i, m);
    emit(g, side, m, outcome);
}

/* -- parsing --------------------------------------------------------------------------------- */

/* Ethernet checks shared by both ports: single segment, for our MAC, IPv4/IPv6.  0 = go on. */
static inline int frame_ok(struct rte_mbuf *m, const uint8_t *mac)
{
    const uint8_t *p = rte_pktmbuf_mtod(m, const uint8_t *);
    uint16_t type;
    if (m->nb_segs != 1 || m->data_len <= ETH_HLEN + 20)
        return 0;
    /* af_packet ports see every frame on the link, also those for other hosts and broadcasts:
     * only unicast to this port's MAC is ours; the rest is the kernel's (ARP, ND) or nobody's. */
    if (memcmp(p, mac, 6) != 0)
        return 0;
    type = rd16(p + 12);
    return type == 0x0800 || type == 0x86DD;
}

/* Frame m as it comes in: Ethernet checked (mac: the port's MAC, or NULL for a frame checked before,
 * held and now tried again), its IP packet parsed into f and the frame trimmed to it (Ethernet
 * padding is not part of the packet).  Its IP header, or NULL when m was dropped (counted). */
static inline uint8_t *rx_frame(struct ipsg_dpdk_gw *g, struct rte_mbuf *m, const uint8_t *mac, struct ip_flow *f)
{
    uint8_t *ip;
    if (mac && !frame_ok(m, mac)) {
        drop(g, m, IPSG_GW_C_KERNEL);
        return NULL;
    }
    ip = rte_pktmbuf_mtod(m, uint8_t *) + ETH_HLEN;
    if (ip_parse_flow(ip, (uint32_t)m->data_len - ETH_HLEN, f) != 0) {
        drop(g, m, IPSG_GW_C_MALFORMED);
        return NULL;
    }
    frame_trim(m, f->iplen);
    return ip;
}

/* -- ICMP errors for packets too big for the tunnel ------------------------------------------- */

/* Rewrite m in place into ICMP "fragmentation needed" / "packet too big" (mtu) for its sender.
 * IPv4 quotes as much as keeps the error within 576 bytes and sends it with precedence 6
 * (RFC 1812 4.3.2.3, 4.3.2.5). */
static void make_icmp(struct ipsg_dpdk_gw *g, struct rte_mbuf *m, const struct ip_flow *f, uint32_t mtu)
{
    uint8_t *ip = rte_pktmbuf_mtod(m, uint8_t *) + ETH_HLEN;
    uint32_t quote = f->family == 4 && f->iplen > 548 ? 548 : f->iplen;
    frame_trim(m, icmp_too_big(ip, ip, quote, f->family == 4 ? g->c.icmp_src4 : g->c.icmp_src6, mtu, 0xC0));
}

/* -- outbound -------------------------------------------------------------------------------- */

/* The region's sequence reservation must cover every number the engine is about to use (a
 * restarted fastpath resumes above it): reserve SEQ_CHUNK ahead, as the kernel fastpath does. */
static void reserve_one(struct ipsg_dpdk_gw *g, uint32_t sa, uint32_t n)
{
    struct ipsg_sa_stats st;
    uint64_t need;
    if (sa >= g->c.n_sa || ipsg_sa_stats(g->c.e, sa, &st) != 0)
        return;   /* not in the engine: ESP says NO_SA and nothing leaves */
    need = st.seq + n;
    if (need > g->resv[sa]) {
        g->resv[sa] = need + SEQ_CHUNK;
        g->reserve(g->shm, sa, g->resv[sa]);
    }
}

static void reserve_batch(struct ipsg_dpdk_gw *g, uint32_t k)
{
    uint32_t s[8], cnt[8], ns = 0, i, j;
    for (i = 0; i < k; i++) {
        for (j = 0; j < ns && s[j] != g->sa[i]; j++)
            ;
        if (j < ns) {
            cnt[j]++;
        } else if (ns < 8) {
            s[ns] = g->sa[i];
            cnt[ns++] = 1;
        } else {
            reserve_one(g, g->sa[i], k);   /* many SAs in one burst: reserve generously */
        }
    }
    for (j = 0; j < ns; j++)
        reserve_one(g, s[j], cnt[j]);
}

static void hold(struct ipsg_dpdk_gw *g, struct rte_mbuf *m, uint64_t ts)
{
    if (g->n_hold >= IPSG_GW_HOLD_MAX) {
        drop(g, m, IPSG_GW_C_HOLD_DROPPED);
        return;
    }
    g->hold_ts[g->n_hold] = ts;
    g->hold[g->n_hold++] = m;
    g->st.held++;
}

/* Clear-side packets: classify, protect / bypass / drop / hold.  ts != NULL: held packets being
 * classified again (their hold times; no new ACQUIREs, frames already checked). */
static void clear_process(struct ipsg_dpdk_gw *g, struct rte_mbuf **pk, uint32_t n, const uint64_t *ts)
{
    struct ipsg_spd_result res;
    struct ip_flow f;
    uint64_t now = 0, hts[MAXB];
    uint32_t i, k = 0;
    uint16_t ike = g->c.ike_port, natt = g->c.natt_port;

    for (i = 0; i < n; i++) {
        struct rte_mbuf *m = pk[i];
        uint8_t *ip;
        uint32_t sa;
        ip = rx_frame(g, m, ts == NULL ? g->c.clear_mac : NULL, &f);
        if (ip == NULL)
            continue;
        if (is_local(g, f.family, f.dst)) {
            drop(g, m, IPSG_GW_C_KERNEL);   /* for the gateway itself: the kernel has its copy */
            continue;
        }
        if (f.proto == 17 && (f.sport == 500 || f.dport == 500 || f.sport == 4500 || f.dport == 4500 ||
                              f.sport == ike || f.dport == ike || f.sport == natt || f.dport == natt)) {
            emit(g, PROT, m, IPSG_GW_C_BYPASS);   /* IKE is never tunnelled through its own SAs */
            continue;
        }
        if (g->lookup(g->shm, f.family, f.src, f.dst, f.proto, f.sport, f.dport, &res) < 0) {
            drop(g, m, IPSG_GW_C_NO_POLICY);
            continue;
        }
        if (res.action == IPSG_SPD_BYPASS) {
            emit(g, PROT, m, IPSG_GW_C_BYPASS);
            continue;
        }
        if (res.action != IPSG_SPD_PROTECT) {
            drop(g, m, IPSG_GW_C_DISCARD);
            continue;
        }
        if (res.n_sa == 0) {
            if (now == 0)
                now = g->now();
            if (ts == NULL && g->acquire(g->shm, res.policy, f.family, f.src, f.dst, f.proto, f.sport, f.dport,
                                         now) == 1)
                g->st.acquires++;
            hold(g, m, ts ? ts[i] : now);
            continue;
        }
        sa = res.sa[0];
        if (sa >= g->c.n_sa) {
            drop(g, m, IPSG_GW_C_MALFORMED);
            continue;
        }
        if (g->c.outer_mtu && g->ovh[sa] && g->blk[sa]) {
            uint32_t blk = g->blk[sa], need = g->ovh[sa] + (f.iplen + 2 + blk - 1) / blk * blk;
            if (need > g->c.outer_mtu) {
                uint32_t fit = g->c.outer_mtu > g->ovh[sa] ? (g->c.outer_mtu - g->ovh[sa]) / blk * blk : 0;
                uint32_t mtu = fit >= 2 ? fit - 2 : 0;
                if (f.df && !icmp_is_error(ip, f.family, f.proto, f.l4, f.iplen) && mtu >= 68) {
                    make_icmp(g, m, &f, mtu);
                    emit(g, CLEAR, m, IPSG_GW_C_ICMP);
                } else {
                    drop(g, m, IPSG_GW_C_TOO_BIG);
                }
                continue;
            }
        }
        if (f.iplen > SLOT_MAX_IN) {
            drop(g, m, IPSG_GW_C_TOO_BIG);
            continue;
        }
        if (slot_take(&g->b, k, m, f.iplen, sa))
            g->st.in_place++;
        else
            g->st.copied++;
        hts[k] = ts ? ts[i] : 0;
        g->inb[k++] = m;
    }
    if (k) {
        g->b.n = k;
        reserve_batch(g, k);
        ipsg_ipsec_outbound(g->c.e, &g->b);   /* ESP, then AH for the packets of AH SAs */
        for (i = 0; i < k; i++) {
            struct rte_mbuf *m = g->inb[i];
            uint8_t st = slot_status(&g->b, i, m);
            if (st == IPSG_ST_NO_SA && g->dead[g->sa[i]])
                st = IPSG_ST_HARD_EXPIRED;   /* gone for good until control replaces it: no hold */
            if (st == IPSG_ST_NO_SA) {
                /* The policy names an SA the engine does not have yet (control installed it after
                 * our last sync): keep the packet and end the slice so that Python syncs. */
                if (now == 0)
                    now = g->now();
                hold(g, m, hts[i] ? hts[i] : now);
                g->need_sync = 1;
                continue;
            }
            esp_done(g, i, m, st, PROT, IPSG_GW_C_PROTECT);
        }
    }
    flush(g);
}

/* -- inbound --------------------------------------------------------------------------------- */

/* The SPI of an ESP, ESP-in-UDP or AH packet (f parsed), or 0.  AH's SPI follows its next header,
 * payload length and reserved field. */
static uint32_t ipsec_spi(const uint8_t *ip, const struct ip_flow *f)
{
    uint32_t o = f->proto == 50 ? f->l4 : f->proto == 51 ? f->l4 + 4 : f->l4 + 8;
    if (o + 4 > f->iplen)
        return 0;
    return rd32(ip + o);
}

static void prot_process(struct ipsg_dpdk_gw *g, struct rte_mbuf **pk, uint32_t n, int late)
{
    struct ip_flow f;
    uint32_t i, k = 0;

    for (i = 0; i < n; i++) {
        struct rte_mbuf *m = pk[i];
        uint8_t *ip;
        ip = rx_frame(g, m, late ? NULL : g->c.prot_mac, &f);
        if (ip == NULL)
            continue;
        /* Ours: ESP, AH, or ESP-in-UDP on the ESP core's port (not IKE's non-ESP marker, not a NAT
         * keepalive), to one of our addresses.  Everything else is the kernel's: it sees the same
         * frame through af_packet and answers ARP/ND, IKE (control's sockets) and pings. */
        if (!is_local(g, f.family, f.dst) ||
            !(f.proto == 50 || f.proto == 51 ||
              (f.proto == 17 && (f.sport == NAT_T_PORT || f.dport == NAT_T_PORT) && f.iplen >= f.l4 + 12 &&
               ipsec_spi(ip, &f) != 0))) {
            drop(g, m, IPSG_GW_C_KERNEL);
            continue;
        }
        if (f.iplen > SLOT_MAX_IN + 256) {
            esp_drop(g, m, IPSG_ST_TOO_BIG);
            continue;
        }
        if (slot_take(&g->b, k, m, f.iplen, 0))
            g->st.in_place++;
        else
            g->st.copied++;
        g->inb[k++] = m;
    }
    if (k) {
        g->b.n = k;
        ipsg_ipsec_inbound(g->c.e, &g->b);   /* ESP, then AH; either without its SA is no-sa */
        for (i = 0; i < k; i++) {
            struct rte_mbuf *m = g->inb[i];
            uint8_t st = slot_status(&g->b, i, m);
            const uint8_t *in = slot_data(&g->b, i);
            if (st == IPSG_ST_NOT_ESP) {
                drop(g, m, IPSG_GW_C_KERNEL);
                continue;
            }
            if (st == IPSG_ST_NO_SA && !late) {
                /* An SA control installed after our last sync (a rekey's new inbound SA, which the
                 * peer may use as soon as our answer leaves): keep it for after the sync.  One that
                 * hard-expired here is still in the region until control deletes it: drop, counted. */
                uint8_t *ip = rte_pktmbuf_mtod(m, uint8_t *) + ETH_HLEN;
                int64_t slot = ip_parse_flow(ip, m->data_len - ETH_HLEN, &f) == 0
                                   ? g->spi_lookup(g->shm, ipsec_spi(ip, &f), 0, NULL) : -1;
                if (slot >= 0 && (uint64_t)slot < g->c.n_sa && g->dead[slot]) {
                    st = IPSG_ST_HARD_EXPIRED;
                } else if (slot >= 0 && g->n_late < IPSG_GW_HOLD_MAX) {
                    g->late[g->n_late++] = m;
                    g->need_sync = 1;
                    continue;
                }
            }
            if (st == IPSG_ST_OK && is_local(g, in[0] >> 4, (in[0] >> 4) == 4 ? in + 16 : in + 24)) {
                drop(g, m, IPSG_GW_C_LOCAL_IN);   /* decrypted, but for the gateway itself */
                continue;
            }
            esp_done(g, i, m, st, CLEAR, IPSG_GW_C_DECRYPTED);
        }
    }
    flush(g);
}

/* -- between slices -------------------------------------------------------------------------- */

void ipsg_dpdk_gw_retry(struct ipsg_dpdk_gw *g)
{
    struct rte_mbuf *pk[IPSG_GW_HOLD_MAX];
    uint64_t ts[IPSG_GW_HOLD_MAX];
    uint32_t n = g->n_hold;
    if (n) {
        memcpy(pk, g->hold, n * sizeof(pk[0]));
        memcpy(ts, g->hold_ts, n * sizeof(ts[0]));
        g->n_hold = 0;
        clear_process(g, pk, n, ts);
    }
    n = g->n_late;
    if (n) {
        memcpy(pk, g->late, n * sizeof(pk[0]));
        g->n_late = 0;
        prot_process(g, pk, n, 1);
    }
    g->need_sync = 0;
}

void ipsg_dpdk_gw_retry_neigh(struct ipsg_dpdk_gw *g)
{
    struct rte_mbuf *pk[IPSG_GW_HOLD_MAX];
    uint64_t ts[IPSG_GW_HOLD_MAX];
    uint8_t side[IPSG_GW_HOLD_MAX], outcome[IPSG_GW_HOLD_MAX];
    uint32_t i, n = g->n_nh;
    if (n == 0)
        return;
    memcpy(pk, g->nh, n * sizeof(pk[0]));
    memcpy(ts, g->nh_ts, n * sizeof(ts[0]));
    memcpy(side, g->nh_side, n);
    memcpy(outcome, g->nh_outcome, n);
    g->n_nh = 0;
    for (i = 0; i < n; i++) {
        uint32_t before = g->n_nh;
        emit(g, side[i], pk[i], outcome[i]);
        if (g->n_nh > before)
            g->nh_ts[before] = ts[i];   /* still waiting: keep its first miss time */
    }
    flush(g);
}

uint32_t ipsg_dpdk_gw_expire(struct ipsg_dpdk_gw *g, uint64_t max_age_ns)
{
    uint64_t now = g->now();
    uint32_t i, j = 0, gone = 0;
    for (i = 0; i < g->n_hold; i++) {
        if (now - g->hold_ts[i] > max_age_ns) {
            drop(g, g->hold[i], IPSG_GW_C_HOLD_DROPPED);
            gone++;
        } else {
            g->hold_ts[j] = g->hold_ts[i];
            g->hold[j++] = g->hold[i];
        }
    }
    g->n_hold = j;
    for (i = j = 0; i < g->n_nh; i++) {
        if (now - g->nh_ts[i] > max_age_ns) {
            drop(g, g->nh[i], IPSG_GW_C_NO_NEIGH);
            gone++;
        } else {
            g->nh_ts[j] = g->nh_ts[i];
            g->nh_side[j] = g->nh_side[i];
            g->nh_outcome[j] = g->nh_outcome[i];
            g->nh[j++] = g->nh[i];
        }
    }
    g->n_nh = j;
    return gone;
}

/* -- the slice ------------------------------------------------------------------------------- */

int ipsg_dpdk_gw_run(struct ipsg_dpdk_gw *g, double seconds)
{
    uint64_t start = rte_get_tsc_cycles(), deadline = start + (uint64_t)(seconds * (double)g->st.hz);
    uint32_t idle = 0;
    uint16_t n1, n2, burst = (uint16_t)g->c.burst;
    struct timespec nap = {0, (long)g->c.idle_sleep_us * 1000};

    g->stop = 0;
    while (!g->stop && !g->need_sync) {
        n1 = rte_eth_rx_burst(g->c.clear_port, 0, g->rx, burst);
        if (n1) {
            g->st.rx_clear += n1;
            clear_process(g, g->rx, n1, NULL);
        }
        n2 = rte_eth_rx_burst(g->c.prot_port, 0, g->rx, burst);
        if (n2) {
            g->st.rx_prot += n2;
            prot_process(g, g->rx, n2, 0);
        }
        g->st.polls++;
        if (n1 | n2) {
            g->st.bursts++;
            idle = 0;
        } else if (g->c.idle_sleep_us && ++idle >= 64) {
            /* Nothing for a while: nap instead of spinning (a VM shared with other work, CI).
             * 0 keeps the classic busy poll of a dedicated core. */
            nanosleep(&nap, NULL);
            if (rte_get_tsc_cycles() >= deadline)
                break;
            continue;
        }
        if ((g->st.polls & 15) == 0 && rte_get_tsc_cycles() >= deadline)
            break;
    }
    g->st.cycles += rte_get_tsc_cycles() - start;
    return g->need_sync;
}
