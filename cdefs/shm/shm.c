/* The shared-memory region: create/attach, seqlocked records, SPI index,
 * compiled SPD, rings.  Layout and rules: cdefs/shm/shm.h, docs/shared-memory.md.
 *
 * Memory ordering follows the usual seqlock recipe: a writer makes the lock
 * word odd, issues a release fence (so the odd value is visible before any
 * data store), writes, then release-stores the next even value; a reader
 * acquire-loads the lock, copies, issues an acquire fence and re-reads the
 * lock.  Double-buffered tables use the same scheme with a generation word.
 */
#define _GNU_SOURCE
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LOAD_RLX(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define STORE_RLX(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define FENCE_ACQ() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define FENCE_REL() __atomic_thread_fence(__ATOMIC_RELEASE)

/* A writer preempted mid-update holds a lock for at most a scheduler slice;
 * a writer that died holds it forever, so readers give up and say EBUSY. */
#define SPIN_LIMIT 2000000u

#define HASH_TOMB 0xffffffffu

_Static_assert(sizeof(struct ipsg_sa_params) % 8 == 0, "digest reads params as 64-bit words");
_Static_assert(sizeof(struct ipsg_spd_bucket) == 64, "an SPD bucket is one cache line");

struct ipsg_shm {
    uint8_t *base;
    uint64_t size;
    struct ipsg_shm_hdr *h;
    struct ipsg_shm_sa *sa;
    struct ipsg_shm_ctr *ctr;
    uint64_t *hash[2];
    struct ipsg_spd_policy *pol;
    struct ipsg_spd_bind *bind;
    uint64_t *acq;
    uint8_t *spd[2];
    uint32_t *spd_chunk[2];          /* IPv4 trie chunks of each compiled copy */
    struct ipsg_spd_cand *spd_cand[2];
    struct ipsg_spd_rule *spd_cand6[2];  /* IPv6 candidate lists of each compiled copy */
    uint64_t *spd_v6f[2];                /* IPv6 length filter of each copy: 2 words per entry */
    uint32_t v6f_mask;                   /* its entries - 1 */
    uint32_t chunk_cap, cand_cap;
    struct ipsg_shm_ring *cmd;
    struct ipsg_shm_cmd *cmd_e;
    struct ipsg_shm_ring *evt;
    struct ipsg_shm_event *evt_e;
};

static inline void cpu_relax(void) { __builtin_ia32_pause(); }

static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

uint64_t ipsg_shm_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- layout */

static uint64_t align64(uint64_t x) { return (x + 63) & ~(uint64_t)63; }

static uint32_t pow2_at_least(uint64_t x) {
    uint64_t p = 16;
    while (p < x) p <<= 1;
    return (uint32_t)p;
}

static int is_pow2(uint32_t x) { return x && !(x & (x - 1)); }

/* IPv4 trie sizes: a prefix longer than /16 allocates at most 4 chunks (one per 4-bit level),
 * and every distinct prefix needs at least one candidate entry; the 4x candidate budget leaves
 * room for lists of several entries (a list that does not fit is cut and falls back).  IPv6
 * candidate lists have a budget of the same size. */
static uint32_t chunk_cap(const struct ipsg_shm_caps *c) { return 4 * c->n_spd + 1; }
static uint32_t cand_cap(const struct ipsg_shm_caps *c) { return 4 * c->n_spd + 16; }
/* IPv6 length filter: one entry (two words) per policy, rounded up to a power of two. */
static uint32_t v6f_entries(const struct ipsg_shm_caps *c) { return pow2_at_least(c->n_spd); }

int ipsg_shm_layout(const struct ipsg_shm_caps *c, struct ipsg_shm_hdr *h, char *err, size_t errlen) {
    if (c->n_sa < 1 || c->n_sa > (1u << 24)) {
        set_err(err, errlen, "SA capacity %u out of range 1..16777216", c->n_sa);
        return -1;
    }
    if (c->n_spd < 1 || c->n_spd > (1u << 22)) {
        set_err(err, errlen, "policy capacity %u out of range 1..4194304", c->n_spd);
        return -1;
    }
    if (!is_pow2(c->cmd_ring) || c->cmd_ring < 16 || c->cmd_ring > (1u << 22) || !is_pow2(c->evt_ring) ||
        c->evt_ring < 16 || c->evt_ring > (1u << 22)) {
        set_err(err, errlen, "ring sizes %u/%u must be powers of two from 16 to 4194304", c->cmd_ring, c->evt_ring);
        return -1;
    }
    memset(h, 0, sizeof(*h));
    h->magic = IPSG_SHM_MAGIC;
    h->abi = IPSG_SHM_ABI;
    h->hdr_size = sizeof(struct ipsg_shm_hdr);
    h->sa_size = sizeof(struct ipsg_shm_sa);
    h->ctr_size = sizeof(struct ipsg_shm_ctr);
    h->policy_size = sizeof(struct ipsg_spd_policy);
    h->event_size = sizeof(struct ipsg_shm_event);
    h->caps = *c;
    h->n_hash = pow2_at_least(2ull * c->n_sa);
    h->n_spd_hash = pow2_at_least(2ull * c->n_spd);
    uint64_t o = align64(sizeof(struct ipsg_shm_hdr));
    h->off_sa = o;
    o = align64(o + (uint64_t)c->n_sa * sizeof(struct ipsg_shm_sa));
    h->off_ctr = o;
    o = align64(o + (uint64_t)c->n_sa * sizeof(struct ipsg_shm_ctr));
    for (int i = 0; i < 2; i++) {
        h->off_hash[i] = o;
        o = align64(o + (uint64_t)h->n_hash * 8);
    }
    h->off_policy = o;
    o = align64(o + (uint64_t)c->n_spd * sizeof(struct ipsg_spd_policy));
    h->off_bind = o;
    o = align64(o + (uint64_t)c->n_spd * sizeof(struct ipsg_spd_bind));
    h->off_acq = o;
    o = align64(o + (uint64_t)c->n_spd * 8);
    h->spd_size = align64(sizeof(struct ipsg_spd_compiled)) +
                  align64((uint64_t)c->n_spd * sizeof(struct ipsg_spd_rule)) +
                  align64((uint64_t)h->n_spd_hash * sizeof(struct ipsg_spd_bucket)) +
                  align64((uint64_t)chunk_cap(c) * 64) + align64((uint64_t)cand_cap(c) * sizeof(struct ipsg_spd_cand)) +
                  align64((uint64_t)cand_cap(c) * sizeof(struct ipsg_spd_rule)) + (uint64_t)v6f_entries(c) * 16;
    for (int i = 0; i < 2; i++) {
        h->off_spd[i] = o;
        o = align64(o + h->spd_size);
    }
    h->off_cmd = o;
    o = align64(o + sizeof(struct ipsg_shm_ring) + (uint64_t)c->cmd_ring * sizeof(struct ipsg_shm_cmd));
    h->off_evt = o;
    o = align64(o + sizeof(struct ipsg_shm_ring) + (uint64_t)c->evt_ring * sizeof(struct ipsg_shm_event));
    h->total_size = o;
    return 0;
}

int ipsg_shm_validate(const struct ipsg_shm_hdr *h, uint64_t file_size, char *err, size_t errlen) {
    if (file_size < sizeof(struct ipsg_shm_hdr)) {
        set_err(err, errlen, "truncated: %llu bytes, smaller than the %zu-byte header",
                (unsigned long long)file_size, sizeof(struct ipsg_shm_hdr));
        return -1;
    }
    if (h->magic != IPSG_SHM_MAGIC) {
        if (h->magic == 0)
            set_err(err, errlen, "no region header (magic is zero: the creator died or is still initialising)");
        else
            set_err(err, errlen, "wrong magic 0x%016llx (expected 0x%016llx): not an ipsecgw region",
                    (unsigned long long)h->magic, (unsigned long long)IPSG_SHM_MAGIC);
        return -1;
    }
    if (h->abi != IPSG_SHM_ABI) {
        set_err(err, errlen, "ABI version %u, this build speaks version %u: restart both processes from one build",
                h->abi, IPSG_SHM_ABI);
        return -1;
    }
    if (h->hdr_size != sizeof(struct ipsg_shm_hdr) || h->sa_size != sizeof(struct ipsg_shm_sa) ||
        h->ctr_size != sizeof(struct ipsg_shm_ctr) || h->policy_size != sizeof(struct ipsg_spd_policy) ||
        h->event_size != sizeof(struct ipsg_shm_event)) {
        set_err(err, errlen, "record sizes differ from this build (header %u/%zu, SA slot %u/%zu): "
                "same ABI number but another layout", h->hdr_size, sizeof(struct ipsg_shm_hdr),
                h->sa_size, sizeof(struct ipsg_shm_sa));
        return -1;
    }
    struct ipsg_shm_hdr want;
    char why[160];
    if (ipsg_shm_layout(&h->caps, &want, why, sizeof why) != 0) {
        set_err(err, errlen, "corrupt header: %s", why);
        return -1;
    }
    if (want.n_hash != h->n_hash || want.n_spd_hash != h->n_spd_hash || want.off_sa != h->off_sa ||
        want.off_ctr != h->off_ctr || want.off_hash[0] != h->off_hash[0] || want.off_hash[1] != h->off_hash[1] ||
        want.off_policy != h->off_policy || want.off_bind != h->off_bind || want.off_acq != h->off_acq ||
        want.off_spd[0] != h->off_spd[0] || want.off_spd[1] != h->off_spd[1] || want.off_cmd != h->off_cmd ||
        want.off_evt != h->off_evt || want.spd_size != h->spd_size || want.total_size != h->total_size) {
        set_err(err, errlen, "corrupt header: table offsets do not follow from the capacities");
        return -1;
    }
    if (file_size < h->total_size) {
        set_err(err, errlen, "truncated: file is %llu bytes, the header needs %llu",
                (unsigned long long)file_size, (unsigned long long)h->total_size);
        return -1;
    }
    return 0;
}

/* The region file fd (closed here) mapped, or NULL and err. */
static uint8_t *map_region(int fd, uint64_t size, const char *path, char *err, size_t errlen) {
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) {
        set_err(err, errlen, "%s: mmap: %s", path, strerror(errno));
        return NULL;
    }
    return base;
}

static struct ipsg_shm *bind_region(uint8_t *base, uint64_t size) {
    struct ipsg_shm *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    struct ipsg_shm_hdr *h = (struct ipsg_shm_hdr *)base;
    s->base = base;
    s->size = size;
    s->h = h;
    s->sa = (struct ipsg_shm_sa *)(base + h->off_sa);
    s->ctr = (struct ipsg_shm_ctr *)(base + h->off_ctr);
    for (int i = 0; i < 2; i++) {
        s->hash[i] = (uint64_t *)(base + h->off_hash[i]);
        s->spd[i] = base + h->off_spd[i];
        uint8_t *x = s->spd[i] + align64(sizeof(struct ipsg_spd_compiled)) +
                     align64((uint64_t)h->caps.n_spd * sizeof(struct ipsg_spd_rule)) +
                     align64((uint64_t)h->n_spd_hash * sizeof(struct ipsg_spd_bucket));
        s->spd_chunk[i] = (uint32_t *)x;
        s->spd_cand[i] = (struct ipsg_spd_cand *)(x + align64((uint64_t)chunk_cap(&h->caps) * 64));
        s->spd_cand6[i] = (struct ipsg_spd_rule *)((uint8_t *)s->spd_cand[i] +
                                                   align64((uint64_t)cand_cap(&h->caps) * sizeof(struct ipsg_spd_cand)));
        s->spd_v6f[i] = (uint64_t *)((uint8_t *)s->spd_cand6[i] +
                                     align64((uint64_t)cand_cap(&h->caps) * sizeof(struct ipsg_spd_rule)));
    }
    s->chunk_cap = chunk_cap(&h->caps);
    s->cand_cap = cand_cap(&h->caps);
    s->v6f_mask = v6f_entries(&h->caps) - 1;
    s->pol = (struct ipsg_spd_policy *)(base + h->off_policy);
    s->bind = (struct ipsg_spd_bind *)(base + h->off_bind);
    s->acq = (uint64_t *)(base + h->off_acq);
    s->cmd = (struct ipsg_shm_ring *)(base + h->off_cmd);
    s->cmd_e = (struct ipsg_shm_cmd *)(s->cmd + 1);
    s->evt = (struct ipsg_shm_ring *)(base + h->off_evt);
    s->evt_e = (struct ipsg_shm_event *)(s->evt + 1);
    return s;
}

/* bind_region, or the mapping undone and err. */
static struct ipsg_shm *bind_or_unmap(uint8_t *base, uint64_t size, const char *path, char *err, size_t errlen) {
    struct ipsg_shm *s = bind_region(base, size);
    if (!s) {
        munmap(base, size);
        set_err(err, errlen, "%s: out of memory", path);
    }
    return s;
}

struct ipsg_shm *ipsg_shm_create(const char *path, const struct ipsg_shm_caps *caps, char *err, size_t errlen) {
    struct ipsg_shm_hdr h;
    char why[200];
    if (ipsg_shm_layout(caps, &h, why, sizeof why) != 0) {
        set_err(err, errlen, "%s: %s", path, why);
        return NULL;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        return NULL;
    }
    /* The umask can only remove bits; make the mode exactly 0600 anyway. */
    if (fchmod(fd, 0600) != 0 || ftruncate(fd, (off_t)h.total_size) != 0) {
        set_err(err, errlen, "%s: cannot size to %llu bytes: %s", path, (unsigned long long)h.total_size,
                strerror(errno));
        close(fd);
        unlink(path);
        return NULL;
    }
    uint8_t *base = map_region(fd, h.total_size, path, err, errlen);
    if (!base) {
        unlink(path);
        return NULL;
    }
    /* Everything but the magic first: an attacher that sees the magic sees a whole header. */
    uint64_t magic = h.magic;
    h.magic = 0;
    h.acquire_interval_ns = 1000000000ull;
    h.alarm_window_ns = 1000000000ull;
    h.alarm_threshold = 64;
    memcpy(base, &h, sizeof h);
    STORE_REL(&((struct ipsg_shm_hdr *)base)->magic, magic);
    return bind_or_unmap(base, h.total_size, path, err, errlen);
}

struct ipsg_shm *ipsg_shm_attach(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "%s: stat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_mode & 077) {
        set_err(err, errlen, "%s: mode %03o lets other users read SA keys; expected 0600", path,
                (unsigned)(st.st_mode & 0777));
        close(fd);
        return NULL;
    }
    struct ipsg_shm_hdr h;
    memset(&h, 0, sizeof h);
    ssize_t got = pread(fd, &h, sizeof h, 0);
    char why[240];
    uint64_t usable = got < (ssize_t)sizeof h ? (uint64_t)(got < 0 ? 0 : got) : (uint64_t)st.st_size;
    if (got < 0 || ipsg_shm_validate(&h, usable, why, sizeof why) != 0) {
        set_err(err, errlen, "%s: refused: %s", path, got < 0 ? strerror(errno) : why);
        close(fd);
        return NULL;
    }
    uint8_t *base = map_region(fd, h.total_size, path, err, errlen);
    return base ? bind_or_unmap(base, h.total_size, path, err, errlen) : NULL;
}

