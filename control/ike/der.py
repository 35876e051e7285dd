"""The few DER pieces IKE needs beyond `cryptography`: reading a Name (an ID_DER_ASN1_DN), and
building/reading the AlgorithmIdentifiers of RFC 7427 signatures."""

from __future__ import annotations


class DerError(ValueError):
    pass


def read_tlv(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """(tag, value, position after it) of the element at pos; definite lengths only, as DER requires."""
    if pos + 2 > len(data):
        raise DerError("truncated DER element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            raise DerError("bad DER length")
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise DerError("DER element runs past its container")
    return tag, data[pos:pos + length], pos + length


def children(value: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(value):
        tag, v, pos = read_tlv(value, pos)
        out.append((tag, v))
    return out


def tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    lb = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(lb)]) + lb + value


def oid_decode(value: bytes) -> str:
    if not value:
        raise DerError("empty OID")
    arcs, acc = [], 0
    for b in value:
        acc = (acc << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(acc)
            acc = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def oid_encode(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for a in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [a & 0x7F]
        a >>= 7
        while a:
            chunk.append(0x80 | (a & 0x7F))
            a >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


_STRING_TAGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be", 0x1C: "utf-32-be"}


def name_attributes(der: bytes) -> list[tuple[str, str]]:
    """A DER Name as [(OID, value)] in order (multi-valued RDNs flattened)."""
    tag, value, end = read_tlv(der)
    if tag != 0x30 or end != len(der):
        raise DerError("a DN must be one DER SEQUENCE")
    out = []
    for set_tag, rdn in children(value):
        if set_tag != 0x31:
            raise DerError("a DN's RDN must be a SET")
        for seq_tag, atv in children(rdn):
            parts = children(atv)
            if seq_tag != 0x30 or len(parts) != 2 or parts[0][0] != 0x06:
                raise DerError("bad AttributeTypeAndValue")
            enc = _STRING_TAGS.get(parts[1][0])
            text = parts[1][1].decode(enc, errors="replace") if enc else "#" + parts[1][1].hex()
            out.append((oid_decode(parts[0][1]), text))
    return out
