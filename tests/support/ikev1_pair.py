"""Two of our IKEv1 SAs, initiator and responder, wired back to back in memory (no sockets): what one
sends the other receives, until both are quiet."""

from __future__ import annotations

from control.ike.config import Identity
from control.ike.ts_payload import TrafficSelectorEntry
from control.ikev1.config import Ikev1Config
from control.ikev1.sa import Ikev1SA

I_ADDR, R_ADDR = ("192.0.2.1", 500), ("192.0.2.2", 500)
PSK = b"ikev1-pair-psk"


def configs(ike: str = "aes256-sha256-modp2048", esp: str = "aes128-sha256", *, aggressive: bool = False,
            psk_r: bytes = PSK) -> tuple[Ikev1Config, Ikev1Config]:
    a, b = TrafficSelectorEntry.from_network("10.1.0.0/16"), TrafficSelectorEntry.from_network("10.2.0.0/16")
    ci = Ikev1Config(Identity.from_string("gw-a.example"), PSK, Identity.from_string("gw-b.example"), ike, esp,
                     [a], [b], aggressive=aggressive)
    cr = Ikev1Config(Identity.from_string("gw-b.example"), psk_r, Identity.from_string("gw-a.example"), ike, esp,
                     [b], [a], aggressive=aggressive)
    return ci, cr


NAT_PUBLIC = "198.51.100.7"
_NAT_PORTS = {500: 40500, 4500: 44500}


class Pair:
    """With ``nat``, the initiator sits behind a NAT: the responder sees its datagrams come from
    NAT_PUBLIC on other ports, and answers there."""

    def __init__(self, ci: Ikev1Config, cr: Ikev1Config, nat: bool = False):
        self.nat = nat
        self.i = Ikev1SA(ci, initiator=True, local=I_ADDR, remote=R_ADDR)
        self.r = Ikev1SA(cr, initiator=False, local=R_ADDR, remote=I_ADDR)
        self.now = 0.0
        self.wire: list[tuple[str, bytes]] = []       # (sender "i"/"r", ISAKMP message) as sent
        self.events_i: list[object] = []
        self.events_r: list[object] = []

    def run(self, limit: int = 50) -> None:
        """Deliver datagrams both ways until neither side has anything to send."""
        for _ in range(limit):
            moved = False
            for src, dst, name in ((self.i, self.r, "i"), (self.r, self.i, "r")):
                for d in src.datagrams_to_send():
                    moved = True
                    self.wire.append((name, d.data))
                    if not self.nat:
                        dst.receive_datagram(d.data, (src.local[0], d.local_port), self.now, local_port=d.remote[1])
                    elif name == "i":
                        dst.receive_datagram(d.data, (NAT_PUBLIC, _NAT_PORTS[d.local_port]), self.now,
                                             local_port=d.remote[1])
                    else:
                        private = next(k for k, v in _NAT_PORTS.items() if v == d.remote[1])
                        dst.receive_datagram(d.data, (src.local[0], d.local_port), self.now, local_port=private)
            self.events_i += self.i.events()
            self.events_r += self.r.events()
            if not moved:
                return
        raise AssertionError("the pair never went quiet")

    def of(self, side: str, cls: type) -> list:
        return [e for e in (self.events_i if side == "i" else self.events_r) if isinstance(e, cls)]
