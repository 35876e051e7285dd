/* Batch ESP core: framing, parsing, SA state; crypto through a back end (esp_core.h).
 *
 * Behaviour contract: docs/esp.md.  One call processes a whole batch; every
 * packet gets a status and nothing is read or written outside its slot, so
 * arbitrary bytes in the buffer are safe.
 *
 * A batch runs in rounds of up to IPSG_JOBS packets, each in three phases:
 *  (a) prepare every packet (parse, SA checks, headers, padding) and fill a
 *      crypto job for it;
 *  (b) the back end runs all jobs of the round in one call (one call per back end
 *      when SAs of the round use different ones, see run_jobs);
 *  (c) finish every packet in order.
 * Outbound commits SA state (sequence number, IPv4 ID, counters) in (a): the
 * crypto of a well-formed packet cannot fail for a reason of the packet.
 * Inbound touches SA state only in (c), after the ICV result, re-evaluating
 * each packet's checks in packet order against the state its predecessors
 * left, so a batch gives the same verdicts as packets one at a time (two
 * packets of a round may carry the same sequence number).  The one input of
 * (a) that (c) cannot re-evaluate is the inferred ESN high half, which decides
 * what the ICV covers: when an earlier packet of the round could change it,
 * the round ends before that packet.
 */
#include "sa_state.h"
#include "ah_core.h"

/* ---------------------------------------------------------------- helpers */

/* UDP over IPv6 must carry a checksum (RFC 8200 8.1); zero is sent as 0xffff. */
static void udp6_checksum(const uint8_t *ip6, uint8_t *udp, uint32_t udp_len)
{
    uint64_t sum = csum_add(0, ip6 + 8, 32);
    uint16_t c;
    sum += udp_len;
    sum += PROTO_UDP;
    udp[6] = udp[7] = 0;
    sum = csum_add(sum, udp, udp_len);
    c = csum_fold(sum);
    wr16(udp + 6, c ? c : 0xFFFF);
}

static inline int is_aead(uint8_t enc)
{
    return enc == IPSG_ENC_AES_GCM || enc == IPSG_ENC_AES_GMAC || enc == IPSG_ENC_CHACHA20_POLY1305;
}

static int icv_len_of(uint8_t integ)
{
    switch (integ) {
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

static int aes_key_len_ok(uint32_t n) { return n == 16 || n == 24 || n == 32; }

/* ------------------------------------------------------- engine and SAs */

struct ipsg_engine *ipsg_engine_new(uint32_t capacity)
{
    struct ipsg_engine *e;
    uint32_t bits = 4, i;
    if (capacity == 0 || capacity > (1u << 24))
        return NULL;
    while ((1u << bits) < 2 * capacity)
        bits++;
    if (posix_memalign((void **)&e, 64, sizeof(*e)) != 0)
        return NULL;
    memset(e, 0, sizeof(*e));
    e->capacity = capacity;
    e->hbits = bits;
    e->rnd_pos = RAND_POOL;
    e->heads = malloc(sizeof(uint32_t) << bits);
    e->ah_heads = malloc(sizeof(uint32_t) << bits);
    e->sas = calloc(capacity, sizeof(struct sa));
    e->be = crypto_engine_new();
    if (e->heads == NULL || e->ah_heads == NULL || e->sas == NULL || e->be == NULL) {
        ipsg_engine_free(e);
        return NULL;
    }
    for (i = 0; i < (1u << bits); i++)
        e->heads[i] = e->ah_heads[i] = NO_INDEX;
    return e;
}

static void hash_unlink(struct ipsg_engine *e, uint32_t index)
{
    uint32_t *heads = e->sas[index].p.proto == IPSG_PROTO_AH ? e->ah_heads : e->heads;
    uint32_t *link = &heads[spi_hash(e, e->sas[index].p.spi)];
    while (*link != NO_INDEX) {
        if (*link == index) {
            *link = e->sas[index].hnext;
            return;
        }
        link = &e->sas[*link].hnext;
    }
}

static void sa_clear(struct ipsg_engine *e, uint32_t index)
{
    struct sa *s = &e->sas[index];
    if (!s->used)
        return;
    if (s->p.direction == IPSG_DIR_IN)
        hash_unlink(e, index);
    if (s->alt)
        e->alt_ops->sa_free(s->cs);
    else
        crypto_sa_free(s->cs); /* zeroes the expanded keys */
    crypto_cleanse(s, sizeof(*s));
}

void ipsg_engine_free(struct ipsg_engine *e)
{
    uint32_t i;
    if (e == NULL)
        return;
    if (e->sas != NULL) {
        for (i = 0; i < e->capacity; i++)
            sa_clear(e, i);
        free(e->sas);
    }
    free(e->heads);
    free(e->ah_heads);
    if (e->ah_buf != NULL) {
        crypto_cleanse(e->ah_buf, AH_ARENA); /* the last packets' ICV input */
        free(e->ah_buf);
    }
    if (e->be != NULL)
        crypto_engine_free(e->be);
    if (e->alt_be != NULL)
        e->alt_ops->be_free(e->alt_be);
    crypto_cleanse(e, sizeof(*e)); /* jobs hold nonces, the pool unused IVs */
    free(e);
}

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err != NULL && errlen > 0) {
        strncpy(err, msg, errlen - 1);
        err[errlen - 1] = '\0';
    }
    return -1;
}

