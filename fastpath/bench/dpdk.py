"""DPDK fastpath throughput: the set-up DPDK's ipsec-secgw is measured with (helpers, and the loop mode).

``run`` measures the one-direction loop (cdefs/dpdk/dpdk_loop.c, one SA, no SPD); the default mode of
``ipsecgw bench dpdk`` is the gateway worker with control attached (fastpath/bench/dpdk_gateway.py).

One worker core; a net_pcap port replays a pcap of pre-built Ethernet frames
(``infinite_rx=1``: IPv4/UDP plaintext for outbound, their ESP for inbound);
a single AES-128-GCM tunnel SA; net_null takes what the loop sends.  ``size``
is the plaintext frame length without FCS in both directions (inbound frames
are that plus ESP overhead), and Gbit/s counts plaintext frame bytes, as the
ipsec-secgw figures in issue 7 do.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from cdefs.sa import SA

ENGINES = {
    "cpu": "our ESP core's own intel-ipsec-mb crypto in the DPDK worker loop (no DPDK crypto session)",
    "crypto_aesni_gcm0": "lookaside cryptodev session on crypto_aesni_gcm (ops enqueued/dequeued per burst)",
    "crypto_aesni_mb0": "lookaside cryptodev session on crypto_aesni_mb",
    "crypto_openssl0": "lookaside cryptodev session on crypto_openssl",
    "cpu-crypto": "CPU-crypto session on crypto_aesni_gcm (rte_cryptodev_sym_cpu_crypto_process); "
                  "cpu-crypto:VDEV for another device",
}
FRAMES = 1000
SPI = 0x105
_MACS = bytes.fromhex("020000000002020000000001")


@dataclass
class DpdkBenchResult:
    engine: str
    size: int
    direction: str
    mpps: float          # frames forwarded per second
    gbps: float          # plaintext frame bits per second forwarded
    rx_mpps: float
    seconds: float
    packets: int
    drops: dict[str, int]
    burst: int
    mode: str = "loop"             # loop: the one-direction loop; gateway: the gateway worker (dpdk_gateway.py)
    placement: str | None = None   # gateway: the rung and device the SA ran on
    sa_syncs: int = 0              # gateway: slices after which control's SA changes were applied
    control_sa_changes: int = 0    # gateway: SA installs/deletes control made during the whole run
    control_alive: bool | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def bench_sa(direction: str) -> SA:
    # Inbound frames are replayed over and over: anti-replay would drop every round after the
    # first, so it is off (ipsec-secgw's default replay window is 0 as well).
    return SA(spi=SPI, src=ipaddress.ip_address("172.16.1.5"), dst=ipaddress.ip_address("172.16.2.5"),
              enc="aes-gcm-128", enc_key=bytes(range(0x10, 0x24)), replay_window=0 if direction == "in" else 64)


def plaintext_frames(size: int, n: int = FRAMES) -> list[bytes]:
    """IPv4/UDP Ethernet frames of ``size`` bytes (no FCS), varied addresses and ports."""
    if not 42 <= size <= 2000:
        raise ValueError(f"size: expected 42..2000 bytes, got {size}")
    frames = []
    for i in range(n):
        iplen = size - 14
        h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, iplen, i & 0xFFFF, 0, 64, 17, 0,
                                  bytes((192, 168, 0, 1 + i % 250)), bytes((192, 168, 105, 1 + (i * 7) % 250))))
        s = sum(struct.unpack("!10H", h))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        h[10:12] = struct.pack("!H", ~s & 0xFFFF)
        udp = struct.pack("!HHHH", 1024 + i % 60000, 5000, iplen - 20, 0) + bytes((i + k) & 0xFF for k in
                                                                                  range(iplen - 28))
        frames.append(_MACS + b"\x08\x00" + bytes(h) + udp)
    return frames


def esp_frames(plain: list[bytes], sa: SA) -> list[bytes]:
    """The frames' IP packets through our outbound engine, back into Ethernet frames."""
    from fastpath.batch import Batch
    from fastpath.engines import create

    eng = create("best", capacity=1)
    try:
        out_sa = sa
        eng.add_sa(0, out_sa, "out")
        b = Batch(capacity=len(plain), mtu=2048)
        b.extend(f[14:] for f in plain)
        eng.outbound(b)
        return [_MACS + b"\x08\x00" + p for p in b]
    finally:
        eng.close()


