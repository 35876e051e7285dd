"""A test-side UDP driver for our sans-IO IKEv1 core: plain sockets on ports 500 and 4500 of one address
(run it inside a namespace with support.strongswan.in_netns), the SA's datagrams out, the peer's in, its
timers, and the ESP-in-UDP that arrives on 4500 kept for the test to decrypt.  Also charon's swanctl.conf
for a ``version = 1`` connection."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

from control.ike.constants import NON_ESP_MARKER
from control.ikev1.config import Ikev1Config
from control.ikev1.sa import Ikev1SA


class UdpDriver:
    """Drives one Ikev1SA; ``sa`` is None for a responder until the first ISAKMP message arrives."""

    def __init__(self, local_ip: str, sa: Ikev1SA | None = None, responder: Ikev1Config | None = None):
        self.local_ip = local_ip
        self.sa = sa
        self.responder = responder
        self.events: list[object] = []
        self.esp_rx: list[bytes] = []
        self.socks = {}
        for port in (500, 4500):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((local_ip, port))
            s.setblocking(False)
            self.socks[port] = s

    def close(self) -> None:
        for s in self.socks.values():
            s.close()

    def send_raw(self, data: bytes, local_port: int, remote: tuple[str, int]) -> None:
        self.socks[local_port].sendto(data, remote)

    def _flush(self) -> None:
        if self.sa is None:
            return
        for d in self.sa.datagrams_to_send():
            self.socks[d.local_port].sendto(d.data, d.remote)
        self.events += self.sa.events()

    def pump(self, until: Callable[[], bool], timeout: float) -> bool:
        """Run until ``until()`` holds or ``timeout`` seconds pass; whether it held."""
        deadline = time.monotonic() + timeout
        self._flush()
        while time.monotonic() < deadline:
            if until():
                return True
            ready, _, _ = select.select(list(self.socks.values()), [], [], 0.05)
            now = time.monotonic()
            for s in ready:
                port = s.getsockname()[1]
                try:
                    data, addr = s.recvfrom(65535)
                except BlockingIOError:
                    continue
                if port == 4500 and data[:4] != NON_ESP_MARKER:
                    if len(data) > 1:           # 0xff is a NAT-T keepalive
                        self.esp_rx.append(data)
                    continue
                if self.sa is None and self.responder is not None:
                    self.sa = Ikev1SA(self.responder, initiator=False, local=(self.local_ip, port), remote=addr)
                if self.sa is not None:
                    self.sa.receive_datagram(data, addr, now, local_port=port)
            if self.sa is not None:
                self.sa.handle_timer(time.monotonic())
            self._flush()
        return until()


def swanctl_conf_v1(*, local: str, remote: str, local_id: str, remote_id: str, psk: str, ike: str, esp: str,
                    local_ts: str, remote_ts: str, aggressive: bool = False, cert: str = "",
                    conn_extra: str = "") -> str:
    """One IKEv1 connection "peer" with child "net", PSK or (``cert``: x509/<cert>, its key in private/, the
    CA in x509ca/) RSA signatures; ``encap = yes`` because kernel-libipsec carries ESP in UDP only (charon
    then fakes its NAT-D hash, so the ISAKMP SA floats to port 4500)."""
    if cert:
        local_auth = f"auth = pubkey\n            certs = {cert}"
        remote_auth = "auth = pubkey"
        secrets = ""
    else:
        local_auth = remote_auth = "auth = psk"
        secrets = f"""secrets {{
    ike-peer {{
        id-a = {local_id}
        id-b = {remote_id}
        secret = "{psk}"
    }}
}}
"""
    return f"""connections {{
    peer {{
        version = 1
        aggressive = {"yes" if aggressive else "no"}
        local_addrs = {local}
        remote_addrs = {remote}
        proposals = {ike}
        encap = yes
        {conn_extra}
        local {{
            {local_auth}
            id = {local_id}
        }}
        remote {{
            {remote_auth}
            id = {remote_id}
        }}
        children {{
            net {{
                mode = tunnel
                local_ts = {local_ts}
                remote_ts = {remote_ts}
                esp_proposals = {esp}
                start_action = none
            }}
        }}
    }}
}}
{secrets}"""