void ipsg_shm_detach(struct ipsg_shm *s) {
    if (!s) return;
    munmap(s->base, s->size);
    free(s);
}

struct ipsg_shm_hdr *ipsg_shm_header(struct ipsg_shm *s) { return s->h; }
uint8_t *ipsg_shm_base(struct ipsg_shm *s) { return s->base; }

/* ------------------------------------------------------------- SA slots */

uint64_t ipsg_shm_digest(const struct ipsg_sa_params *p) {
    const uint8_t *b = (const uint8_t *)p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < sizeof(*p); i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h;
}

static inline uint32_t write_begin(uint32_t *lock) {
    uint32_t l = LOAD_RLX(lock);
    uint32_t w = (l & 1) ? l + 2 : l + 1;   /* a dead writer's odd value stays odd */
    STORE_RLX(lock, w);
    FENCE_REL();
    return w;
}

static inline void write_end(uint32_t *lock, uint32_t w) { STORE_REL(lock, w + 1); }

/* Seqlock read: a copy of the size bytes at rec (which start with its lock word) taken while no
 * writer held the lock; IPSG_SHM_EBUSY if one held it through every attempt.  *seen is the
 * (even) lock value the copy is consistent with. */
static inline int read_begin_end(const uint32_t *lock, const void *rec, void *out, size_t size, uint32_t *seen) {
    for (uint32_t spin = 0; spin < SPIN_LIMIT; spin++) {
        uint32_t l1 = LOAD_ACQ(lock);
        if (l1 & 1) {
            cpu_relax();
            continue;
        }
        memcpy(out, rec, size);
        FENCE_ACQ();
        if (LOAD_RLX(lock) == l1) {
            *seen = l1;
            return IPSG_SHM_OK;
        }
    }
    return IPSG_SHM_EBUSY;
}

/* read_begin_end into out, whose own lock word (out_lock) then holds the version the copy is
 * consistent with. */
static inline int read_stamped(const uint32_t *lock, const void *rec, void *out, uint32_t *out_lock, size_t size) {
    uint32_t seen;
    int rc = read_begin_end(lock, rec, out, size, &seen);
    if (rc == IPSG_SHM_OK) *out_lock = seen;
    return rc;
}

/* The slot's next version, stored (the caller holds the slot's lock).  0 is skipped: it means
 * "nothing installed" in the counters. */
static inline uint32_t next_version(struct ipsg_shm_sa *x) {
    uint32_t v = x->version + 1;
    if (v == 0) v = 1;
    STORE_RLX(&x->version, v);
    return v;
}

int64_t ipsg_shm_sa_write(struct ipsg_shm *s, uint32_t slot, const struct ipsg_sa_params *p, uint8_t state,
                          uint8_t placement, uint64_t id) {
    if (slot >= s->h->caps.n_sa || state > IPSG_SHM_SA_DYING) return IPSG_SHM_EINVAL;
    struct ipsg_shm_sa *x = &s->sa[slot];
    uint64_t digest = ipsg_shm_digest(p);
    uint32_t w = write_begin(&x->lock);
    uint32_t v = next_version(x);
    STORE_RLX(&x->state, state);
    x->placement = placement;
    x->id = id;
    x->digest = digest;
    memcpy(&x->p, p, sizeof(*p));
    write_end(&x->lock, w);
    return v;
}

int64_t ipsg_shm_sa_clear(struct ipsg_shm *s, uint32_t slot) {
    if (slot >= s->h->caps.n_sa) return IPSG_SHM_EINVAL;
    struct ipsg_shm_sa *x = &s->sa[slot];
    uint32_t w = write_begin(&x->lock);
    uint32_t v = next_version(x);
    STORE_RLX(&x->state, (uint8_t)IPSG_SHM_SA_FREE);
    x->placement = 0;
    x->id = 0;
    /* Volatile stores: the key bytes are gone from the region, not merely unreferenced. */
    volatile uint8_t *pp = (volatile uint8_t *)&x->p;
    for (size_t i = 0; i < sizeof(x->p); i++) pp[i] = 0;
    x->digest = ipsg_shm_digest(&x->p);
    write_end(&x->lock, w);
    return v;
}

static void maybe_compact(struct ipsg_shm *s);

static void notify_slot(struct ipsg_shm *s, uint32_t slot, uint32_t version) {
    struct ipsg_shm_cmd c = {IPSG_CMD_SA, slot, version, 0};
    /* A full ring means the fastpath is not draining (dead or stalled): it rescans every slot. */
    if (ipsg_shm_cmd_push(s, &c) != IPSG_SHM_OK) __atomic_add_fetch(&s->h->resync_gen, 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&s->h->generation, 1, __ATOMIC_RELEASE);
}

int64_t ipsg_shm_sa_install(struct ipsg_shm *s, uint32_t slot, const struct ipsg_sa_params *p, uint8_t state,
                            uint8_t placement, uint64_t id, uint32_t old_spi) {
    int64_t v = ipsg_shm_sa_write(s, slot, p, state, placement, id);
    if (v < 0) return v;
    if (old_spi && old_spi != p->spi) ipsg_shm_hash_remove(s, old_spi, slot);
    int rc = ipsg_shm_hash_insert(s, p->spi, slot);
    maybe_compact(s);
    notify_slot(s, slot, (uint32_t)v);
    return rc == IPSG_SHM_OK ? v : rc;
}

int64_t ipsg_shm_sa_install_fields(struct ipsg_shm *s, uint32_t slot, uint8_t state, uint8_t placement, uint64_t id,
                                   uint32_t old_spi, uint32_t spi, uint8_t direction, uint8_t mode, uint8_t esn,
                                   uint8_t enc, uint8_t integ, const uint8_t *enc_key, uint8_t enc_key_len,
                                   const uint8_t *integ_key, uint8_t integ_key_len, const uint8_t *src,
                                   const uint8_t *dst, uint8_t addr_len, uint8_t udp_encap, uint8_t ttl, uint8_t df,
                                   uint8_t dscp, uint8_t ecn, uint8_t flowlabel, uint16_t sport, uint16_t dport,
                                   uint32_t replay_window, uint64_t seq, uint64_t soft_bytes, uint64_t hard_bytes,
                                   uint64_t soft_packets, uint64_t hard_packets, uint8_t proto) {
    struct ipsg_sa_params p;
    if (enc_key_len > sizeof(p.enc_key) || integ_key_len > sizeof(p.integ_key) || (addr_len != 4 && addr_len != 16))
        return IPSG_SHM_EINVAL;
    memset(&p, 0, sizeof p);
    p.spi = spi;
    p.direction = direction;
    p.mode = mode;
    p.family = addr_len == 4 ? 4 : 6;
    p.esn = esn;
    p.enc = enc;
    p.integ = integ;
    p.enc_key_len = enc_key_len;
    memcpy(p.enc_key, enc_key, enc_key_len);
    p.integ_key_len = integ_key_len;
    if (integ_key_len) memcpy(p.integ_key, integ_key, integ_key_len);
    memcpy(p.src, src, addr_len);
    memcpy(p.dst, dst, addr_len);
    p.udp_encap = udp_encap;
    p.ttl = ttl;
    p.df = df;
    p.dscp = dscp;
    p.ecn = ecn;
    p.flowlabel = flowlabel;
    p.sport = sport;
    p.dport = dport;
    p.replay_window = replay_window;
    p.seq = seq;
    p.soft_bytes = soft_bytes;
    p.hard_bytes = hard_bytes;
    p.soft_packets = soft_packets;
    p.hard_packets = hard_packets;
    p.proto = proto;
    int64_t v = ipsg_shm_sa_install(s, slot, &p, state, placement, id, old_spi);
    explicit_bzero(&p, sizeof p);   /* no key copy left on the stack */
    return v;
}

