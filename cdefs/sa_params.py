"""SA <-> ``struct ipsg_sa_params`` (cdefs/esp/esp.h), for any cffi module whose FFI declares it.

The C engines (fastpath._esp_*) and the shared-memory region (fastpath._shm) both
take SAs in this struct; each passes its own ``ffi``.  Every code below comes from
esp.h through ``cdefs.defines``, so nothing here restates a C constant.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import Iterator
from typing import Any

from cdefs import defines
from cdefs.algorithms import AH_INTEG_ALGS, ENC_ALGS, INTEG_ALGS
from cdefs.sa import SA, Direction, Lifetime, Mode, TrafficSelector

_E = defines("esp.h")
U64 = (1 << 64) - 1

DIR_IN = _E["IPSG_DIR_IN"]
DIR_OUT = _E["IPSG_DIR_OUT"]
MODE_TRANSPORT = _E["IPSG_MODE_TRANSPORT"]
MODE_TUNNEL = _E["IPSG_MODE_TUNNEL"]
DSCP_COPY = _E["IPSG_DSCP_COPY"]
MAX_TS = _E["IPSG_MAX_TS"]
DF = {"copy": _E["IPSG_DF_COPY"], "set": _E["IPSG_DF_SET"], "clear": _E["IPSG_DF_CLEAR"]}
ECN = {"normal": _E["IPSG_ECN_NORMAL"], "compat": _E["IPSG_ECN_COMPAT"]}
FLOWLABEL = {"copy": _E["IPSG_FLOWLABEL_COPY"], "zero": _E["IPSG_FLOWLABEL_ZERO"]}
ENC_CODE = {name: a.code for name, a in ENC_ALGS.items()}
INTEG_CODE = {name: a.code for name, a in INTEG_ALGS.items()}
AH_INTEG_CODE = {name: a.code for name, a in AH_INTEG_ALGS.items()}
PROTO = {"esp": _E["IPSG_PROTO_ESP"], "ah": _E["IPSG_PROTO_AH"]}

_DF_NAME = {v: k for k, v in DF.items()}
_ECN_NAME = {v: k for k, v in ECN.items()}
_FLOWLABEL_NAME = {v: k for k, v in FLOWLABEL.items()}
_ENC_BY_CODE = {(a.code, a.config_key_len): name for name, a in ENC_ALGS.items()}
_INTEG_BY_CODE = {a.code: name for name, a in INTEG_ALGS.items()}
# GMAC's three key sizes share one code: the key length (with salt) tells them apart.
_AH_INTEG_BY_CODE = {(a.code, a.key_len): name for name, a in AH_INTEG_ALGS.items()}
_PROTO_NAME = {v: k for k, v in PROTO.items()}


@functools.cache
def _zeros(size: int) -> bytes:
    return bytes(size)


def _fill_ts(ffi: Any, dst: Any, selectors: list[TrafficSelector]) -> None:
    for i, ts in enumerate(selectors):
        c = dst[i]
        c.family = ts.version
        c.proto = ts.proto
        c.port_lo = ts.port_lo
        c.port_hi = ts.port_hi
        ffi.memmove(c.addr_lo, ts.start.packed, len(ts.start.packed))
        ffi.memmove(c.addr_hi, ts.end.packed, len(ts.end.packed))


def sa_to_params(ffi: Any, sa: SA, direction: Direction | str, p: Any = None) -> Any:
    """Fill p (zeroed first) or a new ``struct ipsg_sa_params *`` with sa; the caller zeroes it after use.

    Control's install path runs this per SA, so it stays lean: no re-validation, each
    field written once.
    """
    if p is None:
        p = ffi.new("struct ipsg_sa_params *")
    else:
        zero = _zeros(ffi.sizeof(p[0]))
        ffi.memmove(p, zero, len(zero))
    p.spi = sa.spi
    p.direction = DIR_IN if direction == Direction.IN else DIR_OUT
    p.mode = MODE_TRANSPORT if sa.mode == Mode.TRANSPORT else MODE_TUNNEL
    src, dst = sa.src.packed, sa.dst.packed
    p.family = 4 if len(src) == 4 else 6
    p.esn = sa.esn
    p.enc = ENC_CODE[sa.enc]
    if sa.proto == "ah":
        p.proto = PROTO["ah"]
        p.integ = AH_INTEG_CODE[sa.integ]
    elif sa.integ:
        p.integ = INTEG_CODE[sa.integ]
    key = sa.enc_key
    p.enc_key_len = len(key)
    ffi.memmove(p.enc_key, key, len(key))
    if sa.integ_key:
        p.integ_key_len = len(sa.integ_key)
        ffi.memmove(p.integ_key, sa.integ_key, len(sa.integ_key))
    ffi.memmove(p.src, src, len(src))
    ffi.memmove(p.dst, dst, len(dst))
    p.udp_encap = int(sa.udp_encap)
    p.ttl = sa.ttl
    p.df = DF[sa.df]
    p.dscp = DSCP_COPY if sa.dscp is None else sa.dscp
    p.ecn = ECN[sa.ecn]
    p.flowlabel = FLOWLABEL[sa.flowlabel]
    p.sport = sa.sport
    p.dport = sa.dport
    p.replay_window = sa.replay_window
    set_counting(p, sa)
    if sa.local_ts:
        p.n_local_ts = len(sa.local_ts)
        _fill_ts(ffi, p.local_ts, sa.local_ts)
    if sa.remote_ts:
        p.n_remote_ts = len(sa.remote_ts)
        _fill_ts(ffi, p.remote_ts, sa.remote_ts)
    return p


def set_counting(p: Any, sa: SA) -> None:
    """Write sa's next sequence number and byte/packet limits into p.

    The fields a fastpath changes in its copy of a slot when it resumes an SA (counters carried
    over from an earlier install), so that copy goes to the engine as it is.
    """
    p.seq = sa.seq & U64   # ESN 2^64 (exhausted) travels as 0
    lt = sa.lifetime
    p.soft_bytes, p.hard_bytes = lt.soft_bytes, lt.hard_bytes
    p.soft_packets, p.hard_packets = lt.soft_packets, lt.hard_packets


@contextlib.contextmanager
def c_params(ffi: Any, sa: SA, direction: Direction | str, image: Any = None) -> Iterator[Any]:
    """A ``struct ipsg_sa_params *`` of ffi for one C call that takes the SA.

    image: the struct's bytes when the caller has them (a fastpath's copy of the region slot
    control wrote), used in place, so the SA is not encoded a second time; the caller owns that
    buffer and wipes it.  Without one, sa is encoded here and the copy wiped after the call.
    """
    if image is not None:
        size = ffi.sizeof("struct ipsg_sa_params")
        if len(image) != size:   # from_buffer does not check a struct pointer's size
            raise ValueError(f"an SA parameter image is {size} bytes, not {len(image)}")
        yield ffi.from_buffer("struct ipsg_sa_params *", image)
        return
    p = sa_to_params(ffi, sa, direction)
    try:
        yield p
    finally:
        zero = _zeros(ffi.sizeof(p[0]))
        ffi.memmove(p, zero, len(zero))   # no key copy left behind


def sa_fields(ffi: Any, sa: SA, direction: Direction | str) -> tuple | None:
    """The fields of ``sa_to_params`` as the argument list of ``ipsg_shm_sa_install_fields``
    (after its first six: slot, state, placement, id, old SPI), or None for an SA with traffic
    selectors, which needs the struct.  One C call instead of a struct filled through cffi."""
    if sa.local_ts or sa.remote_ts:
        return None
    src = sa.src.packed
    integ_key = sa.integ_key
    lt = sa.lifetime
    dscp = sa.dscp
    return (sa.spi, DIR_IN if direction == "in" else DIR_OUT,
            MODE_TRANSPORT if sa.mode == "transport" else MODE_TUNNEL, sa.esn,
            ENC_CODE[sa.enc], _integ_code(sa),
            sa.enc_key, len(sa.enc_key), integ_key or ffi.NULL, len(integ_key),
            src, sa.dst.packed, len(src), sa.udp_encap, sa.ttl, DF[sa.df],
            DSCP_COPY if dscp is None else dscp, ECN[sa.ecn], FLOWLABEL[sa.flowlabel],
            sa.sport, sa.dport, sa.replay_window, sa.seq & U64,
            lt.soft_bytes, lt.hard_bytes, lt.soft_packets, lt.hard_packets, PROTO[sa.proto])


def _integ_code(sa: SA) -> int:
    if not sa.integ:
        return 0
    return AH_INTEG_CODE[sa.integ] if sa.proto == "ah" else INTEG_CODE[sa.integ]


def _addr(ffi: Any, family: int, raw: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    data = bytes(ffi.buffer(raw, 4 if family == 4 else 16))
    return ipaddress.IPv4Address(data) if family == 4 else ipaddress.IPv6Address(data)


def _read_ts(ffi: Any, arr: Any, n: int) -> list[TrafficSelector]:
    out = []
    for i in range(min(n, MAX_TS)):
        c = arr[i]
        out.append(TrafficSelector(_addr(ffi, c.family, c.addr_lo), _addr(ffi, c.family, c.addr_hi), c.proto,
                                   c.port_lo, c.port_hi))
    return out


def params_to_sa(ffi: Any, p: Any) -> tuple[SA, Direction]:
    """The SA and direction a ``struct ipsg_sa_params`` describes (raises SAError if it is not valid)."""
    proto = _PROTO_NAME.get(p.proto, f"code {p.proto}")
    enc = _ENC_BY_CODE.get((p.enc, p.enc_key_len), f"code {p.enc}/{p.enc_key_len}")
    if proto == "ah":
        integ = _AH_INTEG_BY_CODE.get((p.integ, p.integ_key_len), f"code {p.integ}/{p.integ_key_len}")
    else:
        integ = _INTEG_BY_CODE.get(p.integ) if p.integ else None
    seq = p.seq
    if seq == 0 and p.esn:
        seq = 1 << 64
    sa = SA(
        spi=p.spi,
        src=_addr(ffi, p.family, p.src),
        dst=_addr(ffi, p.family, p.dst),
        enc=enc,
        enc_key=bytes(ffi.buffer(p.enc_key, p.enc_key_len)),
        integ=integ,
        integ_key=bytes(ffi.buffer(p.integ_key, p.integ_key_len)),
        mode=Mode.TRANSPORT if p.mode == MODE_TRANSPORT else Mode.TUNNEL,
        esn=bool(p.esn),
        seq=seq,
        replay_window=p.replay_window,
        udp_encap=bool(p.udp_encap),
        sport=p.sport,
        dport=p.dport,
        ttl=p.ttl,
        df=_DF_NAME.get(p.df, "copy"),
        dscp=None if p.dscp == DSCP_COPY else p.dscp,
        ecn=_ECN_NAME.get(p.ecn, "normal"),
        flowlabel=_FLOWLABEL_NAME.get(p.flowlabel, "copy"),
        local_ts=_read_ts(ffi, p.local_ts, p.n_local_ts),
        remote_ts=_read_ts(ffi, p.remote_ts, p.n_remote_ts),
        lifetime=Lifetime(p.soft_bytes, p.hard_bytes, p.soft_packets, p.hard_packets),
        proto=proto,
    )
    direction = Direction.IN if p.direction == DIR_IN else Direction.OUT
    return sa, direction
