/* Clear side through AF_PACKET on an existing interface (cdefs/kio/kio_packet.c; docs/fastpath.md).
 *
 * Receive: a SOCK_RAW packet socket with PACKET_VNET_HDR (the kernel offers the vnet header on SOCK_RAW
 * only) hands over each frame as a struct virtio_net_hdr, the Ethernet header and the IP packet, a TCP
 * super-segment whole (a host's TSO over veth, a NIC's GRO).  kio_pkt_read reads the Ethernet header
 * aside, so the buffer holds what a TUN with IFF_VNET_HDR gives, and cuts it with kio_vnet_emit.
 *
 * Transmit sends IP packets with sendmmsg on a packet socket (see kio_pkt_send); the destination MAC comes
 * from a small table of inner destination address -> MAC that Python fills from the kernel's neighbour
 * table.  A packet whose destination is not in the table is not sent: it is marked for Python, which
 * resolves it and holds it briefly.
 *
 * Read by cffi through cdefs.cdef_text() (after kio.h), so it stays in the subset cffi parses. */
#ifndef IPSG_KIO_PACKET_H
#define IPSG_KIO_PACKET_H
#include <stdint.h>

#include "kio.h"

#define KIO_NEIGH_KEY 17     /* family (4 or 6; 0 = empty) + 16 address bytes (IPv4 in the first 4) */

/* Inner destination -> MAC, open addressing with linear probing (cap a power of two, at most 3/4 full). */
struct kio_neigh {
    uint32_t cap;
    uint32_t n;
    uint8_t *key;            /* cap * KIO_NEIGH_KEY */
    uint8_t *mac;            /* cap * 6 */
    uint8_t *hit;            /* cap: set when a packet used the entry (Python reads and clears it) */
};

/* Counters of kio_pkt_send, and the addresses that missed in the last call. */
struct kio_pkt_tx {
    uint64_t packets;        /* packets sent (a coalesced run counts its segments) */
    uint64_t calls;          /* sendmmsg calls */
    uint64_t frames;         /* messages sent: one per packet, or one per coalesced TCP run */
    uint64_t failed;         /* refused by the kernel (full queue, EMSGSIZE...) or not IP */
    uint64_t no_neigh;       /* packets with no neighbour (marked in miss[]; Python holds or drops them) */
    uint64_t too_big;        /* packets bigger than the interface MTU: dropped */
    uint8_t *miss_addr;      /* miss_max * KIO_NEIGH_KEY: distinct addresses that missed in the last call */
    uint32_t miss_max;
    uint32_t n_miss;         /* out: how many of them */
};

/* 0 = added or updated, -1 = table full. */
int kio_neigh_put(struct kio_neigh *t, uint8_t family, const uint8_t *addr, const uint8_t *mac);
void kio_neigh_clear(struct kio_neigh *t);
/* 1 and the MAC in mac (6 bytes) if addr is in the table, else 0. */
int kio_neigh_get(const struct kio_neigh *t, uint8_t family, const uint8_t *addr, uint8_t *mac);

/* Like kio_tun_read_vnet, on a SOCK_RAW packet socket with PACKET_VNET_HDR: the Ethernet header is read
 * aside (its 14 bytes taken off the vnet header's csum_start) and Ethernet padding is trimmed off packets
 * shorter than the minimum frame.  Returns packets emitted or -errno. */
int kio_pkt_read(int fd, struct kio_batch *b, uint32_t start, uint32_t max, struct kio_tun_rx *rx);

/* sendmmsg packets i < n with sel[i] == want out of interface ifindex on fd, each to the MAC its
 * destination address has in t (src_mac: the interface's).  miss[i] is set to 1 for a packet whose
 * destination has no entry (not sent; its address is listed in tx->miss_addr), to 0 otherwise.  Packets
 * longer than mtu are dropped (tx->too_big).  Returns packets sent.
 *   vnet == 0: fd is a SOCK_DGRAM packet socket, one message per packet, the kernel writes the Ethernet
 *              header;
 *   vnet == 1: fd is a SOCK_RAW packet socket with PACKET_VNET_HDR: the Ethernet header is written here,
 *              and in-order TCP segments of one flow go out as one GSO message (the runs kio_coalesce
 *              finds, as the TUN writes them), so the next hop gets one super-segment instead of dozens. */
int kio_pkt_send(int fd, int ifindex, struct kio_batch *b, uint32_t n, const uint8_t *sel, uint8_t want,
                 struct kio_neigh *t, uint32_t mtu, uint8_t *miss, struct kio_pkt_tx *tx, int vnet,
                 const uint8_t *src_mac);

#endif