static const char *check_params(const struct ipsg_sa_params *p)
{
    uint32_t i;
    if (p->proto != IPSG_PROTO_ESP && p->proto != IPSG_PROTO_AH)
        return "unknown IPsec protocol";
    if (p->direction > IPSG_DIR_IN)
        return "direction must be in or out";
    if (p->mode > IPSG_MODE_TRANSPORT)
        return "mode must be tunnel or transport";
    if (p->family != 4 && p->family != 6)
        return "address family must be 4 or 6";
    if (p->df > IPSG_DF_CLEAR || p->ecn > IPSG_ECN_COMPAT || p->flowlabel > IPSG_FLOWLABEL_ZERO)
        return "bad df/ecn/flowlabel policy";
    if (p->dscp > 63 && p->dscp != IPSG_DSCP_COPY)
        return "dscp must be 0..63 or copy";
    if (p->ttl == 0)
        return "ttl must be 1..255";
    if (p->replay_window > IPSG_REPLAY_MAX)
        return "replay window larger than 4096";
    if (p->n_local_ts > IPSG_MAX_TS || p->n_remote_ts > IPSG_MAX_TS)
        return "at most 8 traffic selectors";
    for (i = 0; i < p->n_local_ts; i++)
        if (p->local_ts[i].family != 4 && p->local_ts[i].family != 6)
            return "traffic selector family must be 4 or 6";
    for (i = 0; i < p->n_remote_ts; i++)
        if (p->remote_ts[i].family != 4 && p->remote_ts[i].family != 6)
            return "traffic selector family must be 4 or 6";
    if (p->direction == IPSG_DIR_OUT && p->seq == 0 && !p->esn)
        return "outbound sequence number must start at 1 or more";
    if (p->enc_key_len > IPSG_MAX_KEY || p->integ_key_len > IPSG_MAX_INTEG_KEY)
        return "key too long";
    if (p->proto == IPSG_PROTO_AH)
        return ah_check_params(p);
    if (is_aead(p->enc)) {
        if (p->integ != IPSG_INTEG_NONE)
            return "AEAD algorithms take no integrity algorithm";
        if (p->enc_key_len < 4 ||
            (p->enc == IPSG_ENC_CHACHA20_POLY1305 ? p->enc_key_len != 36 : !aes_key_len_ok(p->enc_key_len - 4u)))
            return "bad AEAD key length (cipher key + 4-byte salt)";
    } else if (p->enc == IPSG_ENC_AES_CBC || p->enc == IPSG_ENC_NULL) {
        if (p->enc == IPSG_ENC_AES_CBC && !aes_key_len_ok(p->enc_key_len))
            return "bad AES-CBC key length";
        if (icv_len_of(p->integ) == 0)
            return "a non-AEAD cipher needs an HMAC integrity algorithm";
        if (p->integ_key_len == 0)
            return "empty integrity key";
    } else {
        return "unknown encryption algorithm";
    }
    return NULL;
}

