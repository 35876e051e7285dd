"""What DPDK devices offer for IPsec, as plain dataclasses.

``discover()`` reads every ethdev port and cryptodev of a running EAL:
rte_security capabilities (action, protocol, mode, direction, algorithms,
options such as ESN and UDP encapsulation, replay window), cryptodev
symmetric capabilities (algorithms with key/IV/digest/AAD sizes) and
feature flags (CPU crypto, chaining...).  ``discover_in_subprocess()`` does
the same in a child process, so a caller (the CLI) never starts EAL itself.

The tables are also what placement (``fastpath.placement``) consumes, and
they round-trip through JSON (``to_dict`` / ``from_dict``) so that tests can
describe hardware we do not have.

Run as a module (``python -m fastpath.dpdk.caps EAL-ARGS...``) it starts
EAL, discovers, and prints one JSON object on the original stdout (EAL's own
log lines are sent to stderr).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastpath.dpdk.eal import DpdkUnavailable, EalError

# Crypto vdevs `ipsecgw caps` starts when none are named: the software PMDs Debian ships.
DEFAULT_CRYPTO_VDEVS = ("crypto_aesni_gcm0", "crypto_aesni_mb0", "crypto_openssl0")

_MAX_SYMS = 512
_MAX_SEC = 128


@dataclass(frozen=True)
class Range:
    """A size range in bytes as DPDK states it: min..max in steps of inc (inc 0: min and max only)."""

    min: int
    max: int
    inc: int = 0

    def __contains__(self, value: int) -> bool:
        if not self.min <= value <= self.max:
            return False
        if self.inc == 0:
            return value in (self.min, self.max)
        return (value - self.min) % self.inc == 0

    def __str__(self) -> str:
        if self.min == self.max:
            return str(self.min)
        return f"{self.min}-{self.max}" + (f"/{self.inc}" if self.inc > 1 else "")


@dataclass(frozen=True)
class SymCap:
    """One symmetric transform a device (or a security capability) supports; algo uses DPDK's names."""

    xform: str                  # aead | cipher | auth
    algo: str                   # "aes-gcm", "aes-cbc", "sha2-256-hmac", "chacha20-poly1305"...
    key: Range
    digest: Range = Range(0, 0)
    aad: Range = Range(0, 0)
    iv: Range = Range(0, 0)
    block_size: int = 1


@dataclass(frozen=True)
class SecurityCap:
    """One rte_security capability.  ipsec_proto/mode/direction are None unless protocol is ipsec."""

    action: str                 # inline-crypto | inline-protocol | lookaside-protocol | cpu-crypto | none
    protocol: str               # ipsec | macsec | pdcp | docsis
    ipsec_proto: str | None = None  # esp | ah
    mode: str | None = None         # tunnel | transport
    direction: str | None = None    # egress | ingress
    options: frozenset[str] = frozenset()   # esn, udp_encap, copy_dscp, copy_df, copy_flabel, ecn, stats...
    replay_win_max: int = 0
    crypto: tuple[SymCap, ...] = ()
    # DPDK 22.11 has no capability bit for IPv6 tunnels; a discovered device is
    # taken to handle them, a table for known hardware may say otherwise.
    ipv6: bool = True
    ol_flags: int = 0


@dataclass(frozen=True)
class EthdevCaps:
    port: int
    name: str
    driver: str
    rx_security: bool = False   # RTE_ETH_RX_OFFLOAD_SECURITY
    tx_security: bool = False   # RTE_ETH_TX_OFFLOAD_SECURITY
    security: tuple[SecurityCap, ...] = ()
    max_rx_queues: int = 0
    max_tx_queues: int = 0


@dataclass(frozen=True)
class CryptodevCaps:
    dev_id: int
    name: str
    driver: str
    features: frozenset[str] = frozenset()   # rte_cryptodev_get_feature_name() of each flag
    sym: tuple[SymCap, ...] = ()
    security: tuple[SecurityCap, ...] = ()
    max_queue_pairs: int = 0
    max_sessions: int = 0       # 0: no limit

    @property
    def symmetric(self) -> bool:
        return "SYMMETRIC_CRYPTO" in self.features

    @property
    def cpu_crypto(self) -> bool:
        return "SYM_CPU_CRYPTO" in self.features

    @property
    def chaining(self) -> bool:
        return "SYM_OPERATION_CHAINING" in self.features


@dataclass(frozen=True)
class DpdkCaps:
    version: str = ""
    eal_args: tuple[str, ...] = ()
    ethdevs: tuple[EthdevCaps, ...] = ()
    cryptodevs: tuple[CryptodevCaps, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DpdkCaps:
        return cls(
            version=d.get("version", ""),
            eal_args=tuple(d.get("eal_args", ())),
            ethdevs=tuple(_ethdev(e) for e in d.get("ethdevs", ())),
            cryptodevs=tuple(_cryptodev(c) for c in d.get("cryptodevs", ())),
        )


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, frozenset | set):
        return sorted(x)
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    return x


