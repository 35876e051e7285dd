/* The DPDK worker loop on the CPU-crypto / software-batch rung: ethdev rx burst -> our ESP core
 * (esp_core.c on intel-ipsec-mb, compiled into the same module) -> ethdev tx burst.
 *
 * Read by the C compiler (dpdk_loop.c) and by cffi through cdefs.cdef_text(), after esp.h
 * (struct ipsg_engine) and dpdk.h; same subset rules as those headers.
 */
#ifndef IPSG_DPDK_LOOP_H
#define IPSG_DPDK_LOOP_H
#include <stdint.h>
#include <stddef.h>
#include "esp/esp.h"

#define IPSG_DPDK_LOOP_MAX_BURST 256

/* Loop counters.  drops[] is indexed by IPSG_ST_* (the ESP verdict of packets not sent). */
struct ipsg_dpdk_loop_stats {
    uint64_t rx;             /* packets received */
    uint64_t tx;             /* packets accepted by the tx port */
    uint64_t tx_full;        /* ESP OK but the tx queue refused them (freed) */
    uint64_t not_ip;         /* not IPv4/IPv6 over Ethernet, multi-segment or too big for a slot (freed) */
    uint64_t bursts;         /* non-empty rx bursts */
    uint64_t polls;          /* rx burst calls */
    uint64_t cycles;         /* TSC cycles the last run took */
    uint64_t hz;             /* TSC frequency */
    uint64_t drops[16];
};

/* Mbuf pool: n mbufs with data_room bytes of data each (headroom included); NULL and err on failure. */
void *ipsg_dpdk_pool_new(const char *name, uint32_t n, uint16_t data_room, char *err, size_t errlen);
void ipsg_dpdk_pool_free(void *pool);
/* Port id of an ethdev by its name (the vdev name, e.g. "net_pcap0"); -1 if none. */
int ipsg_dpdk_port_by_name(const char *name);
/* One rx and one tx queue of nb_desc descriptors on pool, started, promiscuous; -1 and err on failure. */
int ipsg_dpdk_port_start(uint16_t port, void *pool, uint16_t nb_desc, char *err, size_t errlen);
/* Stop and close (net_pcap flushes its tx file here). */
void ipsg_dpdk_port_close(uint16_t port);

struct ipsg_dpdk_loop;
/* A loop from rx_port (queue 0) to tx_port (queue 0) running ESP direction dir (IPSG_DIR_*) on engine e
 * (not owned).  Outbound packets all go to SA out_sa (one tunnel SA; SPD lookup is not done here). */
struct ipsg_dpdk_loop *ipsg_dpdk_loop_new(struct ipsg_engine *e, uint16_t rx_port, uint16_t tx_port, uint8_t dir,
                                          uint32_t out_sa, uint32_t burst, char *err, size_t errlen);
void ipsg_dpdk_loop_free(struct ipsg_dpdk_loop *l);
/* Polls until max_packets have been received (0: no limit), seconds have passed (0: no limit) or
 * ipsg_dpdk_loop_stop is called (from another thread).  Returns the packets received by this run. */
uint64_t ipsg_dpdk_loop_run(struct ipsg_dpdk_loop *l, uint64_t max_packets, double seconds);
void ipsg_dpdk_loop_stop(struct ipsg_dpdk_loop *l);
void ipsg_dpdk_loop_get_stats(struct ipsg_dpdk_loop *l, struct ipsg_dpdk_loop_stats *out);

/* ---- The gateway worker (dpdk_gw.c): one worker polling a clear and a protected port. ----
 *
 * clear rx -> SPD lookup in the shared-memory region (through the function pointers below, which
 * point into fastpath._shm, so no Python runs per packet) -> PROTECT: ESP outbound on the bound
 * SA, BYPASS: forwarded, DISCARD / no policy: counted drop, PROTECT without SA: ACQUIRE posted
 * (the region rate-limits it per policy) and the packet held -> protected tx;
 * protected rx -> ESP (SPI lookup in the engine) -> inbound -> clear tx; everything else on the
 * protected port (ARP/ND, IKE, traffic for the gateway itself) is freed: the kernel, which sees
 * every frame of an af_packet port, answers it.  Ethernet: source = the port's MAC, destination =
 * the MAC the neighbour table gives for the frame's IP destination (Python fills the table from
 * the kernel's routes and neighbours; a miss is counted and queued for Python to resolve). */

#define IPSG_GW_HOLD_MAX 64        /* packets held while an ACQUIRE or a sync is pending */
#define IPSG_GW_NEIGH_SIZE 1024    /* neighbour table entries (power of two) */
#define IPSG_GW_MISS_MAX 32        /* neighbour misses queued for Python between slices */
#define IPSG_GW_LOCAL_MAX 32       /* the gateway's own addresses (left to the kernel) */