static int sa_add(struct ipsg_engine *e, uint32_t index, const struct ipsg_sa_params *p, const void *alt_arg,
                  int alt, char *err, size_t errlen)
{
    struct sa *s;
    const char *why = NULL;
    void *cs;
    uint32_t h;

    if (e == NULL || p == NULL)
        return fail(err, errlen, "no engine or parameters");
    if (index >= e->capacity)
        return fail(err, errlen, "SA index out of range");
    if (alt && e->alt_ops == NULL)
        return fail(err, errlen, "engine has no alternative back end");
    if ((why = check_params(p)) != NULL)
        return fail(err, errlen, why);
    if (p->proto == IPSG_PROTO_AH) {
        struct ipsg_sa_params cp;
        if (alt)
            return fail(err, errlen, "AH runs on CPU crypto: no offload or cryptodev back end takes it");
        if (e->ah_buf == NULL && (e->ah_buf = malloc(AH_ARENA)) == NULL)
            return fail(err, errlen, "out of memory");
        ah_crypto_params(p, &cp);
        cs = crypto_sa_new(e->be, &cp, &why);
        crypto_cleanse(&cp, sizeof(cp));
    } else {
        cs = alt ? e->alt_ops->sa_new(e->alt_be, p, alt_arg, &why) : crypto_sa_new(e->be, p, &why);
    }
    if (cs == NULL)
        return fail(err, errlen, why ? why : "crypto setup failed");

    sa_clear(e, index); /* replacing an SA: drop the old session first */
    s = &e->sas[index];
    memset(s, 0, sizeof(*s));
    s->alt = (uint8_t)alt;
    s->p = *p;
    crypto_cleanse(s->p.enc_key, sizeof(s->p.enc_key));
    crypto_cleanse(s->p.integ_key, sizeof(s->p.integ_key));
    s->cs = cs;
    if (is_aead(p->enc))
        memcpy(s->salt, p->enc_key + p->enc_key_len - 4, 4);
    s->icv_len = (uint8_t)(is_aead(p->enc) ? 16 : icv_len_of(p->integ));
    s->iv_len = p->enc == IPSG_ENC_AES_CBC ? 16 : p->enc == IPSG_ENC_NULL ? 0 : 8;
    s->block = p->enc == IPSG_ENC_AES_CBC ? 16 : 4;
    if (p->proto == IPSG_PROTO_AH)
        ah_sa_init(s, p);
    if (p->direction == IPSG_DIR_OUT) {
        s->st.seq = p->seq;
        /* ESN: 0 stands for 2^64, the value after the last usable one */
        if ((!p->esn && p->seq > 0xFFFFFFFFull) || (p->esn && p->seq == 0))
            s->st.flags |= IPSG_SAF_SEQ_EXHAUSTED;
    } else {
        /* The window starts just below the first expected number. */
        s->top = p->seq ? p->seq - 1 : 0;
        s->st.seq = s->top;
    }
    s->used = 1;
    s->hnext = NO_INDEX;
    if (s->p.direction == IPSG_DIR_IN) {
        uint32_t *heads = p->proto == IPSG_PROTO_AH ? e->ah_heads : e->heads;
        h = spi_hash(e, s->p.spi);
        s->hnext = heads[h];
        heads[h] = index;
    }
    return 0;
}

int ipsg_sa_add(struct ipsg_engine *e, uint32_t index, const struct ipsg_sa_params *p, char *err, size_t errlen)
{
    return sa_add(e, index, p, NULL, 0, err, errlen);
}

int ipsg_sa_add_alt(struct ipsg_engine *e, uint32_t index, const struct ipsg_sa_params *p, const void *arg,
                    char *err, size_t errlen)
{
    return sa_add(e, index, p, arg, 1, err, errlen);
}

int ipsg_engine_set_alt(struct ipsg_engine *e, const struct ipsg_alt_ops *ops, void *be)
{
    if (e == NULL || ops == NULL || be == NULL || e->alt_ops != NULL)
        return -1;
    e->alt_ops = ops;
    e->alt_be = be;
    return 0;
}

void *ipsg_engine_alt(struct ipsg_engine *e) { return e != NULL ? e->alt_be : NULL; }

int ipsg_sa_is_alt(struct ipsg_engine *e, uint32_t index)
{
    if (e == NULL || index >= e->capacity || !e->sas[index].used)
        return -1;
    return e->sas[index].alt;
}

int ipsg_sa_del(struct ipsg_engine *e, uint32_t index)
{
    if (e == NULL || index >= e->capacity || !e->sas[index].used)
        return -1;
    sa_clear(e, index);
    return 0;
}

int ipsg_sa_stats(struct ipsg_engine *e, uint32_t index, struct ipsg_sa_stats *out)
{
    if (e == NULL || out == NULL || index >= e->capacity || !e->sas[index].used)
        return -1;
    *out = e->sas[index].st;
    return 0;
}

void ipsg_engine_drops(struct ipsg_engine *e, uint64_t *out16)
{
    if (e != NULL && out16 != NULL)
        memcpy(out16, e->drops, sizeof(e->drops));
}