def _range(d: dict[str, int] | None) -> Range:
    return Range(**d) if d else Range(0, 0)


def _sym(d: dict[str, Any]) -> SymCap:
    return SymCap(d["xform"], d["algo"], _range(d.get("key")), _range(d.get("digest")), _range(d.get("aad")),
                  _range(d.get("iv")), d.get("block_size", 1))


def _sec(d: dict[str, Any]) -> SecurityCap:
    return SecurityCap(d["action"], d["protocol"], d.get("ipsec_proto"), d.get("mode"), d.get("direction"),
                       frozenset(d.get("options", ())), d.get("replay_win_max", 0),
                       tuple(_sym(s) for s in d.get("crypto", ())), d.get("ipv6", True), d.get("ol_flags", 0))


def _ethdev(d: dict[str, Any]) -> EthdevCaps:
    return EthdevCaps(d["port"], d["name"], d["driver"], d.get("rx_security", False), d.get("tx_security", False),
                      tuple(_sec(s) for s in d.get("security", ())), d.get("max_rx_queues", 0),
                      d.get("max_tx_queues", 0))


def _cryptodev(d: dict[str, Any]) -> CryptodevCaps:
    return CryptodevCaps(d["dev_id"], d["name"], d["driver"], frozenset(d.get("features", ())),
                         tuple(_sym(s) for s in d.get("sym", ())), tuple(_sec(s) for s in d.get("security", ())),
                         d.get("max_queue_pairs", 0), d.get("max_sessions", 0))


# ---- discovery through the running EAL

def _names() -> dict[str, dict[int, str]]:
    """dpdk.h's IPSG_DPDK_* constants, by group, value -> our name."""
    from cdefs import defines

    d = defines("dpdk.h")
    groups: dict[str, dict[int, str]] = {"XF": {}, "ACT": {}, "PROTO": {}, "IPSEC": {}, "MODE": {}, "DIR": {},
                                         "OPT": {}}
    for name, value in d.items():
        parts = name.split("_", 3)   # IPSG DPDK GROUP REST
        if len(parts) == 4 and parts[2] in groups:
            groups[parts[2]][value] = parts[3].lower().replace("_", "-")
    groups["OPT"] = {v: n.replace("-", "_") for v, n in groups["OPT"].items()}
    return groups


def _read_sym(ffi: Any, s: Any, names: dict[str, dict[int, str]]) -> SymCap:
    def rng(r: Any) -> Range:
        return Range(r.min, r.max, r.inc)

    return SymCap(names["XF"].get(s.xform, "?"), ffi.string(s.name).decode(), rng(s.key), rng(s.digest),
                  rng(s.aad), rng(s.iv), s.block_size)


def _read_sec(ffi: Any, caps: Any, n: int, syms: Any, names: dict[str, dict[int, str]]) -> tuple[SecurityCap, ...]:
    out = []
    for c in caps[0:n]:
        ipsec = names["PROTO"].get(c.protocol) == "ipsec"
        options = frozenset(name for bit, name in names["OPT"].items() if c.options & bit)
        crypto = tuple(_read_sym(ffi, s, names) for s in syms[c.sym_first:c.sym_first + c.sym_count])
        out.append(SecurityCap(
            action=names["ACT"].get(c.action, "other"),
            protocol=names["PROTO"].get(c.protocol, "other"),
            ipsec_proto=names["IPSEC"].get(c.ipsec_proto) if ipsec else None,
            mode=names["MODE"].get(c.mode) if ipsec else None,
            direction=names["DIR"].get(c.direction) if ipsec else None,
            options=options if ipsec else frozenset(),
            replay_win_max=c.replay_win_max if ipsec else 0,
            crypto=crypto,
            ol_flags=c.ol_flags,
        ))
    return tuple(out)


def _features(ffi: Any, lib: Any, flags: int) -> frozenset[str]:
    out = set()
    for bit in range(64):
        if flags & (1 << bit):
            name = lib.rte_cryptodev_get_feature_name(1 << bit)
            out.add(ffi.string(name).decode() if name != ffi.NULL else f"BIT{bit}")
    return frozenset(out)


