"""Namespace topologies for the gateway tests and benchmarks, and small traffic tools run inside a
namespace (``python tests/support/netns_tools.py CMD ...``).

- ``Topology``: hostA - gwA === gwB - hostB on veth links (the end-to-end tests and bench/), with
  ``ping`` and ``tcp`` (a SHA-256-checked stream) from host A to host B;
- ``gateway_config``: our gateway's YAML for either side of that topology (``connection_yaml`` writes one
  connection; ``with_other_connection`` adds a second one, for reload);
- ``FastpathProc``: ``ipsecgw fastpath`` as a process in a namespace.

Tools: ping (ICMP echo at a fixed interval on a raw socket; prints one JSON object with the start time,
the send times and the sequence numbers answered, so a test can measure the longest outage exactly); tcp-server /
tcp-client (a byte stream with a SHA-256 check).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = str(Path(__file__).resolve())
PSK = "fastpath-e2e-psk-0123456789"



def _ip(*args: str, ns: str | None = None) -> None:
    cmd = ["ip", *args] if ns is None else ["ip", "-n", ns, *args]
    subprocess.run(cmd, check=True, capture_output=True)


def _sysctl(ns: str, key: str, value: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"], check=True, capture_output=True)


# ipv6=True adds these beside the IPv4 addresses (transit = the gA === gB link)
V6 = {"hA": "fd00:1::2", "gA_in": "fd00:1::1", "gA": "2001:db8::1", "gB": "2001:db8::2", "gB_in": "fd00:2::1",
      "hB": "fd00:2::2"}


class Topology:
    """hA (10.1.0.2) - gA (10.1.0.1 | 192.0.2.1) === gB (192.0.2.2 | 10.2.0.1) - hB (10.2.0.2).

    ``ipv6=True`` also puts IPv6 on every link (``V6``: fd00:1::/64, the transit 2001:db8::/64, fd00:2::/64,
    without duplicate address detection so they are usable at once), IPv6 default routes on the hosts
    and IPv6 forwarding on the gateways."""

    # each gateway's LAN-facing (clear side) interface, for gateway_config(clear_interface=...)
    CLEAR_IF = {"A": "v0b", "B": "v2a"}

    def __init__(self, tag: str, *, ipv6: bool = False):
        self.hA, self.gA, self.gB, self.hB = (f"{n}{tag}" for n in ("hA", "gA", "gB", "hB"))
        self.ipv6 = ipv6

    def __enter__(self) -> Topology:
        self.names = [self.hA, self.gA, self.gB, self.hB]
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            _ip("netns", "add", ns)
            _ip("link", "set", "lo", "up", ns=ns)
        links = [(self.hA, "10.1.0.2/24", self.gA, "10.1.0.1/24"), (self.gA, "192.0.2.1/24", self.gB, "192.0.2.2/24"),
                 (self.gB, "10.2.0.1/24", self.hB, "10.2.0.2/24")]
        for i, (a, a_ip, b, b_ip) in enumerate(links):
            _ip("link", "add", f"v{i}a", "netns", a, "type", "veth", "peer", "name", f"v{i}b", "netns", b)
            _ip("addr", "add", a_ip, "dev", f"v{i}a", ns=a)
            _ip("addr", "add", b_ip, "dev", f"v{i}b", ns=b)
            _ip("link", "set", f"v{i}a", "up", ns=a)
            _ip("link", "set", f"v{i}b", "up", ns=b)
        _ip("route", "add", "default", "via", "10.1.0.1", ns=self.hA)
        _ip("route", "add", "default", "via", "10.2.0.1", ns=self.hB)
        for g in (self.gA, self.gB):
            _sysctl(g, "net.ipv4.ip_forward", "1")
            _sysctl(g, "net.ipv4.conf.all.rp_filter", "0")
            _sysctl(g, "net.ipv4.conf.default.rp_filter", "0")
        if self.ipv6:
            self._add_ipv6(links)
        return self

    def _add_ipv6(self, links: list[tuple[str, str, str, str]]) -> None:
        v6 = [("hA", "gA_in"), ("gA", "gB"), ("gB_in", "hB")]
        for i, ((a, _, b, _), (ka, kb)) in enumerate(zip(links, v6, strict=True)):
            _ip("-6", "addr", "add", f"{V6[ka]}/64", "dev", f"v{i}a", "nodad", ns=a)
            _ip("-6", "addr", "add", f"{V6[kb]}/64", "dev", f"v{i}b", "nodad", ns=b)
        _ip("-6", "route", "add", "default", "via", V6["gA_in"], ns=self.hA)
        _ip("-6", "route", "add", "default", "via", V6["gB_in"], ns=self.hB)
        for g in (self.gA, self.gB):
            _sysctl(g, "net.ipv6.conf.all.forwarding", "1")

    def __exit__(self, *exc: object) -> None:
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def run(self, ns: str, *args: str, timeout: float = 60) -> str:
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, TOOLS, *args], capture_output=True,
                           text=True, timeout=timeout)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def ping(self, count: int, interval: float, dst: str = "10.2.0.2", size: int = 56) -> dict:
        out = json.loads(self.run(self.hA, "ping", dst, str(count), str(interval), str(size)))
        out["sent"] = {int(k): v for k, v in out["sent"].items()}
        return out

    def tcp(self, port: int, nbytes: int, dst: str = "10.2.0.2") -> None:
        """nbytes of random data from host A to a server on host B at dst (either family); asserts that
        every byte arrived, by SHA-256."""
        srv = subprocess.Popen(["ip", "netns", "exec", self.hB, sys.executable, TOOLS, "tcp-server", str(port),
                                "::" if ":" in dst else "0.0.0.0"], stdout=subprocess.PIPE, text=True)
        try:
            assert srv.stdout is not None and srv.stdout.readline().strip() == "listening"
            got = json.loads(self.run(self.hA, "tcp-client", dst, str(port), str(nbytes)))
            srv.wait(timeout=10)
        finally:
            if srv.poll() is None:
                srv.kill()
                srv.wait()
        n, digest = got["reply"].split()
        assert int(n) == got["sent"] == nbytes and digest == got["sha256"], got


def connection_yaml(name: str, child: str, *, local: str, remote: str, local_id: str, remote_id: str,
                    local_ts: str, remote_ts: str, encap: bool | None = None) -> str:
    """One entry of a gateway config's ``connections``: PSK both ways, AES-GCM-128, one child started by
    traffic (trap); ``encap`` written only when given."""
    encap_line = "" if encap is None else f"    encap: {'yes' if encap else 'no'}\n"
    return f"""  {name}:
    local_addrs: [{local}]
    remote_addrs: [{remote}]
    proposals: [aes128gcm16-prfsha256-x25519]
{encap_line}    local: {{auth: psk, id: {local_id}}}
    remote: {{auth: psk, id: {remote_id}}}
    children:
      {child}:
        local_ts: [{local_ts}]
        remote_ts: [{remote_ts}]
        esp_proposals: [aes128gcm16]
        start_action: trap
