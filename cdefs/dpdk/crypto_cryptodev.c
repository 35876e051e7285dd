/* DPDK crypto sessions as the ESP core's per-SA alternative back end (crypto_cryptodev.h).
 *
 * The core prepares a round of jobs, each pointing into its packet's batch slot (ESP header,
 * payload, ICV).  Here those jobs run on a DPDK symmetric session made for their SA:
 *  - lookaside: one crypto op per job, its m_src an mbuf whose external buffer *is* the slot
 *    memory from the ESP header to past the ICV (rte_pktmbuf_attach_extbuf), so nothing is
 *    copied; the round goes to the device's queue pair in bursts and is dequeued before the
 *    call returns, because phase (c) of the core needs every verdict;
 *  - CPU crypto: rte_cryptodev_sym_cpu_crypto_process over rte_crypto_sym_vec entries that
 *    point at the same slot memory, one call per run of consecutive jobs of one session.
 * Ops and mbufs are allocated once per engine and reused every round.
 *
 * The ESP layout decides the transforms: AEAD data = payload||trailer, AAD = SPI||[seq_hi||]
 * seq_lo (from the job), IV = salt||IV in the op's private area; GMAC authenticates
 * SPI..payload, and with ESN SPI||seq_hi||seq_lo||IV||payload, made contiguous for the call by
 * writing SPI||seq_hi over the 4 bytes before the ESP header and the SPI (saved, and put back
 * when the job completes); HMAC covers SPI..ciphertext and, with ESN, seq_hi, which is written
 * where the ICV goes (the core leaves those bytes to the back end, as crypto_ipsecmb.c does).
 *
 * Sessions live in the fastpath process only; their device-private data (keys) is zeroed by
 * rte_cryptodev_sym_session_free, and our copies of keys are wiped right after creation.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <rte_common.h>
#include <rte_cryptodev.h>
#include <rte_crypto.h>
#include <rte_errno.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "esp/esp_core.h"
#include "crypto_cryptodev.h"
#include "dpdk_xform.h"

#define MAX_DEVS RTE_CRYPTO_MAX_DEVS
#define QP_DESC 2048
#define SESSIONS_PER_DEV 2048
#define MAX_QP_PER_DEV 8
/* Op private area: the IV (16 bytes), then the job the op belongs to. */
#define IV_OFF (sizeof(struct rte_crypto_op) + sizeof(struct rte_crypto_sym_op))
#define JOB_OFF (IV_OFF + 16)
#define OP_PRIV 32

/* Per-process device state: a device is configured and started once, with a few queue pairs
 * handed out to engines (a worker each) and one session pool. */
struct dev_state {
    uint8_t ready;
    uint8_t cpu;             /* offers RTE_CRYPTODEV_FF_SYM_CPU_CRYPTO */
    uint16_t nb_qp;
    uint32_t qp_used;        /* bit q: queue pair q belongs to an engine */
    struct rte_mempool *sess_pool;
    char name[RTE_CRYPTODEV_NAME_MAX_LEN];
};
static struct dev_state devs[MAX_DEVS];

struct cdev_be;

struct cdev_sa {
    void *sess;
    struct cdev_be *be;
    uint8_t dev;
    uint8_t cpu;
    uint8_t kind;
    uint8_t esn;
    uint16_t qp;
    union rte_crypto_sym_ofs ofs; /* CPU crypto, chained transforms */
};

struct cdev_be {
    struct rte_mempool *op_pool, *mb_pool;
    struct rte_crypto_op *ops[IPSG_JOBS];
    struct rte_mbuf *mbufs[IPSG_JOBS];
    struct rte_crypto_op *burst[IPSG_JOBS], *done[IPSG_JOBS];
    struct rte_mbuf_ext_shared_info shinfo;
    int va;                  /* IOVA as VA: an address is its own IOVA */
    int16_t qp[MAX_DEVS];    /* queue pair claimed on each device, -1 none */
    struct ipsg_cdev_stats st;
    /* CPU crypto vectors */
    struct rte_crypto_vec vec[IPSG_JOBS];
    struct rte_crypto_sgl sgl[IPSG_JOBS];
    struct rte_crypto_va_iova_ptr iv[IPSG_JOBS], dg[IPSG_JOBS], aad[IPSG_JOBS];
    int32_t status[IPSG_JOBS];
};