int64_t ipsg_shm_sa_delete(struct ipsg_shm *s, uint32_t slot) {
    if (slot >= s->h->caps.n_sa) return IPSG_SHM_EINVAL;
    if (s->sa[slot].state != IPSG_SHM_SA_FREE) ipsg_shm_hash_remove(s, s->sa[slot].p.spi, slot);
    int64_t v = ipsg_shm_sa_clear(s, slot);
    maybe_compact(s);
    notify_slot(s, slot, (uint32_t)v);
    return v;
}

int ipsg_shm_sa_read(struct ipsg_shm *s, uint32_t slot, struct ipsg_shm_sa *out) {
    if (slot >= s->h->caps.n_sa) return IPSG_SHM_EINVAL;
    const struct ipsg_shm_sa *x = &s->sa[slot];
    return read_stamped(&x->lock, x, out, &out->lock, sizeof(*out));
}

uint32_t ipsg_shm_repair(struct ipsg_shm *s) {
    uint32_t fixed = 0;
    for (uint32_t i = 0; i < s->h->caps.n_sa; i++) {
        struct ipsg_shm_sa *x = &s->sa[i];
        if (!(LOAD_RLX(&x->lock) & 1)) continue;
        /* A control process died inside the write: the contents are unknown, so the slot is freed
         * (keys zeroed) and reconciliation reinstalls the SA if control still wants it. */
        ipsg_shm_sa_clear(s, i);
        fixed++;
    }
    for (uint32_t i = 0; i < s->h->caps.n_spd; i++) {
        struct ipsg_spd_policy *p = &s->pol[i];
        struct ipsg_spd_bind *b = &s->bind[i];
        if (LOAD_RLX(&p->lock) & 1) {
            uint32_t w = write_begin(&p->lock);
            memset((uint8_t *)p + sizeof(p->lock), 0, sizeof(*p) - sizeof(p->lock));
            write_end(&p->lock, w);
            fixed++;
        }
        if (LOAD_RLX(&b->lock) & 1) {
            uint32_t w = write_begin(&b->lock);
            b->n = 0;
            write_end(&b->lock, w);
            fixed++;
        }
    }
    return fixed;
}

uint64_t ipsg_shm_audit(struct ipsg_shm *s, uint32_t first, uint32_t count, uint64_t rounds, uint64_t *bad) {
    struct ipsg_shm_sa copy;
    uint64_t reads = 0, mismatches = 0;
    uint32_t n = s->h->caps.n_sa;
    for (uint64_t r = 0; r < rounds; r++) {
        for (uint32_t k = 0; k < count; k++) {
            uint32_t slot = first + k;
            if (slot >= n) break;
            if (ipsg_shm_sa_read(s, slot, &copy) != IPSG_SHM_OK) continue;
            reads++;
            if (ipsg_shm_digest(&copy.p) != copy.digest) mismatches++;
        }
    }
    if (bad) *bad = mismatches;
    return reads;
}

/* ------------------------------------------------------------- counters */

int ipsg_shm_ctr_read(struct ipsg_shm *s, uint32_t slot, struct ipsg_shm_ctr *out) {
    if (slot >= s->h->caps.n_sa) return IPSG_SHM_EINVAL;
    const struct ipsg_shm_ctr *c = &s->ctr[slot];
    return read_stamped(&c->lock, c, out, &out->lock, sizeof(*out));
}

static int post_sa_event(struct ipsg_shm *s, uint16_t type, uint32_t slot, uint64_t id, uint64_t packets,
                          uint64_t bytes, uint64_t now) {
    struct ipsg_shm_event e;
    memset(&e, 0, sizeof e);
    e.type = type;
    e.slot = slot;
    e.sa_id = id;
    e.packets = packets;
    e.bytes = bytes;
    e.time_ns = now;
    return ipsg_shm_event_post(s, &e) == IPSG_SHM_OK;
}

int ipsg_shm_ctr_update(struct ipsg_shm *s, uint32_t slot, uint32_t version, uint64_t id,
                        const struct ipsg_sa_stats *st, uint64_t now) {
    if (slot >= s->h->caps.n_sa) return IPSG_SHM_EINVAL;
    struct ipsg_shm_ctr *c = &s->ctr[slot];
    int same = c->id == id;
    uint32_t before = same ? c->stats.flags : 0;
    uint64_t window = LOAD_RLX(&s->h->alarm_window_ns), threshold = LOAD_RLX(&s->h->alarm_threshold);
    uint64_t auth = st->drops[IPSG_ST_AUTH_FAILED], replay = st->drops[IPSG_ST_REPLAY];
    uint64_t auth_burst = 0, replay_burst = 0;

    uint32_t w = write_begin(&c->lock);
    if (!same) {
        /* A new SA's engine counters start at zero. */
        c->alarm_ns = now;
        c->alarm_auth = c->alarm_replay = 0;
    } else if (now - c->alarm_ns >= window) {
        /* A new window starts from the totals last published. */
        c->alarm_ns = now;
        c->alarm_auth = c->stats.drops[IPSG_ST_AUTH_FAILED];
        c->alarm_replay = c->stats.drops[IPSG_ST_REPLAY];
    }
    if (threshold && auth >= c->alarm_auth && auth - c->alarm_auth >= threshold) {
        auth_burst = auth - c->alarm_auth;
        c->alarm_auth = auth;   /* the next alarm needs another threshold's worth */
    }
    if (threshold && replay >= c->alarm_replay && replay - c->alarm_replay >= threshold) {
        replay_burst = replay - c->alarm_replay;
        c->alarm_replay = replay;
    }
    c->id = id;
    STORE_RLX(&c->version, version);
    memcpy(&c->stats, st, sizeof(*st));
    write_end(&c->lock, w);

    int posted = 0;
    uint32_t fresh = st->flags & ~before;
    if (fresh & IPSG_SAF_SOFT_EXPIRED) {
        posted += post_sa_event(s, IPSG_EV_SOFT_EXPIRE, slot, id, st->packets, st->bytes, now);
    }
    if (fresh & IPSG_SAF_HARD_EXPIRED) {
        posted += post_sa_event(s, IPSG_EV_HARD_EXPIRE, slot, id, st->packets, st->bytes, now);
    }
    if (fresh & IPSG_SAF_SEQ_EXHAUSTED) {
        posted += post_sa_event(s, IPSG_EV_SEQ_EXHAUSTED, slot, id, st->packets, st->bytes, now);
    }
    if (auth_burst) {
        posted += post_sa_event(s, IPSG_EV_ALARM_AUTH, slot, id, auth_burst, 0, now);
    }
    if (replay_burst) {
        posted += post_sa_event(s, IPSG_EV_ALARM_REPLAY, slot, id, replay_burst, 0, now);
    }
    return posted;
}

void ipsg_shm_seq_reserve(struct ipsg_shm *s, uint32_t slot, uint64_t upto) {
    if (slot >= s->h->caps.n_sa) return;
    struct ipsg_shm_ctr *c = &s->ctr[slot];
    if (upto > c->seq_reserved) {
        uint32_t w = write_begin(&c->lock);
        STORE_RLX(&c->seq_reserved, upto);
        write_end(&c->lock, w);
    }
}

void ipsg_shm_ctr_clear(struct ipsg_shm *s, uint32_t slot) {
    if (slot >= s->h->caps.n_sa) return;
    struct ipsg_shm_ctr *c = &s->ctr[slot];
    uint32_t w = write_begin(&c->lock);
    STORE_RLX(&c->version, 0u);
    c->id = 0;
    c->seq_reserved = 0;
    c->alarm_ns = c->alarm_auth = c->alarm_replay = 0;
    memset(&c->stats, 0, sizeof(c->stats));
    write_end(&c->lock, w);
}

uint32_t ipsg_shm_scan(struct ipsg_shm *s, uint32_t *cursor, uint32_t *out, uint32_t max) {
    uint32_t n = s->h->caps.n_sa, k = 0, i = *cursor;
    for (; i < n && k < max; i++) {
        uint8_t state = LOAD_RLX(&s->sa[i].state);
        uint32_t v = LOAD_RLX(&s->sa[i].version);
        uint32_t have = LOAD_RLX(&s->ctr[i].version);
        if (state != IPSG_SHM_SA_FREE ? v != have : have != 0) out[k++] = i;
    }
    *cursor = i;
    return k;
}

/* ------------------------------------------------------------ SPI index */

