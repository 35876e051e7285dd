/* The shared-memory region between the control and fastpath processes.
 *
 * This is the one definition of the region layout.  It is read by the C
 * compiler (cdefs/shm/shm.c) and by cffi (after esp.h, in the same FFI) through
 * cdefs.cdef_text(), so it stays in the subset cffi parses.
 *
 * Layout, in order (offsets in the header; every table 64-byte aligned):
 *   header | SA slots (control writes) | SA counters (fastpath writes)
 *   | SPI hash x2 | policies (control) | policy bindings (control)
 *   | ACQUIRE rate limit stamps (fastpath) | compiled SPD x2
 *   | command ring (control -> fastpath) | event ring (fastpath -> control)
 *
 * One writer per field.  Readers of control-written records use the record's
 * seqlock word ("lock": odd while being written) and retry; tables that are
 * rebuilt (SPI hash after compaction, compiled SPD) are double buffered and
 * flipped through a generation word whose low bit names the active copy.
 */
#ifndef IPSG_SHM_H
#define IPSG_SHM_H
#include <stdint.h>
#include <stddef.h>
#include "esp/esp.h"

/* "IPSGSHM1" read as a little-endian 64-bit word. */
#define IPSG_SHM_MAGIC 0x314D485347535049
#define IPSG_SHM_ABI 4

/* ipsg_shm_sa.state */
#define IPSG_SHM_SA_FREE 0
#define IPSG_SHM_SA_ACTIVE 1
#define IPSG_SHM_SA_DYING 2

/* Policy actions. */
#define IPSG_SPD_PROTECT 0
#define IPSG_SPD_BYPASS 1
#define IPSG_SPD_DISCARD 2
#define IPSG_SPD_MAX_BUNDLE 4

/* Candidate lists of the compiled SPD (IPv4 trie, IPv6 per-length hash): a list holds at most
 * this many rules; ipsg_spd_cand.flags (ipsg_spd_rule.flags for IPv6) marks a list's last entry,
 * and IPSG_SPD_CAND_MORE on it says the list was cut short (the lookup then falls back to the
 * per-length hash search over the rules). */
#define IPSG_SPD_CAND_MAX 8
#define IPSG_SPD_CAND_LAST 1
#define IPSG_SPD_CAND_MORE 2
/* Trie entry: 0 = no policy covers the range, IPSG_SPD_CHUNK | n = chunk n, else candidate list + 1. */
#define IPSG_SPD_CHUNK 0x80000000

/* Command ring ops (control -> fastpath). */
#define IPSG_CMD_SA 1
#define IPSG_CMD_SPD 2
#define IPSG_CMD_RESYNC 3

/* Event ring types (fastpath -> control). */
#define IPSG_EV_ACQUIRE 1
#define IPSG_EV_SOFT_EXPIRE 2
#define IPSG_EV_HARD_EXPIRE 3
#define IPSG_EV_SEQ_EXHAUSTED 4
#define IPSG_EV_ALARM_AUTH 5
#define IPSG_EV_ALARM_REPLAY 6

/* Return codes of the C API. */
#define IPSG_SHM_OK 0
#define IPSG_SHM_ENOENT -1
#define IPSG_SHM_EBUSY -2
#define IPSG_SHM_EFULL -3
#define IPSG_SHM_EINVAL -4

/* Capacities; the fixed-size header records them and the offsets derived
 * from them (ipsg_shm_layout is the only place that computes offsets). */
struct ipsg_shm_caps {
    uint32_t n_sa;
    uint32_t n_spd;
    uint32_t cmd_ring;       /* entries, power of two */
    uint32_t evt_ring;       /* entries, power of two */
};