static void set_err(char *err, size_t errlen, const char *what, const char *dev, int code)
{
    if (err && errlen)
        snprintf(err, errlen, "%s on %s: %s", what, dev, rte_strerror(code < 0 ? -code : code));
}

int ipsg_cdev_by_name(const char *name)
{
    int id = rte_cryptodev_get_dev_id(name);
    return id < 0 || id >= MAX_DEVS ? -1 : id;
}

/* ------------------------------------------------------------ device and engine set-up */

static int dev_setup(uint8_t dev, char *err, size_t errlen)
{
    struct dev_state *d = &devs[dev];
    struct rte_cryptodev_info info;
    struct rte_cryptodev_config conf;
    char name[RTE_MEMPOOL_NAMESIZE];
    int socket, rc;
    uint16_t q;

    if (d->ready)
        return 0;
    if (!rte_cryptodev_is_valid_dev(dev)) {
        snprintf(err, errlen, "no cryptodev with id %u", dev);
        return -1;
    }
    snprintf(d->name, sizeof(d->name), "%s", rte_cryptodev_name_get(dev));
    rte_cryptodev_info_get(dev, &info);
    socket = rte_cryptodev_socket_id(dev);
    if (socket < 0)
        socket = 0;
    d->cpu = (info.feature_flags & RTE_CRYPTODEV_FF_SYM_CPU_CRYPTO) != 0;
    d->nb_qp = info.max_nb_queue_pairs < MAX_QP_PER_DEV ? info.max_nb_queue_pairs : MAX_QP_PER_DEV;
    if (d->nb_qp == 0) {
        snprintf(err, errlen, "%s has no queue pairs", d->name);
        return -1;
    }
    if (d->sess_pool == NULL) {
        snprintf(name, sizeof(name), "ipsg_cs%u", dev);
        d->sess_pool = rte_cryptodev_sym_session_pool_create(
            name, SESSIONS_PER_DEV, rte_cryptodev_sym_get_private_session_size(dev), 0, 0, socket);
        if (d->sess_pool == NULL) {
            set_err(err, errlen, "session pool", d->name, rte_errno);
            return -1;
        }
    }
    memset(&conf, 0, sizeof(conf));
    conf.socket_id = socket;
    conf.nb_queue_pairs = d->nb_qp;
    if ((rc = rte_cryptodev_configure(dev, &conf)) != 0) {
        set_err(err, errlen, "rte_cryptodev_configure", d->name, rc);
        return -1;
    }
    for (q = 0; q < d->nb_qp; q++) {
        struct rte_cryptodev_qp_conf qc = {.nb_descriptors = QP_DESC, .mp_session = d->sess_pool};
        if ((rc = rte_cryptodev_queue_pair_setup(dev, q, &qc, socket)) != 0) {
            set_err(err, errlen, "rte_cryptodev_queue_pair_setup", d->name, rc);
            return -1;
        }
    }
    if ((rc = rte_cryptodev_start(dev)) != 0) {
        set_err(err, errlen, "rte_cryptodev_start", d->name, rc);
        return -1;
    }
    d->ready = 1;
    return 0;
}

static void noop_free(void *addr, void *opaque)
{
    (void)addr;
    (void)opaque;
}

static void be_free(void *p)
{
    struct cdev_be *be = p;
    uint32_t i;
    if (be == NULL)
        return;
    for (i = 0; i < MAX_DEVS; i++)
        if (be->qp[i] >= 0)
            devs[i].qp_used &= ~(1u << be->qp[i]);
    for (i = 0; i < IPSG_JOBS; i++) {
        if (be->mbufs[i])
            rte_pktmbuf_free(be->mbufs[i]);
        if (be->ops[i]) {
            memset(rte_crypto_op_ctod_offset(be->ops[i], uint8_t *, IV_OFF), 0, 16); /* last nonce/IV */
            rte_crypto_op_free(be->ops[i]);
        }
    }
    rte_mempool_free(be->op_pool);
    rte_mempool_free(be->mb_pool);
    rte_free(be);
}