"""


# A second connection for gateway A's config (the reload tests): a peer at 192.0.2.9 that never answers,
# trapping 10.1.0.0/24 -> 10.9.0.0/24.  ``with_other_connection`` puts it before the secrets.
OTHER_CONN = connection_yaml("other", "net-x", local="192.0.2.1", remote="192.0.2.9", local_id="gw-a.example",
                             remote_id="gw-x.example", local_ts="10.1.0.0/24", remote_ts="10.9.0.0/24")


def with_other_connection(config_text: str) -> str:
    """gateway_config's YAML for side A with ``OTHER_CONN`` added."""
    return config_text.replace("secrets:", OTHER_CONN + "secrets:")


def gateway_config(tmp: Path, side: str, *, encap: bool, extra_fastpath: str = "",
                   log_level: str = "debug", outer: str = "ipv4",
                   clear_interface: str | None = None) -> tuple[Path, Path, Path]:
    """Our gateway's YAML for side A or B.  ``outer``: "ipv4" (the default), "ipv6" (one connection over
    the IPv6 transit of ``Topology(ipv6=True)`` carrying inner IPv4 and IPv6), or "dual" (connection
    ``peer`` over IPv4 with inner IPv4, and ``peer6`` over IPv6 with inner IPv6, child ``net6``).
    ``clear_interface``: the clear side through AF_PACKET on that interface instead of a TUN."""
    a = side == "A"
    local, remote = ("192.0.2.1", "192.0.2.2") if a else ("192.0.2.2", "192.0.2.1")
    lts, rts = ("10.1.0.0/24", "10.2.0.0/24") if a else ("10.2.0.0/24", "10.1.0.0/24")
    lid, rid = ("gw-a.example", "gw-b.example") if a else ("gw-b.example", "gw-a.example")
    local6, remote6 = (V6["gA"], V6["gB"]) if a else (V6["gB"], V6["gA"])
    lts6, rts6 = ("fd00:1::/64", "fd00:2::/64") if a else ("fd00:2::/64", "fd00:1::/64")
    if outer == "ipv6":
        local, remote, lts, rts = local6, remote6, f"{lts}, {lts6}", f"{rts}, {rts6}"
    elif outer != "ipv4" and outer != "dual":
        raise ValueError(f"outer: expected ipv4, ipv6 or dual, got {outer!r}")
    peer = connection_yaml("peer", "net", local=local, remote=remote, local_id=lid, remote_id=rid, local_ts=lts,
                           remote_ts=rts, encap=encap)
    peer6 = connection_yaml("peer6", "net6", local=local6, remote=remote6, local_id=lid, remote_id=rid,
                            local_ts=lts6, remote_ts=rts6, encap=encap) if outer == "dual" else ""
    shm, sock, cfg = tmp / f"gw{side}.shm", tmp / f"gw{side}.sock", tmp / f"gw{side}.yaml"
    clear = (f"clear: af_packet, clear_interface: {clear_interface}, " if clear_interface else
             f"tun: ipsg{side}, tun_addrs: [{'10.1.0.1/32' if a else '10.2.0.1/32'}], ")
    cfg.write_text(f"""\
gateway:
  shm: {{path: {shm}, sa_capacity: 64, policy_capacity: 64, ring_size: 64}}
  control_socket: {sock}
  log_level: {log_level}
  fastpath: {{{clear}engine: best{extra_fastpath}}}
connections:
{peer}{peer6}secrets:
  ike-peer:
    id: [{lid}, {rid}]
    secret: "{PSK}"
""")
    return cfg, sock, shm


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int | None:
    """Signal proc, give it 10 s to exit, then kill it; its return code."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Tcpdump:
    """``tcpdump -U -w path`` on iface in namespace ns. Built only once tcpdump says it is listening, and
    stopped only once it has written every packet its filter took (so nothing already on the wire is
    missed): both waits are bounded, and say what did not happen."""

    STATS = re.compile(rb"(\d+) packets? captured.*?(\d+) packets? received by filter", re.S)

    def __init__(self, ns: str, iface: str, path: Path, filt: str, timeout: float = 10.0):
        self.path, self.where = path, f"tcpdump on {iface} in {ns}"
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", iface, "-n", "-U", "-w", str(path),
                                      filt], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        self._err = b""
        if not self._until(lambda: b"listening on" in self._err, timeout):
            self.proc.kill()
            raise AssertionError(f"{self.where} was not listening within {timeout} s: {self._err!r}")

    def _until(self, done, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._err += self.proc.stderr.read() or b""
                return done()
            time.sleep(0.02)
            self._err += self.proc.stderr.read() or b""
        return True

    def _all_written(self) -> bool:
        """The last counts tcpdump printed say it wrote every packet its filter took."""
        found = self.STATS.findall(self._err)
        return bool(found) and found[-1][0] == found[-1][1]

    def _ask_counts(self) -> bool:
        """Ask for fresh counts (SIGUSR1 prints them) and judge them."""
        self._err = b""
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.05)
        self._err += self.proc.stderr.read() or b""
        return self._all_written()

    def stop(self, timeout: float = 10.0) -> None:
        """Wait until all the filter took is written, then end tcpdump."""
        if self.proc.poll() is None:
            ok = self._until(lambda: self._all_written() or self._ask_counts(), timeout)
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=10)
            assert ok, f"{self.where} had not written all it captured within {timeout} s: {self._err!r}"


class FastpathProc:
    """``ipsecgw fastpath -c CONFIG`` in namespace ns, logging to log; waits for "fastpath up"."""

    def __init__(self, ns: str, config: Path, log: Path):
        self.log = log
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "control.cli", "fastpath",
                                      "-c", str(config)], cwd=ROOT, stdout=open(log, "ab"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while "fastpath up" not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fastpath did not start:\n{self.text()}")
            time.sleep(0.02)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        return stop_process(self.proc, sig)


def inet_checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum (also the one conftest's packet builders use)."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ping(dst: str, count: int, interval: float, size: int = 56, wait: float = 1.0) -> None:
    # an IPv6 dst pings with ICMPv6 echo (128/129): the kernel fills in that checksum and strips the header
    v6 = ":" in dst
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) if v6 else \
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    echo, reply = (128, 129) if v6 else (8, 0)
    ident = os.getpid() & 0xFFFF
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    start = time.monotonic()
    end = start + count * interval + wait
    seq = 0
    next_send = start
    while True:
        now = time.monotonic()
        if seq < count and now >= next_send:
            payload = bytes(size)
            hdr = struct.pack("!BBHHH", echo, 0, 0, ident, seq)
            pkt = struct.pack("!BBHHH", echo, 0, 0 if v6 else inet_checksum(hdr + payload), ident, seq) + payload
            s.sendto(pkt, (dst, 0))
            sent[seq] = now - start
            seq += 1
            next_send += interval
        if now >= end:
            break
        r, _, _ = select.select([s], [], [], max(0.0, min(next_send, end) - now) if seq < count else end - now)
        if r:
            data = s.recv(65535)
            ihl = 0 if v6 else (data[0] & 15) * 4
            t, _, _, i, sq = struct.unpack_from("!BBHHH", data, ihl)
            if t == reply and i == ident:
                got.setdefault(sq, time.monotonic() - start)
    # t0 (CLOCK_MONOTONIC, shared by every process on the host) puts the send times on a caller's clock
    print(json.dumps({"t0": start, "sent": sent, "got": sorted(got)}))


def tcp_server(port: int, bind: str = "0.0.0.0") -> None:
    ls = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((bind, port))
    ls.listen(1)
    print("listening", flush=True)
    c, _ = ls.accept()
    h = hashlib.sha256()
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        h.update(d)
        n += len(d)
    c.sendall(f"{n} {h.hexdigest()}".encode())
    c.close()


def tcp_client(dst: str, port: int, nbytes: int) -> None:
    data = os.urandom(nbytes)
    c = socket.create_connection((dst, port), timeout=20)
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        d = c.recv(4096)
        if not d:
            break
        reply += d
    print(json.dumps({"sent": nbytes, "sha256": hashlib.sha256(data).hexdigest(), "reply": reply.decode()}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ping":
        ping(args[0], int(args[1]), float(args[2]), *(int(a) for a in args[3:4]))
    elif cmd == "tcp-server":
        tcp_server(int(args[0]), *args[1:2])
    elif cmd == "tcp-client":
        tcp_client(args[0], int(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown command {cmd}")