struct ipsg_shm_hdr {
    uint64_t magic;
    uint32_t abi;
    uint32_t hdr_size;       /* sizeof(struct ipsg_shm_hdr) */
    uint64_t total_size;
    /* record sizes, so a build with another layout is refused */
    uint32_t sa_size;
    uint32_t ctr_size;
    uint32_t policy_size;
    uint32_t event_size;
    struct ipsg_shm_caps caps;
    uint32_t n_hash;         /* SPI hash buckets per copy (power of two, >= 2 * n_sa) */
    uint32_t n_spd_hash;     /* compiled SPD buckets per copy */
    uint64_t off_sa;
    uint64_t off_ctr;
    uint64_t off_hash[2];
    uint64_t off_policy;
    uint64_t off_bind;
    uint64_t off_acq;
    uint64_t off_spd[2];
    uint64_t off_cmd;
    uint64_t off_evt;
    uint64_t spd_size;       /* bytes of one compiled SPD copy */
    uint64_t reserved_[8];
    /* Written by control. */
    uint64_t generation;     /* bumped on every change control makes */
    uint64_t next_sa_id;     /* last SA id handed out */
    uint32_t hash_gen;       /* low bit: active SPI hash copy */
    uint32_t hash_live;      /* live entries in the active copy */
    uint32_t hash_tomb;      /* tombstones in the active copy */
    uint32_t spd_gen;        /* low bit: active compiled SPD copy */
    uint64_t resync_gen;     /* bumped when a command could not be queued */
    uint64_t acquire_interval_ns;  /* at most one ACQUIRE per policy per interval */
    uint64_t alarm_window_ns;      /* auth-failure / replay burst detection window */
    uint64_t alarm_threshold;      /* drops within the window that raise an alarm */
    uint64_t control_pid;
    uint64_t control_heartbeat_ns;
    uint64_t reserved_c[8];
    /* Written by the fastpath. */
    uint64_t fastpath_pid;
    uint64_t fastpath_heartbeat_ns;
    uint64_t fastpath_attaches;
    uint64_t reserved_f[8];
};

/* One SA slot, written by control only. */
struct ipsg_shm_sa {
    uint32_t lock;           /* seqlock: odd while control writes the slot */
    uint8_t state;           /* IPSG_SHM_SA_* */
    uint8_t placement;       /* placement hint (engine preference) */
    uint16_t reserved_;
    uint32_t version;        /* bumped on every write of the slot */
    uint32_t reserved2_;
    uint64_t id;             /* SA id: new for every install, kept by updates */
    uint64_t digest;         /* FNV-1a of p: a torn slot left by a crashed writer shows */
    struct ipsg_sa_params p;
};

/* Per-SA counters, written by the fastpath only. */
struct ipsg_shm_ctr {
    uint32_t lock;           /* seqlock: odd while the fastpath writes */
    uint32_t version;        /* slot version the fastpath has installed; 0 = none */
    uint64_t id;             /* SA id these counters belong to */
    uint64_t seq_reserved;   /* outbound: no sequence number >= this has been used */
    uint64_t alarm_ns;       /* start of the current alarm window */
    uint64_t alarm_auth;     /* auth-failure drops at the window start */
    uint64_t alarm_replay;
    struct ipsg_sa_stats stats;
};

/* SPI hash entry: a 64-bit word written atomically, (spi << 32) | (slot + 1);
 * 0 = empty, slot part 0xffffffff = tombstone. */

/* One policy (security policy database entry), written by control only. */
struct ipsg_spd_policy {
    uint32_t lock;
    uint8_t state;           /* 0 free, 1 active */
    uint8_t family;          /* 4 or 6 */
    uint8_t action;          /* IPSG_SPD_* */
    uint8_t proto;           /* 0 = any */
    uint32_t priority;       /* lower wins */
    uint8_t src_plen;
    uint8_t dst_plen;
    uint16_t reserved_;
    uint16_t sport_lo;
    uint16_t sport_hi;
    uint16_t dport_lo;
    uint16_t dport_hi;
    uint8_t src[16];
    uint8_t dst[16];
    uint64_t id;             /* control's own policy id */
};