static struct cdev_be *be_new(char *err, size_t errlen)
{
    static unsigned serial;
    char name[RTE_MEMPOOL_NAMESIZE];
    struct cdev_be *be = rte_zmalloc("ipsg_cdev_be", sizeof(*be), RTE_CACHE_LINE_SIZE);
    unsigned id = __atomic_fetch_add(&serial, 1, __ATOMIC_RELAXED);
    uint32_t i;

    if (be == NULL) {
        snprintf(err, errlen, "out of DPDK memory for the cryptodev back end");
        return NULL;
    }
    for (i = 0; i < MAX_DEVS; i++)
        be->qp[i] = -1;
    be->va = rte_eal_iova_mode() == RTE_IOVA_VA;
    snprintf(name, sizeof(name), "ipsg_co%u", id);
    be->op_pool = rte_crypto_op_pool_create(name, RTE_CRYPTO_OP_TYPE_SYMMETRIC, IPSG_JOBS, 0, OP_PRIV,
                                            (int)rte_socket_id());
    snprintf(name, sizeof(name), "ipsg_cm%u", id);
    /* No data room: each mbuf only ever carries a slot as its external buffer. */
    be->mb_pool = rte_pktmbuf_pool_create(name, IPSG_JOBS, 0, 0, 0, (int)rte_socket_id());
    if (be->op_pool == NULL || be->mb_pool == NULL ||
        rte_crypto_op_bulk_alloc(be->op_pool, RTE_CRYPTO_OP_TYPE_SYMMETRIC, be->ops, IPSG_JOBS) != IPSG_JOBS ||
        rte_pktmbuf_alloc_bulk(be->mb_pool, be->mbufs, IPSG_JOBS) != 0) {
        snprintf(err, errlen, "op/mbuf pools for the cryptodev back end: %s", rte_strerror(rte_errno));
        memset(be->ops, 0, sizeof(be->ops));
        memset(be->mbufs, 0, sizeof(be->mbufs));
        be_free(be);
        return NULL;
    }
    be->shinfo.free_cb = noop_free;
    rte_mbuf_ext_refcnt_set(&be->shinfo, 1);
    return be;
}

/* ------------------------------------------------------------------------- sessions */

/* What ipsg_cdev_sa_add passes to sa_new through the core; msg holds sa_new's reason. */
struct sa_arg {
    uint8_t dev, mode;
    char msg[256];
};

static void sa_free(void *p)
{
    struct cdev_sa *c = p;
    if (c == NULL)
        return;
    if (c->sess)
        rte_cryptodev_sym_session_free(c->dev, c->sess); /* the PMD clears, DPDK zeroes its data */
    if (c->be)
        c->be->st.sessions--;
    memset(c, 0, sizeof(*c));
    rte_free(c);
}

static void *sa_new(void *bep, const struct ipsg_sa_params *p, const void *argp, const char **why)
{
    struct cdev_be *be = bep;
    struct sa_arg *a = (struct sa_arg *)argp; /* the core passes arg through untouched */
    struct dev_state *d = &devs[a->dev];
    struct rte_crypto_sym_xform x[2];
    struct cdev_sa *c;
    uint8_t key[36];

    *why = a->msg;
    if (a->mode == IPSG_CDEV_CPU && !d->cpu) {
        snprintf(a->msg, sizeof(a->msg), "%s does not offer CPU crypto", d->name);
        return NULL;
    }
    if (a->mode == IPSG_CDEV_LOOKASIDE && be->qp[a->dev] < 0) {
        uint16_t q = 0;
        while (q < d->nb_qp && (d->qp_used & (1u << q)))
            q++;
        if (q == d->nb_qp) {
            snprintf(a->msg, sizeof(a->msg), "%s: all %u queue pairs are taken", d->name, d->nb_qp);
            return NULL;
        }
        d->qp_used |= 1u << q;
        be->qp[a->dev] = (int16_t)q;
    }
    c = rte_zmalloc("ipsg_cdev_sa", sizeof(*c), 0);
    if (c == NULL) {
        snprintf(a->msg, sizeof(a->msg), "out of DPDK memory");
        return NULL;
    }
    c->dev = a->dev;
    c->cpu = a->mode == IPSG_CDEV_CPU;
    c->esn = p->esn;
    c->qp = c->cpu ? 0 : (uint16_t)be->qp[a->dev];
    c->kind = (uint8_t)ipsg_xform_kind(p->enc);
    ipsg_esp_xforms(p, x, key, IV_OFF);
    if (c->kind == IPSG_XF_CHAIN) {
        /* CPU crypto: one buffer from the ESP header; cipher from the IV's end, seq_hi not ciphered */
        c->ofs.ofs.cipher.head = (uint16_t)(8 + (p->enc == IPSG_ENC_AES_CBC ? 16 : 0));
        c->ofs.ofs.cipher.tail = p->esn ? 4 : 0;
    }
    c->sess = rte_cryptodev_sym_session_create(a->dev, x, d->sess_pool);
    memset(key, 0, sizeof(key));
    if (c->sess == NULL) {
        set_err(a->msg, sizeof(a->msg), "rte_cryptodev_sym_session_create", d->name, rte_errno);
        rte_free(c);
        return NULL;
    }
    c->be = be;
    be->st.sessions++;
    return c;
}