/* Outcomes counted per packet; each received frame ends in exactly one of them (or is held). */
#define IPSG_GW_C_PROTECT 0        /* ESP sent on the protected port */
#define IPSG_GW_C_DECRYPTED 1      /* inbound ESP decrypted and sent on the clear port */
#define IPSG_GW_C_BYPASS 2         /* BYPASS policy: forwarded in the clear */
#define IPSG_GW_C_DISCARD 3        /* DISCARD policy */
#define IPSG_GW_C_NO_POLICY 4      /* no policy matched (dropped) */
#define IPSG_GW_C_KERNEL 5         /* left to the kernel: not for our MAC, not IP, for a local address, IKE */
#define IPSG_GW_C_MALFORMED 6      /* IP header the classifier cannot parse */
#define IPSG_GW_C_NO_NEIGH 7       /* no MAC for the next hop in time (held while Python resolves it) */
#define IPSG_GW_C_TX_FULL 8        /* tx queue refused the packet */
#define IPSG_GW_C_HOLD_DROPPED 9   /* the hold queue was full, or held too long */
#define IPSG_GW_C_ESP_DROP 10      /* ESP verdict not OK (by status in drops[]) */
#define IPSG_GW_C_ICMP 11          /* too big for the outer MTU: ICMP error sent back */
#define IPSG_GW_C_TOO_BIG 12       /* too big and no ICMP possible (IPv4 without DF) */
#define IPSG_GW_C_LOCAL_IN 13      /* decrypted, for the gateway itself: no path into its stack (dropped) */
#define IPSG_GW_C_MAX 16

struct ipsg_dpdk_gw_stats {
    uint64_t rx_clear, rx_prot, tx_clear, tx_prot;
    uint64_t polls, bursts, acquires, held, cycles, hz;
    uint64_t c[16];          /* IPSG_GW_C_* */
    uint64_t drops[16];      /* ESP drops by IPSG_ST_* (both directions) */
    uint64_t in_place;       /* packets the core worked on in their own mbuf */
    uint64_t copied;         /* packets copied into a slot and back (an mbuf it could not write) */
};

struct ipsg_dpdk_gw_conf {
    struct ipsg_engine *e;   /* not owned; SA index = region slot */
    uint16_t clear_port, prot_port;
    uint32_t burst;
    uint32_t n_sa;           /* region SA slots (size of the per-slot tables) */
    uint32_t outer_mtu;      /* protected port MTU (IP bytes); 0 = no check */
    uint32_t idle_sleep_us;  /* sleep after 64 empty polls of both ports; 0 = busy poll */
    uint16_t ike_port, natt_port;
    uint8_t clear_mac[6], prot_mac[6];
    uint8_t icmp_src4[4];    /* source of ICMP errors we make (0: the packet's destination) */
    uint8_t icmp_src6[16];
    void *shm;               /* struct ipsg_shm * of fastpath._shm */
    void *spd_lookup;        /* ipsg_spd_lookup */
    void *acquire;           /* ipsg_shm_acquire */
    void *seq_reserve;       /* ipsg_shm_seq_reserve */
    void *spi_lookup;        /* ipsg_shm_spi_lookup */
    void *now_ns;            /* ipsg_shm_now_ns */
};

struct ipsg_dpdk_gw;
struct ipsg_dpdk_gw *ipsg_dpdk_gw_new(const struct ipsg_dpdk_gw_conf *c, char *err, size_t errlen);
void ipsg_dpdk_gw_free(struct ipsg_dpdk_gw *g);
/* Poll both ports until seconds have passed, ipsg_dpdk_gw_stop, or a packet needs Python (an SA
 * the engine does not have yet is in the region: the caller syncs and calls ipsg_dpdk_gw_retry).
 * Returns 1 when it ended early for a sync, else 0. */
int ipsg_dpdk_gw_run(struct ipsg_dpdk_gw *g, double seconds);
void ipsg_dpdk_gw_stop(struct ipsg_dpdk_gw *g);
/* After a sync: classify held packets again (no new ACQUIREs) and run late inbound ESP again. */
void ipsg_dpdk_gw_retry(struct ipsg_dpdk_gw *g);
/* After Python filled neighbour entries: send the packets that waited for a next-hop MAC. */
void ipsg_dpdk_gw_retry_neigh(struct ipsg_dpdk_gw *g);
/* Drop held packets (and those waiting for a MAC) older than max_age_ns; returns how many. */
uint32_t ipsg_dpdk_gw_expire(struct ipsg_dpdk_gw *g, uint64_t max_age_ns);
/* An SA slot was (re)installed or removed: ovh/blk give its ESP overhead for the MTU check (0: none);
 * the sequence reservation cache of the slot is reset. */
void ipsg_dpdk_gw_set_sa(struct ipsg_dpdk_gw *g, uint32_t slot, uint16_t ovh, uint8_t blk);
/* Neighbour table: the MAC for frames whose IP destination is addr (family 4: first 4 bytes). */
int ipsg_dpdk_gw_neigh_set(struct ipsg_dpdk_gw *g, uint8_t family, const uint8_t *addr, const uint8_t *mac);
void ipsg_dpdk_gw_neigh_clear(struct ipsg_dpdk_gw *g);
/* Destinations that missed since the last call (family[i], 16 bytes at addr + 16 i); returns count. */
uint32_t ipsg_dpdk_gw_misses(struct ipsg_dpdk_gw *g, uint8_t *family, uint8_t *addr, uint32_t max);
/* The gateway's own addresses (frames for them go to the kernel). */
int ipsg_dpdk_gw_local_add(struct ipsg_dpdk_gw *g, uint8_t family, const uint8_t *addr);
void ipsg_dpdk_gw_get_stats(struct ipsg_dpdk_gw *g, struct ipsg_dpdk_gw_stats *out);
/* A port's MAC address (6 bytes); -1 if the port has none. */
int ipsg_dpdk_port_mac(uint16_t port, uint8_t *out);

#endif
