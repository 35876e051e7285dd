/* Kernel packet I/O for the fastpath: TUN reads/writes, recvmmsg/sendmmsg on
 * UDP and raw sockets straight into and out of batch slots, and the outbound
 * classifier (SPD lookup through the shared-memory region).
 *
 * Read by the C compiler (cdefs/kio/kio.c) and by cffi (fastpath._kio) through
 * cdefs.cdef_text(), so it stays in the subset cffi parses.  The SPD lookup
 * and ACQUIRE functions are the ones compiled into fastpath._shm, passed in as
 * pointers, so one build of cdefs/shm/shm.c serves both modules.
 */
#ifndef IPSG_KIO_H
#define IPSG_KIO_H
#include <stdint.h>

/* Classifier verdicts (one per packet, beside the engine's status):
 *   PROTECT    SPD PROTECT with an SA: batch.sa[i] names it
 *   BYPASS     sent in the clear
 *   DISCARD    SPD DISCARD
 *   ACQUIRE    PROTECT without an SA: held while control negotiates
 *   ICMP       replaced by an ICMP error for the TUN (IPv4 with DF, or IPv6, too big)
 *   NO_POLICY  no SPD entry: dropped
 *   TOO_BIG    too big for the outer MTU and not to be answered: dropped, unless kio_fragment cuts it
 *              (IPv4 without DF, when kio_cls.fragment is set)
 *   DROPPED    PROTECT, but the engine dropped it (its status says why)
 *   FRAGMENTED was TOO_BIG; kio_fragment cut it into IPv4 fragments, each to be sent as its own ESP packet */
#define KIO_V_PROTECT 0
#define KIO_V_BYPASS 1
#define KIO_V_DISCARD 2
#define KIO_V_ACQUIRE 3
#define KIO_V_ICMP 4
#define KIO_V_NO_POLICY 5
#define KIO_V_MALFORMED 6
#define KIO_V_TOO_BIG 7
#define KIO_V_DROPPED 8
#define KIO_V_FRAGMENTED 9
#define KIO_V_MAX 10

/* batch.sa value for packets the engine must leave alone (it answers NO_SA). */
#define KIO_NO_SA 0xffffffff

/* The arrays of a fastpath.batch.Batch. */
struct kio_batch {
    uint8_t *buf;
    uint32_t slot_size;
    uint32_t headroom;
    uint32_t capacity;
    uint32_t tailroom;       /* reads leave this much of a slot free for the ESP trailer */
    uint32_t *off;
    uint32_t *len;
    uint32_t *sa;
    uint8_t *status;
};

/* Same layout as struct ipsg_spd_result (cdefs/shm/shm.h; kio.c checks it). */
struct kio_spd_result {
    uint32_t policy;
    uint8_t action;
    uint8_t n_sa;
    uint16_t reserved_;
    uint32_t sa[4];
};

/* What the classifier needs besides the packets. */
struct kio_cls {
    void *shm;               /* struct ipsg_shm * of fastpath._shm */
    void *spd_lookup;        /* ipsg_spd_lookup */
    void *acquire;           /* ipsg_shm_acquire */
    uint64_t now_ns;
    /* per SA slot: bytes ESP adds to a tunnel-mode packet besides padding
     * (outer IP + UDP + ESP header + IV + ICV) and the padding block size;
     * 0 = unknown (no MTU check) */
    const uint16_t *ovh;
    const uint8_t *blk;
    uint32_t n_sa;
    uint32_t outer_mtu;      /* 0 = no MTU check */
    uint16_t natt_port;      /* IKE ports always bypass */
    uint16_t ike_port;
    uint8_t icmp_src4[4];    /* source of ICMP errors; all zero = the packet's destination */
    uint8_t icmp_src6[16];
    uint32_t acquire_on;     /* 0: do not post ACQUIREs (re-classifying held packets) */
    uint64_t acquires;       /* out: ACQUIRE events posted */
    uint32_t fragment;       /* 1: a too-big IPv4 packet without DF keeps its SA in b->sa (verdict TOO_BIG)
                              * for kio_fragment, which must run before the engine sees the batch */
    uint32_t to_fragment;    /* out: such packets in the last kio_classify call */
};

/* TUN: read up to max packets (non-blocking fd) into slots start.., at headroom.
 * Returns packets read (0 when nothing was waiting) or -errno. */
int kio_tun_read(int fd, struct kio_batch *b, uint32_t start, uint32_t max);
/* TUN: write packets i < n with sel[i] == want; returns packets written. */
int kio_tun_write(int fd, const struct kio_batch *b, uint32_t n, const uint8_t *sel, uint8_t want);

/* UDP (ESP-in-UDP): recvmmsg up to max datagrams into slots start.., then put
 * an IPv4 + UDP header (source from the datagram, destination local_addr:local_port)
 * in front of each payload so the engine sees the outer packet.  *ike counts
 * datagrams with the non-ESP marker (they belong to control). *probe is set to
 * the nonce of a steering probe seen (kept out of the batch).  Returns count or -errno. */