/* ----------------------------------------------------------------------- per round */

static inline rte_iova_t iova_of(const struct cdev_be *be, const void *p)
{
    /* Software PMDs use the virtual address only; hardware needs DPDK memory under the slots. */
    return be->va ? (rte_iova_t)(uintptr_t)p : rte_mem_virt2iova(p);
}

/* HMAC with ESN: seq_hi goes where the ICV will be, hashed but never sent; the received ICV
 * is kept in scratch+32 (inbound) and the computed one lands in scratch (outbound). */
static inline uint8_t *chain_digest(struct ipsg_job *j, int out, uint32_t *hash_len)
{
    *hash_len = 8u + j->iv_len + j->len;
    if (!j->esn)
        return j->icv;
    if (!out)
        memcpy(j->scratch + 32, j->icv, j->icv_len);
    memcpy(j->icv, j->seq_hi, 4);
    *hash_len += 4;
    return out ? j->scratch : j->scratch + 32;
}

/* GMAC: where the authenticated data starts.  With ESN the 8 bytes before seq_lo (4 bytes of the
 * outer header, which every ESP packet has, and the SPI) become SPI || seq_hi until gmac_restore. */
static inline uint8_t *gmac_start(struct ipsg_job *j)
{
    if (!j->esn)
        return j->esp;
    memcpy(j->scratch + 48, j->esp - 4, 8);
    memcpy(j->esp - 4, j->aad, 8);
    return j->esp - 4;
}

static inline void job_status(struct cdev_be *be, struct ipsg_job *j, int ok, int auth_failed, int out)
{
    if (j->esn && ((struct cdev_sa *)j->cs)->kind == IPSG_XF_GMAC)
        memcpy(j->esp - 4, j->scratch + 48, 8); /* the packet's own bytes back */
    if (ok) {
        if (out && j->esn && ((struct cdev_sa *)j->cs)->kind == IPSG_XF_CHAIN)
            memcpy(j->icv, j->scratch, j->icv_len);
        j->st = IPSG_ST_OK;
    } else if (auth_failed) {
        be->st.auth_failed++;
        j->st = IPSG_ST_AUTH_FAILED;
    } else {
        be->st.errors++;
        j->st = IPSG_ST_INTERNAL;
    }
}