def discover() -> DpdkCaps:
    """Capabilities of every device of the EAL running in this process."""
    from fastpath.dpdk import eal

    if not eal.initialized():
        raise EalError("EAL is not running in this process (fastpath.dpdk.eal.init first)")
    ffi, lib = eal.load()
    names = _names()
    err = ffi.new("char[256]")
    syms = ffi.new("struct ipsg_dpdk_sym_cap[]", _MAX_SYMS)
    secs = ffi.new("struct ipsg_dpdk_sec_cap[]", _MAX_SEC)
    n_syms = ffi.new("int *")

    ethdevs = []
    ports = ffi.new("uint16_t[]", 1024)
    for port in ports[0:lib.ipsg_dpdk_eth_ports(ports, len(ports))]:
        info = ffi.new("struct ipsg_dpdk_eth_info *")
        if lib.ipsg_dpdk_eth_info(port, info, err, len(err)) < 0:
            raise EalError(ffi.string(err).decode())
        n = lib.ipsg_dpdk_eth_sec_caps(port, secs, _MAX_SEC, syms, _MAX_SYMS, n_syms)
        ethdevs.append(EthdevCaps(
            port=port, name=ffi.string(info.name).decode(), driver=ffi.string(info.driver).decode(),
            rx_security=bool(info.rx_offload_capa & lib.IPSG_DPDK_ETH_RX_OFFLOAD_SECURITY),
            tx_security=bool(info.tx_offload_capa & lib.IPSG_DPDK_ETH_TX_OFFLOAD_SECURITY),
            security=_read_sec(ffi, secs, max(n, 0), syms, names),
            max_rx_queues=info.max_rx_queues, max_tx_queues=info.max_tx_queues))

    cryptodevs = []
    ids = ffi.new("uint8_t[]", 256)
    for dev in ids[0:lib.ipsg_dpdk_cdev_ids(ids, len(ids))]:
        info = ffi.new("struct ipsg_dpdk_cdev_info *")
        if lib.ipsg_dpdk_cdev_info(dev, info, err, len(err)) < 0:
            raise EalError(ffi.string(err).decode())
        n_sym = lib.ipsg_dpdk_cdev_sym_caps(dev, syms, _MAX_SYMS)
        sym = tuple(_read_sym(ffi, s, names) for s in syms[0:max(n_sym, 0)])
        n = lib.ipsg_dpdk_cdev_sec_caps(dev, secs, _MAX_SEC, syms, _MAX_SYMS, n_syms)
        cryptodevs.append(CryptodevCaps(
            dev_id=dev, name=ffi.string(info.name).decode(), driver=ffi.string(info.driver).decode(),
            features=_features(ffi, lib, info.feature_flags), sym=sym,
            security=_read_sec(ffi, secs, max(n, 0), syms, names),
            max_queue_pairs=info.max_queue_pairs, max_sessions=info.max_sessions))

    return DpdkCaps(version=ffi.string(lib.rte_version()).decode(), eal_args=tuple(eal.current_args()[1:]),
                    ethdevs=tuple(ethdevs), cryptodevs=tuple(cryptodevs))


def discover_in_subprocess(vdevs: Iterable[str] = DEFAULT_CRYPTO_VDEVS, *, pci: Sequence[str] = (),
                           memory_mb: int = 256, timeout: float = 60.0) -> DpdkCaps:
    """Start EAL with these devices in a child process and return what it found.

    Raises DpdkUnavailable when the binding is missing, EalError when EAL or
    discovery fails (the message carries the child's last error lines).
    """
    from fastpath.dpdk import eal

    ok, why = eal.availability()
    if not ok:
        raise DpdkUnavailable(why)
    args = eal.eal_args(list(vdevs), memory_mb=memory_mb, pci=pci,
                        file_prefix=f"ipsecgw-caps-{os.getpid()}")
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        run = subprocess.run([sys.executable, "-m", "fastpath.dpdk.caps", *args], capture_output=True,
                             text=True, timeout=timeout, env=env, cwd=root)
    except subprocess.TimeoutExpired as exc:
        raise EalError(f"DPDK discovery did not finish within {timeout:.0f} s") from exc
    if run.returncode != 0:
        tail = [ln for ln in run.stderr.strip().splitlines() if ln.strip()][-3:]
        raise EalError("; ".join(tail) or f"DPDK discovery exited with status {run.returncode}")
    return DpdkCaps.from_dict(json.loads(run.stdout))


def main(argv: Sequence[str]) -> int:
    """Child side of discover_in_subprocess: argv is the EAL command line (argv[0] included)."""
    from fastpath.dpdk import eal

    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)           # EAL and drivers print on stdout: keep the JSON channel clean
    try:
        eal.init(argv)
        caps = discover()
    except (DpdkUnavailable, EalError) as exc:
        print(f"ipsecgw: {exc}", file=sys.stderr)
        return 1
    json.dump(caps.to_dict(), out)
    out.flush()
    eal.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main(["ipsecgw", *sys.argv[1:]]))