/* ----------------------------------------------------- shared per-packet */

static int take_random_iv(struct ipsg_engine *e, uint8_t *iv16)
{
    if (unlikely(e->rnd_pos + 16 > RAND_POOL)) {
        if (crypto_random(e->rnd, RAND_POOL) != 0)
            return -1;
        e->rnd_pos = 0;
    }
    memcpy(iv16, e->rnd + e->rnd_pos, 16);
    memset(e->rnd + e->rnd_pos, 0, 16); /* never hand out the same IV twice */
    e->rnd_pos += 16;
    return 0;
}

/* The AEAD AAD (RFC 4106 5, RFC 7634 2.1): SPI || [seq_hi ||] seq_lo. */
static inline void fill_aad(struct ipsg_job *j, uint32_t spi, uint64_t seq, int esn)
{
    wr32(j->aad, spi);
    if (esn) {
        wr32(j->aad + 4, (uint32_t)(seq >> 32));
        wr32(j->aad + 8, (uint32_t)seq);
        j->aad_len = 12;
    } else {
        wr32(j->aad + 4, (uint32_t)seq);
        j->aad_len = 8;
    }
}

static inline void job_common(struct ipsg_job *j, const struct sa *s, uint8_t *esp, uint32_t len, uint64_t seq)
{
    const struct ipsg_sa_params *p = &s->p;
    j->cs = s->cs;
    j->esp = esp;
    j->data = esp + ESP_HDR + s->iv_len;
    j->len = len;
    j->icv = j->data + len;
    j->enc = p->enc;
    j->integ = p->integ;
    j->esn = p->esn;
    j->icv_len = s->icv_len;
    j->iv_len = s->iv_len;
    j->alt = s->alt;
    j->st = IPSG_ST_INTERNAL;
    wr32(j->seq_hi, (uint32_t)(seq >> 32));
    if (is_aead(p->enc)) {
        memcpy(j->nonce, s->salt, 4);
        memcpy(j->nonce + 4, esp + ESP_HDR, 8);
        fill_aad(j, p->spi, seq, p->esn);
    }
}

/* Phase (b).  A round whose SAs all use one back end goes to it whole; a mixed round
 * is sorted (module's jobs first, order kept) and the packets' job indexes follow. */
static void run_jobs(struct ipsg_engine *e, uint32_t n_ctx, uint32_t nj, uint32_t na, int dir)
{
    uint32_t perm[IPSG_JOBS], k = 0, a = 0, i;
    if (likely(na == 0)) {
        crypto_run(e->be, e->jobs, nj, dir);
        return;
    }
    if (na == nj) {
        e->alt_ops->run(e->alt_be, e->jobs, nj, dir);
        return;
    }
    for (i = 0; i < nj; i++) {
        if (e->jobs[i].alt) {
            perm[i] = nj - na + a;
            e->alt_tmp[a++] = e->jobs[i];
        } else {
            perm[i] = k;
            if (k != i)
                e->jobs[k] = e->jobs[i];
            k++;
        }
    }
    memcpy(&e->jobs[k], e->alt_tmp, a * sizeof(e->alt_tmp[0]));
    for (i = 0; i < n_ctx; i++)
        if (e->ctx[i].job != NO_JOB)
            e->ctx[i].job = perm[e->ctx[i].job];
    crypto_run(e->be, e->jobs, k, dir);
    e->alt_ops->run(e->alt_be, e->jobs + k, a, dir);
}

/* --------------------------------------------------------------- outbound */

/* Phase (a) for one outbound packet: frame it and fill job j. */
static uint8_t out_prepare(struct ipsg_engine *e, struct sa *s, uint8_t *slot, uint32_t slot_size,
                           struct pkt_ctx *c, struct ipsg_job *j)
{
    const struct ipsg_sa_params *p = &s->p;
    const int tunnel = p->mode == IPSG_MODE_TUNNEL;
    uint32_t rel = c->rel, plen = c->len;
    uint8_t *pkt = slot + rel;
    uint32_t ver, ip_len, hl, nh_off = 0, pay_off, pay_len, pad, body, prefix, total, outer, udp, k;
    uint32_t out_fam, inner_fl = 0;
    uint8_t next, tos, inner_df = 0;
    uint8_t *pay, *start, *esp, *ivp;
    uint64_t seq = s->st.seq;