static inline uint32_t spi_hash(uint32_t spi, uint32_t mask) {
    return (uint32_t)(((uint64_t)spi * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

/* The slot holds a live SA with this SPI (re-checked: a batch probes before it checks) and destination. */
static int slot_has_dst(struct ipsg_shm *s, uint32_t slot, uint32_t spi, uint8_t family, const uint8_t *dst) {
    const struct ipsg_shm_sa *x = &s->sa[slot];
    for (uint32_t spin = 0; spin < SPIN_LIMIT; spin++) {
        uint32_t l1 = LOAD_ACQ(&x->lock);
        if (l1 & 1) {
            cpu_relax();
            continue;
        }
        int ok = x->state != IPSG_SHM_SA_FREE && x->p.spi == spi && x->p.family == family &&
                 memcmp(x->p.dst, dst, family == 4 ? 4 : 16) == 0;
        FENCE_ACQ();
        if (LOAD_RLX(&x->lock) == l1) return ok;
    }
    return 0;
}

int64_t ipsg_shm_spi_lookup(struct ipsg_shm *s, uint32_t spi, uint8_t family, const uint8_t *dst) {
    uint32_t n = s->h->n_hash, mask = n - 1;
    for (;;) {
        uint32_t g = LOAD_ACQ(&s->h->hash_gen);
        const uint64_t *t = s->hash[g & 1];
        int64_t found = IPSG_SHM_ENOENT;
        uint32_t i = spi_hash(spi, mask);
        for (uint32_t probes = 0; probes < n; probes++, i = (i + 1) & mask) {
            uint64_t e = LOAD_ACQ(&t[i]);
            if (e == 0) break;
            uint32_t ref = (uint32_t)e;
            if ((uint32_t)(e >> 32) != spi || ref == HASH_TOMB || ref - 1 >= s->h->caps.n_sa) continue;
            if (!dst || slot_has_dst(s, ref - 1, spi, family, dst)) {
                found = ref - 1;
                break;
            }
        }
        FENCE_ACQ();
        if (LOAD_RLX(&s->h->hash_gen) == g) return found;
    }
}

void ipsg_shm_spi_lookup_many(struct ipsg_shm *s, uint32_t n, const uint32_t *spi, int64_t *out) {
    for (uint32_t i = 0; i < n; i++) out[i] = ipsg_shm_spi_lookup(s, spi[i], 0, NULL);
}

/* Batched lookup: a cache (and TLB) miss per key is what makes a single lookup at 1M SAs slow
 * (a 16 MB index, an 848 MB slot table), not the work.  So every key of a chunk is hashed and
 * its bucket prefetched first, then the probes run (and prefetch the slot lines the destination
 * check reads), then the destination checks: the chunk's misses overlap instead of queueing.
 * 32, 64 and 256 measured the same; 64 keeps the stack small. */
#define SPI_CHUNK 64

static void spi_chunk(struct ipsg_shm *s, uint32_t m, const uint32_t *spi, const uint8_t *family, const uint8_t *dst,
                      int64_t *out) {
    uint32_t n = s->h->n_hash, mask = n - 1, nsa = s->h->caps.n_sa;
    uint32_t pos[SPI_CHUNK];
    for (;;) {
        uint32_t g = LOAD_ACQ(&s->h->hash_gen);
        const uint64_t *t = s->hash[g & 1];
        for (uint32_t k = 0; k < m; k++) {
            pos[k] = spi_hash(spi[k], mask);
            __builtin_prefetch(&t[pos[k]]);
        }
        for (uint32_t k = 0; k < m; k++) {
            int64_t found = IPSG_SHM_ENOENT;
            uint32_t i = pos[k];
            for (uint32_t probes = 0; probes < n; probes++, i = (i + 1) & mask) {
                uint64_t e = LOAD_ACQ(&t[i]);
                if (e == 0) break;
                uint32_t ref = (uint32_t)e;
                if ((uint32_t)(e >> 32) != spi[k] || ref == HASH_TOMB || ref - 1 >= nsa) continue;
                found = ref - 1;
                break;
            }
            out[k] = found;
            if (dst && found >= 0) {
                const struct ipsg_shm_sa *x = &s->sa[found];
                __builtin_prefetch(x);            /* lock, state */
                __builtin_prefetch(&x->p.family); /* spi, family: the next line for some slots */
                __builtin_prefetch(x->p.dst);
            }
        }
        FENCE_ACQ();
        if (LOAD_RLX(&s->h->hash_gen) == g) break;
    }
    if (!dst) return;
    for (uint32_t k = 0; k < m; k++) {
        /* The first SA with the SPI usually has the destination too; when it does not (SPIs
         * shared across peers), the single lookup walks the rest of the chain. */
        if (out[k] >= 0 && slot_has_dst(s, (uint32_t)out[k], spi[k], family[k], dst + 16 * (size_t)k)) continue;
        if (out[k] >= 0) out[k] = ipsg_shm_spi_lookup(s, spi[k], family[k], dst + 16 * (size_t)k);
    }
}

void ipsg_shm_spi_lookup_batch(struct ipsg_shm *s, uint32_t n, const uint32_t *spi, const uint8_t *family,
                               const uint8_t *dst, int64_t *out) {
    for (uint32_t i = 0; i < n; i += SPI_CHUNK) {
        uint32_t m = n - i < SPI_CHUNK ? n - i : SPI_CHUNK;
        spi_chunk(s, m, spi + i, dst ? family + i : NULL, dst ? dst + 16 * (size_t)i : NULL, out + i);
    }
}

static int hash_put(struct ipsg_shm *s, uint64_t *t, uint32_t spi, uint32_t slot, int count) {
    uint32_t mask = s->h->n_hash - 1, i = spi_hash(spi, mask), tomb = UINT32_MAX;
    uint64_t want = ((uint64_t)spi << 32) | (slot + 1);
    for (uint32_t probes = 0; probes < s->h->n_hash; probes++, i = (i + 1) & mask) {
        uint64_t e = t[i];
        if (e == want) return IPSG_SHM_OK;
        if (e == 0) break;
        if ((uint32_t)e == HASH_TOMB && tomb == UINT32_MAX) tomb = i;
    }
    if (tomb != UINT32_MAX) {
        i = tomb;
        if (count) s->h->hash_tomb--;
    } else if (t[i] != 0) {
        return IPSG_SHM_EFULL;
    }
    STORE_REL(&t[i], want);
    if (count) s->h->hash_live++;
    return IPSG_SHM_OK;
}

void ipsg_shm_hash_rebuild(struct ipsg_shm *s) {
    uint32_t g = s->h->hash_gen;
    uint64_t *t = s->hash[(g + 1) & 1];
    FENCE_REL();   /* readers still on the previous generation retry once they see the flip */
    memset(t, 0, (size_t)s->h->n_hash * 8);
    uint32_t live = 0;
    for (uint32_t i = 0; i < s->h->caps.n_sa; i++) {
        if (s->sa[i].state == IPSG_SHM_SA_FREE) continue;
        if (hash_put(s, t, s->sa[i].p.spi, i, 0) == IPSG_SHM_OK) live++;
    }
    STORE_REL(&s->h->hash_gen, g + 1);
    s->h->hash_live = live;
    s->h->hash_tomb = 0;
}

static void maybe_compact(struct ipsg_shm *s) {
    /* Tombstones lengthen misses (the NO_SA path an attacker controls), so rebuild when they pile up. */
    if (s->h->hash_tomb > s->h->n_hash / 8 || s->h->hash_live + s->h->hash_tomb > s->h->n_hash / 4 * 3)
        ipsg_shm_hash_rebuild(s);
}

/* Neither insert nor remove compacts: a rebuild reads the slots, so it must run only once
 * the slot is in its final state (ipsg_shm_sa_install / _delete call maybe_compact last). */
int ipsg_shm_hash_insert(struct ipsg_shm *s, uint32_t spi, uint32_t slot) {
    if (slot >= s->h->caps.n_sa) return IPSG_SHM_EINVAL;
    int rc = hash_put(s, s->hash[s->h->hash_gen & 1], spi, slot, 1);
    if (rc == IPSG_SHM_EFULL) {
        /* Only tombstones left to probe past: compact and retry once. */
        ipsg_shm_hash_rebuild(s);
        rc = hash_put(s, s->hash[s->h->hash_gen & 1], spi, slot, 1);
    }
    return rc;
}

int ipsg_shm_hash_remove(struct ipsg_shm *s, uint32_t spi, uint32_t slot) {
    uint64_t *t = s->hash[s->h->hash_gen & 1];
    uint32_t mask = s->h->n_hash - 1, i = spi_hash(spi, mask);
    uint64_t want = ((uint64_t)spi << 32) | (slot + 1);
    for (uint32_t probes = 0; probes < s->h->n_hash; probes++, i = (i + 1) & mask) {
        uint64_t e = t[i];
        if (e == 0) return IPSG_SHM_ENOENT;
        if (e == want) {
            STORE_REL(&t[i], ((uint64_t)spi << 32) | HASH_TOMB);
            s->h->hash_live--;
            s->h->hash_tomb++;
            return IPSG_SHM_OK;
        }
    }
    return IPSG_SHM_ENOENT;
}

/* ------------------------------------------------------------------ SPD */

static uint64_t MASKS[129][2];

__attribute__((constructor)) static void init_masks(void) {
    for (int plen = 0; plen <= 128; plen++) {
        uint8_t b[16] = {0};
        for (int i = 0; i < 16; i++) {
            int bits = plen - 8 * i;
            b[i] = bits >= 8 ? 0xff : bits <= 0 ? 0 : (uint8_t)(0xff << (8 - bits));
        }
        memcpy(MASKS[plen], b, 16);
    }
}

static inline void load_addr(uint64_t w[2], uint8_t family, const uint8_t *a) {
    uint8_t b[16] = {0};
    memcpy(b, a, family == 4 ? 4 : 16);
    memcpy(w, b, 16);
}

static inline uint32_t spd_hash(const uint64_t k[2], uint8_t family, uint8_t plen, uint32_t mask) {
    uint64_t x = k[0] * 0x9E3779B97F4A7C15ull ^ k[1] * 0xC2B2AE3D27D4EB4Full ^ ((uint64_t)family << 8 | plen);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return (uint32_t)x & mask;
}

int ipsg_spd_write(struct ipsg_shm *s, uint32_t index, const struct ipsg_spd_policy *p) {
    if (index >= s->h->caps.n_spd) return IPSG_SHM_EINVAL;
    if (p->state && ((p->family != 4 && p->family != 6) || p->src_plen > (p->family == 4 ? 32 : 128) ||
                     p->dst_plen > (p->family == 4 ? 32 : 128) || p->action > IPSG_SPD_DISCARD))
        return IPSG_SHM_EINVAL;
    struct ipsg_spd_policy *x = &s->pol[index];
    uint32_t w = write_begin(&x->lock);
    memcpy((uint8_t *)x + sizeof(x->lock), (const uint8_t *)p + sizeof(p->lock), sizeof(*p) - sizeof(p->lock));
    write_end(&x->lock, w);
    return IPSG_SHM_OK;
}

int ipsg_spd_read(struct ipsg_shm *s, uint32_t index, struct ipsg_spd_policy *out) {
    if (index >= s->h->caps.n_spd) return IPSG_SHM_EINVAL;
    const struct ipsg_spd_policy *x = &s->pol[index];
    uint32_t seen;
    return read_begin_end(&x->lock, x, out, sizeof(*out), &seen);
}

int ipsg_spd_bind(struct ipsg_shm *s, uint32_t index, uint32_t n, const uint32_t *sa) {
    if (index >= s->h->caps.n_spd || n > IPSG_SPD_MAX_BUNDLE) return IPSG_SHM_EINVAL;
    for (uint32_t i = 0; i < n; i++)
        if (sa[i] >= s->h->caps.n_sa) return IPSG_SHM_EINVAL;
    struct ipsg_spd_bind *b = &s->bind[index];
    uint32_t w = write_begin(&b->lock);
    b->n = n;
    for (uint32_t i = 0; i < IPSG_SPD_MAX_BUNDLE; i++) b->sa[i] = i < n ? sa[i] : 0;
    write_end(&b->lock, w);
    return IPSG_SHM_OK;
}

struct sort_item {
    uint64_t key[2];
    uint64_t rank;
    uint8_t family;
    uint8_t plen;
    uint32_t index;
};

static int cmp_item(const void *a_, const void *b_) {
    const struct sort_item *a = a_, *b = b_;
    if (a->family != b->family) return a->family < b->family ? -1 : 1;
    if (a->plen != b->plen) return a->plen < b->plen ? -1 : 1;
    for (int i = 0; i < 2; i++)
        if (a->key[i] != b->key[i]) return a->key[i] < b->key[i] ? -1 : 1;
    return a->rank < b->rank ? -1 : a->rank > b->rank;
}

static int cmp_group(const void *a_, const void *b_) {
    const struct ipsg_spd_group *a = a_, *b = b_;
    if (a->best != b->best) return a->best < b->best ? -1 : 1;
    /* Shorter prefixes first on a tie: their buckets hold more rules, so they tend to
     * produce a good match early and let the longer ones be skipped. */
    return a->plen < b->plen ? -1 : a->plen > b->plen;
}

static void spd_parts(struct ipsg_shm *s, uint8_t *copy, struct ipsg_spd_compiled **c, struct ipsg_spd_rule **r,
                      struct ipsg_spd_bucket **b) {
    *c = (struct ipsg_spd_compiled *)copy;
    *r = (struct ipsg_spd_rule *)(copy + align64(sizeof(struct ipsg_spd_compiled)));
    *b = (struct ipsg_spd_bucket *)((uint8_t *)*r + align64((uint64_t)s->h->caps.n_spd * sizeof(struct ipsg_spd_rule)));
}


/* ------------------------------------------------------ SPD: IPv4 trie */

struct v4pfx {
    uint32_t addr;           /* host order */
    uint32_t plen;
    uint32_t start, count;   /* own rules in the compiled rule array, best first */
    uint32_t cand;           /* its candidate list */
    uint32_t ncand;
    int complete;            /* the list holds every candidate that can win */
};

static const struct v4pfx *SORT_PX;

static int cmp_px_nest(const void *a_, const void *b_) {
    const struct v4pfx *a = &SORT_PX[*(const uint32_t *)a_], *b = &SORT_PX[*(const uint32_t *)b_];
    if (a->addr != b->addr) return a->addr < b->addr ? -1 : 1;
    return a->plen < b->plen ? -1 : a->plen > b->plen;
}

static inline uint32_t v4_mask(uint32_t plen) { return plen ? 0xffffffffu << (32 - plen) : 0; }

static void cand_from_rule(struct ipsg_spd_cand *o, const struct ipsg_spd_rule *r) {
    memset(o, 0, sizeof(*o));
    o->rank = r->rank;
    o->src = (uint32_t)r->src[0];
    o->src_mask = (uint32_t)r->src_mask[0];
    o->sport_lo = r->sport_lo;
    o->sport_hi = r->sport_hi;
    o->dport_lo = r->dport_lo;
    o->dport_hi = r->dport_hi;
    o->proto = r->proto;
    o->action = r->action;
}

static inline int cand_always(const struct ipsg_spd_cand *c) {
    return !c->src_mask && !c->proto && !c->sport_lo && c->sport_hi == 0xffff && !c->dport_lo && c->dport_hi == 0xffff;
}

/* One prefix's candidate list, for the IPv4 (T = struct ipsg_spd_cand) and IPv6 (T = the rule itself)
 * lists alike: its own rules (own, nown; best first) merged with its parent's list (pl, pn;
 * pcomplete = 0 when that list was cut, so ranks past its end are unknown), at most lim entries, cut
 * after the first that always matches.  *complete says nothing was left out; returns the count. */
#define DEFINE_CAND_MERGE(name, T, FROM_RULE, ALWAYS)                                                        \
    static uint32_t name(T *out, uint32_t lim, const struct ipsg_spd_rule *own, uint32_t nown, const T *pl,    \
                         uint32_t pn, int pcomplete, int *complete) {                                        \
        uint32_t i = 0, j = 0, n = 0;                                                                         \
        *complete = 0;                                                                                        \
        for (;;) {                                                                                            \
            int own_left = i < nown, par_left = j < pn;                                                       \
            if (!par_left && !pcomplete) break;                                                               \
            if (!own_left && !par_left) {                                                                     \
                *complete = 1;                                                                                \
                break;                                                                                        \
            }                                                                                                 \
            if (n == lim) break;                                                                              \
            if (own_left && (!par_left || own[i].rank < pl[j].rank))                                          \
                FROM_RULE(&out[n], &own[i++]);                                                                \
            else                                                                                              \
                out[n] = pl[j++];                                                                             \
            out[n].flags = 0;                                                                                 \
            if (ALWAYS(&out[n++])) {                                                                          \
                *complete = 1;                                                                                \
                break;                                                                                        \
            }                                                                                                 \
        }                                                                                                     \
        return n;                                                                                             \
    }

/* Prefix q's candidate list, for either family (T as above, PX its prefix record), appended to
 * cands at *used: at most cap entries in all, with after prefixes still to come (one entry each at
 * least).  Its own rules merged (MERGE) with its enclosing prefix par's list (NULL: none), the
 * last entry flagged, and recorded in q; *cut counts the lists that were cut.  Returns the list. */
#define DEFINE_PREFIX_LIST(name, T, PX, MERGE)                                                                \
    static T *name(T *cands, uint32_t cap, uint32_t *used, uint32_t after, const struct ipsg_spd_rule *rules,  \
                   PX *q, const PX *par, uint32_t *cut) {                                                     \
        uint32_t lim = IPSG_SPD_CAND_MAX, left = cap - *used;                                                 \
        if (left - after < lim) lim = left - after;   /* >= 1: the budget covers one per prefix */          \
        T *out = &cands[*used];                                                                               \
        int complete;                                                                                         \
        uint32_t n = MERGE(out, lim, &rules[q->start], q->count, par ? &cands[par->cand] : NULL,             \
                           par ? par->ncand : 0, par ? par->complete : 1, &complete);                        \
        out[n - 1].flags = IPSG_SPD_CAND_LAST | (complete ? 0 : IPSG_SPD_CAND_MORE);                         \
        q->cand = *used;                                                                                      \
        q->ncand = n;                                                                                         \
        q->complete = complete;                                                                               \
        *used += n;                                                                                           \
        *cut += !complete;                                                                                    \
        return out;                                                                                           \
    }

DEFINE_CAND_MERGE(merge_cands_v4, struct ipsg_spd_cand, cand_from_rule, cand_always)
DEFINE_PREFIX_LIST(prefix_list_v4, struct ipsg_spd_cand, struct v4pfx, merge_cands_v4)

/* Candidate lists (each prefix's rules merged with its enclosing prefix's list, parents
 * first), then the trie (prefixes in ascending length, so a longer one overwrites the
 * entries of the shorter ones it lies in, and a new chunk inherits the entry it replaces).
 * px is in ascending prefix length order. */
static void build_v4_trie(struct ipsg_shm *s, int copy, struct ipsg_spd_compiled *c, const struct ipsg_spd_rule *rules,
                          struct v4pfx *px, uint32_t np) {
    uint32_t *chunks = s->spd_chunk[copy];
    struct ipsg_spd_cand *cands = s->spd_cand[copy];
    uint32_t *order = malloc((size_t)(np ? np : 1) * sizeof(*order));
    uint32_t *stack = malloc((size_t)(np ? np : 1) * sizeof(*stack));
    uint32_t used = 0, cut = 0, nchunks = 0;
    if (!order || !stack) {
        /* No trie: every entry stays 0, and spd_v4 sends each packet to the hash search. */
        free(order);
        free(stack);
        c->v4_cut = UINT32_MAX;
        return;
    }
    for (uint32_t i = 0; i < np; i++) order[i] = i;
    SORT_PX = px;
    qsort(order, np, sizeof(*order), cmp_px_nest);
    uint32_t depth = 0;
    for (uint32_t oi = 0; oi < np; oi++) {
        struct v4pfx *q = &px[order[oi]];
        /* In (address, length) order, the enclosing prefixes of q are exactly the stack. */
        while (depth && ((q->addr & v4_mask(px[stack[depth - 1]].plen)) != px[stack[depth - 1]].addr))
            depth--;
        const struct v4pfx *par = depth ? &px[stack[depth - 1]] : NULL;
        stack[depth++] = order[oi];
        prefix_list_v4(cands, s->cand_cap, &used, np - oi - 1, rules, q, par, &cut);
    }
    for (uint32_t pi = 0; pi < np; pi++) {
        const struct v4pfx *q = &px[pi];
        uint32_t v = q->cand + 1;
        if (q->plen <= 16) {
            uint32_t first = q->addr >> 16, span = 1u << (16 - q->plen);
            for (uint32_t e = 0; e < span; e++) c->v4_root[first + e] = v;
            continue;
        }
        uint32_t *slot = &c->v4_root[q->addr >> 16];
        for (uint32_t end = 20;; end += 4) {
            if (!(*slot & IPSG_SPD_CHUNK)) {
                uint32_t *ch = &chunks[16 * (size_t)nchunks];
                for (int e = 0; e < 16; e++) ch[e] = *slot;
                *slot = IPSG_SPD_CHUNK | nchunks++;
            }
            uint32_t *ch = &chunks[16 * (size_t)(*slot & ~IPSG_SPD_CHUNK)];
            uint32_t idx = (q->addr >> (32 - end)) & 15;
            if (q->plen <= end) {
                for (uint32_t e = 0; e < 1u << (end - q->plen); e++) ch[idx + e] = v;
                break;
            }
            slot = &ch[idx];
        }
    }
    c->v4_chunks = nchunks;
    c->v4_cands = used;
    c->v4_prefixes = np;
    c->v4_cut = cut;
    free(order);
    free(stack);
}

/* ------------------------------------------------- SPD: IPv6 candidate lists */

/* The IPv6 length filter says which prefix lengths can hold a destination, so a lookup probes
 * one or two buckets instead of one per length present.  Entry (two words) f48, picked by a
 * hash of the destination's top 48 bits, has bit (plen - 48) set for every length >= 48 present
 * under some /48 hashing there (bits 0..80).  Entry f32, picked by a hash of the top 32 bits,
 * has bit (plen - 32 + 81) for lengths 32..47 (bits 81..96).  Lengths < 32 are always probed.
 * Collisions only set extra bits; the two uses never share a bit. */
static inline uint32_t v6f_index(const uint64_t dst[2], uint32_t plen, uint32_t mask) {
    return (uint32_t)(((dst[0] & MASKS[plen][0]) * 0x9E3779B97F4A7C15ull ^ plen) >> 40) & mask;
}

static inline uint32_t v6f_bit(uint32_t plen) { return plen >= 48 ? plen - 48 : plen - 32 + 81; }

static inline int v6f_allows(const uint64_t *f48, const uint64_t *f32, uint32_t plen) {
    if (plen < 32) return 1;
    const uint64_t *f = plen >= 48 ? f48 : f32;
    uint32_t b = v6f_bit(plen);
    return f[b >> 6] >> (b & 63) & 1;
}

struct v6pfx {
    uint64_t key[2];         /* masked destination, as loaded (the form MASKS applies to) */
    uint64_t hi, lo;         /* the same in host order, for sorting by address */
    uint32_t plen;
    uint32_t start, count;   /* own rules in the compiled rule array, best first */
    uint32_t bucket;         /* its bucket */
    uint32_t cand, ncand;
    int complete;
};

static int cmp_px6_nest(const void *a_, const void *b_) {
    const struct v6pfx *a = a_, *b = b_;
    if (a->hi != b->hi) return a->hi < b->hi ? -1 : 1;
    if (a->lo != b->lo) return a->lo < b->lo ? -1 : 1;
    return a->plen < b->plen ? -1 : a->plen > b->plen;
}

static inline int rule_always(const struct ipsg_spd_rule *r) {
    return !r->src_mask[0] && !r->src_mask[1] && !r->proto && !r->sport_lo && r->sport_hi == 0xffff &&
           !r->dport_lo && r->dport_hi == 0xffff;
}

static inline void rule_copy(struct ipsg_spd_rule *o, const struct ipsg_spd_rule *r) { *o = *r; }

DEFINE_CAND_MERGE(merge_cands_v6, struct ipsg_spd_rule, rule_copy, rule_always)
DEFINE_PREFIX_LIST(prefix_list_v6, struct ipsg_spd_rule, struct v6pfx, merge_cands_v6)

/* The IPv4 trie's candidate lists, for IPv6: in (address, length) order the enclosing prefixes
 * of a prefix are exactly the stack, and its list is its own rules merged with its parent's
 * list, best first, cut after the first rule that always matches.  Each prefix's bucket then
 * names its list.  Sorting px6 loses nothing: buckets are reached through px6[].bucket. */
static void build_v6_lists(struct ipsg_shm *s, int copy, struct ipsg_spd_compiled *c, const struct ipsg_spd_rule *rules,
                           struct ipsg_spd_bucket *bk, struct v6pfx *px, uint32_t np) {
    struct ipsg_spd_rule *cands = s->spd_cand6[copy];
    uint64_t *filter = s->spd_v6f[copy];
    memset(filter, 0, ((size_t)s->v6f_mask + 1) * 16);
    for (uint32_t i = 0; i < np; i++) {
        uint32_t plen = px[i].plen;
        if (plen < 32) continue;
        uint64_t *f = &filter[2 * (size_t)v6f_index(px[i].key, plen >= 48 ? 48 : 32, s->v6f_mask)];
        f[v6f_bit(plen) >> 6] |= 1ull << (v6f_bit(plen) & 63);
    }
    uint32_t *stack = malloc((size_t)(np ? np : 1) * sizeof(*stack));
    if (!stack) {
        c->v6_cut = UINT32_MAX;   /* every IPv6 lookup takes the search */
        return;
    }
    qsort(px, np, sizeof(*px), cmp_px6_nest);
    uint32_t depth = 0, used = 0, cut = 0;
    for (uint32_t oi = 0; oi < np; oi++) {
        struct v6pfx *q = &px[oi];
        while (depth) {
            const struct v6pfx *t = &px[stack[depth - 1]];
            if ((q->key[0] & MASKS[t->plen][0]) == t->key[0] && (q->key[1] & MASKS[t->plen][1]) == t->key[1]) break;
            depth--;
        }
        const struct v6pfx *par = depth ? &px[stack[depth - 1]] : NULL;
        stack[depth++] = oi;
        const struct ipsg_spd_rule *out = prefix_list_v6(cands, s->cand_cap, &used, np - oi - 1, rules, q, par, &cut);
        struct ipsg_spd_bucket *b = &bk[q->bucket];
        b->cand = q->cand + 1;
        b->head = out[0].rank;
        b->head_action = out[0].action;
        b->flags = rule_always(&out[0]) ? IPSG_SPD_BUCKET_HEAD : 0;
    }
    c->v6_cands = used;
    c->v6_prefixes = np;
    c->v6_cut = cut;
    free(stack);
}

int64_t ipsg_spd_compile(struct ipsg_shm *s) {
    uint32_t n = s->h->caps.n_spd, nb = s->h->n_spd_hash;
    struct sort_item *items = malloc((size_t)n * sizeof(*items));
    if (!items) return IPSG_SHM_EFULL;
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct ipsg_spd_policy *p = &s->pol[i];   /* control is the only writer: no lock needed */
        if (!p->state) continue;
        struct sort_item *it = &items[k++];
        load_addr(it->key, p->family, p->dst);
        it->key[0] &= MASKS[p->dst_plen][0];
        it->key[1] &= MASKS[p->dst_plen][1];
        it->family = p->family;
        it->plen = p->dst_plen;
        it->rank = (uint64_t)p->priority << 32 | i;
        it->index = i;
    }
    qsort(items, k, sizeof(*items), cmp_item);

    uint32_t g = s->h->spd_gen;
    struct ipsg_spd_compiled *c;
    struct ipsg_spd_rule *rules;
    struct ipsg_spd_bucket *bk;
    spd_parts(s, s->spd[(g + 1) & 1], &c, &rules, &bk);
    FENCE_REL();   /* a reader still on this copy two generations ago sees the generation move and retries */
    memset(c, 0, sizeof(*c));
    memset(bk, 0, (size_t)nb * sizeof(*bk));
    struct v4pfx *px = malloc((size_t)(k ? k : 1) * sizeof(*px));
    struct v6pfx *px6 = malloc((size_t)(k ? k : 1) * sizeof(*px6));
    uint32_t np = 0, np6 = 0;
    uint64_t best_by_len[2][129];
    for (int f = 0; f < 2; f++)
        for (int l = 0; l < 129; l++) best_by_len[f][l] = UINT64_MAX;

    for (uint32_t j = 0; j < k;) {
        uint32_t start = j;
        while (j < k && items[j].family == items[start].family && items[j].plen == items[start].plen &&
               items[j].key[0] == items[start].key[0] && items[j].key[1] == items[start].key[1])
            j++;
        for (uint32_t m = start; m < j; m++) {
            const struct ipsg_spd_policy *p = &s->pol[items[m].index];
            struct ipsg_spd_rule *r = &rules[m];
            memset(r, 0, sizeof(*r));
            load_addr(r->src, p->family, p->src);
            r->src_mask[0] = MASKS[p->src_plen][0];
            r->src_mask[1] = MASKS[p->src_plen][1];
            r->src[0] &= r->src_mask[0];
            r->src[1] &= r->src_mask[1];
            r->rank = items[m].rank;
            r->action = p->action;
            r->proto = p->proto;
            r->sport_lo = p->sport_lo;
            r->sport_hi = p->sport_hi;
            r->dport_lo = p->dport_lo;
            r->dport_hi = p->dport_hi;
        }
        const struct sort_item *it = &items[start];
        int f = it->family == 6;
        if (!f && px) {
            struct v4pfx *q = &px[np++];
            q->addr = __builtin_bswap32((uint32_t)it->key[0]);
            q->plen = it->plen;
            q->start = start;
            q->count = j - start;
        }
        if (!f && it->plen >= 16) {
            uint32_t top16 = (uint32_t)(((const uint8_t *)it->key)[0]) << 8 | ((const uint8_t *)it->key)[1];
            c->v4_len16[top16] |= 1u << (it->plen - 16);
        }
        if (it->rank < best_by_len[f][it->plen]) best_by_len[f][it->plen] = it->rank;
        uint32_t h = spd_hash(it->key, it->family, it->plen, nb - 1);
        while (bk[h].count) h = (h + 1) & (nb - 1);
        bk[h].key[0] = it->key[0];
        bk[h].key[1] = it->key[1];
        bk[h].family = it->family;
        bk[h].plen = it->plen;
        bk[h].start = start;
        bk[h].count = j - start;
        bk[h].best = items[start].rank;
        if (f && px6) {
            struct v6pfx *q = &px6[np6++];
            q->key[0] = it->key[0];
            q->key[1] = it->key[1];
            q->hi = __builtin_bswap64(it->key[0]);
            q->lo = __builtin_bswap64(it->key[1]);
            q->plen = it->plen;
            q->start = start;
            q->count = j - start;
            q->bucket = h;
        }
    }
    for (int f = 0; f < 2; f++) {
        uint32_t ng = 0;
        for (int l = 0; l < 129; l++) {
            if (best_by_len[f][l] == UINT64_MAX) continue;
            c->groups[f * 129 + ng].best = best_by_len[f][l];
            c->groups[f * 129 + ng].plen = (uint32_t)l;
            ng++;
        }
        qsort(&c->groups[f * 129], ng, sizeof(struct ipsg_spd_group), cmp_group);
        c->n_groups[f] = ng;
    }
    c->n_rules = k;
    if (px)
        build_v4_trie(s, (g + 1) & 1, c, rules, px, np);
    else
        c->v4_cut = UINT32_MAX;
    if (px6)
        build_v6_lists(s, (g + 1) & 1, c, rules, bk, px6, np6);
    else
        c->v6_cut = UINT32_MAX;
    for (int l = 128; l >= 0; l--)
        if (best_by_len[1][l] != UINT64_MAX) {
            c->v6_lens[c->v6_nlens++] = (uint8_t)l;
            c->v6_present[l >> 6] |= 1ull << (l & 63);
        }
    free(px);
    free(px6);
    free(items);
    STORE_REL(&s->h->spd_gen, g + 1);
    struct ipsg_shm_cmd cmd = {IPSG_CMD_SPD, 0, g + 1, 0};
    if (ipsg_shm_cmd_push(s, &cmd) != IPSG_SHM_OK) __atomic_add_fetch(&s->h->resync_gen, 1, __ATOMIC_RELEASE);
    return k;
}

static inline int rule_matches(const struct ipsg_spd_rule *r, const uint64_t src[2], uint8_t proto, uint16_t sport,
                               uint16_t dport) {
    return (src[0] & r->src_mask[0]) == r->src[0] && (src[1] & r->src_mask[1]) == r->src[1] &&
           (!r->proto || r->proto == proto) && sport >= r->sport_lo && sport <= r->sport_hi &&
           dport >= r->dport_lo && dport <= r->dport_hi;
}

/* Best rule's rank, or UINT64_MAX; *action set from it. */
static uint64_t spd_search(struct ipsg_shm *s, const uint8_t *copy, uint8_t family, const uint64_t src[2],
                           const uint64_t dst[2], uint8_t proto, uint16_t sport, uint16_t dport, uint8_t *action) {
    struct ipsg_spd_compiled *c;
    struct ipsg_spd_rule *rules;
    struct ipsg_spd_bucket *bk;
    spd_parts(s, (uint8_t *)copy, &c, &rules, &bk);
    uint32_t nb_mask = s->h->n_spd_hash - 1, cap = s->h->caps.n_spd;
    int f = family == 6;
    uint32_t ng = c->n_groups[f];
    if (ng > 129) ng = 129;   /* a copy being rebuilt under a slow reader: bounds, then retry */
    uint32_t lens = f ? 0 : c->v4_len16[((const uint8_t *)dst)[0] << 8 | ((const uint8_t *)dst)[1]];
    uint64_t best = UINT64_MAX;
    for (uint32_t gi = 0; gi < ng; gi++) {
        const struct ipsg_spd_group *grp = &c->groups[f * 129 + gi];
        if (grp->best >= best) break;
        uint32_t plen = grp->plen > 128 ? 128 : grp->plen;
        if (!f && plen >= 16 && (plen > 32 || !(lens >> (plen - 16) & 1))) continue;
        uint64_t k0 = dst[0] & MASKS[plen][0], k1 = dst[1] & MASKS[plen][1];
        uint64_t kk[2] = {k0, k1};
        uint32_t h = spd_hash(kk, family, (uint8_t)plen, nb_mask);
        for (uint32_t probes = 0; probes <= nb_mask; probes++, h = (h + 1) & nb_mask) {
            const struct ipsg_spd_bucket *b = &bk[h];
            if (!b->count) break;
            if (b->key[0] != k0 || b->key[1] != k1 || b->plen != plen || b->family != family) continue;
            if (b->best >= best) break;
            uint32_t end = b->start + b->count;
            if (end > cap || end < b->start) break;
            for (uint32_t r = b->start; r < end; r++) {
                if (rules[r].rank >= best) break;
                if (rule_matches(&rules[r], src, proto, sport, dport)) {
                    best = rules[r].rank;
                    *action = rules[r].action;
                    break;
                }
            }
            break;
        }
    }
    return best;
}

/* Scan an IPv4 candidate list: the first match is the best rule.  Returns its rank, or
 * UINT64_MAX with *more set when the list was cut short and the caller must search on. */
static inline uint64_t cand_scan(const struct ipsg_spd_cand *cl, uint32_t room, uint32_t src, uint8_t proto,
                                 uint16_t sport, uint16_t dport, uint8_t *action, int *more) {
    if (room > IPSG_SPD_CAND_MAX) room = IPSG_SPD_CAND_MAX;   /* bounds a copy torn by a rebuild */
    for (uint32_t i = 0; i < room; i++) {
        const struct ipsg_spd_cand *x = &cl[i];
        if ((src & x->src_mask) == x->src && (!x->proto || x->proto == proto) && sport >= x->sport_lo &&
            sport <= x->sport_hi && dport >= x->dport_lo && dport <= x->dport_hi) {
            *action = x->action;
            return x->rank;
        }
        if (x->flags & IPSG_SPD_CAND_LAST) {
            *more = (x->flags & IPSG_SPD_CAND_MORE) != 0;
            return UINT64_MAX;
        }
    }
    *more = 1;
    return UINT64_MAX;
}

/* IPv4 through the trie; falls back to the hash search for a list cut short. */
static uint64_t spd_v4(struct ipsg_shm *s, int copy, const uint64_t src[2], const uint64_t dst[2], uint8_t proto,
                       uint16_t sport, uint16_t dport, uint8_t *action) {
    const struct ipsg_spd_compiled *c = (const struct ipsg_spd_compiled *)s->spd[copy];
    uint32_t d = __builtin_bswap32((uint32_t)dst[0]);
    uint32_t e = c->v4_root[d >> 16];
    for (int shift = 12; (e & IPSG_SPD_CHUNK) && shift >= 0; shift -= 4) {
        uint32_t ci = e & ~IPSG_SPD_CHUNK;
        if (ci >= s->chunk_cap) return UINT64_MAX;   /* torn copy: the generation check retries */
        e = s->spd_chunk[copy][16 * (size_t)ci + ((d >> shift) & 15)];
    }
    if (e & IPSG_SPD_CHUNK || e > s->cand_cap) return UINT64_MAX;
    int more = 0;
    uint64_t best = UINT64_MAX;
    if (e) best = cand_scan(&s->spd_cand[copy][e - 1], s->cand_cap - (e - 1), (uint32_t)src[0], proto, sport,
                            dport, action, &more);
    if (more || c->v4_cut == UINT32_MAX)
        best = spd_search(s, s->spd[copy], 4, src, dst, proto, sport, dport, action);
    return best;
}

/* IPv6: the lengths worth probing for a destination, as a 129-bit set (bit plen): those
 * present in the copy that its filter entries allow. */
static inline void v6_allowed(const struct ipsg_spd_compiled *c, const uint64_t *f48, const uint64_t *f32,
                              uint64_t a[3]) {
    uint64_t l32 = ((f32[1] >> 17) & 0xffff) << 32;   /* filter bits 81..96: lengths 32..47 */
    a[0] = c->v6_present[0] & (0xffffffffull | l32 | f48[0] << 48);
    a[1] = c->v6_present[1] & (f48[0] >> 16 | f48[1] << 48);
    a[2] = c->v6_present[2] & (f48[1] >> 16) & 1;
}

/* The next (longest remaining) length of set a, removed from it; -1 when a is empty. */
static inline int v6_next(uint64_t a[3]) {
    for (int w = 2; w >= 0; w--) {
        if (!a[w]) continue;
        int b = 63 - __builtin_clzll(a[w]);
        a[w] &= ~(1ull << b);
        return 64 * w + b;
    }
    return -1;
}

/* The bucket of dst's longest matching destination prefix among the lengths in a (longest
 * first; the i-th length probed uses hs[i] when i < nh), or NULL when none holds dst. */
static const struct ipsg_spd_bucket *v6_lpm(const struct ipsg_spd_bucket *bk, uint32_t nb_mask, const uint64_t dst[2],
                                            const uint64_t a_in[3], const uint32_t *hs, uint32_t nh) {
    uint64_t a[3] = {a_in[0], a_in[1], a_in[2]};
    int plen;
    for (uint32_t i = 0; (plen = v6_next(a)) >= 0; i++) {
        uint64_t kk[2] = {dst[0] & MASKS[plen][0], dst[1] & MASKS[plen][1]};
        uint32_t h = i < nh ? hs[i] : spd_hash(kk, 6, (uint8_t)plen, nb_mask);
        for (uint32_t probes = 0; probes <= nb_mask; probes++, h = (h + 1) & nb_mask) {
            const struct ipsg_spd_bucket *b = &bk[h];
            if (!b->count) break;
            if (b->key[0] == kk[0] && b->key[1] == kk[1] && b->plen == plen && b->family == 6) return b;
        }
    }
    return NULL;
}

/* Scan an IPv6 candidate list: cand_scan's contract, on ipsg_spd_rule records. */
static inline uint64_t cand6_scan(const struct ipsg_spd_rule *cl, uint32_t room, const uint64_t src[2], uint8_t proto,
                                  uint16_t sport, uint16_t dport, uint8_t *action, int *more) {
    if (room > IPSG_SPD_CAND_MAX) room = IPSG_SPD_CAND_MAX;
    for (uint32_t i = 0; i < room; i++) {
        if (rule_matches(&cl[i], src, proto, sport, dport)) {
            *action = cl[i].action;
            return cl[i].rank;
        }
        if (cl[i].flags & IPSG_SPD_CAND_LAST) {
            *more = (cl[i].flags & IPSG_SPD_CAND_MORE) != 0;
            return UINT64_MAX;
        }
    }
    *more = 1;
    return UINT64_MAX;
}

/* IPv6 through the longest matching prefix's candidate list; falls back to the search for a
 * list cut short (or a copy compiled without lists). */
static uint64_t spd_v6(struct ipsg_shm *s, int copy, const uint64_t src[2], const uint64_t dst[2], uint8_t proto,
                       uint16_t sport, uint16_t dport, uint8_t *action) {
    struct ipsg_spd_compiled *c;
    struct ipsg_spd_rule *rules;
    struct ipsg_spd_bucket *bk;
    spd_parts(s, s->spd[copy], &c, &rules, &bk);
    if (c->v6_cut == UINT32_MAX) return spd_search(s, s->spd[copy], 6, src, dst, proto, sport, dport, action);
    int more = 0;
    uint64_t a[3];
    v6_allowed(c, &s->spd_v6f[copy][2 * (size_t)v6f_index(dst, 48, s->v6f_mask)],
               &s->spd_v6f[copy][2 * (size_t)v6f_index(dst, 32, s->v6f_mask)], a);
    const struct ipsg_spd_bucket *b = v6_lpm(bk, s->h->n_spd_hash - 1, dst, a, NULL, 0);
    if (!b) return UINT64_MAX;
    if (b->flags & IPSG_SPD_BUCKET_HEAD) {
        *action = b->head_action;
        return b->head;
    }
    uint32_t e = b->cand;
    if (!e || e > s->cand_cap) return spd_search(s, s->spd[copy], 6, src, dst, proto, sport, dport, action);
    uint64_t best = cand6_scan(&s->spd_cand6[copy][e - 1], s->cand_cap - (e - 1), src, proto, sport, dport, action,
                               &more);
    if (more) best = spd_search(s, s->spd[copy], 6, src, dst, proto, sport, dport, action);
    return best;
}

static int64_t spd_find(struct ipsg_shm *s, uint8_t family, const uint8_t *src, const uint8_t *dst, uint8_t proto,
                        uint16_t sport, uint16_t dport, uint8_t *action) {
    if (family != 4 && family != 6) return IPSG_SHM_EINVAL;
    uint64_t sw[2], dw[2];
    load_addr(sw, family, src);
    load_addr(dw, family, dst);
    for (;;) {
        uint32_t g = LOAD_ACQ(&s->h->spd_gen);
        uint64_t best = family == 4 ? spd_v4(s, g & 1, sw, dw, proto, sport, dport, action)
                                    : spd_v6(s, g & 1, sw, dw, proto, sport, dport, action);
        FENCE_ACQ();
        if (LOAD_RLX(&s->h->spd_gen) == g)
            return best == UINT64_MAX ? IPSG_SHM_ENOENT : (int64_t)(uint32_t)best;
    }
}

int ipsg_spd_lookup(struct ipsg_shm *s, uint8_t family, const uint8_t *src, const uint8_t *dst, uint8_t proto,
                    uint16_t sport, uint16_t dport, struct ipsg_spd_result *out) {
    uint8_t action = 0;
    int64_t p = spd_find(s, family, src, dst, proto, sport, dport, &action);
    if (p < 0) return (int)p;
    memset(out, 0, sizeof(*out));
    out->policy = (uint32_t)p;
    out->action = action;
    const struct ipsg_spd_bind *b = &s->bind[p];
    struct ipsg_spd_bind copy;
    uint32_t seen;
    if (read_begin_end(&b->lock, b, &copy, sizeof(copy), &seen) != IPSG_SHM_OK) return IPSG_SHM_EBUSY;
    out->n_sa = (uint8_t)(copy.n > IPSG_SPD_MAX_BUNDLE ? IPSG_SPD_MAX_BUNDLE : copy.n);
    memcpy(out->sa, copy.sa, sizeof(out->sa));
    return IPSG_SHM_OK;
}

/* A batch walks the IPv4 trie a group of packets at a time, one level per pass, prefetching
 * what the next pass reads: the group's cache misses overlap instead of queueing one after
 * another.  IPv6 packets get the same treatment per probe stage (spd_group_v6); cut lists
 * take the one-at-a-time path. */
#define SPD_GROUP 32

/* IPv6 lengths whose buckets a batch prefetches per packet before probing: after the filter,
 * usually one or two; any beyond these are probed unprefetched. */
#define V6_PREFETCH_LENS 8

/* The group's IPv6 packets (out[k] == -2): their length filter entries prefetched, then the
 * buckets of the lengths the filter allows, then each packet's longest match found and its
 * candidate list prefetched, then the lists scanned.  Cut lists stay -2 for the caller's
 * one-at-a-time search. */
static void spd_group_v6(struct ipsg_shm *s, uint32_t m, const uint8_t *family, const uint8_t *src, const uint8_t *dst,
                         const uint8_t *proto, const uint16_t *sport, const uint16_t *dport, int32_t *out) {
    uint32_t idx[SPD_GROUP], nv = 0, mask = s->h->n_spd_hash - 1;
    for (uint32_t k = 0; k < m; k++)
        if (family[k] == 6 && out[k] == -2) idx[nv++] = k;
    if (!nv) return;
    uint64_t dw[SPD_GROUP][2];
    uint32_t hs[SPD_GROUP][V6_PREFETCH_LENS], nh[SPD_GROUP], fi[SPD_GROUP][2];
    uint64_t al[SPD_GROUP][3];
    const struct ipsg_spd_bucket *hit[SPD_GROUP];
    int32_t res[SPD_GROUP];
    uint8_t action;
    for (uint32_t v = 0; v < nv; v++) {
        load_addr(dw[v], 6, dst + 16 * (size_t)idx[v]);
        fi[v][0] = v6f_index(dw[v], 48, s->v6f_mask);
        fi[v][1] = v6f_index(dw[v], 32, s->v6f_mask);
    }
    for (;;) {
        uint32_t g = LOAD_ACQ(&s->h->spd_gen), copy = g & 1;
        struct ipsg_spd_compiled *c;
        struct ipsg_spd_rule *rules;
        struct ipsg_spd_bucket *bk;
        spd_parts(s, s->spd[copy], &c, &rules, &bk);
        const struct ipsg_spd_rule *cands = s->spd_cand6[copy];
        const uint64_t *filter = s->spd_v6f[copy];
        if (c->v6_cut == UINT32_MAX) return;   /* no lists: the search, one at a time */
        for (uint32_t v = 0; v < nv; v++) {
            __builtin_prefetch(&filter[2 * (size_t)fi[v][0]]);
            __builtin_prefetch(&filter[2 * (size_t)fi[v][1]]);
        }
        for (uint32_t v = 0; v < nv; v++) {
            v6_allowed(c, &filter[2 * (size_t)fi[v][0]], &filter[2 * (size_t)fi[v][1]], al[v]);
            uint64_t a[3] = {al[v][0], al[v][1], al[v][2]};
            int plen;
            for (nh[v] = 0; nh[v] < V6_PREFETCH_LENS && (plen = v6_next(a)) >= 0; nh[v]++) {
                uint64_t kk[2] = {dw[v][0] & MASKS[plen][0], dw[v][1] & MASKS[plen][1]};
                hs[v][nh[v]] = spd_hash(kk, 6, (uint8_t)plen, mask);
                __builtin_prefetch(&bk[hs[v][nh[v]]]);
            }
        }
        for (uint32_t v = 0; v < nv; v++) {
            hit[v] = v6_lpm(bk, mask, dw[v], al[v], hs[v], nh[v]);
            uint32_t e = hit[v] && !(hit[v]->flags & IPSG_SPD_BUCKET_HEAD) ? hit[v]->cand : 0;
            if (e && e <= s->cand_cap) {
                __builtin_prefetch(&cands[e - 1]);
                __builtin_prefetch((const uint8_t *)&cands[e - 1] + 55);
            }
        }
        for (uint32_t v = 0; v < nv; v++) {
            uint32_t k = idx[v], e = hit[v] ? hit[v]->cand : 0;
            int more = 0;
            if (!hit[v]) {
                res[v] = -1;
            } else if (hit[v]->flags & IPSG_SPD_BUCKET_HEAD) {
                res[v] = (int32_t)(uint32_t)hit[v]->head;
            } else if (!e || e > s->cand_cap) {
                res[v] = -2;
            } else {
                uint64_t sw[2];
                load_addr(sw, 6, src + 16 * (size_t)k);
                uint64_t best = cand6_scan(&cands[e - 1], s->cand_cap - (e - 1), sw, proto[k], sport[k], dport[k],
                                           &action, &more);
                res[v] = more ? -2 : best == UINT64_MAX ? -1 : (int32_t)(uint32_t)best;
            }
        }
        FENCE_ACQ();
        if (LOAD_RLX(&s->h->spd_gen) == g) break;
    }
    for (uint32_t v = 0; v < nv; v++) out[idx[v]] = res[v];
}

static void spd_group_v4(struct ipsg_shm *s, uint32_t m, const uint8_t *family, const uint8_t *src, const uint8_t *dst,
                         const uint8_t *proto, const uint16_t *sport, const uint16_t *dport, int32_t *out) {
    uint32_t d[SPD_GROUP], e[SPD_GROUP];
    uint8_t action;
    for (;;) {
        uint32_t g = LOAD_ACQ(&s->h->spd_gen), copy = g & 1;
        const struct ipsg_spd_compiled *c = (const struct ipsg_spd_compiled *)s->spd[copy];
        const uint32_t *chunks = s->spd_chunk[copy];
        const struct ipsg_spd_cand *cands = s->spd_cand[copy];
        if (!memchr(family, 4, m)) {   /* no IPv4 packet in the group: no trie walk */
            for (uint32_t k = 0; k < m; k++) out[k] = -2;
            break;
        }
        for (uint32_t k = 0; k < m; k++) {
            uint32_t raw;
            memcpy(&raw, dst + 16 * (size_t)k, 4);
            d[k] = __builtin_bswap32(raw);
            __builtin_prefetch(&c->v4_root[d[k] >> 16]);
        }
        for (uint32_t k = 0; k < m; k++) {
            e[k] = family[k] == 4 ? c->v4_root[d[k] >> 16] : 0;
            if (e[k] & IPSG_SPD_CHUNK && (e[k] & ~IPSG_SPD_CHUNK) < s->chunk_cap)
                __builtin_prefetch(&chunks[16 * (size_t)(e[k] & ~IPSG_SPD_CHUNK)]);
        }
        int torn = 0;
        for (int shift = 12; shift >= 0; shift -= 4) {
            int again = 0;
            for (uint32_t k = 0; k < m; k++) {
                if (!(e[k] & IPSG_SPD_CHUNK)) continue;
                uint32_t ci = e[k] & ~IPSG_SPD_CHUNK;
                if (ci >= s->chunk_cap) {
                    e[k] = 0;
                    torn = 1;
                    continue;
                }
                e[k] = chunks[16 * (size_t)ci + ((d[k] >> shift) & 15)];
                if (e[k] & IPSG_SPD_CHUNK) {
                    again = 1;
                    if ((e[k] & ~IPSG_SPD_CHUNK) < s->chunk_cap)
                        __builtin_prefetch(&chunks[16 * (size_t)(e[k] & ~IPSG_SPD_CHUNK)]);
                } else if (e[k] && e[k] <= s->cand_cap) {
                    __builtin_prefetch(&cands[e[k] - 1]);
                }
            }
            if (!again) break;
        }
        for (uint32_t k = 0; k < m; k++) {
            if (family[k] != 4) continue;
            if (!(e[k] & IPSG_SPD_CHUNK) && e[k] && e[k] <= s->cand_cap) __builtin_prefetch(&cands[e[k] - 1]);
        }
        for (uint32_t k = 0; k < m; k++) {
            if (family[k] != 4) {
                out[k] = -2;   /* the slow path below */
                continue;
            }
            uint32_t x = e[k];
            int more = 0;
            uint64_t best = UINT64_MAX;
            if (x & IPSG_SPD_CHUNK || x > s->cand_cap) {
                torn = 1;
            } else if (x) {
                uint32_t sraw;
                memcpy(&sraw, src + 16 * (size_t)k, 4);
                best = cand_scan(&cands[x - 1], s->cand_cap - (x - 1), sraw, proto[k], sport[k], dport[k], &action,
                                 &more);
            }
            out[k] = more || c->v4_cut == UINT32_MAX ? -2 : best == UINT64_MAX ? -1 : (int32_t)(uint32_t)best;
        }
        FENCE_ACQ();
        if (!torn && LOAD_RLX(&s->h->spd_gen) == g) break;
    }
    spd_group_v6(s, m, family, src, dst, proto, sport, dport, out);
    for (uint32_t k = 0; k < m; k++) {
        if (out[k] != -2) continue;
        int64_t p = spd_find(s, family[k], src + 16 * (size_t)k, dst + 16 * (size_t)k, proto[k], sport[k], dport[k],
                             &action);
        out[k] = p < 0 ? -1 : (int32_t)p;
    }
}

void ipsg_spd_lookup_many(struct ipsg_shm *s, uint32_t n, const uint8_t *family, const uint8_t *src,
                          const uint8_t *dst, const uint8_t *proto, const uint16_t *sport, const uint16_t *dport,
                          int32_t *out) {
    for (uint32_t i = 0; i < n; i += SPD_GROUP) {
        uint32_t m = n - i < SPD_GROUP ? n - i : SPD_GROUP;
        spd_group_v4(s, m, family + i, src + 16 * (size_t)i, dst + 16 * (size_t)i, proto + i, sport + i, dport + i,
                     out + i);
    }
}

int ipsg_shm_acquire(struct ipsg_shm *s, uint32_t policy, uint8_t family, const uint8_t *src, const uint8_t *dst,
                     uint8_t proto, uint16_t sport, uint16_t dport, uint64_t now) {
    if (policy >= s->h->caps.n_spd) return IPSG_SHM_EINVAL;
    uint64_t last = s->acq[policy], interval = LOAD_RLX(&s->h->acquire_interval_ns);
    if (last && now - last < interval) return 0;
    struct ipsg_shm_event e;
    memset(&e, 0, sizeof e);
    e.type = IPSG_EV_ACQUIRE;
    e.family = family;
    e.proto = proto;
    e.slot = policy;
    e.policy = policy;
    e.sport = sport;
    e.dport = dport;
    e.time_ns = now;
    memcpy(e.src, src, family == 4 ? 4 : 16);
    memcpy(e.dst, dst, family == 4 ? 4 : 16);
    if (ipsg_shm_event_post(s, &e) != IPSG_SHM_OK) return IPSG_SHM_EFULL;
    s->acq[policy] = now ? now : 1;
    return 1;
}

/* ---------------------------------------------------------------- rings */

/* Single-producer single-consumer rings of size (a power of two) fixed-size items. */

static inline int ring_push(struct ipsg_shm_ring *r, uint32_t size, void *items, const void *item, size_t item_size) {
    uint64_t head = r->head, tail = LOAD_ACQ(&r->tail);
    if (head - tail >= size) {
        STORE_RLX(&r->dropped, r->dropped + 1);
        return IPSG_SHM_EFULL;
    }
    memcpy((uint8_t *)items + (head & (size - 1)) * item_size, item, item_size);
    STORE_REL(&r->head, head + 1);
    return IPSG_SHM_OK;
}

static inline int ring_pop(struct ipsg_shm_ring *r, uint32_t size, const void *items, void *out, size_t item_size) {
    uint64_t tail = r->tail, head = LOAD_ACQ(&r->head);
    if (tail == head) return IPSG_SHM_ENOENT;
    memcpy(out, (const uint8_t *)items + (tail & (size - 1)) * item_size, item_size);
    STORE_REL(&r->tail, tail + 1);
    return IPSG_SHM_OK;
}

int ipsg_shm_cmd_push(struct ipsg_shm *s, const struct ipsg_shm_cmd *c) {
    return ring_push(s->cmd, s->h->caps.cmd_ring, s->cmd_e, c, sizeof(*c));
}

int ipsg_shm_cmd_pop(struct ipsg_shm *s, struct ipsg_shm_cmd *out) {
    return ring_pop(s->cmd, s->h->caps.cmd_ring, s->cmd_e, out, sizeof(*out));
}

int ipsg_shm_event_post(struct ipsg_shm *s, const struct ipsg_shm_event *e) {
    return ring_push(s->evt, s->h->caps.evt_ring, s->evt_e, e, sizeof(*e));
}

int ipsg_shm_event_pop(struct ipsg_shm *s, struct ipsg_shm_event *out) {
    return ring_pop(s->evt, s->h->caps.evt_ring, s->evt_e, out, sizeof(*out));
}
