/* Batch AH core (RFC 4302; RFC 4543 for AES-GMAC): framing, mutable-field zeroing, ICV, replay.
 *
 * Behaviour contract: docs/ah.md; fastpath/ah_ref.py is the model this follows
 * step for step (same checks in the same order, byte-identical output).  The SA
 * table, replay window, lifetimes and counters are the ESP core's (sa_state.h);
 * the crypto is the back end's, with the SA's keys expanded once by crypto_sa_new
 * and each ICV run as one of ESP's jobs (NULL+HMAC, or AES-GMAC) over a zeroed copy
 * of the packet: no crypto code here.
 *
 * A batch runs in rounds as ESP's do (esp_core.c): (a) every packet of the round
 * is framed/parsed and a zeroed copy of it made in the engine's arena (e->ah_buf)
 * with a job over it; (b) the back end runs the round's jobs in one call; (c) every
 * packet is finished in order, inbound state moving only there, after the ICV.
 */
#include "ah_core.h"

#define PROTO_AH 51
#define PROTO_FRAGMENT 44
#define IPV6_OPT_MUTABLE 0x20 /* RFC 8200 4.2: the option's data may change en route */

/* ------------------------------------------------------------- SA setup */

static uint32_t hmac_icv_len(uint8_t integ)
{
    switch (integ) {
    case IPSG_INTEG_HMAC_SHA1_96:
        return 12;
    case IPSG_INTEG_HMAC_SHA256_128:
        return 16;
    case IPSG_INTEG_HMAC_SHA384_192:
        return 24;
    case IPSG_INTEG_HMAC_SHA512_256:
        return 32;
    default:
        return 0;
    }
}

const char *ah_check_params(const struct ipsg_sa_params *p)
{
    if (p->enc != IPSG_ENC_NULL || p->enc_key_len != 0)
        return "an AH SA takes no encryption algorithm or key";
    if (p->udp_encap)
        return "AH cannot be UDP-encapsulated (NAT-T carries ESP only)";
    if (p->integ == IPSG_INTEG_AES_GMAC) {
        uint32_t aes = p->integ_key_len - 4u;
        if (p->integ_key_len < 4 || (aes != 16 && aes != 24 && aes != 32))
            return "bad AES-GMAC key length (AES key + 4-byte salt)";
    } else if (hmac_icv_len(p->integ) == 0) {
        return "unknown AH integrity algorithm";
    } else if (p->integ_key_len == 0) {
        return "empty integrity key";
    }
    return NULL;
}

void ah_crypto_params(const struct ipsg_sa_params *p, struct ipsg_sa_params *out)
{
    *out = *p;
    if (p->integ == IPSG_INTEG_AES_GMAC) {
        out->enc = IPSG_ENC_AES_GMAC;
        memcpy(out->enc_key, p->integ_key, p->integ_key_len);
        out->enc_key_len = p->integ_key_len;
        out->integ = IPSG_INTEG_NONE;
        memset(out->integ_key, 0, sizeof(out->integ_key));
        out->integ_key_len = 0;
    }
}

void ah_sa_init(struct sa *s, const struct ipsg_sa_params *p)
{
    int gmac = p->integ == IPSG_INTEG_AES_GMAC;
    s->icv_len = (uint8_t)(gmac ? 8 + 16 : hmac_icv_len(p->integ)); /* GMAC: IV then tag */
    s->iv_len = gmac ? 8 : 0;
    if (gmac)
        memcpy(s->salt, p->integ_key + p->integ_key_len - 4, 4);
}

/* The ICV field with its padding: AH is a multiple of 32 (IPv4) / 64 (IPv6) bits (RFC 4302 2.6). */
static inline uint32_t field_len(const struct sa *s, uint32_t fam)
{
    uint32_t align = fam == 4 ? 4 : 8;
    return s->icv_len + ((0u - (AH_FIXED + s->icv_len)) & (align - 1));
}

/* ---------------------------------------------------- what the ICV covers */

/* RFC 4302 appendix A.1: the options included as they are; any other is zeroed whole. */
static inline int ipv4_option_immutable(uint8_t kind)
{
    return kind == 0 || kind == 1 || kind == 130 || kind == 133 || kind == 134 || kind == 148 || kind == 149;
}