    if (unlikely(s->st.flags & (IPSG_SAF_HARD_EXPIRED | IPSG_SAF_SEQ_EXHAUSTED)))
        return s->st.flags & IPSG_SAF_HARD_EXPIRED ? IPSG_ST_HARD_EXPIRED : IPSG_ST_SEQ_EXHAUSTED;
    if (hard_packets_reached(s))
        return IPSG_ST_HARD_EXPIRED;

    /* Parse the plaintext IP packet. */
    if (unlikely(plen < 1))
        return IPSG_ST_MALFORMED;
    ver = pkt[0] >> 4;
    if (likely(ver == 4)) {
        if (plen < 20)
            return IPSG_ST_MALFORMED;
        hl = (pkt[0] & 15u) * 4;
        ip_len = rd16(pkt + 2);
        if (hl < 20 || ip_len < hl || ip_len > plen)
            return IPSG_ST_MALFORMED;
        nh_off = 9;
        tos = pkt[1];
        inner_df = (pkt[6] & 0x40) != 0;
    } else if (ver == 6) {
        if (plen < 40)
            return IPSG_ST_MALFORMED;
        ip_len = 40u + rd16(pkt + 4);
        if (ip_len > plen || (ip_len == 40 && plen > 40)) /* zero payload length: jumbogram */
            return IPSG_ST_MALFORMED;
        hl = 40;
        nh_off = 6;
        tos = (uint8_t)(rd32(pkt) >> 20);
        inner_fl = rd32(pkt) & 0xFFFFF;
        inner_df = 1;
        /* Walked in both modes so that a broken chain is MALFORMED either way. */
        while (pkt[nh_off] == PROTO_HOPOPT || pkt[nh_off] == PROTO_ROUTING) {
            uint32_t el;
            if (hl + 8 > ip_len)
                return IPSG_ST_MALFORMED;
            el = (pkt[hl + 1] + 1u) * 8;
            if (el > ip_len - hl)
                return IPSG_ST_MALFORMED;
            nh_off = hl;
            hl += el;
        }
    } else {
        return IPSG_ST_MALFORMED;
    }
    if (hard_bytes_exceeded(s, ip_len))
        return IPSG_ST_HARD_EXPIRED;

    pay_off = tunnel ? 0 : hl;
    pay_len = ip_len - pay_off;
    next = tunnel ? (ver == 4 ? PROTO_IPIP : PROTO_IPV6) : pkt[nh_off];
    pad = (0u - (pay_len + 2)) & (s->block - 1u); /* block is 4 or 16 */
    body = pay_len + pad + 2;
    udp = p->udp_encap ? UDP_HDR : 0;
    out_fam = tunnel ? p->family : ver;
    outer = tunnel ? (p->family == 4 ? 20 : 40) : hl;
    prefix = outer + udp + ESP_HDR + s->iv_len;
    total = prefix + body + s->icv_len; /* all terms bounded by slot_size + a few hundred */
    if (total > slot_size)
        return IPSG_ST_TOO_BIG;
    if ((out_fam == 4 && total > 0xFFFF) || (out_fam == 6 && total - 40 > 0xFFFF))
        return IPSG_ST_TOO_BIG;
    /* An ESN HMAC back end may borrow the 4 bytes after the ICV's start: covered, icv_len >= 16. */

    /* Make room around the payload inside the slot if its position leaves too little. */
    if (unlikely(rel + pay_off < prefix || rel + pay_off + body + s->icv_len > slot_size)) {
        uint32_t nrel = prefix - pay_off;
        memmove(slot + nrel, pkt, ip_len);
        rel = nrel;
        pkt = slot + rel;
    }
    pay = pkt + pay_off;
    start = pay - prefix;
    esp = start + outer + udp;
    ivp = esp + ESP_HDR;

    /* Inner fields the outer header copies, read before anything overwrites them. */
    if (!tunnel)
        memmove(start, pkt, hl); /* the original header moves in front of UDP/ESP */

    for (k = 0; k < pad; k++)
        pay[pay_len + k] = (uint8_t)(k + 1);
    pay[pay_len + pad] = (uint8_t)pad;
    pay[pay_len + pad + 1] = next;
    wr32(esp, p->spi);
    wr32(esp + 4, (uint32_t)seq);
    if (p->enc == IPSG_ENC_AES_CBC) {
        if (take_random_iv(e, ivp) != 0)
            return IPSG_ST_INTERNAL;
    } else if (s->iv_len) {
        wr64(ivp, seq); /* RFC 4106 3.1: the sequence number is a fine unique IV */
    }