/* The SA (or bundle, applied in order) a PROTECT policy uses; changed without
 * recompiling the SPD.  n = 0 on a PROTECT policy makes an ACQUIRE. */
struct ipsg_spd_bind {
    uint32_t lock;
    uint32_t n;
    uint32_t sa[4];
};

/* Result of an SPD lookup. */
struct ipsg_spd_result {
    uint32_t policy;
    uint8_t action;
    uint8_t n_sa;
    uint16_t reserved_;
    uint32_t sa[4];
};

/* One compiled SPD copy (built by control, read by the fastpath): ipsg_spd_compiled, then
 * n_spd rules, then n_spd_hash buckets, then the IPv4 trie chunks and candidate lists.
 *
 * IPv4 (the fast path): a multibit trie on the destination, strides 16-4-4-4-4.  v4_root is
 * indexed by the destination's top 16 bits; a chunk is 16 entries (one cache line) indexed by
 * the next 4 bits.  Prefixes are leaf-pushed, so the entry a walk ends on names the most
 * specific destination prefix covering the packet, through its candidate list: every rule of
 * that prefix and of the prefixes containing it, merged best first and cut after the first
 * rule with no source, protocol or port constraint (it always matches, so nothing after it
 * can win).  The first candidate that matches the packet is the answer.
 *
 * IPv6: the same candidate lists (of ipsg_spd_rule records, after the IPv4 ones), reached
 * through the buckets below instead of a trie: the lookup probes the destination lengths
 * present, longest first (v6_lens); the first bucket that holds the packet's masked destination
 * is its most specific prefix, and bucket.cand names that prefix's list.
 *
 * The search over every rule (lists cut at IPSG_SPD_CAND_MAX fall back to it): rules grouped
 * by (family, destination prefix); a bucket, found by hashing the masked destination, names
 * its group's run of rules, sorted best first.  groups[] lists, per family (v4 = 0, v6 = 1),
 * the destination prefix lengths present, in order of the best rule they hold, so a lookup
 * stops as soon as no remaining length can beat what it found, and skips IPv4 lengths that
 * v4_len16 says are absent under the packet's destination /16. */
struct ipsg_spd_group {
    uint64_t best;           /* (priority << 32) | policy of its best rule */
    uint32_t plen;
    uint32_t reserved_;
};

struct ipsg_spd_compiled {
    uint32_t n_rules;
    uint32_t n_groups[2];
    uint32_t reserved_;
    struct ipsg_spd_group groups[258];
    /* IPv4: for each destination /16, bit (plen - 16) is set when some rule with that
     * destination prefix length (16..32) lies inside it; lookups skip the other lengths. */
    uint32_t v4_len16[65536];
    uint32_t v4_chunks;      /* trie chunks in use */
    uint32_t v4_cands;       /* candidate entries in use */
    uint32_t v4_prefixes;    /* distinct IPv4 destination prefixes */
    uint32_t v4_cut;         /* candidate lists cut short (their lookups may fall back) */
    uint32_t v4_root[65536];
    /* IPv6: the destination prefix lengths present, longest first; the first of them whose
     * bucket holds the packet's masked destination is its longest matching prefix, and that
     * bucket's cand names the prefix's candidate list (ipsg_spd_rule records). */
    uint32_t v6_nlens;
    uint32_t v6_cands;       /* candidate entries in use */
    uint32_t v6_prefixes;    /* distinct IPv6 destination prefixes */
    uint32_t v6_cut;         /* candidate lists cut short; UINT32_MAX = no lists (search only) */
    uint8_t v6_lens[132];
    uint64_t v6_present[3];  /* bit plen set when v6_lens holds plen (lookups walk these bits) */
};

/* One candidate of an IPv4 list: the rule's selectors (addresses as loaded from network
 * byte order, so no swap at lookup time), rank and action. */
