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
#include "esp.h"

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

#endif