    if (udp) {
        uint8_t *u = start + outer;
        wr16(u, p->sport);
        wr16(u + 2, p->dport);
        wr16(u + 4, total - outer);
        u[6] = u[7] = 0; /* RFC 3948: IPv4 senders may send zero */
    }
    if (tunnel) {
        write_outer(s, start, total, tos, inner_df, inner_fl, ver, udp ? PROTO_UDP : PROTO_ESP);
    } else if (ver == 4) {
        start[9] = udp ? PROTO_UDP : PROTO_ESP;
        wr16(start + 2, total);
        ipv4_checksum(start, hl);
    } else {
        start[nh_off] = udp ? PROTO_UDP : PROTO_ESP;
        wr16(start + 4, total - 40);
    }
    /* The IPv6 UDP checksum covers the ciphertext: phase (c). */
    c->udp6 = (udp && out_fam == 6) ? outer : 0;

    job_common(j, s, esp, body, seq);

    /* Commit SA state now: the packet leaves. */
    if (tunnel && p->family == 4)
        s->ip_id++;
    if ((!p->esn && seq >= 0xFFFFFFFFull) || (p->esn && seq == UINT64_MAX))
        s->st.flags |= IPSG_SAF_SEQ_EXHAUSTED;
    s->st.seq = seq + 1; /* with ESN 2^64 wraps to 0, read with the flag */
    account(s, ip_len);
    c->rel = (uint32_t)(start - slot);
    c->len = total;
    return IPSG_ST_OK;
}

void ipsg_esp_outbound(struct ipsg_engine *e, struct ipsg_batch *b)
{
    uint32_t i0, i, n;
    if (!batch_usable(e, b))
        return;
    for (i0 = 0; i0 < b->n; i0 += n) {
        uint32_t nj = 0, na = 0;
        n = b->n - i0 < IPSG_JOBS ? b->n - i0 : IPSG_JOBS;
        /* (a) */
        for (i = 0; i < n; i++) {
            struct pkt_ctx *c = &e->ctx[i];
            uint32_t pi = i0 + i, idx = b->sa[pi];
            struct sa *s = idx < e->capacity ? &e->sas[idx] : NULL;
            c->job = NO_JOB;
            c->s = NULL;
            if (s == NULL || !s->used || s->p.direction != IPSG_DIR_OUT || s->p.proto != IPSG_PROTO_ESP) {
                c->st = IPSG_ST_NO_SA;
                continue;
            }
            c->s = s;
            if (!slot_ok(b, pi, &c->rel)) {
                c->st = IPSG_ST_MALFORMED;
                continue;
            }
            c->len = b->len[pi];
            c->st = out_prepare(e, s, batch_slot(b, pi), b->slot_size, c, &e->jobs[nj]);
            if (c->st == IPSG_ST_OK) {
                na += s->alt;
                c->job = nj++;
            }
        }
        /* (b) */
        if (nj)
            run_jobs(e, n, nj, na, IPSG_DIR_OUT);
        /* (c) */
        for (i = 0; i < n; i++) {
            struct pkt_ctx *c = &e->ctx[i];
            uint32_t pi = i0 + i;
            uint8_t st = c->st;
            if (c->job != NO_JOB) {
                st = e->jobs[c->job].st;
                if (st == IPSG_ST_OK) {
                    uint8_t *slot = batch_slot(b, pi);
                    if (c->udp6)
                        udp6_checksum(slot + c->rel, slot + c->rel + c->udp6, c->len - c->udp6);
                    b->off[pi] = (uint32_t)(batch_base(b, pi) + c->rel);
                    b->len[pi] = c->len;
                }
            }
            if (st != IPSG_ST_OK) {
                if (c->s != NULL)
                    c->s->st.drops[st]++;
                else
                    e->drops[st]++;
            }
            b->status[pi] = st;
        }
    }
}

/* ---------------------------------------------------------------- inbound */