struct ipsg_spd_cand {
    uint64_t rank;           /* (priority << 32) | policy */
    uint32_t src;            /* masked source prefix */
    uint32_t src_mask;
    uint16_t sport_lo;
    uint16_t sport_hi;
    uint16_t dport_lo;
    uint16_t dport_hi;
    uint8_t proto;
    uint8_t action;
    uint8_t flags;           /* IPSG_SPD_CAND_LAST, IPSG_SPD_CAND_MORE */
    uint8_t reserved_;
};

/* A rule (the rule array: each destination prefix's rules, best first), and an IPv6 candidate. */
struct ipsg_spd_rule {
    uint64_t src[2];         /* masked source prefix (address bytes as two words) */
    uint64_t src_mask[2];
    uint64_t rank;           /* (priority << 32) | policy */
    uint8_t action;
    uint8_t proto;
    uint16_t sport_lo;
    uint16_t sport_hi;
    uint16_t dport_lo;
    uint16_t dport_hi;
    uint16_t flags;          /* IPv6 candidates: IPSG_SPD_CAND_LAST, IPSG_SPD_CAND_MORE */
    uint32_t reserved2_;
};

/* ipsg_spd_bucket.flags: the IPv6 list's first candidate has no source, protocol or port
 * constraint, so it is the answer for every packet that reaches this bucket: head and
 * head_action give it without reading the list. */
#define IPSG_SPD_BUCKET_HEAD 1

/* One cache line (the bucket array is 64-byte aligned), so a probe reads one line. */
struct ipsg_spd_bucket {
    uint64_t key[2];         /* masked destination */
    uint32_t count;          /* 0 = empty bucket */
    uint8_t family;
    uint8_t plen;
    uint8_t flags;           /* IPSG_SPD_BUCKET_HEAD */
    uint8_t head_action;
    uint32_t cand;           /* IPv6: its candidate list + 1 (0 = none) */
    uint32_t start;
    uint64_t best;           /* rank of its first (best) rule: skip the rules when it cannot win */
    uint64_t head;           /* IPv6: rank of its list's first candidate */
    uint64_t reserved_[2];
};

struct ipsg_shm_cmd {
    uint32_t op;             /* IPSG_CMD_* */
    uint32_t slot;           /* SA slot for IPSG_CMD_SA */
    uint32_t version;
    uint32_t reserved_;
};

struct ipsg_shm_event {
    uint16_t type;           /* IPSG_EV_* */
    uint8_t family;
    uint8_t proto;
    uint32_t slot;           /* SA slot; policy index for ACQUIRE */
    uint64_t sa_id;
    uint64_t packets;        /* expiry: packets so far; alarm: drops in the window */
    uint64_t bytes;          /* expiry: bytes so far */
    uint64_t time_ns;
    uint16_t sport;
    uint16_t dport;
    uint32_t policy;
    uint8_t src[16];         /* ACQUIRE: the packet's addresses */
    uint8_t dst[16];
};

/* Single-producer single-consumer ring header; entries follow it. */
struct ipsg_shm_ring {
    uint64_t head;           /* producer */
    uint64_t dropped;        /* producer: entries lost to a full ring */
    uint8_t pad0[48];
    uint64_t tail;           /* consumer */
    uint8_t pad1[56];
};

struct ipsg_shm;             /* a process's attachment (opaque) */

/* Offsets and sizes for given capacities; 0, or -1 with err set. */
int ipsg_shm_layout(const struct ipsg_shm_caps *caps, struct ipsg_shm_hdr *out, char *err, size_t errlen);
/* Check a header read from a file of file_size bytes; 0, or -1 with err set. */
int ipsg_shm_validate(const struct ipsg_shm_hdr *h, uint64_t file_size, char *err, size_t errlen);
/* Create a new region file (mode 0600, fails if it exists). */
struct ipsg_shm *ipsg_shm_create(const char *path, const struct ipsg_shm_caps *caps, char *err, size_t errlen);
/* Attach to an existing region after validating it. */
struct ipsg_shm *ipsg_shm_attach(const char *path, char *err, size_t errlen);
void ipsg_shm_detach(struct ipsg_shm *s);
struct ipsg_shm_hdr *ipsg_shm_header(struct ipsg_shm *s);
uint8_t *ipsg_shm_base(struct ipsg_shm *s);