static int zero_ipv4(uint8_t *b)
{
    uint32_t ihl = (b[0] & 15u) * 4, i = 20;
    b[1] = 0;           /* DSCP and ECN */
    b[6] = b[7] = 0;    /* flags and fragment offset */
    b[8] = 0;           /* TTL */
    b[10] = b[11] = 0;  /* checksum */
    while (i < ihl) {
        uint8_t kind = b[i], len;
        if (kind == 0)
            break; /* end of list: what follows is (immutable) padding */
        if (kind == 1) {
            i++;
            continue;
        }
        if (i + 2 > ihl || b[i + 1] < 2 || i + b[i + 1] > ihl)
            return -1;
        len = b[i + 1];
        if (!ipv4_option_immutable(kind))
            memset(b + i, 0, len);
        i += len;
    }
    return 0;
}

static int zero_ipv6_options(uint8_t *b, uint32_t i, uint32_t end)
{
    while (i < end) {
        uint8_t kind = b[i];
        if (kind == 0) { /* Pad1 has no length byte */
            i++;
            continue;
        }
        if (i + 2 > end || i + 2 + b[i + 1] > end)
            return -1;
        if (kind & IPV6_OPT_MUTABLE)
            memset(b + i + 2, 0, b[i + 1]);
        i += 2u + b[i + 1];
    }
    return 0;
}

/* A type 0/2 routing header as the final destination receives it: each hop swaps the destination
 * with the next listed address (RFC 8200 4.4), and the sender authenticates that form
 * (RFC 4302 3.3.3.1.2.2). */
static int route_as_received(uint8_t *b, uint32_t off)
{
    uint32_t seg_left = b[off + 3], n = b[off + 1] / 2u, i;
    uint8_t rtype = b[off + 2], tmp[16];
    if (seg_left == 0)
        return 0;
    if ((rtype != 0 && rtype != 2) || seg_left > n)
        return -1;
    for (i = n - seg_left; i < n; i++) {
        uint8_t *a = b + off + 8 + 16 * i;
        memcpy(tmp, b + 24, 16);
        memcpy(b + 24, a, 16);
        memcpy(a, tmp, 16);
    }
    b[off + 3] = 0;
    return 0;
}

/* The extension headers ahead of AH were walked (and bounded) by the caller. */
static int zero_ipv6(uint8_t *b, uint32_t ah_off, int sending)
{
    uint32_t off = 40;
    uint8_t nh = b[6];
    b[0] = 0x60;            /* traffic class (high nibble) ... */
    b[1] = b[2] = b[3] = 0; /* ... its low nibble and the flow label */
    b[7] = 0;               /* hop limit */
    while (off < ah_off) {
        uint32_t len = (b[off + 1] + 1u) * 8;
        if (nh == PROTO_HOPOPT || nh == PROTO_DSTOPTS) {
            if (zero_ipv6_options(b, off + 2, off + len) != 0)
                return -1;
        } else if (nh == PROTO_ROUTING && sending) {
            if (route_as_received(b, off) != 0)
                return -1;
        }
        nh = b[off];
        off += len;
    }
    return 0;
}

/* Job j for the ICV of the n-byte packet at pkt: an ESP-shaped job of the back end over the zeroed copy
 * at buf (AH_STRIDE bytes).  The job's icv is past the copy: outbound the back end writes the tag there
 * (finish_icv moves it into the packet); inbound it holds the received tag (icv: the received ICV field),
 * which the back end compares in constant time.  IPSG_ST_OK, or _MALFORMED for options that cannot be
 * walked. */
static uint8_t prep_icv(const struct sa *s, uint8_t *buf, const uint8_t *pkt, uint32_t n, uint32_t fam,
                        uint32_t ah_off, int dir, uint64_t seq, const uint8_t *iv, const uint8_t *icv,
                        struct ipsg_job *j)
{
    const int gmac = s->p.integ == IPSG_INTEG_AES_GMAC;
    const uint32_t tag = gmac ? 16 : s->icv_len;

