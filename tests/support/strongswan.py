"""A live strongSwan (Debian's charon-systemd) in a network namespace, for interop tests.

charon runs with its own strongswan.conf (``STRONGSWAN_CONF``), an explicit
plugin list with kernel-libipsec before kernel-netlink (there is no kernel
ESP here, so ESP runs in charon's userspace over UDP 4500), and its own vici
socket that every ``swanctl`` call names.  ``NetnsPair`` builds two namespaces
joined by a veth pair; our side runs in the first through ``in_netns``.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

CHARON = "/usr/sbin/charon-systemd"
SWANCTL = "/usr/sbin/swanctl"
PLUGINS = ("random nonce openssl aes sha1 sha2 hmac kdf gcm chapoly curve25519 pem pkcs1 pkcs8 x509 pubkey "
           "kernel-libipsec kernel-netlink socket-default vici updown")
CLONE_NEWNET = 0x40000000


def unavailable_reason() -> str | None:
    """Why a live strongSwan test cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for path in (CHARON, SWANCTL):
        if not os.access(path, os.X_OK):
            return f"{path} not installed (apt install charon-systemd strongswan-swanctl)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun missing (kernel-libipsec needs it)"
    if shutil.which("ip") is None:
        return "iproute2 missing"
    return None


def interop_marks() -> list[pytest.MarkDecorator]:
    """``pytestmark`` of a module of live-strongSwan tests: slow, and skipped (saying why) where charon cannot
    run here."""
    reason = unavailable_reason()
    return [pytest.mark.skipif(reason is not None, reason=f"strongSwan interop: {reason}"), pytest.mark.slow]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class NetnsPair:
    """Namespaces ``<tag>a`` / ``<tag>b`` joined by a veth pair with addresses a_ip / b_ip (/24, or /64 for
    IPv6 ones, added without duplicate address detection so they are usable at once)."""

    def __init__(self, tag: str, a_ip: str = "192.0.2.1", b_ip: str = "192.0.2.2"):
        self.a, self.b = f"{tag}a", f"{tag}b"
        self.a_ip, self.b_ip = a_ip, b_ip
        self.veth_a, self.veth_b = f"{tag}va"[:15], f"{tag}vb"[:15]

    def __enter__(self) -> NetnsPair:
        _ip("netns", "add", self.a)
        _ip("netns", "add", self.b)
        try:
            _ip("link", "add", self.veth_a, "netns", self.a, "type", "veth", "peer", "name", self.veth_b,
                "netns", self.b)
            for ns, dev, addr in ((self.a, self.veth_a, self.a_ip), (self.b, self.veth_b, self.b_ip)):
                if ":" in addr:
                    _ip("-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
                else:
                    _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "link", "set", dev, "up")
            if ":" in self.a_ip:
                self._neighbours_resolved()
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def _neighbours_resolved(self) -> None:
        """Until b has a's link-layer address, IPv6 packets b sends to a wait in a short neighbour queue and
        most of a burst is dropped silently (a raw-socket flood lost 95 % that way): ping until it answers."""
        for _ in range(20):
            if subprocess.run(["ip", "netns", "exec", self.b, "ping", "-6", "-c", "1", "-W", "1", self.a_ip],
                              capture_output=True).returncode == 0:
                return
        raise RuntimeError(f"{self.a_ip} not reachable from namespace {self.b}")

    def add_lo_address(self, ns: str, addr: str) -> None:
        _ip("-n", ns, "addr", "add", addr, "dev", "lo")

    def __exit__(self, *exc: object) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def in_netns(ns: str, fn: Callable[[], object]) -> object:
    """Run ``fn`` on a thread that has entered namespace ``ns`` (sockets it opens live there)."""
    result: dict[str, object] = {}

    def body() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns({ns}) failed")
        finally:
            os.close(fd)
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
            result["error"] = exc

    t = threading.Thread(target=body, name=f"netns-{ns}")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result.get("value")