int kio_recv_udp4(int fd, struct kio_batch *b, uint32_t start, uint32_t max, const uint8_t *local_addr,
                  uint16_t local_port, uint64_t *ike, uint64_t *probe);
/* The same on an AF_INET6 UDP socket: local_addr is 16 bytes and the header put in front is IPv6 + UDP
 * (48 bytes), with the traffic class of the datagram when the socket has IPV6_RECVTCLASS. */
int kio_recv_udp6(int fd, struct kio_batch *b, uint32_t start, uint32_t max, const uint8_t *local_addr,
                  uint16_t local_port, uint64_t *ike, uint64_t *probe);
/* Raw IPv4 socket (protocol 50): recvmmsg whole IP packets into slots start..; count or -errno. */
int kio_recv_raw4(int fd, struct kio_batch *b, uint32_t start, uint32_t max);
/* Raw IPv6 socket (protocol 50), which delivers the ESP packet without its IPv6 header: an IPv6 header
 * is rebuilt in front of each (source from the datagram, destination from IPV6_PKTINFO, traffic class
 * from IPV6_TCLASS: the socket needs IPV6_RECVPKTINFO and IPV6_RECVTCLASS), next header ESP.
 * Extension headers the kernel processed are not rebuilt.  Count or -errno. */
int kio_recv_raw6(int fd, struct kio_batch *b, uint32_t start, uint32_t max);
/* Raw IPv6 socket (protocol 51, AH): as kio_recv_raw6, and the extension headers in front of AH come back
 * too, since AH's ICV covers them: the socket also needs IPV6_RECVHOPOPTS, IPV6_RECVDSTOPTS and
 * IPV6_RECVRTHDR (sockets.ah_socket6).  At most 32 packets a call.  A packet whose headers cannot be put
 * back (control data cut short, no room in the slot) is left out and counted in *unrebuilt.
 * Count or -errno. */
int kio_recv_ah6(int fd, struct kio_batch *b, uint32_t start, uint32_t max, uint64_t *unrebuilt);

/* The protected-side sockets a send uses, per outer family (-1: none).  raw4 is IPPROTO_RAW (AF_INET),
 * raw6 is AF_INET6 IPPROTO_RAW (IPV6_HDRINCL), so whole packets go out as the engine built them;
 * udp4/udp6 are the NAT-T sockets, bound to the only local address of their family (-1 when there are
 * several: ESP-in-UDP then leaves whole on the raw socket, from the address the engine wrote).
 * gso: runs of ESP-in-UDP datagrams to one peer go out with UDP_SEGMENT (see kio_send_gso). */
struct kio_out {
    int raw4;
    int raw6;
    int udp4;
    int udp6;
    uint16_t udp_port;
    uint8_t gso;
    uint8_t reserved_;
};

/* sendmmsg packets i < n with sel[i] == want.  Each is a whole IPv4 or IPv6 packet; ESP-in-UDP (UDP
 * from o->udp_port) goes out on the UDP socket of its family as its UDP payload, to the packet's
 * destination address and port; anything else goes out whole on the raw socket of its family.
 * Returns packets sent; *failed counts those the kernel refused or that had no socket. */
int kio_send_out(const struct kio_out *o, const struct kio_batch *b, uint32_t n, const uint8_t *sel,
                 uint8_t want, uint64_t *failed);

/* kio_send_out with IPv4 sockets only (raw_fd, and udp_fd unless -1), without UDP_SEGMENT. */
int kio_send(int raw_fd, int udp_fd, uint16_t udp_port, const struct kio_batch *b, uint32_t n,
             const uint8_t *sel, uint8_t want, uint64_t *failed);

/* Classify n packets read from the TUN: verdict[i], and b->sa[i] (the SA slot
 * for PROTECT, KIO_NO_SA otherwise); posts rate-limited ACQUIREs; rewrites
 * too-big DF/IPv6 packets into ICMP errors in place.  Returns PROTECT count. */
uint32_t kio_classify(struct kio_cls *c, struct kio_batch *b, uint32_t n, uint8_t *verdict);

/* Cut the packets i < n that kio_classify left TOO_BIG with an SA (kio_cls.fragment) into IPv4
 * fragments that fit the SA's path (cdefs/kio/kio_frag.c, RFC 791 rules), written to dst slots dst_start..
 * with dst->sa set: each is then encrypted and sent as its own ESP packet.  Starts at packet *cursor
 * and stops before a packet whose fragments no longer fit dst (all or none of a packet's fragments go
 * in); *cursor is then that packet, or n when done.  A cut packet becomes FRAGMENTED; one that cannot
 * be cut stays TOO_BIG.  Every packet looked at leaves with b->sa = KIO_NO_SA.  Returns fragments
 * written. */
uint32_t kio_fragment(const struct kio_cls *c, struct kio_batch *src, uint32_t n, uint8_t *verdict,
                      struct kio_batch *dst, uint32_t dst_start, uint32_t *cursor);

/* Bytes in packets i < n (those with sel[i] == want; sel NULL: all of them), for the gateway totals. */
uint64_t kio_bytes(const struct kio_batch *b, uint32_t n, const uint8_t *sel, uint8_t want);