/* Fill op k for job j (lookaside). */
static inline void op_fill(struct cdev_be *be, uint32_t k, struct ipsg_job *j, int out)
{
    struct cdev_sa *c = j->cs;
    struct rte_crypto_op *op = be->ops[k];
    struct rte_crypto_sym_op *sym = op->sym;
    struct rte_mbuf *m = be->mbufs[k];
    uint8_t *iv = rte_crypto_op_ctod_offset(op, uint8_t *, IV_OFF);
    uint8_t *start = c->kind == IPSG_XF_GMAC ? gmac_start(j) : j->esp;
    uint32_t span = (uint32_t)(j->icv - start) + j->icv_len, hash_len;
    uint8_t *dg;

    rte_pktmbuf_attach_extbuf(m, start, iova_of(be, start), (uint16_t)span, &be->shinfo);
    m->data_len = (uint16_t)span;
    m->pkt_len = span;
    op->status = RTE_CRYPTO_OP_STATUS_NOT_PROCESSED;
    rte_crypto_op_attach_sym_session(op, c->sess);
    sym->m_src = m;
    sym->m_dst = NULL;
    *rte_crypto_op_ctod_offset(op, struct ipsg_job **, JOB_OFF) = j;
    switch (c->kind) {
    case IPSG_XF_AEAD:
        memcpy(iv, j->nonce, 12);
        sym->aead.data.offset = (uint32_t)(j->data - j->esp);
        sym->aead.data.length = j->len;
        sym->aead.digest.data = j->icv;
        sym->aead.digest.phys_addr = iova_of(be, j->icv);
        sym->aead.aad.data = j->aad;
        sym->aead.aad.phys_addr = iova_of(be, j->aad);
        break;
    case IPSG_XF_GMAC:
        memcpy(iv, j->nonce, 12);
        sym->auth.data.offset = 0;
        sym->auth.data.length = (uint32_t)(j->data - start) + j->len;
        sym->auth.digest.data = j->icv;
        sym->auth.digest.phys_addr = iova_of(be, j->icv);
        break;
    default:
        if (j->iv_len)
            memcpy(iv, j->esp + 8, 16);
        dg = chain_digest(j, out, &hash_len);
        sym->cipher.data.offset = 8u + j->iv_len;
        sym->cipher.data.length = j->len;
        sym->auth.data.offset = 0;
        sym->auth.data.length = hash_len;
        sym->auth.digest.data = dg;
        sym->auth.digest.phys_addr = iova_of(be, dg);
    }
}

/* Lookaside: every job with a session on device dev, enqueued and all dequeued. */
static void run_lookaside(struct cdev_be *be, struct ipsg_job *jobs, uint32_t n, uint8_t dev, uint16_t qp,
                          uint8_t *taken, int out)
{
    uint32_t i, cnt = 0, sent = 0, got = 0;
    for (i = 0; i < n; i++) {
        struct cdev_sa *c = jobs[i].cs;
        if (taken[i] || c->cpu || c->dev != dev)
            continue;
        taken[i] = 1;
        op_fill(be, cnt, &jobs[i], out);
        be->burst[cnt] = be->ops[cnt];
        cnt++;
    }
    rte_mbuf_ext_refcnt_set(&be->shinfo, (uint16_t)cnt);
    while (got < cnt) {
        uint16_t k;
        if (sent < cnt) {
            k = rte_cryptodev_enqueue_burst(dev, qp, be->burst + sent, (uint16_t)(cnt - sent));
            sent += k;
            if (sent < cnt)
                be->st.enqueue_retries++;
        }
        k = rte_cryptodev_dequeue_burst(dev, qp, be->done, (uint16_t)(sent - got));
        for (i = 0; i < k; i++) {
            struct rte_crypto_op *op = be->done[i];
            struct ipsg_job *j = *rte_crypto_op_ctod_offset(op, struct ipsg_job **, JOB_OFF);
            job_status(be, j, op->status == RTE_CRYPTO_OP_STATUS_SUCCESS,
                       op->status == RTE_CRYPTO_OP_STATUS_AUTH_FAILED, out);
            rte_pktmbuf_detach(op->sym->m_src); /* the slot is ours again */
        }
        got += k;
    }
    be->st.enqueued += cnt;
    be->st.dequeued += got;
}