def write_pcap(path: Path, frames: list[bytes]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, fr in enumerate(frames):
            f.write(struct.pack("<IIII", 0, i, len(fr), len(fr)) + fr)


def crypto_rung(engine: str) -> tuple[str | None, str | None]:
    """(vdev, rung) of a --crypto value: (None, None) for the core's own ipsec-mb."""
    if engine == "cpu":
        return None, None
    if engine == "cpu-crypto":
        return "crypto_aesni_gcm0", "cpu-crypto"
    if engine.startswith("cpu-crypto:"):
        return engine.split(":", 1)[1], "cpu-crypto"
    if engine.startswith("crypto_"):
        return engine, "lookaside-crypto"
    raise ValueError(f"crypto {engine!r}: expected cpu, cpu-crypto[:VDEV] or a cryptodev vdev such as "
                     f"crypto_aesni_gcm0 ({', '.join(ENGINES)})")


@contextlib.contextmanager
def _runtime_dir_removed() -> Iterator[None]:
    """EAL's runtime directory of this process goes when the run ends (one per pid would pile up)."""
    try:
        yield
    finally:
        shutil.rmtree(f"/var/run/dpdk/ipsecgw-bench-{os.getpid()}", ignore_errors=True)


def run(size: int, direction: str, engine: str = "cpu", seconds: float = 5.0, warmup: float = 1.0,
        burst: int = 32) -> DpdkBenchResult:
    """Run the set-up in this process (EAL starts here: once per process)."""
    from fastpath.dpdk import eal
    from fastpath.dpdk.loop import DpdkLoop
    from fastpath.dpdk.sessions import add_session_sa
    from fastpath.placement import EngineKind

    vdev, rung = crypto_rung(engine)
    if direction not in ("out", "in"):
        raise ValueError(f"direction: expected out or in, got {direction!r}")
    sa = bench_sa(direction)
    frames = plaintext_frames(size)
    if direction == "in":
        frames = esp_frames(frames, sa)
    with tempfile.TemporaryDirectory(prefix="ipsecgw-bench-dpdk-") as tmp:
        pcap = Path(tmp) / "rx.pcap"
        write_pcap(pcap, frames)
        vdevs = [f"net_pcap0,rx_pcap={pcap},infinite_rx=1", "net_null0"] + ([vdev] if vdev else [])
        eal.init(eal.eal_args(vdevs, memory_mb=1024, file_prefix=f"ipsecgw-bench-{os.getpid()}"))
        with DpdkLoop("net_pcap0", "net_null0", direction, burst=burst) as loop, _runtime_dir_removed():
            if vdev is None:
                loop.add_sa(0, sa, direction)
            else:   # the SA's crypto on a DPDK session, created here in the worker's process
                add_session_sa(loop.engine, 0, sa, direction, vdev, EngineKind(rung))
            loop.run(seconds=warmup)
            before = loop.stats()
            loop.run(seconds=seconds)
            after = loop.stats()
    el = after.seconds
    tx, rx = after.tx - before.tx, after.rx - before.rx
    drops = {d.name: n - before.drops.get(d, 0) for d, n in after.drops.items()}
    mpps = tx / el / 1e6
    return DpdkBenchResult(engine=engine, size=size, direction=direction, mpps=round(mpps, 4),
                           gbps=round(mpps * size * 8 / 1000, 3), rx_mpps=round(rx / el / 1e6, 4),
                           seconds=round(el, 3), packets=tx, drops={k: v for k, v in drops.items() if v},
                           burst=burst)


def write_secgw_esp_pcaps(cfg_dir: str | Path, sizes: tuple[int, ...] = (64, 512, 1400)) -> list[Path]:
    """Inbound input for the ipsec-secgw anchor (/work/shared/peers/secgw): ``esp_in_SIZE.pcap`` in cfg_dir.

    Its secgw.cfg decrypts SPI 105 (AES-128-GCM, key de:ad:be:ef x 5, 172.16.2.5 -> 172.16.1.5) and
    routes inner 192.168.115.0/24; the frames are ``plaintext_frames`` re-addressed there and
    encrypted by our software engine.  SPI 105 is below 256, which SA validation refuses for
    configuration, so it is set after validation: the C core has no such rule.
    """
    sa = SA(spi=0x1105, src=ipaddress.ip_address("172.16.2.5"), dst=ipaddress.ip_address("172.16.1.5"),
            enc="aes-gcm-128", enc_key=bytes.fromhex("deadbeef" * 5), replay_window=0)
    sa.spi = 105
    out = []
    for size in sizes:
        frames = []
        for f in plaintext_frames(size):
            b = bytearray(f)
            b[30:33] = bytes((192, 168, 115))          # inner destination (IP header at 14, dst at +16)
            b[24:26] = b"\0\0"
            s = sum(struct.unpack("!10H", bytes(b[14:34])))
            while s >> 16:
                s = (s & 0xFFFF) + (s >> 16)
            b[24:26] = struct.pack("!H", ~s & 0xFFFF)
            frames.append(bytes(b))
        path = Path(cfg_dir) / f"esp_in_{size}.pcap"
        write_pcap(path, esp_frames(frames, sa))
        out.append(path)
    return out