/* Copy packets i < n with sel[i] == want from src into dst slots dst_start..
 * (src may equal dst: order is kept, so compaction in place is safe).
 * Returns packets copied (at most dst_cap - dst_start). */
uint32_t kio_move(const struct kio_batch *src, uint32_t n, const uint8_t *sel, uint8_t want,
                  struct kio_batch *dst, uint32_t dst_start);

/* ---- offloads (cdefs/kio/kio_gso.c) -----------------------------------------------------------
 * The TUN is opened with IFF_VNET_HDR and TUNSETOFFLOAD(CSUM | TSO4 | TSO6): one read returns a TCP
 * super-segment of up to 64 KiB behind a 10-byte struct virtio_net_hdr, and one write can hand the
 * kernel such a super-segment built from many decrypted segments.  The protected side sends runs of
 * equal-size ESP-in-UDP datagrams with UDP_SEGMENT and receives coalesced ones with UDP_GRO. */
#define KIO_VNET_HDR_LEN 10
#define KIO_GSO_MAX 65535

/* One pending TUN read (virtio_net_hdr + packet) being cut into batch slots. */
struct kio_tun_rx {
    uint8_t *buf;            /* KIO_VNET_HDR_LEN + KIO_GSO_MAX bytes */
    uint32_t len;            /* bytes in buf; 0 = nothing pending */
    uint32_t next;           /* next segment to emit */
    uint64_t reads;          /* out: read() calls that returned a packet */
    uint64_t gso_reads;      /* out: ... of which were TCP super-segments */
    uint64_t segments;       /* out: packets emitted into slots */
    uint64_t bad;            /* out: reads dropped (unknown GSO type, bad headers, segment bigger than a slot) */
};

/* TUN with IFF_VNET_HDR: fill slots start.. (up to max packets) with the pending packet's remaining
 * segments, then with new reads; a super-segment that does not fit the slots left stays pending for
 * the next call.  Segments are whole IP packets with correct lengths, IPv4 IDs and checksums, TCP
 * sequence numbers and flags (FIN/PSH on the last segment only, CWR on the first only).
 * Returns packets emitted or -errno. */
int kio_tun_read_vnet(int fd, struct kio_batch *b, uint32_t start, uint32_t max, struct kio_tun_rx *rx);
/* The segmentation step alone (rx->buf holds a virtio_net_hdr + packet): packets emitted. */
uint32_t kio_vnet_emit(struct kio_tun_rx *rx, struct kio_batch *b, uint32_t start, uint32_t max);

/* Counters of kio_tun_write_vnet. */
struct kio_tun_tx {
    uint64_t writes;         /* write calls */
    uint64_t packets;        /* packets they carried */
    uint64_t failed;         /* packets the kernel refused (a full queue drops them) */
};

/* TUN with IFF_VNET_HDR: write packets i < n with sel[i] == want, coalescing runs of in-order TCP
 * segments of one flow (verified checksums, identical headers but for length/ID/sequence, equal sizes
 * but the last) into one GSO write; headers of the first packet of a run are rewritten in place.
 * Returns packets delivered. */
int kio_tun_write_vnet(int fd, struct kio_batch *b, uint32_t n, const uint8_t *sel, uint8_t want,
                       struct kio_tun_tx *tx);
/* The coalescing step alone: how many packets from index i (selected ones, in order) join packet i's
 * run (1 = alone), and the virtio_net_hdr (10 bytes) for it written to hdr; rewrites packet i's headers
 * when the run is longer than 1.  For tests. */
uint32_t kio_coalesce(struct kio_batch *b, uint32_t n, const uint8_t *sel, uint8_t want, uint32_t i, uint8_t *hdr);

/* kio_send with UDP_SEGMENT: runs of ESP-in-UDP packets to one destination whose UDP payloads have one
 * size (the last may be shorter) go out as one message. */
int kio_send_gso(int raw_fd, int udp_fd, uint16_t udp_port, const struct kio_batch *b, uint32_t n,
                 const uint8_t *sel, uint8_t want, uint64_t *failed);

/* UDP socket with UDP_GRO: like kio_recv_udp4, but a coalesced datagram (its segment size in the
 * UDP_GRO control message) is split into one slot per segment.  scratch: max_msgs * KIO_GSO_MAX bytes.
 * Reads only as many bundles (64 segments at most each) as the free slots surely take; *dropped counts
 * segments that found no slot anyway (batches under 64 slots). */
int kio_recv_udp4_gro(int fd, struct kio_batch *b, uint32_t start, uint32_t max, const uint8_t *local_addr,
                      uint16_t local_port, uint64_t *ike, uint64_t *probe, uint64_t *dropped, uint8_t *scratch,
                      uint32_t max_msgs);
/* The same on an AF_INET6 UDP socket (16-byte local_addr, IPv6 + UDP header in front of each segment). */
int kio_recv_udp6_gro(int fd, struct kio_batch *b, uint32_t start, uint32_t max, const uint8_t *local_addr,
                      uint16_t local_port, uint64_t *ike, uint64_t *probe, uint64_t *dropped, uint8_t *scratch,
                      uint32_t max_msgs);

#endif