uint64_t ipsg_shm_digest(const struct ipsg_sa_params *p);

/* Control side: SA slots and the SPI index. */
/* Both return the slot's new version, or a negative IPSG_SHM_E* code. */
int64_t ipsg_shm_sa_write(struct ipsg_shm *s, uint32_t slot, const struct ipsg_sa_params *p,
                          uint8_t state, uint8_t placement, uint64_t id);
/* write + SPI index (slot before index entry) + command + generation, in one call:
 * what control does to install or update an SA.  old_spi: the SPI the slot was indexed
 * under before (an update that changed it), or 0. */
int64_t ipsg_shm_sa_install(struct ipsg_shm *s, uint32_t slot, const struct ipsg_sa_params *p,
                            uint8_t state, uint8_t placement, uint64_t id, uint32_t old_spi);
/* ipsg_shm_sa_install with the parameters as arguments (no traffic selectors): Python's
 * install path makes this one call instead of thirty cffi attribute writes.  The params are
 * assembled on the C stack, installed exactly as ipsg_shm_sa_install does, and wiped. */
int64_t ipsg_shm_sa_install_fields(struct ipsg_shm *s, uint32_t slot, uint8_t state, uint8_t placement, uint64_t id,
                                   uint32_t old_spi, uint32_t spi, uint8_t direction, uint8_t mode, uint8_t esn,
                                   uint8_t enc, uint8_t integ, const uint8_t *enc_key, uint8_t enc_key_len,
                                   const uint8_t *integ_key, uint8_t integ_key_len, const uint8_t *src,
                                   const uint8_t *dst, uint8_t addr_len, uint8_t udp_encap, uint8_t ttl, uint8_t df,
                                   uint8_t dscp, uint8_t ecn, uint8_t flowlabel, uint16_t sport, uint16_t dport,
                                   uint32_t replay_window, uint64_t seq, uint64_t soft_bytes, uint64_t hard_bytes,
                                   uint64_t soft_packets, uint64_t hard_packets, uint8_t proto);
/* Unindex, zero and free a slot, and tell the fastpath; the new version or a negative code. */
int64_t ipsg_shm_sa_delete(struct ipsg_shm *s, uint32_t slot);
/* Zeroes the keys and every parameter, state FREE. */
int64_t ipsg_shm_sa_clear(struct ipsg_shm *s, uint32_t slot);
int ipsg_shm_hash_insert(struct ipsg_shm *s, uint32_t spi, uint32_t slot);
int ipsg_shm_hash_remove(struct ipsg_shm *s, uint32_t spi, uint32_t slot);
/* Rebuild the inactive SPI hash copy from the active slots and flip to it. */
void ipsg_shm_hash_rebuild(struct ipsg_shm *s);
/* Free SA slots and policies left torn (odd lock) by a control that died mid-write; returns how many. */
uint32_t ipsg_shm_repair(struct ipsg_shm *s);

/* Either side: consistent copies. */
int ipsg_shm_sa_read(struct ipsg_shm *s, uint32_t slot, struct ipsg_shm_sa *out);
int ipsg_shm_ctr_read(struct ipsg_shm *s, uint32_t slot, struct ipsg_shm_ctr *out);
/* Read count slots from first; returns reads done, *bad = digests that did not match. */
uint64_t ipsg_shm_audit(struct ipsg_shm *s, uint32_t first, uint32_t count, uint64_t rounds, uint64_t *bad);

/* Fastpath side: SA lookup by SPI (and destination when dst != NULL);
 * the slot, or IPSG_SHM_ENOENT. */