static uint8_t parse_outer(const uint8_t *pkt, uint32_t len, struct outer *o)
{
    uint32_t frag, proto;
    uint8_t st = outer_ip(pkt, len, o, &proto, &frag);
    if (unlikely(st != IPSG_ST_OK))
        return st;

    if (proto == PROTO_ESP) {
        if (frag)
            return IPSG_ST_FRAGMENT;
        o->esp = o->l4;
    } else if (proto == PROTO_UDP) {
        const uint8_t *u = pkt + o->l4;
        uint32_t avail, ulen;
        if (frag & 0x1FFF)
            return IPSG_ST_NOT_ESP; /* a later fragment: no ports to tell */
        if (o->l4 + UDP_HDR > o->end)
            return IPSG_ST_MALFORMED;
        if (rd16(u) != NAT_T_PORT && rd16(u + 2) != NAT_T_PORT)
            return IPSG_ST_NOT_ESP;
        avail = o->end - o->l4 - UDP_HDR;
        if (!frag) {
            ulen = rd16(u + 4);
            if (ulen < UDP_HDR || ulen > o->end - o->l4)
                return IPSG_ST_MALFORMED;
            avail = ulen - UDP_HDR;
            o->end = o->l4 + ulen;
        }
        if (avail == 1 && u[UDP_HDR] == 0xFF)
            return IPSG_ST_NOT_ESP; /* NAT keepalive, RFC 3948 2.3 */
        if (avail >= 4 && rd32(u + UDP_HDR) == 0)
            return IPSG_ST_NOT_ESP; /* non-ESP marker: IKE */
        if (frag)
            return IPSG_ST_FRAGMENT;
        o->esp = o->l4 + UDP_HDR;
    } else {
        return IPSG_ST_NOT_ESP;
    }
    if (o->end - o->esp < ESP_HDR)
        return IPSG_ST_MALFORMED;
    return IPSG_ST_OK;
}

/* Result of in_prepare beyond the IPSG_ST_* values: end the round before this packet. */
#define CUT_ROUND 0xFF

/* Phase (a) for one inbound packet: parse, find the SA, pre-checks, fill job j. */
static uint8_t in_prepare(struct ipsg_engine *e, uint8_t *slot, struct pkt_ctx *c, struct ipsg_job *j)
{
    uint8_t *pkt = slot + c->rel, *esp;
    struct sa *s;
    uint32_t esp_len, lo;
    uint64_t seq;
    uint8_t st;

    if ((st = parse_outer(pkt, c->len, &c->o)) != IPSG_ST_OK)
        return st;
    esp = pkt + c->o.esp;
    s = lookup(e, e->heads, rd32(esp), c->o.fam, c->o.dst, &c->index);
    if (s == NULL)
        return IPSG_ST_NO_SA;
    if (s->p.esn && s->spec_round == e->round && s->spec_top > s->top) {
        /* Pending packets may move the window top past a point where this
         * packet's high half would be inferred differently. */
        lo = rd32(esp + 4);
        if (infer_esn(s, s->top, lo) != infer_esn(s, s->spec_top, lo))
            return CUT_ROUND;
    }
    c->s = s;
    if (s->st.flags & IPSG_SAF_HARD_EXPIRED || hard_packets_reached(s))
        return IPSG_ST_HARD_EXPIRED;

    esp_len = c->o.end - c->o.esp;
    if (esp_len < ESP_HDR + s->iv_len + s->icv_len + 2u)
        return IPSG_ST_MALFORMED;
    c->ct_len = esp_len - ESP_HDR - s->iv_len - s->icv_len;
    if (s->p.enc == IPSG_ENC_AES_CBC && c->ct_len % 16)
        return IPSG_ST_MALFORMED;

    lo = rd32(esp + 4);
    seq = s->p.esn ? infer_esn(s, s->top, lo) : lo;
    c->seq = seq;
    if (seq == 0 || replay_seen(s, seq))
        return IPSG_ST_REPLAY;
    job_common(j, s, esp, c->ct_len, seq);
    if (s->p.esn) {
        if (s->spec_round != e->round) {
            s->spec_round = e->round;
            s->spec_top = s->top;
        }
        if (seq > s->spec_top)
            s->spec_top = seq;
    }
    return IPSG_ST_OK;
}