    memcpy(buf, pkt, n);
    if ((fam == 4 ? zero_ipv4(buf) : zero_ipv6(buf, ah_off, dir == IPSG_DIR_OUT)) != 0)
        return IPSG_ST_MALFORMED;
    memset(buf + ah_off + AH_FIXED, 0, s->icv_len); /* the padding after it is covered as sent */
    memset(j, 0, sizeof(*j));
    j->cs = s->cs;
    j->esp = buf;
    j->integ = s->p.integ;
    j->st = IPSG_ST_INTERNAL;
    if (gmac) {
        /* RFC 4543: AES-GCM with the whole zeroed packet as the AAD and an empty plaintext; ESP's GMAC
         * job authenticates aad || esp[8..16) || data, so the copy is cut that way. */
        if (s->p.esn) { /* RFC 4302 3.3.3.2.1: the high half after the packet, never sent */
            wr32(buf + n, (uint32_t)(seq >> 32));
            n += 4;
        }
        j->enc = IPSG_ENC_AES_GMAC;
        memcpy(j->aad, buf, 8);
        j->aad_len = 8;
        j->data = buf + 16;
        j->len = n - 16;
        memcpy(j->nonce, s->salt, 4);
        memcpy(j->nonce + 4, iv, 8);
    } else {
        /* ESP's NULL+HMAC job: esp up to icv, then the ESN high half */
        j->enc = IPSG_ENC_NULL;
        j->esn = s->p.esn;
        wr32(j->seq_hi, (uint32_t)(seq >> 32));
        j->data = buf + 8;
        j->len = n - 8;
    }
    j->icv = buf + n;
    j->icv_len = (uint8_t)tag;
    if (dir == IPSG_DIR_IN)
        memcpy(j->icv, icv + (gmac ? 8 : 0), tag);
    return IPSG_ST_OK;
}

/* The arena slot of round position k. */
static inline uint8_t *arena(struct ipsg_engine *e, uint32_t k) { return e->ah_buf + (size_t)k * AH_STRIDE; }

/* --------------------------------------------------------------- outbound */

/* Transport mode: where AH goes (IPv6: after Hop-by-Hop, Routing and any Destination Options ahead
 * of a Routing header, RFC 4302 3.1.1) and the offset of the byte naming what follows it. */
static uint8_t insert_point(const uint8_t *pkt, uint32_t ip_len, uint32_t *ah_off, uint32_t *nh_off)
{
    uint32_t off = 40, proto_off = 6;
    int routed = 0;
    uint8_t nh = pkt[6];
    while (nh == PROTO_HOPOPT || nh == PROTO_ROUTING || nh == PROTO_DSTOPTS) {
        if (nh == PROTO_DSTOPTS && routed)
            break; /* for the final destination: stays behind AH */
        if (off + 8 > ip_len || off + (pkt[off + 1] + 1u) * 8 > ip_len)
            return IPSG_ST_MALFORMED;
        routed = routed || nh == PROTO_ROUTING;
        proto_off = off;
        nh = pkt[off];
        off += (pkt[off + 1] + 1u) * 8;
    }
    *ah_off = off;
    *nh_off = proto_off;
    return nh == PROTO_FRAGMENT ? IPSG_ST_FRAGMENT : IPSG_ST_OK;
}

/* Phase (a) for one outbound packet: frame it, commit SA state, fill job j (k: its arena slot). */
static uint8_t ah_out_one(struct ipsg_engine *e, struct sa *s, uint8_t *slot, uint32_t slot_size,
                          struct pkt_ctx *c, uint32_t k, struct ipsg_job *j)
{
    const struct ipsg_sa_params *p = &s->p;
    const int tunnel = p->mode == IPSG_MODE_TUNNEL;
    uint32_t rel = c->rel, plen = c->len, ver, ip_len, hl = 0, ah_off, nh_off, fam, flen, ah_len, total;
    uint32_t prefix, inner_fl = 0;
    uint8_t *pkt = slot + rel, *start, *ah, nh, tos = 0, st;
    int inner_df = 0, spends_id = 0;
    uint64_t seq = s->st.seq;