int64_t ipsg_shm_spi_lookup(struct ipsg_shm *s, uint32_t spi, uint8_t family, const uint8_t *dst);
void ipsg_shm_spi_lookup_many(struct ipsg_shm *s, uint32_t n, const uint32_t *spi, int64_t *out);
/* The same answers as n ipsg_shm_spi_lookup calls, for key i = (spi[i], family[i], the 16 bytes
 * at dst + 16 * i; IPv4 in the first 4), or by SPI alone when dst is NULL (family unused);
 * out[i] = slot or IPSG_SHM_ENOENT.  Keys are hashed and their buckets and slots prefetched a
 * chunk at a time before probing, so the cost per key stays flat as the table outgrows the cache. */
void ipsg_shm_spi_lookup_batch(struct ipsg_shm *s, uint32_t n, const uint32_t *spi, const uint8_t *family,
                               const uint8_t *dst, int64_t *out);

/* Fastpath side: counters.  Publishes stats for the SA id installed from
 * version; posts SOFT/HARD_EXPIRE and SEQ_EXHAUSTED on new flags and alarms on
 * drop bursts.  Returns events posted. */
int ipsg_shm_ctr_update(struct ipsg_shm *s, uint32_t slot, uint32_t version, uint64_t id,
                        const struct ipsg_sa_stats *st, uint64_t now_ns);
/* Raise the outbound sequence reservation to at least upto. */
void ipsg_shm_seq_reserve(struct ipsg_shm *s, uint32_t slot, uint64_t upto);
/* Forget counters (SA removed). */
void ipsg_shm_ctr_clear(struct ipsg_shm *s, uint32_t slot);

/* SPD: control writes policies and bindings, compiles, and flips. */
int ipsg_spd_write(struct ipsg_shm *s, uint32_t index, const struct ipsg_spd_policy *p);
int ipsg_spd_read(struct ipsg_shm *s, uint32_t index, struct ipsg_spd_policy *out);
int ipsg_spd_bind(struct ipsg_shm *s, uint32_t index, uint32_t n, const uint32_t *sa);
/* Build the inactive compiled copy from the policy table and flip; returns policies compiled. */
int64_t ipsg_spd_compile(struct ipsg_shm *s);
/* Best (lowest priority value) matching policy, or IPSG_SHM_ENOENT. */
int ipsg_spd_lookup(struct ipsg_shm *s, uint8_t family, const uint8_t *src, const uint8_t *dst,
                    uint8_t proto, uint16_t sport, uint16_t dport, struct ipsg_spd_result *out);
/* n lookups of packed 5-tuples (v4 addresses in bytes 0..3); out[i] = policy or -1. */
void ipsg_spd_lookup_many(struct ipsg_shm *s, uint32_t n, const uint8_t *family, const uint8_t *src,
                          const uint8_t *dst, const uint8_t *proto, const uint16_t *sport,
                          const uint16_t *dport, int32_t *out);
/* Post an ACQUIRE for policy unless one was posted less than acquire_interval_ns ago. */
int ipsg_shm_acquire(struct ipsg_shm *s, uint32_t policy, uint8_t family, const uint8_t *src,
                     const uint8_t *dst, uint8_t proto, uint16_t sport, uint16_t dport, uint64_t now_ns);

/* Rings. */
int ipsg_shm_cmd_push(struct ipsg_shm *s, const struct ipsg_shm_cmd *c);
int ipsg_shm_cmd_pop(struct ipsg_shm *s, struct ipsg_shm_cmd *out);
int ipsg_shm_event_post(struct ipsg_shm *s, const struct ipsg_shm_event *e);
int ipsg_shm_event_pop(struct ipsg_shm *s, struct ipsg_shm_event *out);
/* Fastpath: scan every slot for versions not yet installed (after attach or a
 * resync); writes up to max slot numbers to out, starting at *cursor. */
uint32_t ipsg_shm_scan(struct ipsg_shm *s, uint32_t *cursor, uint32_t *out, uint32_t max);

uint64_t ipsg_shm_now_ns(void);

#endif
