/* Fragmenting inner IPv4 packets that no longer fit once ESP is added; see kio.h (kio_fragment).
 *
 * RFC 4459 section 3 and RFC 4301 section 8: rather than let the outer (ESP) packet fragment, which
 * costs the peer a reassembly before it can even authenticate, fragment the inner packet before it is
 * encapsulated.  Each fragment then becomes its own ESP packet and the receiving host reassembles.
 * Only IPv4 packets without DF get here: with DF the sender gets ICMP fragmentation-needed, and IPv6
 * routers never fragment (Packet Too Big instead), both answered by kio_classify.
 *
 * Fragments follow RFC 791 section 3.2: the same ID, offsets in 8-byte units added to the original's
 * (a fragment can be fragmented again), MF on every piece but the last (the last keeps the original's
 * MF), every piece but the last carrying a multiple of 8 data bytes, the first with all the options and
 * the others with only those whose copied flag is set, and a fresh header checksum on each.
 *
 * Also here: kio_bytes, the byte sums of the gateway totals (fastpath/totals.py), one call per batch.
 */
#define _GNU_SOURCE
#include <string.h>

#include "kio.h"
#include "kio_util.h"

#define IP_MF 0x2000
#define IP_OFFMASK 0x1fff

/* Options of a non-first fragment: the copied ones (type bit 0x80) from the options of p, padded with
 * End-of-Options to a 4-byte boundary, written to out.  Their length, or -1 for malformed options. */
static int copied_options(const uint8_t *p, uint32_t ihl, uint8_t *out) {
    uint32_t i = 20, o = 0;
    while (i < ihl) {
        uint8_t type = p[i];
        uint32_t olen;
        if (type == 0)                       /* End of Option List */
            break;
        if (type == 1) {                     /* No Operation: one byte, never copied */
            i++;
            continue;
        }
        if (i + 1 >= ihl)
            return -1;
        olen = p[i + 1];
        if (olen < 2 || i + olen > ihl)
            return -1;
        if (type & 0x80) {
            memcpy(out + o, p + i, olen);
            o += olen;
        }
        i += olen;
    }
    while (o & 3)
        out[o++] = 0;
    return (int)o;
}

/* Header of one fragment at h (hlen bytes already in place): lengths, flags, offset, checksum. */
static void finish_header(uint8_t *h, uint32_t hlen, uint32_t data, uint32_t off8, int mf) {
    h[0] = (uint8_t)(0x40 | hlen / 4);
    wr16(h + 2, (uint16_t)(hlen + data));
    wr16(h + 6, (uint16_t)((mf ? IP_MF : 0) | (off8 & IP_OFFMASK)));
    wr16(h + 10, 0);
    wr16(h + 10, csum_fold(csum_add(0, h, hlen)));
}

uint32_t kio_fragment(const struct kio_cls *c, struct kio_batch *src, uint32_t n, uint8_t *verdict,
                      struct kio_batch *dst, uint32_t dst_start, uint32_t *cursor) {
    uint32_t i, j = dst_start;
    uint8_t opts[40];

    for (i = *cursor; i < n; i++) {
        const uint8_t *p = src->buf + src->off[i];
        uint32_t sa = src->sa[i], ihl, tot, len, frag, off8, maxlen, d0, dn, h2, need, pos;
        int olen, orig_mf;
        if (verdict[i] != KIO_V_TOO_BIG || sa == KIO_NO_SA)
            continue;
        len = src->len[i];
        ihl = (p[0] & 15u) * 4;
        tot = len >= 20 ? rd16(p + 2) : 0;
        frag = len >= 20 ? rd16(p + 6) : 0;
        maxlen = kio_inner_mtu(c, sa);
        if (maxlen > room(dst))
            maxlen = room(dst);
        olen = p[0] >> 4 == 4 && ihl >= 20 && tot >= ihl && tot <= len ? copied_options(p, ihl, opts) : -1;
        h2 = 20 + (uint32_t)(olen < 0 ? 0 : olen);
        d0 = maxlen > ihl ? (maxlen - ihl) & ~7u : 0;
        dn = maxlen > h2 ? (maxlen - h2) & ~7u : 0;
        off8 = frag & IP_OFFMASK;
        orig_mf = (frag & IP_MF) != 0;
        /* what cannot be cut stays TOO_BIG (dropped): DF, bad options, no data, no room for 8 data bytes,
         * offsets past the 13-bit field */
        if (olen < 0 || (frag & 0x4000) || tot <= ihl || maxlen < 68 || d0 < 8 || dn < 8 ||
            off8 * 8 + (tot - ihl) > 0xffff) {
            src->sa[i] = KIO_NO_SA;
            continue;
        }
        need = tot - ihl <= d0 ? 1 : 1 + (tot - ihl - d0 + dn - 1) / dn;
        if (j + need > dst->capacity) {
            if (j == dst_start) {            /* more pieces than dst will ever hold */
                src->sa[i] = KIO_NO_SA;
                continue;
            }
            break;                           /* the next call takes it, into an emptied dst */
        }
        for (pos = 0; pos < tot - ihl; j++) {
            uint8_t *h = slot_data(dst, j);
            uint32_t hlen = pos == 0 ? ihl : h2, room_d = pos == 0 ? d0 : dn;
            uint32_t data = tot - ihl - pos <= room_d ? tot - ihl - pos : room_d;
            int last = pos + data == tot - ihl;
            if (pos == 0) {
                memcpy(h, p, ihl);
            } else {
                memcpy(h, p, 20);
                memcpy(h + 20, opts, h2 - 20);
            }
            memcpy(h + hlen, p + ihl + pos, data);
            finish_header(h, hlen, data, off8 + pos / 8, last ? orig_mf : 1);
            slot_set(dst, j, h, hlen + data);
            dst->sa[j] = sa;
            pos += data;
        }
        verdict[i] = KIO_V_FRAGMENTED;
        src->sa[i] = KIO_NO_SA;
    }
    *cursor = i;
    return j - dst_start;
}

uint64_t kio_bytes(const struct kio_batch *b, uint32_t n, const uint8_t *sel, uint8_t want) {
    uint64_t sum = 0;
    uint32_t i;
    for (i = 0; i < n; i++)
        if (!sel || sel[i] == want)
            sum += b->len[i];
    return sum;
}
