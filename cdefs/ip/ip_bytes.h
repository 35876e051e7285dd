/* Big-endian field access and the byte-wise Internet checksum (not read by cffi).
 *
 * For the C sources that build or read IP headers byte by byte: kernel I/O (through kio_util.h),
 * the ICMP errors of icmp_too_big.h and the DPDK gateway worker.  esp_core.c keeps its own
 * 64-bit-accumulator variants for the hot path.
 */
#ifndef IPSG_IP_BYTES_H
#define IPSG_IP_BYTES_H
#include <stdint.h>

static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* Byte-wise Internet checksum pieces (headers, ICMP errors: short and off the bulk path). */
static inline uint32_t csum_add(uint32_t sum, const uint8_t *p, uint32_t n) {
    for (; n > 1; n -= 2, p += 2)
        sum += rd16(p);
    if (n)
        sum += (uint32_t)p[0] << 8;
    return sum;
}

static inline uint16_t csum_fold(uint32_t sum) {
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

#endif