class Charon:
    """One charon-systemd instance in namespace ``ns`` with files under a private temp directory."""

    def __init__(self, ns: str, swanctl_conf: str, *, port: int = 500, port_nat_t: int = 4500,
                 files: dict[str, bytes] | None = None, charon_extra: str = "", root: Path | None = None):
        self.ns = ns
        # with ``root`` charon and swanctl run chrooted there (another strongSwan than the machine's, e.g.
        # support.pq_root's 6.1): the instance's files live under the root's /tmp, named as charon sees them
        self.root = root
        self.dir = Path(tempfile.mkdtemp(prefix="ipsecgw-charon-", dir=root / "tmp" if root else None))
        # credentials under swanctl's layout (x509/, x509ca/, private/...): swanctl reads them from
        # SWANCTL_DIR, which then is this instance's directory
        self.files = dict(files or {})
        for rel, data in self.files.items():
            path = self.dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(0o600)
        self.vici = self.dir / "charon.vici"
        self.log = self.dir / "charon.log"
        self.conf = self.dir / "swanctl.conf"
        self.conf.write_text(swanctl_conf)
        (self.dir / "strongswan.conf").write_text(f"""charon {{
    load_modular = no
    load = {PLUGINS}
    port = {port}
    port_nat_t = {port_nat_t}
    install_routes = yes
    install_virtual_ip = no
    retransmit_tries = 2
    {charon_extra}
    filelog {{
        main {{
            path = {self.inside(self.log)}
            time_format = %T
            append = no
            flush_line = yes
            default = 1
            ike = 2
            cfg = 2
            knl = 1
        }}
    }}
    plugins {{
        vici {{
            socket = unix://{self.inside(self.vici)}
        }}
    }}
}}
""")
        self.proc: subprocess.Popen | None = None

    def inside(self, path: Path) -> str:
        """``path`` as charon sees it (relative to its chroot, if any)."""
        return "/" + str(path.relative_to(self.root)) if self.root else str(path)

    def _cmd(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *(["chroot", str(self.root)] if self.root else []), *argv]

    def start(self) -> None:
        env = dict(os.environ, STRONGSWAN_CONF=self.inside(self.dir / "strongswan.conf"))
        cmd = self._cmd(CHARON)
        if self.root:
            # kernel-libipsec needs /dev/net/tun and charon /proc: mounted in a mount namespace of charon's
            # own, so they go when it does (each step execs the next: the pid stays charon's)
            r = shlex.quote(str(self.root))
            cmd = ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                   f"mount --rbind /dev {r}/dev && mount -t proc proc {r}/proc && exec chroot {r} {CHARON}"]
        self.proc = subprocess.Popen(cmd, env=env,
                                     stdout=open(self.dir / "stdout.log", "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not self.vici.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"charon did not start; log:\n{self.log_text()}")
            time.sleep(0.1)
        self.swanctl("--load-all", "--file", self.inside(self.conf))

    def __enter__(self) -> Charon:
        try:
            self.start()
        except BaseException:
            self.stop()     # a half-started charon still has a process and a temp directory
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def swanctl(self, *args: str, timeout: float = 20) -> str:
        env = dict(os.environ, SWANCTL_DIR=self.inside(self.dir)) if self.files else None
        out = subprocess.run(self._cmd(SWANCTL, *args, "--uri", f"unix://{self.inside(self.vici)}"),
                             capture_output=True, text=True, timeout=timeout, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"swanctl {' '.join(args)} failed: {out.stdout}{out.stderr}")
        return out.stdout

    def list_sas(self) -> str:
        return self.swanctl("--list-sas")

    def wait_listed(self, text: str, timeout: float = 10) -> None:
        """Until ``swanctl --list-sas`` shows text (an SPI after a rekey): charon updates its listing a
        moment after answering."""
        deadline = time.monotonic() + timeout
        while text not in self.list_sas() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert text in self.list_sas()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # `ip netns exec` execs charon in place, so this pid is charon itself
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _swanctl_connection(*, local: str, remote: str, remote_port: int, ike: str, esp: str, local_ts: str,
                        remote_ts: str, conn_extra: str, child_extra: str, local_auth: str, remote_auth: str) -> str:
    """The ``connections`` section shared by both builders; local_auth/remote_auth are the lines inside
    the local and remote blocks."""
    return f"""connections {{
    peer {{
        version = 2
        local_addrs = {local}
        remote_addrs = {remote}
        remote_port = {remote_port}
        proposals = {ike}
        encap = yes
        mobike = no
        {conn_extra}
        local {{
{local_auth}
        }}
        remote {{
{remote_auth}
        }}
        children {{
            net {{
                mode = tunnel
                local_ts = {local_ts}
                remote_ts = {remote_ts}
                esp_proposals = {esp}
                start_action = none
                {child_extra}
            }}
        }}
    }}
}}
"""


def swanctl_conf(*, local: str, remote: str, local_id: str, remote_id: str, psk: str, ike: str, esp: str,
                 local_ts: str, remote_ts: str, remote_port: int = 500, conn_extra: str = "",
                 child_extra: str = "") -> str:
    return _swanctl_connection(
        local=local, remote=remote, remote_port=remote_port, ike=ike, esp=esp, local_ts=local_ts,
        remote_ts=remote_ts, conn_extra=conn_extra, child_extra=child_extra,
        local_auth=f"            auth = psk\n            id = {local_id}",
        remote_auth=f"            auth = psk\n            id = {remote_id}") + f"""secrets {{
    ike-peer {{
        id-a = {local_id}
        id-b = {remote_id}
        secret = "{psk}"
    }}
}}
"""


def swanctl_conf_pubkey(*, local: str, remote: str, local_id: str, remote_id: str, cert: str, ike: str,
                        esp: str, local_ts: str, remote_ts: str, remote_port: int = 500,
                        conn_extra: str = "") -> str:
    """One connection authenticated both ways with certificates (RFC 7427 signatures): our cert is
    x509/<cert>, its key in private/, the CA in x509ca/ (see ``Charon(files=...)``)."""
    return _swanctl_connection(
        local=local, remote=remote, remote_port=remote_port, ike=ike, esp=esp, local_ts=local_ts,
        remote_ts=remote_ts, conn_extra=conn_extra, child_extra="",
        local_auth=f'            auth = pubkey\n            certs = {cert}\n            id = "{local_id}"',
        remote_auth=f'            auth = pubkey\n            id = "{remote_id}"')