/* Phase (c) for one inbound packet whose ICV checked out and whose number is fresh. */
static uint8_t in_finish(struct sa *s, uint8_t *slot, struct pkt_ctx *c)
{
    uint8_t *pkt = slot + c->rel, *pt, *res;
    const struct outer *o = &c->o;
    struct flow f;
    uint8_t st, padlen, nh;
    uint32_t ct_len = c->ct_len, pay_len, res_len, k;

    pt = pkt + o->esp + ESP_HDR + s->iv_len;
    padlen = pt[ct_len - 2];
    nh = pt[ct_len - 1];
    if (padlen > ct_len - 2)
        return IPSG_ST_PADDING;
    pay_len = ct_len - 2 - padlen;
    for (k = 0; k < padlen; k++)
        if (pt[pay_len + k] != (uint8_t)(k + 1))
            return IPSG_ST_PADDING;
    if (nh == PROTO_NONE)
        return IPSG_ST_DUMMY;

    if (s->p.mode == IPSG_MODE_TUNNEL) {
        if ((st = tunnel_inner(nh, pt, pay_len, o->ecn, &res_len)) != IPSG_ST_OK)
            return st;
        res = pt; /* anything after res_len is TFC padding */
    } else {
        /* Transport: the outer header (and extension headers) goes back in front of the payload. */
        res = pt - o->l4;
        memmove(res, pkt, o->l4);
        res_len = o->l4 + pay_len;
        res[o->nh_off] = nh;
        if (o->fam == 4) {
            wr16(res + 2, res_len);
            ipv4_checksum(res, o->l4);
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

void ipsg_esp_inbound(struct ipsg_engine *e, struct ipsg_batch *b)
{
    uint32_t i0, i, n;
    if (!batch_usable(e, b))
        return;
    poison_slot_tails(b);
    for (i0 = 0; i0 < b->n; i0 += n) {
        uint32_t nj = 0, na = 0, limit = b->n - i0 < IPSG_JOBS ? b->n - i0 : IPSG_JOBS;
        e->round++;
        /* (a): stops early where a packet depends on the outcome of pending ones */
        for (n = 0; n < limit; n++) {
            struct pkt_ctx *c = &e->ctx[n];
            uint32_t pi = i0 + n;
            c->job = NO_JOB;
            c->s = NULL;
            c->index = NO_INDEX;
            if (!slot_ok(b, pi, &c->rel)) {
                c->st = IPSG_ST_MALFORMED;
                continue;
            }
            c->len = b->len[pi];
            c->st = in_prepare(e, batch_slot(b, pi), c, &e->jobs[nj]);
            if (c->st == CUT_ROUND)
                break;
            if (c->st == IPSG_ST_OK) {
                na += c->s->alt;
                c->job = nj++;
            }
        }
        /* (b) */
        if (nj)
            run_jobs(e, n, nj, na, IPSG_DIR_IN);
        /* (c): every check of a packet in the order a lone packet meets them, against
         * the state its predecessors left */
        for (i = 0; i < n; i++) {
            struct pkt_ctx *c = &e->ctx[i];
            struct sa *s = c->s;
            uint32_t pi = i0 + i;
            uint8_t st = c->st;
            if (s != NULL) {
                if (s->st.flags & IPSG_SAF_HARD_EXPIRED || hard_packets_reached(s))
                    st = IPSG_ST_HARD_EXPIRED;
                else if (st == IPSG_ST_OK && replay_seen(s, c->seq))
                    st = IPSG_ST_REPLAY;
                else if (st == IPSG_ST_OK && (st = e->jobs[c->job].st) == IPSG_ST_OK) {
                    replay_accept(s, c->seq);
                    st = in_finish(s, batch_slot(b, pi), c);
                }
                if (st == IPSG_ST_OK) {
                    b->off[pi] = (uint32_t)(batch_base(b, pi) + c->rel);
                    b->len[pi] = c->len;
                } else {
                    s->st.drops[st]++;
                }
            } else {
                e->drops[st]++;
            }
            b->sa[pi] = s != NULL ? c->index : NO_INDEX;
            b->status[pi] = st;
        }
    }
    unpoison_slots(b);
}

/* Known-answer entry points: the same for every back end. */
int ipsg_aead_seal(uint8_t enc, const uint8_t *key, uint32_t key_len, const uint8_t *nonce, uint32_t nonce_len,
                   const uint8_t *aad, uint32_t aad_len, const uint8_t *in, uint32_t in_len, uint8_t *out,
                   uint8_t *tag16)
{
    return crypto_aead_run(1, enc, key, key_len, nonce, nonce_len, aad, aad_len, in, in_len, out, tag16);
}

int ipsg_aead_open(uint8_t enc, const uint8_t *key, uint32_t key_len, const uint8_t *nonce, uint32_t nonce_len,
                   const uint8_t *aad, uint32_t aad_len, const uint8_t *in, uint32_t in_len, uint8_t *out,
                   const uint8_t *tag16)
{
    uint8_t tag[16];
    if (tag16 == NULL)
        return -1;
    memcpy(tag, tag16, 16); /* the back end takes a writable tag buffer for both directions */
    return crypto_aead_run(0, enc, key, key_len, nonce, nonce_len, aad, aad_len, in, in_len, out, tag);
}