/* CPU crypto: jobs [from, to) share one session. */
static void run_cpu(struct cdev_be *be, struct ipsg_job *jobs, uint32_t from, uint32_t to, int out)
{
    struct cdev_sa *c = jobs[from].cs;
    struct rte_crypto_sym_vec sv;
    union rte_crypto_sym_ofs ofs = {.raw = 0};
    uint32_t i, k, hash_len;
    for (i = from, k = 0; i < to; i++, k++) {
        struct ipsg_job *j = &jobs[i];
        struct rte_crypto_vec *v = &be->vec[k];
        uint8_t *dg = j->icv;
        be->sgl[k].vec = v;
        be->sgl[k].num = 1;
        if (c->kind == IPSG_XF_AEAD) {
            v->base = j->data;
            v->len = j->len;
            be->iv[k].va = j->nonce;
            be->aad[k].va = j->aad;
        } else if (c->kind == IPSG_XF_GMAC) {
            v->base = gmac_start(j);
            v->len = (uint32_t)(j->data - (uint8_t *)v->base) + j->len;
            be->iv[k].va = j->nonce;
        } else {
            dg = chain_digest(j, out, &hash_len);
            v->base = j->esp;
            v->len = hash_len;
            be->iv[k].va = j->esp + 8;
            ofs = c->ofs;
        }
        v->iova = iova_of(be, v->base);
        v->tot_len = v->len;
        be->dg[k].va = dg;
        be->dg[k].iova = iova_of(be, dg);
    }
    memset(&sv, 0, sizeof(sv));
    sv.num = k;
    sv.src_sgl = be->sgl;
    sv.iv = be->iv;
    sv.digest = be->dg;
    sv.aad = be->aad;
    sv.status = be->status;
    rte_cryptodev_sym_cpu_crypto_process(c->dev, c->sess, ofs, &sv);
    be->st.cpu_calls++;
    be->st.cpu_ops += k;
    for (i = from, k = 0; i < to; i++, k++)
        job_status(be, &jobs[i], be->status[k] == 0, be->status[k] == EBADMSG || be->status[k] == -EBADMSG, out);
}

static void be_run(void *bep, struct ipsg_job *jobs, uint32_t n, int dir)
{
    struct cdev_be *be = bep;
    const int out = dir == IPSG_DIR_OUT;
    uint8_t taken[IPSG_JOBS];
    uint32_t i, from;
    int lookaside = 0;

    /* CPU crypto first, in runs of one session; lookaside jobs are left for their devices. */
    for (i = 0; i < n;) {
        struct cdev_sa *c = jobs[i].cs;
        if (!c->cpu) {
            lookaside = 1;
            i++;
            continue;
        }
        from = i;
        while (i < n && jobs[i].cs == c)
            i++;
        run_cpu(be, jobs, from, i, out);
    }
    if (!lookaside)
        return;
    memset(taken, 0, n);
    for (i = 0; i < n; i++) {
        struct cdev_sa *c = jobs[i].cs;
        if (!taken[i] && !c->cpu)
            run_lookaside(be, jobs, n, c->dev, c->qp, taken, out);
    }
}

static const struct ipsg_alt_ops cdev_ops = {
    .sa_new = sa_new,
    .sa_free = sa_free,
    .run = be_run,
    .be_free = be_free,
};

/* ------------------------------------------------------------------------- entry points */

int ipsg_cdev_sa_add(struct ipsg_engine *e, uint32_t index, const struct ipsg_sa_params *p, uint8_t dev,
                     uint8_t mode, char *err, size_t errlen)
{
    struct cdev_be *be;
    struct sa_arg a;

    memset(&a, 0, sizeof(a));
    a.dev = dev;
    a.mode = mode;
    if (e == NULL || p == NULL || mode > IPSG_CDEV_CPU || dev >= MAX_DEVS) {
        snprintf(err, errlen, "bad arguments");
        return -1;
    }
    if (dev_setup(dev, err, errlen) != 0)
        return -1;
    be = ipsg_engine_alt(e);
    if (be == NULL) {
        if ((be = be_new(err, errlen)) == NULL)
            return -1;
        if (ipsg_engine_set_alt(e, &cdev_ops, be) != 0) {
            be_free(be);
            snprintf(err, errlen, "engine already has another back end");
            return -1;
        }
    }
    return ipsg_sa_add_alt(e, index, p, &a, err, errlen);
}

int ipsg_cdev_sa_on_session(struct ipsg_engine *e, uint32_t index) { return ipsg_sa_is_alt(e, index); }

int ipsg_cdev_stats(struct ipsg_engine *e, struct ipsg_cdev_stats *out)
{
    struct cdev_be *be = ipsg_engine_alt(e);
    if (be == NULL || out == NULL)
        return -1;
    *out = be->st;
    return 0;
}