    if (s->st.flags & (IPSG_SAF_HARD_EXPIRED | IPSG_SAF_SEQ_EXHAUSTED))
        return s->st.flags & IPSG_SAF_HARD_EXPIRED ? IPSG_ST_HARD_EXPIRED : IPSG_ST_SEQ_EXHAUSTED;
    if (hard_packets_reached(s))
        return IPSG_ST_HARD_EXPIRED;
    if (plen < 1)
        return IPSG_ST_MALFORMED;
    ver = pkt[0] >> 4;
    if (ver == 4) {
        if (plen < 20)
            return IPSG_ST_MALFORMED;
        hl = (pkt[0] & 15u) * 4;
        ip_len = rd16(pkt + 2);
        if (hl < 20 || ip_len < hl || ip_len > plen)
            return IPSG_ST_MALFORMED;
        tos = pkt[1];
        inner_df = (pkt[6] & 0x40) != 0;
    } else if (ver == 6) {
        if (plen < 40)
            return IPSG_ST_MALFORMED;
        ip_len = 40u + rd16(pkt + 4);
        if (ip_len > plen || (ip_len == 40 && plen > 40)) /* zero payload length: jumbogram */
            return IPSG_ST_MALFORMED;
        tos = (uint8_t)(rd32(pkt) >> 20);
        inner_fl = rd32(pkt) & 0xFFFFF;
        inner_df = 1;
    } else {
        return IPSG_ST_MALFORMED;
    }
    if (hard_bytes_exceeded(s, ip_len))
        return IPSG_ST_HARD_EXPIRED;

    if (tunnel) {
        fam = p->family;
        ah_off = fam == 4 ? 20 : 40;
        nh = ver == 4 ? PROTO_IPIP : PROTO_IPV6;
        nh_off = fam == 4 ? 9 : 6;
    } else {
        fam = ver;
        if (ver == 4) {
            /* RFC 4302 3.3.4: AH covers whole packets; a fragment's ICV could never be checked. */
            if (rd16(pkt + 6) & 0x3FFF)
                return IPSG_ST_FRAGMENT;
            ah_off = hl;
            nh_off = 9;
        } else if ((st = insert_point(pkt, ip_len, &ah_off, &nh_off)) != IPSG_ST_OK) {
            return st;
        }
        nh = pkt[nh_off];
    }
    flen = field_len(s, fam);
    ah_len = AH_FIXED + flen;
    /* tunnel: outer header and AH in front of the packet; transport: AH inside it */
    prefix = tunnel ? ah_off + ah_len : ah_len;
    total = prefix + ip_len;
    if (total > slot_size || (fam == 4 && total > 0xFFFF) || (fam == 6 && total - 40 > 0xFFFF))
        return IPSG_ST_TOO_BIG;

    if (rel < prefix || rel + ip_len > slot_size) { /* too little headroom: move the packet */
        memmove(slot + prefix, pkt, ip_len);
        rel = prefix;
        pkt = slot + rel;
    }
    start = pkt - prefix;
    if (tunnel) {
        /* The IPv4 ID is immutable for AH, and Linux's raw send (IP_HDRINCL) replaces an ID of 0 after
         * the ICV covered it: an IPv4 AH packet never carries ID 0 (ah_ref.py does the same). */
        if (fam == 4 && s->ip_id == 0)
            s->ip_id = 1;
        write_outer(s, start, total, tos, inner_df, inner_fl, ver, PROTO_AH);
    } else {
        memmove(start, pkt, ah_off); /* the header (and extension headers ahead of AH) moves up */
        start[nh_off] = PROTO_AH;
        if (fam == 4) {
            if (rd16(start + 4) == 0) { /* RFC 6864 4.1: the source of an atomic datagram picks its ID */
                if (s->ip_id == 0)
                    s->ip_id = 1;
                wr16(start + 4, s->ip_id);
                spends_id = 1;
            }
            wr16(start + 2, total);
            ipv4_checksum(start, hl);
        } else {
            wr16(start + 4, total - 40);
        }
    }
    ah = start + ah_off;
    ah[0] = nh;
    ah[1] = (uint8_t)(ah_len / 4 - 2);
    ah[2] = ah[3] = 0;
    wr32(ah + 4, p->spi);
    wr32(ah + 8, (uint32_t)seq);
    memset(ah + AH_FIXED, 0, flen); /* the padding stays zero (RFC 4302 lets the sender choose it) */
    {
        uint8_t iv[8];
        wr64(iv, seq); /* GMAC's IV only has to be unique under the key (RFC 4543 3.1) */
        if ((st = prep_icv(s, arena(e, k), start, total, fam, ah_off, IPSG_DIR_OUT, seq, iv, NULL, j)) !=
            IPSG_ST_OK)
            return st;
    }

    /* Commit SA state now: the packet leaves. */
    if ((tunnel && p->family == 4) || spends_id)
        s->ip_id++;
    if ((!p->esn && seq >= 0xFFFFFFFFull) || (p->esn && seq == UINT64_MAX))
        s->st.flags |= IPSG_SAF_SEQ_EXHAUSTED;
    s->st.seq = seq + 1; /* with ESN 2^64 wraps to 0, read with the flag */
    account(s, ip_len);
    c->rel = (uint32_t)(start - slot);
    c->len = total;
    c->o.esp = ah_off;
    c->seq = seq;
    return IPSG_ST_OK;
}

/* Which packets of a batch the AH core takes; after_esp: the ESP core has had the batch and left them
 * untouched with this status (counted as an engine drop, which the AH core takes back). */
static int ah_takes(struct ipsg_engine *e, const struct ipsg_batch *b, uint32_t pi, int dir, int after_esp)
{
    uint32_t idx;
    if (!after_esp)
        return 1;
    if (dir == IPSG_DIR_IN) {
        if (b->status[pi] != IPSG_ST_NOT_ESP)
            return 0;
        e->drops[IPSG_ST_NOT_ESP]--; /* counted again if it is not AH either */
        return 1;
    }
    idx = b->sa[pi];
    if (b->status[pi] != IPSG_ST_NO_SA || idx >= e->capacity || !e->sas[idx].used ||
        e->sas[idx].p.proto != IPSG_PROTO_AH)
        return 0;
    e->drops[IPSG_ST_NO_SA]--; /* it has an SA after all */
    return 1;
}

/* Outbound in rounds of up to AH_ROUND packets: (a) frame, commit and fill jobs; (b) the back end runs
 * the round's jobs in one call; (c) the ICVs go into the packets. */
static void ah_outbound(struct ipsg_engine *e, struct ipsg_batch *b, int after_esp)
{
    uint32_t pis[AH_ROUND], pi = 0, n, i;
    while (pi < b->n) {
        uint32_t nj = 0;
        for (n = 0; n < AH_ROUND && pi < b->n; pi++) {
            struct pkt_ctx *c = &e->ctx[n];
            uint32_t idx = b->sa[pi];
            struct sa *s = idx < e->capacity ? &e->sas[idx] : NULL;
            if (!ah_takes(e, b, pi, IPSG_DIR_OUT, after_esp))
                continue;
            pis[n++] = pi;
            c->job = NO_JOB;
            c->s = NULL;
            if (s == NULL || !s->used || s->p.direction != IPSG_DIR_OUT || s->p.proto != IPSG_PROTO_AH) {
                c->st = IPSG_ST_NO_SA;
                continue;
            }
            c->s = s;
            if (!slot_ok(b, pi, &c->rel)) {
                c->st = IPSG_ST_MALFORMED;
                continue;
            }
            c->len = b->len[pi];
            c->st = ah_out_one(e, s, batch_slot(b, pi), b->slot_size, c, nj, &e->jobs[nj]);
            if (c->st == IPSG_ST_OK)
                c->job = nj++;
        }
        if (nj)
            crypto_run(e->be, e->jobs, nj, IPSG_DIR_OUT);
        for (i = 0; i < n; i++) {
            struct pkt_ctx *c = &e->ctx[i];
            uint32_t p = pis[i];
            uint8_t st = c->st;
            if (c->job != NO_JOB) {
                const struct ipsg_job *j = &e->jobs[c->job];
                st = j->st;
                if (st == IPSG_ST_OK) {
                    uint8_t *icv = batch_slot(b, p) + c->rel + c->o.esp + AH_FIXED;
                    const int gmac = c->s->p.integ == IPSG_INTEG_AES_GMAC;
                    if (gmac)
                        wr64(icv, c->seq); /* the IV */
                    memcpy(icv + (gmac ? 8 : 0), j->icv, j->icv_len);
                    b->off[p] = (uint32_t)(batch_base(b, p) + c->rel);
                    b->len[p] = c->len;
                }
            }
            if (st != IPSG_ST_OK) {
                if (c->s != NULL)
                    c->s->st.drops[st]++;
                else
                    e->drops[st]++;
            }
            b->status[p] = st;
        }
    }
}

void ipsg_ah_outbound(struct ipsg_engine *e, struct ipsg_batch *b)
{
    if (batch_usable(e, b))
        ah_outbound(e, b, 0);
}

void ipsg_ipsec_outbound(struct ipsg_engine *e, struct ipsg_batch *b)
{
    if (!batch_usable(e, b))
        return;
    ipsg_esp_outbound(e, b); /* leaves an AH SA's packet untouched, as no-sa */
    ah_outbound(e, b, 1);
}

/* ---------------------------------------------------------------- inbound */

/* Where AH is in an outer packet (past IPv6 Hop-by-Hop, Routing, Destination Options). */
static uint8_t locate_ah(const uint8_t *pkt, uint32_t len, struct outer *o)
{
    uint32_t frag, proto;
    uint8_t st = outer_ip(pkt, len, o, &proto, &frag);
    if (st != IPSG_ST_OK)
        return st;
    if (proto != PROTO_AH)
        return IPSG_ST_NOT_ESP;
    if (frag)
        return IPSG_ST_FRAGMENT;
    if (o->l4 + AH_FIXED > o->end)
        return IPSG_ST_MALFORMED;
    o->esp = o->l4;
    return IPSG_ST_OK;
}

/* Result of in_prepare beyond the IPSG_ST_* values: end the round before this packet. */
#define CUT_ROUND 0xFF

/* Phase (a) for one inbound packet, in ah_ref.py's order up to the ICV: find AH and the SA, the length,
 * the replay pre-check; fill job j (k: its arena slot). */
static uint8_t ah_in_prepare(struct ipsg_engine *e, uint8_t *slot, struct pkt_ctx *c, uint32_t k,
                             struct ipsg_job *j)
{
    uint8_t *pkt = slot + c->rel, *ah, st;
    uint32_t ah_len, lo;
    struct sa *s;

    if ((st = locate_ah(pkt, c->len, &c->o)) != IPSG_ST_OK)
        return st;
    ah = pkt + c->o.esp;
    s = lookup(e, e->ah_heads, rd32(ah + 4), c->o.fam, c->o.dst, &c->index);
    if (s == NULL)
        return IPSG_ST_NO_SA;
    lo = rd32(ah + 8);
    if (s->p.esn && s->spec_round == e->round && s->spec_top > s->top &&
        infer_esn(s, s->top, lo) != infer_esn(s, s->spec_top, lo))
        return CUT_ROUND; /* a pending packet may move the top past where this one's high half changes */
    c->s = s;
    if (s->st.flags & IPSG_SAF_HARD_EXPIRED || hard_packets_reached(s))
        return IPSG_ST_HARD_EXPIRED;
    /* the ICV field is exactly the algorithm's, with the minimal padding (RFC 4302 2.6) */
    ah_len = (ah[1] + 2u) * 4;
    if (ah_len != AH_FIXED + field_len(s, c->o.fam) || c->o.esp + ah_len > c->o.end)
        return IPSG_ST_MALFORMED;
    c->seq = s->p.esn ? infer_esn(s, s->top, lo) : lo;
    if (c->seq == 0 || replay_seen(s, c->seq))
        return IPSG_ST_REPLAY;
    if ((st = prep_icv(s, arena(e, k), pkt, c->o.end, c->o.fam, c->o.esp, IPSG_DIR_IN, c->seq, ah + AH_FIXED,
                       ah + AH_FIXED, j)) != IPSG_ST_OK)
        return st;
    if (s->p.esn) {
        if (s->spec_round != e->round) {
            s->spec_round = e->round;
            s->spec_top = s->top;
        }
        if (c->seq > s->spec_top)
            s->spec_top = c->seq;
    }
    return IPSG_ST_OK;
}

/* Phase (c) for one inbound packet whose ICV checked out and whose number is fresh: AH comes off. */
static uint8_t ah_in_finish(struct sa *s, uint8_t *slot, struct pkt_ctx *c)
{
    const struct outer *o = &c->o;
    uint8_t *pkt = slot + c->rel, *ah = pkt + o->esp, *res, nh = ah[0], st;
    uint32_t ah_len = (ah[1] + 2u) * 4, res_len;
    struct flow f;

    if (s->p.mode == IPSG_MODE_TUNNEL) {
        res = ah + ah_len;
        if ((st = tunnel_inner(nh, res, o->end - o->esp - ah_len, o->ecn, &res_len)) != IPSG_ST_OK)
            return st;
    } else {
        /* the header and extension headers ahead of AH close up over it, next header and lengths restored */
        res = pkt + ah_len;
        memmove(res, pkt, o->esp);
        res[o->nh_off] = nh;
        res_len = o->end - ah_len;
        if (o->fam == 4) {
            wr16(res + 2, res_len);
            ipv4_checksum(res, o->esp);
        } else {
            wr16(res + 4, res_len - 40);
        }
    }
    if (s->p.n_remote_ts || s->p.n_local_ts) {
        flow_of(res, res_len, &f);
        if (!ts_match(s->p.remote_ts, s->p.n_remote_ts, &f, f.src, f.sport) ||
            !ts_match(s->p.local_ts, s->p.n_local_ts, &f, f.dst, f.dport))
            return IPSG_ST_SELECTOR;
    }
    if (hard_bytes_exceeded(s, res_len))
        return IPSG_ST_HARD_EXPIRED;
    account(s, res_len);
    c->rel = (uint32_t)(res - slot);
    c->len = res_len;
    return IPSG_ST_OK;
}

/* Inbound in rounds as ESP's (esp_core.c): SA state moves only in (c), after the ICV, each packet's checks
 * evaluated again in packet order against the state its predecessors left. */
static void ah_inbound(struct ipsg_engine *e, struct ipsg_batch *b, int after_esp)
{
    uint32_t pis[AH_ROUND], pi = 0, n, i;
    poison_slot_tails(b);
    while (pi < b->n) {
        uint32_t nj = 0;
        e->round++;
        for (n = 0; n < AH_ROUND && pi < b->n; pi++) {
            struct pkt_ctx *c = &e->ctx[n];
            if (!after_esp || b->status[pi] != CUT_ROUND) {
                if (!ah_takes(e, b, pi, IPSG_DIR_IN, after_esp))
                    continue;
            }
            c->job = NO_JOB;
            c->s = NULL;
            c->index = NO_INDEX;
            if (!slot_ok(b, pi, &c->rel)) {
                c->st = IPSG_ST_MALFORMED;
            } else {
                c->len = b->len[pi];
                c->st = ah_in_prepare(e, batch_slot(b, pi), c, nj, &e->jobs[nj]);
                if (c->st == CUT_ROUND) {
                    b->status[pi] = CUT_ROUND; /* taken already: the next round starts here */
                    break;
                }
            }
            pis[n++] = pi;
            if (c->st == IPSG_ST_OK)
                c->job = nj++;
        }
        if (nj)
            crypto_run(e->be, e->jobs, nj, IPSG_DIR_IN);
        for (i = 0; i < n; i++) {
            struct pkt_ctx *c = &e->ctx[i];
            struct sa *s = c->s;
            uint32_t p = pis[i];
            uint8_t st = c->st;
            if (s != NULL) {
                if (s->st.flags & IPSG_SAF_HARD_EXPIRED || hard_packets_reached(s))
                    st = IPSG_ST_HARD_EXPIRED;
                else if (st == IPSG_ST_OK && replay_seen(s, c->seq))
                    st = IPSG_ST_REPLAY;
                else if (st == IPSG_ST_OK && (st = e->jobs[c->job].st) == IPSG_ST_OK) {
                    replay_accept(s, c->seq); /* only once the ICV is good */
                    st = ah_in_finish(s, batch_slot(b, p), c);
                }
                if (st == IPSG_ST_OK) {
                    b->off[p] = (uint32_t)(batch_base(b, p) + c->rel);
                    b->len[p] = c->len;
                } else {
                    s->st.drops[st]++;
                }
            } else {
                e->drops[st]++;
            }
            b->sa[p] = s != NULL ? c->index : NO_INDEX;
            b->status[p] = st;
        }
    }
    unpoison_slots(b);
}

void ipsg_ah_inbound(struct ipsg_engine *e, struct ipsg_batch *b)
{
    if (batch_usable(e, b))
        ah_inbound(e, b, 0);
}

void ipsg_ipsec_inbound(struct ipsg_engine *e, struct ipsg_batch *b)
{
    if (!batch_usable(e, b))
        return;
    ipsg_esp_inbound(e, b); /* leaves every packet that is not ESP untouched, as not-esp */
    ah_inbound(e, b, 1);
}
